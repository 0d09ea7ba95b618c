# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The two kinds of judges: answer judges give a [`Verdict`] per text (and P(refusal) per answer), step judges a
compliance score per reasoning step and the first compliance step of a trace."""

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any


# The think tags of `trl_presafety.reasoning` (not imported: it pulls in transformers, which the judges do not need)
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass
class Verdict:
    """What a judge says about one text.

    `refusal` / `harmful` are `None` when the judge could not tell (e.g. unparseable guard output, or a Llama-Guard
    verdict, which says nothing about refusal); `error` then says why. `score` is the judge's P(refusal) or
    P(harmful) when it has one. `unparsed` marks guard output that could not be read (counted as unjudged, never as
    safe); `details` holds the guard's own fields (Qwen3Guard's `safety` / `refusal`, WildGuard's three answers).
    `degenerate` says why the text was not judged at all (`"empty"`, `"repeated_tags"`: see
    `trl_presafety.degenerate`): such a text is neither a refusal nor a compliance, and its `refusal` / `harmful` are
    `None`.
    """

    refusal: bool | None
    harmful: bool | None
    score: float | None = None
    raw: str | None = None
    error: str | None = None
    categories: list[str] | None = None
    unparsed: bool = False
    details: dict[str, Any] | None = None
    degenerate: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The "answer + reasoning" view: the judge reads the trace and the answer as one response, the way STAR-1, SafeChain
# (`--part response`) and Qwen3Guard's evaluation pass a reasoning model's output to their judges
def join_reasoning_answer(reasoning: str | None, answer: str, closed: bool = True) -> str:
    """The reasoning and the answer as one response: `<think>\\n{reasoning}\\n</think>\\n\\n{answer}` (an unclosed
    trace: `<think>\\n{reasoning}`); the answer alone when there is no reasoning.

    Example:
    ```python
    >>> join_reasoning_answer("The user wants X.", "I can't help.")
    '<think>\\nThe user wants X.\\n</think>\\n\\nI can't help.'
    ```
    """
    if not reasoning:
        return answer
    text = f"{THINK_OPEN}\n{reasoning}"
    return f"{text}\n{THINK_CLOSE}\n\n{answer}" if closed else text


def split_joined(text: str) -> tuple[str | None, str, bool]:
    """(reasoning, answer, closed) of a text written by [`join_reasoning_answer`]; a text without the opening tag is
    an answer alone."""
    opening = f"{THINK_OPEN}\n"
    if not text.startswith(opening):
        return None, text, True
    body = text[len(opening) :]
    closing = f"\n{THINK_CLOSE}\n\n"
    if closing not in body:
        return body, "", False
    reasoning, _, answer = body.rpartition(closing)
    return reasoning, answer, True


def fit_joined(
    reasoning: str | None,
    answer: str,
    closed: bool,
    max_tokens: int | None,
    encode: Callable[[str], list[int]],
    decode: Callable[[list[int]], str],
    join: Callable[[str | None, str, bool], str] = join_reasoning_answer,
) -> tuple[str, int]:
    """The joined text cut to `max_tokens` tokens keeping the answer: the reasoning loses tokens from its front
    (HarmBench's classifier clips the end at 512 tokens, so a long trace crowds the answer out; here the answer is
    kept whole and the end of the trace, next to it, survives). Returns the text and how many reasoning tokens were
    dropped. An answer longer than the budget alone keeps its first `max_tokens` tokens and no reasoning. `join`
    writes the two parts as one text (a judge that strips think tags needs another)."""
    text = join(reasoning, answer, closed)
    if max_tokens is None or not reasoning or len(encode(text)) <= max_tokens:
        return text, 0
    reasoning_ids = encode(reasoning)
    # What the answer and the tags take; the whole text does not fit, so at least one reasoning token goes
    keep = min(max_tokens - (len(encode(join("x", answer, closed))) - len(encode("x"))), len(reasoning_ids) - 1)
    # Tokens do not add up exactly across a cut: shorten until the re-encoded text fits
    while keep > 0:
        text = join(decode(reasoning_ids[len(reasoning_ids) - keep :]), answer, closed)
        overflow = len(encode(text)) - max_tokens
        if overflow <= 0:
            return text, len(reasoning_ids) - keep
        keep -= overflow
    answer_ids = encode(answer)
    return (decode(answer_ids[:max_tokens]) if len(answer_ids) > max_tokens else answer), len(reasoning_ids)


class Judge:
    """Answer judges: `judge(prompts, texts)` -> one [`Verdict`] per text; `predict_proba(prompts, answers)` ->
    P(refusal) per answer. Subclasses implement `_judge`.

    The evaluation reads the verdicts (refusal, harmfulness, errors); IPO, AltTrain, the GRPO rewards and the
    continuation ratio read P(refusal), the interface of `SafetyDecisionClassifier`, which can therefore stand where
    only P(refusal) is read.
    """

    name = "judge"

    def judge(self, prompts: Sequence[Any], texts: Sequence[str], kind: str = "answer") -> list[Verdict]:
        """Verdicts for `texts` (answers, or reasoning traces with `kind="reasoning"`) to `prompts`.

        An empty or whitespace-only text, or one with think tags where none belong, is not shown to the judge (a cue
        judge would find no refusal phrase in it and call it compliance; a classifier would read the prompt): its
        verdict has `degenerate` set and `refusal` / `harmful` `None`, for every judge.
        """
        from ..degenerate import degenerate_text

        if len(prompts) != len(texts):
            raise ValueError(f"{len(prompts)} prompts but {len(texts)} texts: pass one prompt per text.")
        if not texts:
            return []
        reasons = [degenerate_text(text, kind) for text in texts]
        keep = [i for i, reason in enumerate(reasons) if reason is None]
        judged = iter(self._judge([prompts[i] for i in keep], [texts[i] for i in keep], kind) if keep else [])
        return [
            next(judged) if reason is None else Verdict(refusal=None, harmful=None, degenerate=reason)
            for reason in reasons
        ]

    def _judge(self, prompts: list[Any], texts: list[str], kind: str) -> list[Verdict]:
        raise NotImplementedError

    def predict_proba(self, prompts: Sequence[Any], answers: Sequence[str], **kwargs: Any) -> list[float]:
        """P(refusal) of each answer: 1.0 for a refusal verdict, else 0.0 (also when the judge could not tell)."""
        return [1.0 if verdict.refusal else 0.0 for verdict in self.judge(prompts, answers)]

    def view_text(self, prompt: Any, reasoning: str | None, answer: str, closed: bool = True) -> tuple[str, int]:
        """The text this judge reads for the "answer + reasoning" view, and how many reasoning tokens were dropped to
        fit its input (0 for a judge without a length limit). Judges with a limit keep the answer and cut the
        reasoning from the front ([`fit_joined`])."""
        return join_reasoning_answer(reasoning, answer, closed), 0

    def describe(self) -> dict[str, Any]:
        """What identifies this judge in a report and in the judgment cache."""
        return {"name": self.name}


# The protocol of answer judges, under the name the data builders and rewards used for it
AnswerJudge = Judge


class StepJudge:
    """Step judges: a compliance score per step, and the first step reaching `threshold`.

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


def default_generate(model: Any, tokenizer: Any, texts: list[str], **kwargs: Any) -> list[str]:
    """The generation of the step judges that generate (`generate_fn` replaces it): the package's backend."""
    from ..generation import generate_responses_from_texts

    return generate_responses_from_texts(model, tokenizer, texts, **kwargs)


def regroup(flat: Sequence[float], steps: Sequence[Sequence[str]]) -> list[list[float]]:
    """Per-trace score lists from the scores of all steps of all traces, in order."""
    scores, offset = [], 0
    for trace in steps:
        scores.append(list(flat[offset : offset + len(trace)]))
        offset += len(trace)
    return scores
