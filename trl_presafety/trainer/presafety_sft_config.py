# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
from dataclasses import dataclass

from trl import SFTConfig

from .presafety_arguments import PreSafetyArguments


@dataclass
class PreSafetySFTConfig(PreSafetyArguments, SFTConfig):
    r"""
    Configuration class for [`PreSafetySFTTrainer`]: TRL's [`~trl.SFTConfig`] plus the `presafety_*` fields of
    [`PreSafetyArguments`] (the auxiliary pre-CoT safety head). Every `SFTConfig` argument keeps its meaning and
    default, so an existing SFT config becomes a PreSafety one by adding `presafety_*` keys.

    > Parameters that control the pre-CoT safety head

    See [`PreSafetyArguments`]: `presafety_loss_weight`, `presafety_label_column`, `presafety_anchor`,
    `presafety_think_token`, `presafety_head`, `presafety_head_hidden_size`, `presafety_head_dropout`,
    `presafety_layer`, `presafety_pooling`, `presafety_pos_weight`, `presafety_on_missing_anchor`,
    `presafety_weight_schedule`, `presafety_warmup_ratio`, `presafety_last_epochs`, `presafety_threshold`,
    `presafety_detach_head`.
    """

    def __post_init__(self):
        # The presafety fields first: their errors do not depend on the machine (TRL's checks do, e.g. bf16)
        self._validate_presafety()
        super().__post_init__()
