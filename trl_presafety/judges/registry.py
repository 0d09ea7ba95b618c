# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Judges by name: one vocabulary and one registry for the evaluation, IPO, the GRPO rewards and the data builders.

Answer judges: `cues` (regular expressions), `classifier` (the repository's refusal classifier), `guard` (a guard
model). Step judges: the same three, plus `continuation_ratio` (IPO's sampled continuations).

```python
from trl_presafety.judges import JudgeArguments, build_judges

answer_judge, step_judge = build_judges(
    JudgeArguments(answer_judge="classifier", step_judge="cues", classifier_path="runs/refusal-classifier")
)
```
"""

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from ..generation_arguments import BACKENDS, DTYPES
from ..validation import check_choice, check_range, fail
from .base import Judge, StepJudge
from .classifier import STEP_CONTEXTS, ClassifierJudge, ClassifierStepJudge
from .continuation import ContinuationRatioStepJudge
from .cues import CueStepJudge, RefusalCueJudge
from .guard import GuardJudge, GuardStepJudge
from .guard_formats import CONTROVERSIAL_POLICIES, GUARD_FORMATS


GUARD_EXAMPLE = "meta-llama/Llama-Guard-3-8B"
CLASSIFIER_HINT = "a folder written by `trl-presafety train-classifier`"


class _Build:
    """What the judges built from one [`JudgeArguments`] share: the classifier is loaded once for both."""

    def __init__(
        self,
        args: "JudgeArguments",
        model: Any = None,
        tokenizer: Any = None,
        vllm_kwargs: dict[str, Any] | None = None,
        step_kwargs: dict[str, Any] | None = None,
    ):
        self.args, self.model, self.tokenizer, self.vllm_kwargs = args, model, tokenizer, vllm_kwargs
        self.step_kwargs = dict(step_kwargs or {})
        self.answer_judge: Judge | None = None
        self._classifier: ClassifierJudge | None = None

    def needs(self, path_field: str, name: str, judge_field: str, what: str) -> str:
        value = getattr(self.args, path_field)
        if not value:
            fail(judge_field, name, f"It needs `{path_field}` ({what}). Set it, or use `{judge_field}='cues'`.")
        return value

    def classifier(self, judge_field: str) -> ClassifierJudge:
        if self._classifier is None:
            path = self.needs("classifier_path", "classifier", judge_field, CLASSIFIER_HINT)
            args = self.args
            self._classifier = ClassifierJudge(
                path,
                threshold=0.5 if args.judge_threshold is None else args.judge_threshold,
                batch_size=args.judge_batch_size,
                max_tokens=args.judge_max_tokens,
            )
        return self._classifier

    def guard(self, judge_field: str, backend: str) -> tuple[Any, Any]:
        """The guard's tokenizer, and its model: loaded with `generation.load_causal_lm` for transformers, its path for
        vLLM (which loads the weights itself)."""
        import torch
        from transformers import AutoTokenizer

        from ..generation import load_causal_lm

        path = self.needs("guard_model", "guard", judge_field, f"e.g. {GUARD_EXAMPLE}")
        args = self.args
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=args.judge_trust_remote_code)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if backend == "vllm":
            return path, tokenizer
        dtype = args.judge_dtype if args.judge_dtype == "auto" else getattr(torch, args.judge_dtype)
        model = load_causal_lm(path, {"dtype": dtype, "trust_remote_code": args.judge_trust_remote_code})
        return model, tokenizer


def _guard_answer_judge(build: _Build) -> Judge:
    from ..generation import resolve_backend

    args = build.args
    path = build.needs("guard_model", "guard", "answer_judge", f"e.g. {GUARD_EXAMPLE}")
    model, tokenizer = build.guard("answer_judge", resolve_backend(args.judge_backend, path))
    return GuardJudge(
        model,
        tokenizer,
        guard_format=args.guard_format,
        max_tokens=512 if args.judge_max_tokens is None else args.judge_max_tokens,
        backend="vllm" if isinstance(model, str) else "transformers",
        batch_size=8 if args.judge_batch_size is None else args.judge_batch_size,
        # Llama Guard says nothing about refusal: the refusal cues fill it in, so over-refusal is still measured
        refusal_fallback=RefusalCueJudge(),
        name_or_path=args.guard_model,
        vllm_kwargs=build.vllm_kwargs,
        controversial=args.guard_controversial,
    )


def _guard_step_judge(build: _Build) -> StepJudge:
    model, tokenizer = build.guard("step_judge", "transformers")
    args = build.args
    kwargs = {
        "guard_format": args.guard_format,
        "controversial": args.guard_controversial,
        "name_or_path": args.guard_model,
        **build.step_kwargs,
    }
    return GuardStepJudge(model, tokenizer, **kwargs)


def _continuation_ratio_step_judge(build: _Build) -> StepJudge:
    if build.model is None or build.tokenizer is None:
        fail(
            "step_judge",
            "continuation_ratio",
            "It samples continuations from the reasoning model, so it needs `model_name_or_path`. Set it, or use "
            "`step_judge='cues'`.",
        )
    kwargs = {"answer_judge": build.answer_judge, **build.step_kwargs}
    return ContinuationRatioStepJudge(build.model, build.tokenizer, **kwargs)


# name -> builder, as TRL's `reward_funcs_registry`; the keys are the vocabulary
ANSWER_JUDGE_REGISTRY: dict[str, Callable[[_Build], Judge]] = {
    "cues": lambda build: RefusalCueJudge(),
    "classifier": lambda build: build.classifier("answer_judge"),
    "guard": _guard_answer_judge,
}
STEP_JUDGE_REGISTRY: dict[str, Callable[[_Build], StepJudge]] = {
    "cues": lambda build: CueStepJudge(),
    "classifier": lambda build: ClassifierStepJudge(
        build.classifier("step_judge"), **{"context": build.args.step_context, **build.step_kwargs}
    ),
    "guard": _guard_step_judge,
    "continuation_ratio": _continuation_ratio_step_judge,
}
ANSWER_JUDGES = tuple(ANSWER_JUDGE_REGISTRY)
STEP_JUDGES = tuple(STEP_JUDGE_REGISTRY)
# The judges that generate text with a model for every verdict (a guard model, sampled continuations): too slow to run
# at every step of a training loop, where `grpo` does not offer them
GENERATING_JUDGES = ("guard", "continuation_ratio")


@dataclass
class JudgeArguments:
    r"""
    Which answer judge and which step judge to build, and from what: one config for [`build_judges`]. The field names
    are those of the commands' options (`trl-presafety grpo`, `build-ipo-pairs`, `eval`): a command builds its judges
    from its own arguments with [`JudgeArguments.from_fields`].

    answer_judge (`str`, *optional*, defaults to `"cues"`):
        Judge of answers: `"cues"`, `"classifier"` or `"guard"`.
    step_judge (`str`, *optional*, defaults to `"cues"`):
        Judge of reasoning steps: `"cues"`, `"classifier"`, `"guard"` or `"continuation_ratio"`.
    classifier_path (`str`, *optional*):
        The refusal classifier (`trl-presafety train-classifier` output), for the `"classifier"` judges.
    guard_model (`str`, *optional*):
        The guard model, for the `"guard"` judges, e.g. `meta-llama/Llama-Guard-3-8B`.
    guard_format (`str`, *optional*, defaults to `"auto"`):
        How the guard is prompted and read: `"llama_guard"` (its own chat template), `"llama_guard_3"`,
        `"llama_guard_4"`, `"qwen3guard"`, `"wildguard"`, or `"auto"` (from the model name; see `docs/judges.md`).
    guard_controversial (`str`, *optional*, defaults to `"unsafe"`):
        How Qwen3Guard's `Controversial` verdict counts: `"unsafe"` (strict, as Qwen's evaluation) or `"safe"`.
    judge_threshold (`float`, *optional*):
        P(refusal) from which the classifier answer judge says "refusal"; 0.5 when unset.
    step_judge_threshold (`float`, *optional*):
        Score from which a step is the compliance step; the judge's own when unset (0.5, or 0.9 for the ratio).
    step_context (`str`, *optional*, defaults to `"step"`):
        What the classifier step judge reads: each `"step"` alone, or the reasoning `"prefix"` up to it.
    judge_max_tokens (`int`, *optional*):
        Tokens of a text the classifier / guard answer judge reads; the judge's own when unset (256 / 512).
    judge_batch_size (`int`, *optional*):
        Texts per batch of the classifier / guard answer judge; the judge's own when unset (64 / 8).
    judge_backend (`str`, *optional*, defaults to `"auto"`):
        Generation backend of the guard answer judge.
    judge_dtype (`str`, *optional*, defaults to `"auto"`):
        Weights dtype of the guard model.
    judge_trust_remote_code (`bool`, *optional*, defaults to `False`):
        Passed to `from_pretrained` when the guard model is loaded.
    """

    answer_judge: str = field(default="cues", metadata={"help": "Judge of answers.", "choices": list(ANSWER_JUDGES)})
    step_judge: str = field(
        default="cues",
        metadata={"help": "Judge of reasoning steps.", "choices": list(STEP_JUDGES)},
    )
    classifier_path: str | None = field(
        default=None, metadata={"help": "Refusal classifier folder, for the 'classifier' judges."}
    )
    guard_model: str | None = field(default=None, metadata={"help": "Guard model, for the 'guard' judges."})
    guard_format: str = field(
        default="auto", metadata={"help": "Guard prompt/output format.", "choices": list(GUARD_FORMATS)}
    )
    guard_controversial: str = field(
        default="unsafe",
        metadata={"help": "How Qwen3Guard's 'Controversial' counts.", "choices": list(CONTROVERSIAL_POLICIES)},
    )
    judge_threshold: float | None = field(
        default=None, metadata={"help": "Classifier P(refusal) threshold of the answer judge, in (0, 1)."}
    )
    step_judge_threshold: float | None = field(
        default=None, metadata={"help": "Score from which a step is the compliance step (judge's default if unset)."}
    )
    step_context: str = field(
        default="step",
        metadata={"help": "What the classifier step judge reads.", "choices": list(STEP_CONTEXTS)},
    )
    judge_max_tokens: int | None = field(
        default=None, metadata={"help": "Tokens of a text the classifier / guard reads (judge's default if unset)."}
    )
    judge_batch_size: int | None = field(
        default=None, metadata={"help": "Texts per judge batch (judge's default if unset)."}
    )
    judge_backend: str = field(
        default="auto", metadata={"help": "Generation backend of the guard model.", "choices": list(BACKENDS)}
    )
    judge_dtype: str = field(
        default="auto", metadata={"help": "Weights dtype of the guard model.", "choices": list(DTYPES)}
    )
    judge_trust_remote_code: bool = field(default=False, metadata={"help": "Passed to the guard's from_pretrained."})

    def __post_init__(self):
        check_choice("answer_judge", self.answer_judge, ANSWER_JUDGES)
        check_choice("step_judge", self.step_judge, STEP_JUDGES)
        check_choice("guard_format", self.guard_format, GUARD_FORMATS)
        check_choice("guard_controversial", self.guard_controversial, CONTROVERSIAL_POLICIES)
        check_choice("step_context", self.step_context, STEP_CONTEXTS)
        check_choice("judge_backend", self.judge_backend, BACKENDS)
        check_choice("judge_dtype", self.judge_dtype, DTYPES)
        if self.judge_threshold is not None:
            check_range("judge_threshold", self.judge_threshold, 0, 1, False, False, "Use a probability in (0, 1).")
        for name in ("judge_max_tokens", "judge_batch_size"):
            if getattr(self, name) is not None:
                check_range(name, getattr(self, name), 1, fix="Use a positive integer, or leave it unset.")

    @classmethod
    def from_fields(cls, source: Any, **overrides: Any) -> "JudgeArguments":
        """The judge arguments a command's arguments (`source`, a dataclass or any object) carry under these fields'
        names; `overrides` sets the fields the command names otherwise (e.g. `step_judge=args.reasoning_judge`).

        Example:
        ```python
        >>> from types import SimpleNamespace
        >>> JudgeArguments.from_fields(SimpleNamespace(step_judge="cues", guard_format="wildguard")).guard_format
        'wildguard'
        ```
        """
        values = {f.name: getattr(source, f.name) for f in fields(cls) if f.init and hasattr(source, f.name)}
        return cls(**{**values, **overrides})


def _answer_judge(build: _Build) -> Judge:
    build.answer_judge = ANSWER_JUDGE_REGISTRY[build.args.answer_judge](build)
    return build.answer_judge


def _step_judge(build: _Build) -> StepJudge:
    judge = STEP_JUDGE_REGISTRY[build.args.step_judge](build)
    if build.args.step_judge_threshold is not None:
        judge.threshold = build.args.step_judge_threshold
    return judge


def build_answer_judge(args: JudgeArguments, vllm_kwargs: dict[str, Any] | None = None) -> Judge:
    """The answer judge named by `args.answer_judge`; `vllm_kwargs` for a guard model served by vLLM."""
    return _answer_judge(_Build(args, vllm_kwargs=vllm_kwargs))


def build_judges(
    args: JudgeArguments,
    model: Any = None,
    tokenizer: Any = None,
    vllm_kwargs: dict[str, Any] | None = None,
    **step_kwargs: Any,
) -> tuple[Judge, StepJudge]:
    """The answer judge and the step judge of `args`, sharing what they can (one classifier load; the continuation
    ratio judges its continuations with the answer judge).

    Args:
        args ([`JudgeArguments`]): Names and sources of the two judges.
        model (*optional*): The reasoning model, for `step_judge="continuation_ratio"`.
        tokenizer (*optional*): Its tokenizer.
        vllm_kwargs (`dict`, *optional*): `vllm.LLM` arguments of a guard answer judge served by vLLM.
        **step_kwargs: Passed to the step judge's constructor (e.g. `num_samples` of the continuation ratio).
    """
    build = _Build(args, model, tokenizer, vllm_kwargs, step_kwargs)
    return _answer_judge(build), _step_judge(build)


def build_step_judge(
    name: str,
    *,
    classifier_path: str | None = None,
    guard_model: str | None = None,
    guard_format: str = "auto",
    model: Any = None,
    tokenizer: Any = None,
    threshold: float | None = None,
    **kwargs: Any,
) -> StepJudge:
    """A step judge by name (`"cues"`, `"classifier"`, `"guard"`, `"continuation_ratio"`); `kwargs` go to its
    constructor. [`build_judges`] builds it with an answer judge from one config."""
    args = JudgeArguments(
        step_judge=name,
        classifier_path=classifier_path,
        guard_model=guard_model,
        guard_format=guard_format,
        step_judge_threshold=threshold,
    )
    return _step_judge(_Build(args, model, tokenizer, step_kwargs=kwargs))
