# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
from .callbacks import PreSafetyCallback
from .presafety_arguments import PreSafetyArguments
from .presafety_dpo_config import PreSafetyDPOConfig
from .presafety_dpo_trainer import DataCollatorForPreSafetyPreference, PreSafetyDPOTrainer
from .presafety_sft_config import PreSafetySFTConfig
from .presafety_sft_trainer import DataCollatorForPreSafetyLanguageModeling, PreSafetySFTTrainer


__all__ = [
    "DataCollatorForPreSafetyLanguageModeling",
    "DataCollatorForPreSafetyPreference",
    "PreSafetyArguments",
    "PreSafetyCallback",
    "PreSafetyDPOConfig",
    "PreSafetyDPOTrainer",
    "PreSafetySFTConfig",
    "PreSafetySFTTrainer",
]
