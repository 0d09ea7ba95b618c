# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The `guard` judges: a guard model prompted and parsed in its own format (`guard_formats.py`: Llama Guard 3/4,
Qwen3Guard, WildGuard, or any Llama Guard's chat template), on answers and prompts ([`GuardJudge`]) and on reasoning
prefixes ([`GuardStepJudge`]); both build the guard's input with the format's builder ([`guard_prompt`]) and read its
output with the format's parser.
"""

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..validation import check_choice
from .base import Judge, StepJudge, Verdict, default_generate, fit_joined, regroup, split_joined
from .cues import compile_patterns
from .guard_formats import (
    CONTROVERSIAL_POLICIES,
    GUARD_FORMAT_REGISTRY,
    GUARD_FORMATS,
    check_categories,
    get_guard_format,
    match_guard_format,
    resolve_guard_format,
)
from .steps import prefix_text, user_text


logger = logging.getLogger(__name__)

__all__ = ["GuardJudge", "GuardStepJudge", "guard_prompt"]


def _resolve_logged(guard_format: str, name_or_path: str | None) -> str:
    resolved = resolve_guard_format(guard_format, name_or_path)
    if guard_format == "auto" and match_guard_format(name_or_path) is None:
        logger.warning(
            f"guard_format='auto' does not recognize the guard {name_or_path!r}: using 'llama_guard' (its own chat "
            f"template, `safe` / `unsafe` output). Set guard_format to one of {list(GUARD_FORMAT_REGISTRY)} if it is "
            "another family."
        )
    return resolved


def guard_prompt(
    tokenizer: Any,
    guard_format: str,
    prompt: str,
    response: str | None,
    name_or_path: str | None = None,
    categories: Mapping[str, str] | None = None,
) -> str:
    """The guard's input text for a prompt and its response (`response=None`: prompt moderation), in the format
    `guard_format` (a name of [`GUARD_FORMAT_REGISTRY`], or `"auto"` with `name_or_path`)."""
    fmt = get_guard_format(resolve_guard_format(guard_format, name_or_path))
    return fmt.build(tokenizer, prompt, response, check_categories(fmt, categories))


class GuardJudge(Judge):
    """A guard model, prompted in its format and parsed with its parser ([`GuardFormat`]), on responses (`judge`)
    and on prompts alone (`judge_prompts`: prompt moderation, e.g. a `harmful` column from a guard).

    The response is clipped to `max_tokens` guard tokens (HarmBench's classifier clips at 512); in the "answer +
    reasoning" view the reasoning loses tokens from its front so the answer is kept. When the guard says nothing
    about refusal (Llama Guard, or a verdict without its refusal line), `refusal_fallback` (a judge; the evaluation
    uses the cue judge) fills it in, so over-refusal is still measured.

    Args:
        model (`PreTrainedModel` or `str`): The guard model (a path makes vLLM possible).
        tokenizer (`PreTrainedTokenizerBase`): Its tokenizer.
        guard_format (`str`, *optional*, defaults to `"auto"`): A format of `GUARD_FORMATS`
            (`"llama_guard"`, `"llama_guard_3"`, `"llama_guard_4"`, `"qwen3guard"`, `"wildguard"`), or `"auto"` (from
            the model name).
        max_tokens (`int`, *optional*, defaults to `512`): Tokens of the response the guard reads; `None` reads it
            whole.
        max_new_tokens (`int`, *optional*, defaults to `32`): Tokens the guard may generate.
        backend (`str`, *optional*, defaults to `"auto"`): Generation backend (see `trl_presafety.generation`).
        batch_size (`int`, *optional*, defaults to `8`): Prompts per generation batch (transformers).
        refusal_fallback (`Judge` or `None`, *optional*): Judge for `refusal` when the guard does not give it.
        generate_fn (`Callable[[list[str]], list[str]]`, *optional*): Replaces generation (prompt texts -> outputs),
            e.g. to call a served guard model.
        name_or_path (`str`, *optional*): The guard's name in the report (defaults to the model's path).
        vllm_kwargs (`dict`, *optional*): Extra `vllm.LLM` arguments (e.g. `gpu_memory_utilization`).
        controversial (`str`, *optional*, defaults to `"unsafe"`): How Qwen3Guard's `Controversial` counts:
            `"unsafe"` (strict, as Qwen's evaluation) or `"safe"`.
        categories (`dict[str, str]`, *optional*): Custom category list (code -> text) for the formats that render
            one (`llama_guard_3`, `llama_guard_4`).
    """

    name = "guard"

    def __init__(
        self,
        model: Any = None,
        tokenizer: Any = None,
        guard_format: str = "auto",
        max_tokens: int | None = 512,
        max_new_tokens: int = 32,
        backend: str = "auto",
        batch_size: int = 8,
        refusal_fallback: Judge | None = None,
        generate_fn: Callable[[list[str]], list[str]] | None = None,
        name_or_path: str | None = None,
        vllm_kwargs: dict[str, Any] | None = None,
        controversial: str = "unsafe",
        categories: Mapping[str, str] | None = None,
    ):
        check_choice("guard_format", guard_format, GUARD_FORMATS)
        check_choice("controversial", controversial, CONTROVERSIAL_POLICIES)
        self.name_or_path = name_or_path or (
            model if isinstance(model, str) else getattr(getattr(model, "config", None), "_name_or_path", None)
        )
        self.guard_format = _resolve_logged(guard_format, self.name_or_path)
        self.format = GUARD_FORMAT_REGISTRY[self.guard_format]
        self.categories = check_categories(self.format, categories)
        if model is None and generate_fn is None:
            raise ValueError("GuardJudge needs a guard `model` (and its tokenizer) or a `generate_fn`.")
        if tokenizer is None and (generate_fn is None or self.format.uses_chat_template):
            raise ValueError("GuardJudge needs the guard's `tokenizer` (it builds and clips the guard prompts).")
        self.model = model
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.max_new_tokens = max_new_tokens
        self.backend = backend
        self.batch_size = batch_size
        self.refusal_fallback = refusal_fallback
        self.generate_fn = generate_fn
        self.vllm_kwargs = dict(vllm_kwargs or {})
        self.controversial = controversial

    def parse(self, output: str, target: str = "response") -> Verdict:
        """The guard's output read by its format's parser."""
        return self.format.parse(output, target=target, controversial=self.controversial)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def clip(self, text: str) -> str:
        """`text` cut to its first `max_tokens` guard tokens."""
        if self.tokenizer is None or self.max_tokens is None:
            return text
        ids = self._encode(text)
        if len(ids) <= self.max_tokens:
            return text
        return self._decode(ids[: self.max_tokens])

    def view_text(self, prompt: Any, reasoning: str | None, answer: str, closed: bool = True) -> tuple[str, int]:
        """Reasoning and answer joined, cut to `max_tokens` guard tokens from the front of the reasoning."""
        if self.tokenizer is None:
            return super().view_text(prompt, reasoning, answer, closed)
        return fit_joined(reasoning, answer, closed, self.max_tokens, self._encode, self._decode)

    def build_prompt(self, prompt: str, response: str | None, kind: str = "answer") -> str:
        """The guard's input text for one prompt and its response (`None`: prompt moderation), the response clipped
        (`kind="answer_reasoning"`: the reasoning cut from its front, the answer kept)."""
        if response is not None:
            if kind == "answer_reasoning":
                response = self.view_text(prompt, *split_joined(response))[0]
            else:
                response = self.clip(response)
        return self.format.build(self.tokenizer, user_text(prompt), response, self.categories)

    def _generate(self, texts: list[str]) -> list[str]:
        if self.generate_fn is not None:
            return list(self.generate_fn(texts))
        from ..generation import GenerationArguments, generate_responses_from_texts

        # Greedy: a verdict is read, not sampled
        generation = GenerationArguments(
            backend=self.backend, max_new_tokens=self.max_new_tokens, generation_batch_size=self.batch_size
        )
        return generate_responses_from_texts(
            self.model,
            self.tokenizer,
            texts,
            generation=generation,
            show_progress=False,
            vllm_kwargs=self.vllm_kwargs,
        )

    def _run(self, inputs: list[str], target: str) -> list[Verdict]:
        outputs = self._generate(inputs)
        if len(outputs) != len(inputs):
            raise RuntimeError(f"The guard returned {len(outputs)} outputs for {len(inputs)} inputs.")
        return [self.parse(output, target) for output in outputs]

    def _judge(self, prompts: list[Any], texts: list[str], kind: str) -> list[Verdict]:
        verdicts = self._run([self.build_prompt(p, t, kind) for p, t in zip(prompts, texts)], "response")
        if self.refusal_fallback is not None:
            missing = [i for i, v in enumerate(verdicts) if v.refusal is None]
            if missing:
                fallback = self.refusal_fallback.judge(
                    [prompts[i] for i in missing], [texts[i] for i in missing], kind=kind
                )
                for i, extra in zip(missing, fallback):
                    verdicts[i].refusal = extra.refusal
        return verdicts

    def judge_prompts(self, prompts: Sequence[Any]) -> list[Verdict]:
        """Prompt moderation: `harmful` says whether each prompt (its last user turn) is harmful, in the guard's own
        judgment (Llama Guard's `User` assessment, Qwen3Guard's user branch, WildGuard's `Harmful request`)."""
        prompts = list(prompts)
        if not prompts:
            return []
        return self._run([self.build_prompt(p, None) for p in prompts], "prompt")

    def describe(self) -> dict[str, Any]:
        description = {
            "name": self.name,
            "model": self.name_or_path,
            "format": self.guard_format,
            "max_tokens": self.max_tokens,
            "refusal_fallback": None if self.refusal_fallback is None else self.refusal_fallback.describe(),
        }
        # Only where they apply, so that the other formats' cache keys stay as they were
        if self.guard_format == "qwen3guard":
            description["controversial"] = self.controversial
        if self.categories is not None:
            description["categories"] = self.categories
        return description


class GuardStepJudge(StepJudge):
    """A guard model as step judge: the conversation (user prompt, assistant = reasoning prefix up to and including
    the step, after the context passed to `score`) is rendered as [`GuardJudge`] renders an answer (the format's
    builder, the prefix not clipped: the step is at its end), the guard generates its verdict, and a step scores 1.0
    when the format's parser says harmful (Llama Guard `unsafe`, Qwen3Guard `Unsafe` and by default `Controversial`,
    WildGuard `Harmful response: yes`). An unparsed verdict is no evidence of compliance (0.0).

    Args:
        model: The guard model.
        tokenizer: Its tokenizer (with the guard's chat template where its format uses one).
        unsafe_pattern (`str`, *optional*): Regex on the verdict meaning "unsafe", instead of the guard's parser.
        max_new_tokens (`int`, *optional*, defaults to `16`): Length of the verdict.
        batch_size (`int`, *optional*, defaults to `8`): Generation batch size.
        generate_fn (`Callable`, *optional*): `(model, tokenizer, texts, **kwargs) -> list[str]`; defaults to
            `trl_presafety.generation.generate_responses_from_texts` (the generation backend of the package).
        guard_format (`str`, *optional*, defaults to `"auto"`): As in [`GuardJudge`].
        controversial (`str`, *optional*, defaults to `"unsafe"`), categories (`dict`, *optional*): As in
            [`GuardJudge`].
        name_or_path (`str`, *optional*): The guard's name, for `guard_format="auto"` (defaults to the model's path
            or the tokenizer's).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        unsafe_pattern: str | None = None,
        max_new_tokens: int = 16,
        batch_size: int = 8,
        threshold: float = 0.5,
        generate_fn: Callable[..., list[str]] | None = None,
        guard_format: str = "auto",
        controversial: str = "unsafe",
        categories: Mapping[str, str] | None = None,
        name_or_path: str | None = None,
    ):
        check_choice("controversial", controversial, CONTROVERSIAL_POLICIES)
        if name_or_path is None:
            name_or_path = model if isinstance(model, str) else getattr(tokenizer, "name_or_path", None)
        self.guard_format = _resolve_logged(guard_format, name_or_path)
        self.format = GUARD_FORMAT_REGISTRY[self.guard_format]
        self.categories = check_categories(self.format, categories)
        if self.format.uses_chat_template and getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(
                f"The guard's tokenizer has no chat template; GuardStepJudge renders conversations with it "
                f"(guard_format={self.guard_format!r})."
            )
        self.model, self.tokenizer, self.threshold = model, tokenizer, threshold
        self.unsafe = None if unsafe_pattern is None else compile_patterns([unsafe_pattern], "unsafe_pattern")[0]
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.generate_fn = generate_fn or default_generate
        self.controversial = controversial

    def verdicts_to_scores(self, verdicts: Sequence[str]) -> list[float]:
        if self.unsafe is not None:
            return [1.0 if self.unsafe.search(v) else 0.0 for v in verdicts]
        # A malformed verdict (harmful=None) is no evidence of compliance
        parse = self.format.parse
        return [
            1.0 if parse(v, target="response", controversial=self.controversial).harmful else 0.0 for v in verdicts
        ]

    def score(
        self, prompts: Sequence[Any], steps: Sequence[Sequence[str]], contexts: Sequence[str] | None = None
    ) -> list[list[float]]:
        texts = []
        contexts = contexts or [None] * len(steps)
        for prompt, trace, context in zip(prompts, steps, contexts, strict=True):
            for i in range(len(trace)):
                prefix = prefix_text(trace, i + 1, context)
                texts.append(self.format.build(self.tokenizer, user_text(prompt), prefix, self.categories))
        verdicts = (
            self.generate_fn(
                self.model,
                self.tokenizer,
                texts,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                batch_size=self.batch_size,
            )
            if texts
            else []
        )
        return regroup(self.verdicts_to_scores(verdicts), steps)
