# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The step judges of IPO and the GRPO rewards, now in `trl_presafety.judges`; this module keeps their old import
path."""

from ..judges import (
    COMPLIANCE_CUES,
    REFUSAL_CUES,
    STEP_JUDGES,
    STEP_SPLITS,
    AnswerJudge,
    ClassifierStepJudge,
    ContinuationRatioStepJudge,
    CueStepJudge,
    GuardStepJudge,
    RefusalCueJudge,
    Step,
    StepJudge,
    build_step_judge,
    prefix_text,
    split_steps,
    user_text,
)


__all__ = [
    "COMPLIANCE_CUES",
    "REFUSAL_CUES",
    "STEP_JUDGES",
    "STEP_SPLITS",
    "AnswerJudge",
    "ClassifierStepJudge",
    "ContinuationRatioStepJudge",
    "CueStepJudge",
    "GuardStepJudge",
    "RefusalCueJudge",
    "Step",
    "StepJudge",
    "build_step_judge",
    "prefix_text",
    "split_steps",
    "user_text",
]
