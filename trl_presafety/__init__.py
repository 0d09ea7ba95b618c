# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""trl-presafety: pre-CoT safety decision training for large reasoning models, as a plugin for TRL."""

import importlib
from typing import TYPE_CHECKING, Any


__version__ = "0.1.0.dev0"

# Public name -> the submodule defining it, imported on first access (PEP 562). Importing the package (and so
# `trl-presafety --help` / `--version`) then costs no torch/transformers/trl import (seconds) and none of their
# import-time warnings; `from trl_presafety import PreSafetySFTTrainer` works as before.
_LAZY_IMPORTS = {
    "PreSafetyCallback": "callbacks",
    "SafetyGate": "gate",
    "SafetyHead": "modeling",
    "SafetyHeadConfig": "modeling",
    "attach_safety_head": "modeling",
    "gather_anchor_states": "modeling",
    "get_safety_head": "modeling",
    "load_safety_head": "modeling",
    "presafety_loss": "modeling",
    "DataCollatorForPreSafetyLanguageModeling": "trainer",
    "DataCollatorForPreSafetyPreference": "trainer",
    "PreSafetyArguments": "trainer",
    "PreSafetyDPOConfig": "trainer",
    "PreSafetyDPOTrainer": "trainer",
    "PreSafetySFTConfig": "trainer",
    "PreSafetySFTTrainer": "trainer",
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
    "SafetyGate",
    "SafetyHead",
    "SafetyHeadConfig",
    "attach_safety_head",
    "gather_anchor_states",
    "get_safety_head",
    "load_safety_head",
    "presafety_loss",
]

if TYPE_CHECKING:  # static analyzers and IDEs see the real names
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


def __getattr__(name: str) -> Any:
    if name not in _LAZY_IMPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY_IMPORTS[name]}", __name__), name)
    globals()[name] = value  # cached: later accesses are plain attribute lookups
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
