# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Judges of responses and of reasoning steps, shared by the evaluation, the data builders (IPO, AltTrain) and the GRPO
rewards.

- Answer judges ([`Judge`]): `judge(prompts, texts)` -> a [`Verdict`] per text (refusal, harmfulness, score, error);
  `predict_proba(prompts, answers)` -> P(refusal) per answer.
- Step judges ([`StepJudge`]): a compliance score per reasoning step; `first_compliance_steps` gives the first step
  whose score reaches the judge's threshold.

One vocabulary names them: `cues` (regular expressions), `classifier` (the repository's refusal classifier), `guard` (a
guard model), and for steps also `continuation_ratio` (IPO's sampled continuations). The step judges reuse the answer
judges: the refusal cues, the classifier's P(refusal), the guard's prompt and parser.
"""

from .base import AnswerJudge, Judge, StepJudge, Verdict
from .classifier import ClassifierJudge, ClassifierStepJudge
from .continuation import ContinuationRatioStepJudge
from .cues import (
    COMPLIANCE_CUES,
    REASONING_REFUSAL_PATTERNS,
    REFUSAL_CUES,
    REFUSAL_PATTERNS,
    CueStepJudge,
    RefusalCueJudge,
    RegexRefusalJudge,
)
from .guard import (
    GUARD_FORMATS,
    GuardJudge,
    GuardStepJudge,
    detect_guard_format,
    guard_prompt,
    llama_guard_categories,
    parse_llama_guard,
    parse_wildguard,
)
from .registry import JUDGES, STEP_JUDGES, build_step_judge
from .steps import STEP_SPLITS, Step, prefix_text, split_steps, user_text


__all__ = [
    "COMPLIANCE_CUES",
    "GUARD_FORMATS",
    "JUDGES",
    "REASONING_REFUSAL_PATTERNS",
    "REFUSAL_CUES",
    "REFUSAL_PATTERNS",
    "STEP_JUDGES",
    "STEP_SPLITS",
    "AnswerJudge",
    "ClassifierJudge",
    "ClassifierStepJudge",
    "ContinuationRatioStepJudge",
    "CueStepJudge",
    "GuardJudge",
    "GuardStepJudge",
    "Judge",
    "RefusalCueJudge",
    "RegexRefusalJudge",
    "Step",
    "StepJudge",
    "Verdict",
    "build_step_judge",
    "detect_guard_format",
    "guard_prompt",
    "llama_guard_categories",
    "parse_llama_guard",
    "parse_wildguard",
    "prefix_text",
    "split_steps",
    "user_text",
]
