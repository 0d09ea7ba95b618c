# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Judges by name, for the CLI and the recipes."""

from typing import Any

from .base import StepJudge
from .classifier import ClassifierStepJudge
from .continuation import ContinuationRatioStepJudge
from .cues import CueStepJudge
from .guard import GuardStepJudge


JUDGES = ("regex", "classifier", "guard")
STEP_JUDGES = ("cues", "classifier", "guard", "continuation_ratio")


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
