# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""trl-presafety: pre-CoT safety decision training for large reasoning models, as a plugin for TRL."""

__version__ = "0.1.0.dev0"

from .callbacks import PreSafetyCallback
from .gate import SafetyGate
from .modeling import (
    SafetyHead,
    SafetyHeadConfig,
    attach_safety_head,
    gather_anchor_states,
    get_safety_head,
    load_safety_head,
    presafety_loss,
)
from .trainer import (
    DataCollatorForPreSafetyLanguageModeling,
    DataCollatorForPreSafetyPreference,
    PreSafetyArguments,
    PreSafetyDPOConfig,
    PreSafetyDPOTrainer,
    PreSafetySFTConfig,
    PreSafetySFTTrainer,
)


__all__ = [
    "DataCollatorForPreSafetyLanguageModeling",
    "DataCollatorForPreSafetyPreference",
    "PreSafetyArguments",
    "PreSafetyCallback",
    "PreSafetyDPOConfig",
    "PreSafetyDPOTrainer",
    "PreSafetySFTConfig",
    "PreSafetySFTTrainer",
    "SafetyGate",
    "SafetyHead",
    "SafetyHeadConfig",
    "attach_safety_head",
    "gather_anchor_states",
    "get_safety_head",
    "load_safety_head",
    "presafety_loss",
]
