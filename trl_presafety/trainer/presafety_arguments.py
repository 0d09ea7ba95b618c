# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
from dataclasses import dataclass, field, fields

from ..anchors import ANCHORS, check_anchor
from ..modeling import HEAD_TYPES, POOLINGS, check_tied_head_settings
from ..validation import check_choice, check_field_types, check_range, fail


WEIGHT_SCHEDULES = ("constant", "linear_warmup", "last_epochs")
MISSING_ANCHOR_POLICIES = ("error", "skip")


@dataclass
class PreSafetyArguments:
    r"""
    Fields shared by [`PreSafetySFTConfig`] and [`PreSafetyDPOConfig`] (all prefixed `presafety_`).

    > Parameters that control the pre-CoT safety head

    presafety_loss_weight (`float`, *optional*, defaults to `1.0`):
        Weight λ of the auxiliary loss: total loss = alignment loss + λ · head loss. `0` leaves the alignment loss and
        update exactly as in the plain TRL trainer (the head still runs, so its metrics are logged as a probe).
    presafety_label_column (`str`, *optional*, defaults to `"safety_label"`):
        Dataset column with the safety decision signal: 1 (refuse), 0 (comply), a float in [0, 1] (soft label), or
        `None` / -100 (no auxiliary loss for that example).
    presafety_anchor (`str`, *optional*, defaults to `"prompt_end"`):
        Position the head reads: `"prompt_end"` (last prompt token), `"think_end"` (last token of the opening think
        tag, wherever the template puts it) or `"reasoning_start"` (the first reasoning position: the newline after the
        opening tag, whose next token is the first reasoning token or `</think>`).
    presafety_think_token (`str`, *optional*, defaults to `"<think>"`):
        Opening think tag of the chat template, used by `presafety_anchor="think_end"`.
    presafety_head (`str`, *optional*, defaults to `"linear"`):
        Head architecture: `"linear"` (`Linear(hidden, 1)`), `"mlp"`, or `"tied"`: no head weights, the auxiliary
        logit is the model's own next-token log-odds of the closing think tag (`</think>`) at the first reasoning
        position (its LM logit minus the logsumexp of all other tokens), so the loss trains the token the model
        generates and P(refuse) is that token's probability. Needs `presafety_anchor="reasoning_start"`, the final
        hidden state (`presafety_layer` unset), `presafety_pooling="last"` and no head dropout.
    presafety_head_hidden_size (`int`, *optional*):
        Width of the MLP head's hidden layer; defaults to the model's hidden size.
    presafety_head_dropout (`float`, *optional*, defaults to `0.0`):
        Dropout on the head's input.
    presafety_layer (`int`, *optional*):
        Decoder layer whose output the head reads (Python indexing, so `-1` is the last layer before the final norm).
        `None` reads the final hidden state, after the final norm.
    presafety_pooling (`str`, *optional*, defaults to `"last"`):
        `"last"` reads the anchor token; `"mean"` averages the prompt span up to the anchor (SafeKey-style).
    presafety_pos_weight (`float`, *optional*):
        Weight of the positive (refuse) class in the BCE, for imbalanced labels (e.g. `#comply / #refuse`).
    presafety_on_missing_anchor (`str`, *optional*, defaults to `"error"`):
        What to do with examples whose anchor cannot be found or is cut by truncation: `"error"` stops with the list
        of indices; `"skip"` keeps them for the alignment loss without an auxiliary loss.
    presafety_weight_schedule (`str`, *optional*, defaults to `"constant"`):
        How λ evolves: `"constant"`, `"linear_warmup"` (0 → λ over `presafety_warmup_ratio` of the steps), or
        `"last_epochs"` (λ only in the last `presafety_last_epochs` epochs, as SafeKey does).
    presafety_warmup_ratio (`float`, *optional*, defaults to `0.1`):
        Fraction of the training steps of the linear warm-up.
    presafety_last_epochs (`int`, *optional*, defaults to `1`):
        Number of final epochs with the auxiliary loss on, for `presafety_weight_schedule="last_epochs"`.
    presafety_threshold (`float`, *optional*, defaults to `0.5`):
        Probability above which the head's prediction (and a soft label) counts as "refuse" for accuracy and AUROC.
    presafety_detach_head (`bool`, *optional*, defaults to `False`):
        Train the head on detached anchor states: no gradient of the auxiliary loss reaches the model, whose update
        is then exactly the plain TRL trainer's (gradient clipping counts the model's gradients only, as plain TRL
        does), while the head learns to read the decision and is saved beside the checkpoint as a gate
        (`SafetyGate`, routed generation). The head trains at the optimizer's learning rate; `trl-presafety fit-gate`
        on the saved model fits the optimal linear head in minutes.
    """

    presafety_loss_weight: float = field(
        default=1.0,
        metadata={"help": "Weight of the auxiliary pre-CoT safety loss. 0 leaves the plain TRL loss and update."},
    )
    presafety_label_column: str = field(
        default="safety_label",
        metadata={"help": "Dataset column with the safety label: 1 refuse, 0 comply, float in [0,1], None/-100 none."},
    )
    presafety_anchor: str = field(
        default="prompt_end",
        metadata={"help": "Position the head reads.", "choices": list(ANCHORS)},
    )
    presafety_think_token: str = field(
        default="<think>",
        metadata={"help": "Opening think tag of the chat template (for presafety_anchor='think_end')."},
    )
    presafety_head: str = field(
        default="linear",
        metadata={
            "help": "Safety head architecture. 'tied': no weights, the logit is the model's own next-token log-odds of "
            "</think> at the first reasoning position (needs presafety_anchor='reasoning_start').",
            "choices": list(HEAD_TYPES),
        },
    )
    presafety_head_hidden_size: int | None = field(
        default=None,
        metadata={"help": "Hidden width of the 'mlp' head. Defaults to the model's hidden size."},
    )
    presafety_head_dropout: float = field(
        default=0.0,
        metadata={"help": "Dropout on the head's input, in [0, 1)."},
    )
    presafety_layer: int | None = field(
        default=None,
        metadata={
            "help": "Decoder layer whose output the head reads (Python index). None: final hidden state after the "
            "final norm."
        },
    )
    presafety_pooling: str = field(
        default="last",
        metadata={"help": "'last': the anchor token; 'mean': mean over the prompt span.", "choices": list(POOLINGS)},
    )
    presafety_pos_weight: float | None = field(
        default=None,
        metadata={"help": "BCE weight of the positive (refuse) class for imbalanced labels, > 0."},
    )
    presafety_on_missing_anchor: str = field(
        default="error",
        metadata={
            "help": "Examples whose anchor is not found or is truncated away: 'error' or 'skip' (no aux loss).",
            "choices": list(MISSING_ANCHOR_POLICIES),
        },
    )
    presafety_weight_schedule: str = field(
        default="constant",
        metadata={"help": "Schedule of the auxiliary weight.", "choices": list(WEIGHT_SCHEDULES)},
    )
    presafety_warmup_ratio: float = field(
        default=0.1,
        metadata={"help": "Fraction of training steps of the 'linear_warmup' schedule, in (0, 1]."},
    )
    presafety_last_epochs: int = field(
        default=1,
        metadata={"help": "Final epochs with the auxiliary loss on, for the 'last_epochs' schedule, >= 1."},
    )
    presafety_threshold: float = field(
        default=0.5,
        metadata={"help": "Probability threshold for 'refuse' in accuracy and AUROC, in (0, 1)."},
    )
    presafety_detach_head: bool = field(
        default=False,
        metadata={
            "help": "Train the head on detached anchor states: no auxiliary gradient reaches the model (its update is "
            "plain TRL's), and a trained gate is saved beside the checkpoint."
        },
    )

    def _validate_presafety(self) -> None:
        # Python callers (and values set after parsing) get the same type checks as a YAML recipe
        check_field_types(
            [PreSafetyArguments], {f.name: getattr(self, f.name) for f in fields(PreSafetyArguments)}, "the config"
        )
        check_range(
            "presafety_loss_weight",
            self.presafety_loss_weight,
            low=0.0,
            fix="Use a finite weight >= 0 (0 disables the aux loss).",
        )
        check_anchor(self.presafety_anchor)
        choices = {
            "presafety_head": HEAD_TYPES,
            "presafety_pooling": POOLINGS,
            "presafety_on_missing_anchor": MISSING_ANCHOR_POLICIES,
            "presafety_weight_schedule": WEIGHT_SCHEDULES,
        }
        for name, allowed in choices.items():
            check_choice(name, getattr(self, name), allowed)
        if self.presafety_head == "tied":
            try:
                check_tied_head_settings(
                    self.presafety_anchor, self.presafety_layer, self.presafety_pooling, self.presafety_head_dropout
                )
            except ValueError as error:
                fail("presafety_head", self.presafety_head, str(error))
            if self.presafety_detach_head:
                fail(
                    "presafety_detach_head",
                    self.presafety_detach_head,
                    "The tied head has no weights of its own: its logit is the model's LM head, so a detached tied "
                    "head would still train the model. Leave presafety_detach_head false, or use a 'linear' head.",
                )
        if not self.presafety_label_column:
            fail("presafety_label_column", self.presafety_label_column, "Name the dataset column of safety labels.")
        if not self.presafety_think_token.strip():
            fail("presafety_think_token", self.presafety_think_token, "Use the opening think tag, e.g. '<think>'.")
        if self.presafety_head_hidden_size is not None:
            check_range(
                "presafety_head_hidden_size",
                self.presafety_head_hidden_size,
                low=1,
                fix="Use a positive width or None.",
            )
            if self.presafety_head != "mlp":
                fail(
                    "presafety_head_hidden_size",
                    self.presafety_head_hidden_size,
                    "It only applies to presafety_head='mlp'; set presafety_head='mlp' or leave it unset.",
                )
        check_range(
            "presafety_head_dropout",
            self.presafety_head_dropout,
            0.0,
            1.0,
            True,
            False,
            "Use a probability in [0, 1).",
        )
        if self.presafety_pos_weight is not None:
            check_range(
                "presafety_pos_weight",
                self.presafety_pos_weight,
                low=0.0,
                low_inclusive=False,
                fix="Use a positive weight, e.g. #comply / #refuse.",
            )
        check_range(
            "presafety_warmup_ratio", self.presafety_warmup_ratio, 0.0, 1.0, False, True, "Use a fraction in (0, 1]."
        )
        check_range("presafety_last_epochs", self.presafety_last_epochs, low=1, fix="Use a number of epochs >= 1.")
        check_range(
            "presafety_threshold", self.presafety_threshold, 0.0, 1.0, False, False, "Use a probability in (0, 1)."
        )
        if self.presafety_detach_head and self.presafety_loss_weight == 0:
            fail(
                "presafety_detach_head",
                self.presafety_detach_head,
                "A detached head is trained by the auxiliary loss alone, which `presafety_loss_weight=0` switches "
                "off: set a positive weight (it scales the head's gradient only), or leave presafety_detach_head "
                "unset.",
            )
