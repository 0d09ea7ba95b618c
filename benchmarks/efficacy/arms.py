# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The arms of the efficacy study: what trains each one (command, recipe, data, overrides) or, for the routed arms of
issue 20, which checkpoints it evaluates with which gate and routing policy.

Two kinds of mechanism are compared with plain SFT (b), and the tables name which is which:

- a **guard at inference** (`RoutedArm`): a gate reads P(refuse) at the pre-CoT anchor and, at or above its
  calibrated threshold, the answer comes from a policy (`no_think`, `primer`, `refuse`) instead of free reasoning;
  the weights are those of an already trained arm (the same runs, so the pairing with (b) is exact);
- a **change of the model's own behaviour** (`Arm`): a training run whose model generates differently by itself.
"""

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Arm:
    """One trained arm: which command trains it, on which data, with which overrides of the recipe."""

    key: str
    label: str
    command: str | None  # "sft" / "dpo"; None: no safety training (the organism itself)
    recipe: str | None = None
    data: str | None = None  # folder under <output_dir>/labels (or built data) the arm trains on
    overrides: tuple[tuple[str, str], ...] = ()
    trains_head: bool = False  # the head gets a gradient (weight > 0): its own AUROC means something
    peft: bool = False  # a LoRA adapter (evaluated as `--adapter_path` on the organism)
    mechanism: str = "training"
    thinking_off: bool = True  # evaluated with thinking off too (the decision-driven arms report thinking on only)

    @property
    def routed(self) -> bool:
        return False


@dataclass(frozen=True)
class RoutedArm:
    """A guard at inference on the checkpoints of an already trained arm (`base`).

    `gate`: "fit" (`trl-presafety fit-gate` on the checkpoint's own anchor states, safety-split labels), "own" (the
    head the base arm trained beside its checkpoint), or the key of another routed arm whose gate it reuses.
    """

    key: str
    label: str
    base: str
    gate: str
    policy: str  # "no_think" | "primer" | "refuse"
    primer: str | None = None
    mechanism: str = "guard"
    command: None = None
    data: None = None
    trains_head: bool = False
    peft: bool = False

    @property
    def routed(self) -> bool:
        return True


ARMS = {
    "a": Arm("a", "(a) organism, no safety training", None, mechanism="none"),
    "b": Arm("b", "(b) plain SFT (weight 0)", "sft", "sft.yaml", "sft", (("presafety_loss_weight", "0.0"),)),
    "c": Arm("c", "(c) PreSafety SFT", "sft", "sft.yaml", "sft", (("presafety_loss_weight", "1.0"),), True),
    "d": Arm("d", "(d) PreSafety DPO", "dpo", "dpo.yaml", "dpo", (("presafety_loss_weight", "1.0"),), True),
    "e": Arm("e", "(e) IPO pairs, DPO", "dpo", "ipo.yaml", "ipo", (("presafety_loss_weight", "0.0"),)),
    "f": Arm("f", "(f) AltTrain, plain SFT", "sft", "sft.yaml", "alttrain", (("presafety_loss_weight", "0.0"),)),
}
ABLATIONS = {
    "c_w0.2": Arm("c_w0.2", "(c) weight 0.2", "sft", "sft.yaml", "sft", (("presafety_loss_weight", "0.2"),), True),
    "c_w5": Arm("c_w5", "(c) weight 5", "sft", "sft.yaml", "sft", (("presafety_loss_weight", "5.0"),), True),
    "c_think_end": Arm(
        "c_think_end",
        "(c) anchor think_end",
        "sft",
        "sft.yaml",
        "sft",
        (("presafety_loss_weight", "1.0"), ("presafety_anchor", "think_end")),
        True,
    ),
    "c_mid_layer": Arm(
        "c_mid_layer",
        "(c) middle layer",
        "sft",
        "sft.yaml",
        "sft",
        (("presafety_loss_weight", "1.0"), ("presafety_layer", "1")),
        True,
    ),
    # Exploratory, added after the default run (see RESULTS.md): plain and PreSafety SFT without gradient clipping
    "b_noclip": Arm(
        "b_noclip",
        "(b) no clipping",
        "sft",
        "sft.yaml",
        "sft",
        (("presafety_loss_weight", "0.0"), ("max_grad_norm", "0")),
    ),
    "c_noclip": Arm(
        "c_noclip",
        "(c) no clipping",
        "sft",
        "sft.yaml",
        "sft",
        (("presafety_loss_weight", "1.0"), ("max_grad_norm", "0")),
        True,
    ),
}

# Issue 20: the decision drives generation (protocol of 2026-12-06 in RESULTS.md)
# SAFEPATH's primer: asks for a safety check without stating the decision
PRIMER = "Let's think about safety first."
# LoRA: small rank on every linear layer; the learning rate is chosen on the dev split (RESULTS.md, the LoRA rule)
LORA_SETTINGS = (
    ("use_peft", "true"),
    ("lora_r", "16"),
    ("lora_alpha", "32"),
    ("lora_dropout", "0.0"),
    ("lora_target_modules", "all-linear"),
)
LORA_LEARNING_RATE_CANDIDATES = (2e-4, 5e-4, 1e-3, 2e-3)
LORA_LEARNING_RATE: float | None = 2e-3  # chosen on the dev split by the rule (RESULTS.md, 2026-12-06 12:38)
DECISION_ARMS = {
    "c_det": Arm(
        "c_det",
        "SFT with a detached head, unrouted (= b)",
        "sft",
        "sft.yaml",
        "sft",
        (("presafety_loss_weight", "1.0"), ("presafety_detach_head", "true")),
        True,
        thinking_off=False,
    ),
    "k": Arm(
        "k",
        "(k) self-routing SFT",
        "sft",
        "sft.yaml",
        "self_routing",
        (("presafety_loss_weight", "0.0"),),
        thinking_off=False,
    ),
    "k_tied": Arm(
        "k_tied",
        "(k) self-routing SFT, tied head",
        "sft",
        "sft.yaml",
        "self_routing",
        # The tied logit: the model's own next-token log-odds of </think> at the first reasoning position
        (("presafety_loss_weight", "1.0"), ("presafety_head", "tied"), ("presafety_anchor", "reasoning_start")),
        True,
        thinking_off=False,
    ),
    "l_b": Arm(
        "l_b",
        "(l) LoRA plain SFT",
        "sft",
        "sft.yaml",
        "sft",
        (("presafety_loss_weight", "0.0"), *LORA_SETTINGS),
        peft=True,
        thinking_off=False,
    ),
    "l_c": Arm(
        "l_c",
        "(l) LoRA PreSafety SFT",
        "sft",
        "sft.yaml",
        "sft",
        (("presafety_loss_weight", "1.0"), *LORA_SETTINGS),
        True,
        peft=True,
        thinking_off=False,
    ),
}
ROUTED_ARMS = {
    "g": RoutedArm("g", "(g) organism + fitted gate, no_think", "a", "fit", "no_think"),
    "h": RoutedArm("h", "(h) plain SFT + fitted gate, no_think", "b", "fit", "no_think"),
    "i": RoutedArm("i", "(i) PreSafety SFT + its head, no_think", "c", "own", "no_think"),
    "i_det": RoutedArm("i_det", "(i') detached-head SFT + its head, no_think", "c_det", "own", "no_think"),
    "j": RoutedArm("j", "(j) plain SFT + fitted gate, primer", "b", "h", "primer", PRIMER),
    "m": RoutedArm("m", "(m) plain SFT + fitted gate, refuse", "b", "h", "refuse"),
}
DEFAULT_ARMS = ("a", "b", "c", "d")
METHOD_ARMS = ("e", "f")
# `--routing` (`make efficacy-routing`): the arms of issue 20 and the trained arms they reuse, in running order
ROUTING_ARMS = ("a", "b", "c", "c_det", "k", "k_tied", "l_b", "l_c", "g", "h", "i", "i_det", "j", "m")
# What each arm is compared with besides (b) (deciding nothing): its own unrouted model, or its pair
OWN_BASELINES = {"g": "a", "i": "c", "i_det": "c_det", "k_tied": "k", "l_c": "l_b"}
# The arms evaluated once, not per step (no training of their own)
STEPLESS_ARMS = {"a", "g"}

ALL_ARMS: dict[str, Arm | RoutedArm] = {**ARMS, **ABLATIONS, **DECISION_ARMS, **ROUTED_ARMS}


def arm_spec(key: str) -> Arm | RoutedArm:
    if key not in ALL_ARMS:
        raise ValueError(
            f"Unknown arm {key!r}. Choose from {sorted(ARMS)}, the ablations {sorted(ABLATIONS)} and the "
            f"decision-driven arms {sorted(DECISION_ARMS) + sorted(ROUTED_ARMS)}."
        )
    return ALL_ARMS[key]


def gate_owner(key: str) -> str:
    """The routed arm whose gate folder `key` uses (itself, unless it reuses another arm's gate)."""
    arm = ROUTED_ARMS[key]
    return key if arm.gate in ("fit", "own") else gate_owner(arm.gate)


def arm_steps(arm: str, config: Any) -> list[int]:
    """The checkpoints (training steps) at which an arm is evaluated; 0 = the organism."""
    if arm in STEPLESS_ARMS:
        return [0]
    if arm in ROUTED_ARMS:  # the primary step and the last one (the protocol of the routed arms)
        return sorted({config.primary_step, max(config.steps)})
    return list(config.steps)
