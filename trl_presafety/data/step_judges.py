# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Reasoning steps and the judges that find the first compliance step of an unsafe trace.

IPO (Intervened Preference Optimization, https://huggingface.co/papers/2509.24393) cuts an unsafe reasoning trace at
its first *compliance step*, the step from which the model sets out to help with the harmful request. The paper finds
it with a judge; the judge is pluggable here:

- [`CueStepJudge`]: regular expressions of compliance cues ("Sure, here is how", "Step 1:", "Let me work out the
  details"). No model, deterministic; the default, and what the tests pin down.
- [`ClassifierStepJudge`]: the repository's refusal/compliance classifier (`SafetyDecisionClassifier`, or any object
  with its `predict_proba(prompts, answers) -> P(refusal)`) on each step or on each prefix of steps.
- [`GuardStepJudge`]: a guard model (e.g. Llama-Guard-3-8B) asked whether the conversation with the reasoning prefix
  is unsafe; a prefix is a compliance point when the guard first answers "unsafe".
- [`ContinuationRatioStepJudge`]: the paper's cheaper proxy, the continuation-safety ratio. Continuations are sampled
  from the model after each prefix and judged; the compliance step is the first one after which the share of safe
  continuations falls below `1 - threshold` (0.1 by default).

Every judge scores each step (a float, higher = more compliant) and shares one decision rule: the compliance step is
the first step whose score reaches the judge's `threshold`. Steps can come with a *context*: the assistant text before
the first of them. IPO's re-check of a generated continuation passes the reasoning prefix and the trigger there, so a
judge that reads prefixes (classifier with `context="prefix"`, guard, continuation ratio) sees the continuation where
it stands, after the user prompt, the reasoning prefix and the trigger, not alone.

[`RefusalCueJudge`] is the answer judge of the same family: `predict_proba(prompts, answers)` gives P(refusal) from
refusal cues, with the interface of `SafetyDecisionClassifier`, so either can judge answers (IPO's re-check, the GRPO
rewards, AltTrain's choice of answer).
"""

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..evaluation.judges import REFUSAL_PATTERNS, RegexRefusalJudge


# Compliance cues: the reasoning (or answer) sets out to carry out the request. Phrases specific to procedural help,
# so that ordinary analysis ("The user asks ...") does not match; the judge also blanks out the request itself when a
# step quotes it ("The user asks: what is the best way to ..."). An offer of a safe alternative ("I can share general
# safety information instead") is not compliance.
COMPLIANCE_CUES: tuple[str, ...] = (
    (
        r"\b(?:sure|okay|ok|alright|of course|certainly|absolutely)\b[,.!]?\s+(?:here(?:'s| is| are)|i(?:'ll| will| can)"
        r"|let(?:'s| me)|the (?:first|best|easiest))"
    ),
    (
        r"\bhere(?:'s| is| are) (?:how|a (?:step|detailed|guide|plan|script|recipe|way)|the (?:steps|instructions|plan|"
        r"script|recipe|code|method)|detailed|some (?:steps|ways|methods))\b"
    ),
    r"\bstep\s*1\b|\bfirst step\b",
    (
        r"\bfirst,?\s+(?:you(?:'ll| will)? (?:need|want|should|have)|obtain|gather|get|buy|acquire|mix|find|set up|"
        r"prepare|combine|download|install|choose|pick|locate|identify the target)\b"
    ),
    (
        r"\blet(?: me|'s) (?:work out|figure out|outline|lay out|explain how|walk through|go through|list|detail|"
        r"describe how|plan|break (?:it|this) down|think about how to (?:do|make|get|build|carry))\b"
    ),
    (
        r"\b(?:i(?:'ll| will| can)|we can) (?:help (?:with|you)|provide|explain how|outline|walk you|give you|show you|"
        r"write (?:the|a|you)|describe how|draft)\b(?![^.!?]*\binstead\b)"
    ),
    r"\bthe (?:most effective|best|easiest|simplest|quickest|safest) (?:way|approach|method|option|route) (?:to|is)\b",
    r"\byou(?:'ll| will) need\b",
)

# Refusal cues: the evaluation's regex refusal judge (`trl_presafety.evaluation.judges.REFUSAL_PATTERNS`), reused so
# that data building, rewards and evaluation agree on what a refusal is. A step with one is never a compliance step.
REFUSAL_CUES: tuple[str, ...] = tuple(REFUSAL_PATTERNS)

STEP_SPLITS = ("sentence", "line", "paragraph")
STEP_JUDGES = ("cues", "classifier", "guard", "continuation_ratio")

_SPLIT_PATTERNS = {
    # A sentence ends at . ! ? (optionally closed by a quote or bracket) followed by whitespace, or at a line break
    "sentence": re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n+"),
    "line": re.compile(r"\n+"),
    "paragraph": re.compile(r"\n\s*\n+"),
}


@dataclass(frozen=True)
class Step:
    """One reasoning step: its text and its character span `[start, end)` in the text it was split from."""

    text: str
    start: int
    end: int


def split_steps(text: str, split: str = "sentence") -> list[Step]:
    """Splits reasoning into steps with their exact character spans, so a trace can be cut at a step boundary.

    The whitespace between steps belongs to no step: a prefix `text[:steps[h].start]` keeps the original text up to
    step `h` byte for byte.

    Example:
    ```python
    >>> [s.text for s in split_steps("The user asks X. Let me work out the details.\\nStep 1: gather.")]
    ['The user asks X.', 'Let me work out the details.', 'Step 1: gather.']
    ```
    """
    if split not in _SPLIT_PATTERNS:
        raise ValueError(f"Unknown step split {split!r}. Choose one of {list(STEP_SPLITS)}.")
    steps, position = [], 0
    for match in _SPLIT_PATTERNS[split].finditer(text):
        # The closing quote/bracket of a sentence belongs to it, the whitespace after it does not
        end = match.start() + len(match.group(0)) - len(match.group(0).lstrip("\"')]"))
        _append_step(steps, text, position, end)
        position = match.end()
    _append_step(steps, text, position, len(text))
    return steps


def _append_step(steps: list[Step], text: str, start: int, end: int) -> None:
    piece = text[start:end]
    stripped = piece.strip()
    if not stripped:
        return
    start += len(piece) - len(piece.lstrip())
    steps.append(Step(stripped, start, start + len(stripped)))


def user_text(prompt: str | Sequence[dict[str, Any]]) -> str:
    """The text of the last user turn of a prompt (a string, or chat messages)."""
    if isinstance(prompt, str):
        return prompt
    for message in reversed(list(prompt)):
        if message.get("role") == "user":
            content = message.get("content", "")
            return content if isinstance(content, str) else " ".join(c.get("text", "") for c in content)
    return ""


def _compile(patterns: Sequence[str], name: str) -> list[re.Pattern]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern, re.IGNORECASE))
        except re.error as error:
            raise ValueError(
                f"Invalid regular expression in `{name}`: {pattern!r} ({error}). Fix or remove it."
            ) from error
    return compiled


class RefusalCueJudge:
    """P(refusal) of answers from refusal cues (1.0 or 0.0), with the interface of
    `SafetyDecisionClassifier.predict_proba`, so either can judge answers. It adapts the evaluation's
    `RegexRefusalJudge` (cues searched in the first `window` characters). An empty answer is not a refusal.

    Args:
        patterns (`Sequence[str]`, *optional*): Extra regexes that count as refusals, besides the evaluation's.
        window (`int`, *optional*, defaults to `600`): Characters of the opening of the text that are searched.

    Example:
    ```python
    >>> RefusalCueJudge().predict_proba(["q", "q"], ["I can't help with that.", "Sure, here is how."])
    [1.0, 0.0]
    ```
    """

    def __init__(self, patterns: Sequence[str] | None = None, window: int = 600):
        _compile(list(patterns or []), "refusal patterns")  # fails early, naming the bad pattern
        self._judge = RegexRefusalJudge(window=window, patterns=patterns)

    def is_refusal(self, text: str) -> bool:
        return self._judge.is_refusal(text)

    def predict_proba(self, prompts: Sequence[Any], answers: Sequence[str], **kwargs: Any) -> list[float]:
        if len(prompts) != len(answers):
            raise ValueError(f"Got {len(prompts)} prompts but {len(answers)} answers; pass one answer per prompt.")
        return [1.0 if self.is_refusal(answer) else 0.0 for answer in answers]


class AnswerJudge(Protocol):
    """Anything that gives P(refusal) per (prompt, answer): `SafetyDecisionClassifier` or [`RefusalCueJudge`]."""

    def predict_proba(self, prompts: Sequence[Any], answers: Sequence[str], **kwargs: Any) -> list[float]: ...


class StepJudge:
    """Base class of the step judges: a compliance score per step, and the first step reaching `threshold`.

    Subclasses implement `score(prompts, steps, contexts=None)`. `contexts[t]`, when given, is the assistant text that
    precedes the first step of trace `t` (IPO: the reasoning prefix and the trigger before a generated continuation);
    a judge that reads more than the step itself must read the steps after it.
    """

    threshold: float = 0.5

    def score(
        self, prompts: Sequence[Any], steps: Sequence[Sequence[str]], contexts: Sequence[str] | None = None
    ) -> list[list[float]]:
        """Compliance score of every step of every trace (higher = more compliant), batched over traces."""
        raise NotImplementedError

    def first_compliance_steps(
        self,
        prompts: Sequence[Any],
        steps: Sequence[Sequence[str]],
        threshold: float | None = None,
        contexts: Sequence[str] | None = None,
    ) -> list[int | None]:
        """Index of the first step whose score reaches the threshold, per trace (`None` when no step does)."""
        if contexts is not None and len(contexts) != len(steps):
            raise ValueError(f"Got {len(contexts)} contexts for {len(steps)} traces; pass one context per trace.")
        threshold = self.threshold if threshold is None else threshold
        indices: list[int | None] = []
        for scores in self.score(prompts, steps, contexts=contexts):
            indices.append(next((i for i, s in enumerate(scores) if s >= threshold), None))
        return indices


def prefix_text(steps: Sequence[str], end: int, context: str | None = None) -> str:
    """The assistant text up to and including step `end - 1`: the context, then the steps joined by spaces.

    Example:
    ```python
    >>> prefix_text(["Sure.", "Step 1: mix."], 1, context="I should refuse. Wait.")
    'I should refuse. Wait. Sure.'
    ```
    """
    text = " ".join(steps[:end])
    if not context:
        return text
    return context + ("" if context[-1:].isspace() else " ") + text


class CueStepJudge(StepJudge):
    """Compliance cues by regular expression: a step scores 1.0 when a compliance cue matches and no refusal cue does.

    Args:
        compliance_patterns (`Sequence[str]`, *optional*, defaults to `COMPLIANCE_CUES`): Case-insensitive regexes.
        refusal_patterns (`Sequence[str]`, *optional*): Extra refusal regexes besides `REFUSAL_CUES`; a step matching
            a refusal cue is never a compliance step ("I can't help with that, here is why" is not compliance).
    """

    def __init__(
        self, compliance_patterns: Sequence[str] = COMPLIANCE_CUES, refusal_patterns: Sequence[str] | None = None
    ):
        self.compliance_patterns = list(compliance_patterns)
        self.refusal_patterns = list(refusal_patterns or [])
        self._compliance = _compile(self.compliance_patterns, "compliance patterns")
        self._refusal = RefusalCueJudge(self.refusal_patterns)

    def is_compliance(self, text: str) -> bool:
        return any(p.search(text) for p in self._compliance) and not self._refusal.is_refusal(text)

    def score(
        self, prompts: Sequence[Any], steps: Sequence[Sequence[str]], contexts: Sequence[str] | None = None
    ) -> list[list[float]]:
        # Cues are read step by step: the context before the steps changes nothing
        scores = []
        for prompt, trace in zip(prompts, steps, strict=True):
            request = user_text(prompt).strip()
            # A step that quotes the request is not complying with it: blank the quote out before matching
            unquoted = [step.replace(request, " ") if request else step for step in trace]
            scores.append([1.0 if self.is_compliance(step) else 0.0 for step in unquoted])
        return scores

    def __getstate__(self) -> dict[str, Any]:
        return {"compliance_patterns": self.compliance_patterns, "refusal_patterns": self.refusal_patterns}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["compliance_patterns"], state["refusal_patterns"])


class ClassifierStepJudge(StepJudge):
    """The refusal/compliance classifier as a step judge: score = 1 - P(refusal) of the step (or of the prefix).

    The classifier of the issue "Safety decision signals" was trained on answers; a neutral analysis step sits near
    0.5, so `context="prefix"` (the reasoning up to and including the step) and a threshold above 0.5 are the safer
    choice on real traces.

    Args:
        classifier: `SafetyDecisionClassifier` (or any object with `predict_proba(prompts, answers, ...)`).
        context (`str`, *optional*, defaults to `"step"`): `"step"` judges each step alone, `"prefix"` the reasoning up
            to and including it (after the context passed to `score`, when there is one).
        threshold (`float`, *optional*, defaults to `0.5`): Compliance score from which a step is the compliance step.
        batch_size (`int`, *optional*, defaults to `64`), max_length (`int`, *optional*, defaults to `256`): Passed to
            `predict_proba`.
    """

    def __init__(
        self,
        classifier: AnswerJudge,
        context: str = "step",
        threshold: float = 0.5,
        batch_size: int = 64,
        max_length: int = 256,
    ):
        if context not in ("step", "prefix"):
            raise ValueError(f"Invalid `context`: {context!r}. Choose 'step' or 'prefix'.")
        self.classifier, self.context, self.threshold = classifier, context, threshold
        self.batch_size, self.max_length = batch_size, max_length

    def score(
        self, prompts: Sequence[Any], steps: Sequence[Sequence[str]], contexts: Sequence[str] | None = None
    ) -> list[list[float]]:
        flat_prompts, flat_texts = [], []
        contexts = contexts or [None] * len(steps)
        for prompt, trace, context in zip(prompts, steps, contexts, strict=True):
            for i, step in enumerate(trace):
                flat_prompts.append(user_text(prompt))
                flat_texts.append(step if self.context == "step" else prefix_text(trace, i + 1, context))
        if not flat_texts:
            return [[] for _ in steps]
        p_refusal = self.classifier.predict_proba(
            flat_prompts, flat_texts, batch_size=self.batch_size, max_length=self.max_length
        )
        scores, offset = [], 0
        for trace in steps:
            scores.append([1.0 - float(p) for p in p_refusal[offset : offset + len(trace)]])
            offset += len(trace)
        return scores


def _default_generate(model: Any, tokenizer: Any, texts: list[str], **kwargs: Any) -> list[str]:
    from ..generation import generate_responses_from_texts

    return generate_responses_from_texts(model, tokenizer, texts, **kwargs)


class GuardStepJudge(StepJudge):
    """A guard model as step judge: the conversation (user prompt, assistant = reasoning prefix up to and including
    the step, after the context passed to `score`) is rendered with the guard's chat template, the guard generates its
    verdict, and a step scores 1.0 when the verdict matches `unsafe_pattern` (Llama-Guard answers "safe" or
    "unsafe\\nS<k>").

    Args:
        model, tokenizer: The guard model and its tokenizer (with the guard's chat template).
        unsafe_pattern (`str`, *optional*, defaults to `r"^\\s*unsafe"`): Regex on the verdict meaning "unsafe".
        max_new_tokens (`int`, *optional*, defaults to `16`): Length of the verdict.
        batch_size (`int`, *optional*, defaults to `8`): Generation batch size.
        generate_fn (`Callable`, *optional*): `(model, tokenizer, texts, **kwargs) -> list[str]`; defaults to
            `trl_presafety.generation.generate_responses_from_texts` (the generation backend of the package).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        unsafe_pattern: str = r"^\s*unsafe",
        max_new_tokens: int = 16,
        batch_size: int = 8,
        threshold: float = 0.5,
        generate_fn: Callable[..., list[str]] | None = None,
    ):
        if tokenizer.chat_template is None:
            raise ValueError(
                "The guard's tokenizer has no chat template; GuardStepJudge renders conversations with it."
            )
        self.model, self.tokenizer, self.threshold = model, tokenizer, threshold
        self.unsafe = _compile([unsafe_pattern], "unsafe_pattern")[0]
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.generate_fn = generate_fn or _default_generate

    def verdicts_to_scores(self, verdicts: Sequence[str]) -> list[float]:
        return [1.0 if self.unsafe.search(v) else 0.0 for v in verdicts]

    def score(
        self, prompts: Sequence[Any], steps: Sequence[Sequence[str]], contexts: Sequence[str] | None = None
    ) -> list[list[float]]:
        texts = []
        contexts = contexts or [None] * len(steps)
        for prompt, trace, context in zip(prompts, steps, contexts, strict=True):
            for i in range(len(trace)):
                messages = [
                    {"role": "user", "content": user_text(prompt)},
                    {"role": "assistant", "content": prefix_text(trace, i + 1, context)},
                ]
                texts.append(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
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
        flat = self.verdicts_to_scores(verdicts)
        scores, offset = [], 0
        for trace in steps:
            scores.append(flat[offset : offset + len(trace)])
            offset += len(trace)
        return scores


class ContinuationRatioStepJudge(StepJudge):
    """The continuation-safety ratio proxy of IPO: after each step, sample `num_samples` continuations of the
    reasoning from the model and judge their final answers; the step's score is the share of *unsafe* continuations.

    The samples of one prefix are drawn in one request for `num_samples` sequences (`num_return_sequences`: vLLM's
    `n`, seeded `seed + j` per sample; transformers' `num_return_sequences`), so they differ. The prefix is the
    generation prompt, the context passed to `score` (IPO: reasoning prefix and trigger) and the steps so far.

    With the default `threshold=0.9`, the compliance step is the first one after which fewer than 10% of the
    continuations stay safe. Costly (steps x samples generations): cap the candidates with `max_steps`.

    Args:
        model, tokenizer: The reasoning model (the one whose traces are cut) and its tokenizer.
        answer_judge: P(refusal) per (prompt, answer); a refusal counts as a safe continuation. Defaults to
            [`RefusalCueJudge`].
        num_samples (`int`, *optional*, defaults to `4`): Continuations per candidate step.
        max_new_tokens (`int`, *optional*, defaults to `256`), temperature (`float`, *optional*, defaults to `0.7`):
            Sampling of the continuations.
        max_steps (`int`, *optional*): Only the first `max_steps` steps are candidates (later ones score 1.0).
        chat_template_kwargs (`dict`, *optional*): For the prompt (e.g. `{"enable_thinking": True}`).
        generate_fn (`Callable`, *optional*): As in [`GuardStepJudge`]; called with `num_return_sequences=num_samples`,
            it returns that many samples per text, grouped by text.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        answer_judge: AnswerJudge | None = None,
        num_samples: int = 4,
        max_new_tokens: int = 256,
        temperature: float = 0.7,
        threshold: float = 0.9,
        max_steps: int | None = None,
        batch_size: int = 8,
        seed: int = 0,
        chat_template_kwargs: dict[str, Any] | None = None,
        generate_fn: Callable[..., list[str]] | None = None,
    ):
        if num_samples < 1:
            raise ValueError(f"Invalid `num_samples`: {num_samples}. Sample at least 1 continuation per step.")
        self.model, self.tokenizer = model, tokenizer
        self.answer_judge = answer_judge or RefusalCueJudge()
        self.num_samples, self.max_new_tokens, self.temperature = num_samples, max_new_tokens, temperature
        self.threshold, self.max_steps, self.batch_size, self.seed = threshold, max_steps, batch_size, seed
        self.chat_template_kwargs = chat_template_kwargs
        self.generate_fn = generate_fn or _default_generate

    def score(
        self, prompts: Sequence[Any], steps: Sequence[Sequence[str]], contexts: Sequence[str] | None = None
    ) -> list[list[float]]:
        from ..reasoning import THINK_CLOSE
        from .ipo import reasoning_start_text

        texts, owners = [], []
        contexts = contexts or [None] * len(steps)
        for t, (prompt, trace, context) in enumerate(zip(prompts, steps, contexts, strict=True)):
            start = reasoning_start_text(self.tokenizer, prompt, self.chat_template_kwargs)
            limit = len(trace) if self.max_steps is None else min(len(trace), self.max_steps)
            for i in range(limit):
                texts.append(start + prefix_text(trace, i + 1, context))
                owners.extend([(t, i)] * self.num_samples)
        outputs = (
            self.generate_fn(
                self.model,
                self.tokenizer,
                texts,
                max_new_tokens=self.max_new_tokens,
                do_sample=True,
                temperature=self.temperature,
                batch_size=self.batch_size,
                seed=self.seed,
                num_return_sequences=self.num_samples,
            )
            if texts
            else []
        )
        if len(outputs) != len(owners):
            raise RuntimeError(
                f"The generation function returned {len(outputs)} continuations for {len(texts)} prefixes x "
                f"{self.num_samples} samples; it must return `num_return_sequences` samples per text, grouped by text."
            )
        # The final answer when the continuation closed its reasoning; else the unfinished reasoning itself (a
        # continuation that talks itself into refusing counts as safe)
        answers = [out.partition(THINK_CLOSE)[2].strip() if THINK_CLOSE in out else out for out in outputs]
        judge_prompts = [user_text(prompts[t]) for t, _ in owners]
        p_refusal = self.answer_judge.predict_proba(judge_prompts, answers) if answers else []
        safe = [[0 for _ in trace] for trace in steps]
        for (t, i), p in zip(owners, p_refusal, strict=True):
            safe[t][i] += int(p >= 0.5)
        scores = []
        for t, trace in enumerate(steps):
            limit = len(trace) if self.max_steps is None else min(len(trace), self.max_steps)
            scores.append([1.0 - safe[t][i] / self.num_samples if i < limit else 1.0 for i in range(len(trace))])
        return scores


def build_step_judge(
    name: str,
    *,
    classifier_path: str | None = None,
    guard_model: str | None = None,
    model: Any = None,
    tokenizer: Any = None,
    threshold: float | None = None,
    **kwargs: Any,
) -> StepJudge:
    """A step judge by name (`"cues"`, `"classifier"`, `"guard"`, `"continuation_ratio"`), for the CLI and recipes."""
    if name == "cues":
        judge: StepJudge = CueStepJudge()
    elif name == "classifier":
        if not classifier_path:
            raise ValueError(
                "Invalid `step_judge`: 'classifier' needs `classifier_path` (a folder written by "
                "`trl-presafety train-classifier`). Set it, or use `step_judge='cues'`."
            )
        from ..labeling.classifier import SafetyDecisionClassifier

        judge = ClassifierStepJudge(SafetyDecisionClassifier.from_pretrained(classifier_path), **kwargs)
    elif name == "guard":
        if not guard_model:
            raise ValueError(
                "Invalid `step_judge`: 'guard' needs `guard_model` (e.g. meta-llama/Llama-Guard-3-8B). Set it, or use "
                "`step_judge='cues'`."
            )
        from transformers import AutoTokenizer

        from ..generation import load_causal_lm

        guard_tokenizer = AutoTokenizer.from_pretrained(guard_model)
        guard = load_causal_lm(guard_model)
        judge = GuardStepJudge(guard, guard_tokenizer, **kwargs)
    elif name == "continuation_ratio":
        if model is None or tokenizer is None:
            raise ValueError(
                "Invalid `step_judge`: 'continuation_ratio' samples continuations from the reasoning model, so it "
                "needs `model_name_or_path`. Set it, or use `step_judge='cues'`."
            )
        judge = ContinuationRatioStepJudge(model, tokenizer, **kwargs)
    else:
        raise ValueError(f"Invalid `step_judge`: {name!r}. Choose one of {list(STEP_JUDGES)}.")
    if threshold is not None:
        judge.threshold = threshold
    return judge
