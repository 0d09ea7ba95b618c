# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Routed generation in the evaluation (`route`): the head that routes, its threshold and where it comes from, the
cache identity of a routed generation, the chunks' generation (one prefill with transformers; with vLLM the gate runs
first, on the model in memory) and the routing section of the report."""

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cache import stable_hash
from .config import EvalConfig


@dataclass
class RouteSetup:
    """How the thinking-on generations of an evaluation are routed."""

    policy: str
    gate: str  # the head's folder, or "in-memory head"
    threshold: float
    threshold_source: str
    primer: str
    refusal: str
    gate_fingerprint: str
    calibration: dict[str, Any] | None = None  # how the head's threshold was chosen (`calibrate-gate`)
    # P(refuse) per example id, computed before vLLM loads (its gate is a separate forward on the model in memory)
    probabilities: dict[tuple[str, str], float] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """What a routed generation depends on besides the prompt and the decoding: part of its cache key."""
        return stable_hash(
            "route",
            self.policy,
            self.threshold,
            self.gate_fingerprint,
            self.primer if self.policy == "primer" else None,
            self.refusal if self.policy == "refuse" else None,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "gate": self.gate,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "primer": self.primer if self.policy == "primer" else None,
            "refusal": self.refusal if self.policy == "refuse" else None,
            "gate_fingerprint": self.gate_fingerprint,
            # The calibration record without its per-prompt hashes (kept in the head's config)
            "calibration": {k: v for k, v in self.calibration.items() if k != "prompt_hashes"}
            if self.calibration and self.threshold_source.startswith("calibrated")
            else None,
        }


def _head_fingerprint(model: Any, folder: str | None) -> str:
    """The head's content (its weights and config files, or the in-memory tensors): routed generations cached with
    another head are not reused."""
    if folder is not None:
        from ..modeling import SAFETY_HEAD_CONFIG_NAME, SAFETY_HEAD_WEIGHTS_NAME

        digest = hashlib.sha256()
        for name in (SAFETY_HEAD_CONFIG_NAME, SAFETY_HEAD_WEIGHTS_NAME):
            path = Path(folder) / name
            if path.is_file():
                digest.update(path.read_bytes())
        return digest.hexdigest()[:16]
    from ..modeling import get_safety_head

    head = get_safety_head(model)
    return stable_hash(
        [[k, [round(float(x), 6) for x in v.float().flatten()[:64]]] for k, v in head.state_dict().items()]
    )


def prepare_route(config: EvalConfig, model: Any, head_path: str | None) -> RouteSetup | None:
    """Attaches the routing head to `model` (`route_gate`, else the model's own head) and resolves the threshold."""
    if config.route is None:
        return None
    from ..head_io import load_safety_head
    from ..modeling import get_safety_head
    from ..routing import resolve_threshold

    folder = config.route_gate or head_path
    if folder is not None:
        from ..modeling import SAFETY_HEAD_CONFIG_NAME

        if not (Path(folder) / SAFETY_HEAD_CONFIG_NAME).is_file():
            raise ValueError(
                f"Invalid `route_gate`: {folder!r} has no {SAFETY_HEAD_CONFIG_NAME}. Point it at a folder with a head "
                "for this model (a PreSafety training run, or a gate fitted on the model)."
            )
        load_safety_head(model, folder, allow_other_weights=config.allow_other_weights)
    elif get_safety_head(model) is None:
        raise ValueError(
            f"Invalid `route_gate`: None. route={config.route!r} needs a safety head, and the evaluated model has none "
            "(no safety_head_config.json in the model or adapter folder). Set `route_gate` to a head's folder, e.g. "
            "one fitted on this model with `trl-presafety fit-gate`."
        )
    head_config = get_safety_head(model).config
    threshold, source = resolve_threshold(config.route_threshold, head_config)
    if config.route_threshold is not None:
        source = "route_threshold"
    return RouteSetup(
        policy=config.route,
        gate=folder or "in-memory head",
        threshold=threshold,
        threshold_source=source,
        primer=config.route_primer,
        refusal=config.route_refusal,
        gate_fingerprint=_head_fingerprint(model, folder),
        calibration=getattr(head_config, "calibration", None),
    )


def make_router(route: RouteSetup, model: Any, tokenizer: Any, config: EvalConfig) -> Any:
    from ..routing import RoutedGenerator

    return RoutedGenerator(
        model,
        tokenizer,
        policy=route.policy,
        threshold=route.threshold,
        primer=route.primer,
        refusal=route.refusal,
        batch_size=config.batch_size,
    )


def precompute_probabilities(route: RouteSetup, router: Any, examples: Sequence[dict[str, Any]], config: EvalConfig):
    """The gate's P(refuse) of `examples`, for the vLLM path (the gate's forward runs before vLLM takes the GPU)."""
    from .prompts import eval_messages

    todo = [e for e in examples if (e["dataset"], e["id"]) not in route.probabilities]
    if todo:
        probs = router.predict_proba([eval_messages(e, config) for e in todo], config.chat_template_kwargs)
        route.probabilities.update({(e["dataset"], e["id"]): p for e, p in zip(todo, probs)})


def route_record_fields(output: Any) -> dict[str, Any]:
    """The cache fields of a routed generation (JSON: a non-finite P(refuse) is stored as None, flagged)."""
    finite = math.isfinite(output.proba)
    return {
        "routed": output.routed,
        "route_proba": output.proba if finite else None,
        "route_nonfinite": not finite,
        "route_policy": output.policy,
        "prompt_text": output.prompt_text,
    }


def routed_benign_outcome(record: dict[str, Any]) -> str:
    """How a benign prompt was answered: `"helpful"` (an answer, not a refusal), `"refused"`, `"no answer"` (the
    cap was hit inside the reasoning) or `"unjudged"` (a generation or judge error)."""
    if record["complied"]:
        return "helpful"
    if record["refusal"]:
        return "refused"
    if record["response"] is not None and not record["answer"]:
        return "no answer"
    return "unjudged"


def routing_section(records: list[dict[str, Any]], route: RouteSetup | None, config: EvalConfig) -> dict[str, Any]:
    """The report's `routing`: the setup, and per dataset which prompts were routed (thinking on, primary decoding;
    the decision is the prompt's, so every decoding setting routes the same prompts) and how routed benign prompts
    were answered."""
    if route is None:
        return {"enabled": False}
    primary = config.decoding_settings[0].name
    rows = [r for r in records if r["thinking"] == "on" and r["decoding"] == primary and r["routed"] is not None]
    datasets: dict[str, Any] = {}
    for record in rows:
        entry = datasets.setdefault(
            record["dataset"],
            {"n": 0, "n_routed": 0, "routed_ids": [], "by_category": {}, "routed_benign_edgy": {}},
        )
        entry["n"] += 1
        category = entry["by_category"].setdefault(record["category"], {"n": 0, "n_routed": 0})
        category["n"] += 1
        if record["routed"]:
            entry["n_routed"] += 1
            category["n_routed"] += 1
            entry["routed_ids"].append(record["id"])
            if record["category"] == "benign_edgy":
                answered = entry["routed_benign_edgy"]
                outcome = routed_benign_outcome(record)
                answered[outcome] = answered.get(outcome, 0) + 1
    for entry in datasets.values():
        entry["routed_share"] = entry["n_routed"] / entry["n"] if entry["n"] else None
        for category in entry["by_category"].values():
            category["routed_share"] = category["n_routed"] / category["n"] if category["n"] else None
    # A threshold must not be chosen on the prompts a report evaluates: count the evaluated prompts that were in
    # the calibration set (its per-prompt hashes are recorded with the threshold)
    overlap = None
    if route.calibration and route.threshold_source.startswith("calibrated") and "prompt_hashes" in route.calibration:
        from ..gate_calibration import text_hash

        hashes = set(route.calibration["prompt_hashes"])
        overlap = sum(text_hash(r["prompt"]) in hashes for r in rows)
    return {
        "enabled": True,
        **route.describe(),
        "n_calibration_overlap": overlap,
        # Gate outputs that were not finite: routed (fail closed), their P(refuse) recorded as None
        "n_nonfinite": sum(bool(r["routed"]) and r["route_proba"] is None for r in rows),
        "decoding": primary,
        "datasets": datasets,
    }
