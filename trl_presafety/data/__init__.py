# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Data builders of the related methods: IPO preference pairs and AltTrain SFT data (their step judges, in
`trl_presafety.judges`, are re-exported here).

The bundled tiny datasets live under `trl_presafety/data/tiny/` (see `build_tiny.py`).
"""

from ..judges import (
    COMPLIANCE_CUES,
    REFUSAL_CUES,
    ClassifierStepJudge,
    ContinuationRatioStepJudge,
    CueStepJudge,
    GuardStepJudge,
    RefusalCueJudge,
    Step,
    StepJudge,
    build_step_judge,
    split_steps,
)
from .alttrain import AltTrainConfig, build_alttrain_dataset, format_alttrain_example, restructure_reasoning
from .ipo import DEFAULT_TRIGGERS, IPOConfig, IPOPairBuilder, build_ipo_pairs, reasoning_start_text


__all__ = [
    "COMPLIANCE_CUES",
    "DEFAULT_TRIGGERS",
    "REFUSAL_CUES",
    "AltTrainConfig",
    "ClassifierStepJudge",
    "ContinuationRatioStepJudge",
    "CueStepJudge",
    "GuardStepJudge",
    "IPOConfig",
    "IPOPairBuilder",
    "RefusalCueJudge",
    "Step",
    "StepJudge",
    "build_alttrain_dataset",
    "build_ipo_pairs",
    "build_step_judge",
    "format_alttrain_example",
    "reasoning_start_text",
    "restructure_reasoning",
    "split_steps",
]
