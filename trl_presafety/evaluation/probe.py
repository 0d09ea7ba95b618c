# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The pre-CoT probe: AUROC of the safety head's P(refuse), read at the pre-CoT position before any token is generated,
on harmful (positives) vs benign prompts, with stratified bootstrap intervals; "untrained" for a head trained with
weight 0."""

from typing import Any

from .config import EvalConfig
from .metrics import mean
from .prompts import eval_messages
from .stats import BOOTSTRAP_RESAMPLES, auroc, bootstrap_auroc_interval, rate_figures


def recorded_loss_weight(head_path: str | None) -> float | None:
    """The auxiliary loss weight the head was trained with: `loss_weight` of its `safety_head_config.json`, which every
    save of the PreSafety trainers writes; `None` when not recorded (a head config saved by hand without it)."""
    if head_path is None:
        return None
    from ..modeling import SafetyHeadConfig

    weight = SafetyHeadConfig.load(head_path).loss_weight
    return None if weight is None else float(weight)


def _is_tied_head(head_path: str | None) -> bool:
    from ..modeling import TIED_HEAD, SafetyHeadConfig

    return head_path is not None and SafetyHeadConfig.load(head_path).head_type == TIED_HEAD


def _auroc_figures(name: str, positives: list[float], negatives: list[float], seed: int) -> dict[str, Any]:
    labels, scores = [1] * len(positives) + [0] * len(negatives), positives + negatives
    interval = bootstrap_auroc_interval(labels, scores, seed=seed)
    return {name: auroc(labels, scores), f"{name}_ci": list(interval) if interval else None}


def run_probe(
    model: Any, tokenizer: Any, head_path: str | None, examples: list[dict[str, Any]], config: EvalConfig
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """AUROC of the safety head's pre-CoT P(refuse) on harmful (1) vs benign (0) prompts, no token generated."""
    from ..gate import SafetyGate
    from ..head_io import load_safety_head
    from ..modeling import get_safety_head

    if not config.probe:
        return {"status": "skipped", "reason": "probe=False"}, []
    if model is None:
        return {"status": "skipped", "reason": "no model in memory"}, []
    loss_weight = recorded_loss_weight(head_path)
    # A tied head is the model's own P(</think>): trained by the SFT loss on self-routing data even at weight 0
    if loss_weight == 0 and not _is_tied_head(head_path):
        # No gradient ever reached the head: its scores are those of its random init, an AUROC would mean nothing
        return {
            "status": "untrained",
            "reason": f"presafety_loss_weight=0 (`loss_weight` in {head_path}/safety_head_config.json): the head was never "
            "trained. "
            "Fit a probe on the hidden states afterwards if a comparison needs one.",
            "head_path": head_path,
            "loss_weight": 0.0,
        }, []
    if get_safety_head(model) is None:
        if head_path is None:
            return {
                "status": "skipped",
                "reason": "no safety head: the model folder has no safety_head_config.json (set safety_head_path)",
            }, []
        load_safety_head(model, head_path, allow_other_weights=config.allow_other_weights)
    gate = SafetyGate(model, tokenizer, threshold=config.probe_threshold, batch_size=config.batch_size)
    try:
        kwargs = dict(config.chat_template_kwargs or {})
        probs = gate.predict_proba([eval_messages(e, config) for e in examples], chat_template_kwargs=kwargs)
    finally:
        gate.close()
    records = [
        {"id": e["id"], "dataset": e["dataset"], "category": e["category"], "p_refuse": float(p)}
        for e, p in zip(examples, probs)
    ]
    harmful = [r["p_refuse"] for r in records if r["category"] == "harmful"]
    edgy = [r["p_refuse"] for r in records if r["category"] == "benign_edgy"]
    maths = [r["p_refuse"] for r in records if r["category"] == "math"]
    benign = edgy + maths
    correct = [(r["p_refuse"] > config.probe_threshold) == (r["category"] == "harmful") for r in records]
    figures = {
        "status": "ok",
        "head_path": head_path,
        # None: not recorded in safety_head_config.json (the figures then cannot tell a trained head from a random one)
        "loss_weight": loss_weight,
        "n_harmful": len(harmful),
        "n_benign": len(benign),
        "n_benign_edgy": len(edgy),
        "n_math": len(maths),
        **_auroc_figures("auroc", harmful, benign, config.seed),
        **_auroc_figures("auroc_benign_edgy", harmful, edgy, config.seed),
        **_auroc_figures("auroc_math", harmful, maths, config.seed),
        "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": config.seed, "stratified": True},
        **rate_figures("accuracy", correct),
        "threshold": config.probe_threshold,
        "mean_p_refuse_harmful": mean(harmful),
        "mean_p_refuse_benign_edgy": mean(edgy),
        "mean_p_refuse_math": mean(maths),
    }
    return figures, records
