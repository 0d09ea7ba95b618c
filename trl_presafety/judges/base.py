# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The two kinds of judges: answer judges give a [`Verdict`] per text (and P(refusal) per answer), step judges a
compliance score per reasoning step and the first compliance step of a trace."""

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Verdict:
    """What a judge says about one text.

    `refusal` / `harmful` are `None` when the judge could not tell (e.g. unparseable guard output, or a Llama-Guard
    verdict, which says nothing about refusal); `error` then says why. `score` is the judge's P(refusal) or
    P(harmful) when it has one.
    """

    refusal: bool | None
    harmful: bool | None
    score: float | None = None
    raw: str | None = None
    error: str | None = None
    categories: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Judge:
    """Answer judges: `judge(prompts, texts)` -> one [`Verdict`] per text; `predict_proba(prompts, answers)` ->
    P(refusal) per answer. Subclasses implement `_judge`.

    The evaluation reads the verdicts (refusal, harmfulness, errors); IPO, AltTrain, the GRPO rewards and the
    continuation ratio read P(refusal), the interface of `SafetyDecisionClassifier`, which can therefore stand where
    only P(refusal) is read.
    """

    name = "judge"

    def judge(self, prompts: Sequence[Any], texts: Sequence[str], kind: str = "answer") -> list[Verdict]:
        """Verdicts for `texts` (answers, or reasoning traces with `kind="reasoning"`) to `prompts`."""
        if len(prompts) != len(texts):
            raise ValueError(f"{len(prompts)} prompts but {len(texts)} texts: pass one prompt per text.")
        if not texts:
            return []
        return self._judge(list(prompts), list(texts), kind)

    def _judge(self, prompts: list[Any], texts: list[str], kind: str) -> list[Verdict]:
        raise NotImplementedError

    def predict_proba(self, prompts: Sequence[Any], answers: Sequence[str], **kwargs: Any) -> list[float]:
        """P(refusal) of each answer: 1.0 for a refusal verdict, else 0.0 (also when the judge could not tell)."""
        return [1.0 if verdict.refusal else 0.0 for verdict in self.judge(prompts, answers)]

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
