# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Data builders of the related methods: IPO preference pairs and AltTrain SFT data (their step judges are in
`trl_presafety.judges`).

The bundled tiny datasets live under `trl_presafety/data/tiny/` (see `build_tiny.py`).
"""

from .alttrain import AltTrainConfig, build_alttrain_dataset, format_alttrain_example, restructure_reasoning
from .ipo import IPOPairBuilder, build_ipo_pairs
from .ipo_config import DEFAULT_TRIGGERS, IPOConfig


__all__ = [
    "DEFAULT_TRIGGERS",
    "AltTrainConfig",
    "IPOConfig",
    "IPOPairBuilder",
    "build_alttrain_dataset",
    "build_ipo_pairs",
    "format_alttrain_example",
    "restructure_reasoning",
]
