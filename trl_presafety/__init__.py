# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""trl-presafety: pre-CoT safety decision training for large reasoning models, as a plugin for TRL."""

from typing import TYPE_CHECKING

from ._lazy import lazy_exports
from ._logging import quiet_optional_kernel_warning


__version__ = "0.1.0.dev0"

# Before anything imports transformers' Trainer (and through peft, bitsandbytes): see `_logging.py`
quiet_optional_kernel_warning()

# Public names, by the submodule defining them; imported on first access (see `_lazy.py`), so that importing the
# package (and `trl-presafety --help` / `--version`) costs no torch/transformers/trl import
_EXPORTS = {
    "gate": ["SafetyGate"],
    "gate_export": ["export_gate"],
    "gate_calibration": ["calibrate_safety_head"],
    "gate_fitting": ["fit_safety_head"],
    "head_io": ["load_safety_head", "save_safety_head"],
    "modeling": [
        "SafetyHead",
        "SafetyHeadConfig",
        "attach_safety_head",
        "gather_anchor_states",
        "get_safety_head",
        "presafety_loss",
    ],
    "routing": ["RoutedGenerator", "RoutedOutput", "generate_routed"],
    "trainer": [
        "DataCollatorForPreSafetyLanguageModeling",
        "DataCollatorForPreSafetyPreference",
        "PreSafetyArguments",
        "PreSafetyCallback",
        "PreSafetyDPOConfig",
        "PreSafetyDPOTrainer",
        "PreSafetySFTConfig",
        "PreSafetySFTTrainer",
    ],
}

__all__ = [
    "DataCollatorForPreSafetyLanguageModeling",
    "DataCollatorForPreSafetyPreference",
    "PreSafetyArguments",
    "PreSafetyCallback",
    "PreSafetyDPOConfig",
    "PreSafetyDPOTrainer",
    "PreSafetySFTConfig",
    "PreSafetySFTTrainer",
    "RoutedGenerator",
    "RoutedOutput",
    "SafetyGate",
    "SafetyHead",
    "SafetyHeadConfig",
    "attach_safety_head",
    "calibrate_safety_head",
    "export_gate",
    "fit_safety_head",
    "gather_anchor_states",
    "generate_routed",
    "get_safety_head",
    "load_safety_head",
    "presafety_loss",
    "save_safety_head",
]

if TYPE_CHECKING:  # static analyzers and IDEs see the real names
    from .gate import SafetyGate
    from .gate_calibration import calibrate_safety_head
    from .gate_export import export_gate
    from .gate_fitting import fit_safety_head
    from .head_io import load_safety_head, save_safety_head
    from .modeling import (
        SafetyHead,
        SafetyHeadConfig,
        attach_safety_head,
        gather_anchor_states,
        get_safety_head,
        presafety_loss,
    )
    from .routing import RoutedGenerator, RoutedOutput, generate_routed
    from .trainer import (
        DataCollatorForPreSafetyLanguageModeling,
        DataCollatorForPreSafetyPreference,
        PreSafetyArguments,
        PreSafetyCallback,
        PreSafetyDPOConfig,
        PreSafetyDPOTrainer,
        PreSafetySFTConfig,
        PreSafetySFTTrainer,
    )


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
