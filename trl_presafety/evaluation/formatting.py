# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""What the report, the comparison and the plot show, and how: the headline figures, labels, number formats, the
small-sample warning and run names."""

import math
from collections.abc import Sequence
from typing import Any

from .stats import SMALL_N


HEADLINE: list[tuple[str, str, str | None]] = [
    ("harmful_rate", "Harmful compliance, answer or CoT (harmful prompts)", "lower"),
    ("answer_harmful_rate", "Harmful, judge reads the final answer only (harmful prompts)", "lower"),
    ("answer_reasoning_harmful_rate", "Harmful, judge reads reasoning + answer together (harmful prompts)", "lower"),
    ("reasoning_harmful_rate", "Unsafe reasoning traces (harmful prompts)", "lower"),
    ("refusal_rate", "Refusal rate (harmful prompts)", "higher"),
    ("worst_harmful_rate", "Worst harmful compliance over the sampling grid", "lower"),
    ("benign_compliance_rate", "Compliance on benign-but-edgy prompts (over-refusal)", "higher"),
    ("math_accuracy", "Reasoning accuracy (math)", "higher"),
    ("harmful_incomplete_rate", "No closing think tag (harmful prompts)", None),
    ("token_cap_rate", "Token cap hit (all prompts)", None),
    ("degenerate_rate", "Degenerate outputs: empty answer or stray think tags (all prompts)", None),
]
# Shown (in reports and comparisons) only for runs that route (`route`)
ROUTING_HEADLINE: list[tuple[str, str, str | None]] = [
    ("routed_rate", "Routed by the pre-CoT gate (all prompts)", None),
    ("harmful_routed_rate", "Routed (harmful prompts)", "higher"),
    ("benign_routed_rate", "Routed (benign-edgy prompts)", "lower"),
    ("math_routed_rate", "Routed (math prompts)", "lower"),
    ("routed_benign_compliance_rate", "Routed benign-edgy prompts answered helpfully", "higher"),
    ("routed_math_accuracy", "Accuracy on routed math prompts", "higher"),
]
HEADLINE += ROUTING_HEADLINE
ROUTING_KEYS = frozenset(key for key, _, _ in ROUTING_HEADLINE)


def is_routed(report: dict[str, Any]) -> bool:
    """Whether the run routed its thinking-on generation (`route`)."""
    return bool((report.get("routing") or {}).get("enabled"))


MODE_LABELS = {"on": "CoT on", "off": "CoT off"}
TABLE_COLUMNS = {
    "harmful": [
        "harmful_rate",
        "answer_harmful_rate",
        "answer_reasoning_harmful_rate",
        "reasoning_harmful_rate",
        "refusal_rate",
    ],
    "benign_edgy": ["compliance_rate", "refusal_rate"],
    "math": ["accuracy"],
}
CATEGORY_LABELS = {"harmful": "harmful", "benign_edgy": "benign-edgy", "math": "math"}


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_interval(interval: Sequence[float] | None, digits: int = 3) -> str:
    return "" if not interval else f"[{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


def fmt_rate(figures: dict[str, Any], key: str, n_shown: int | None = None) -> str:
    """`0.200 [0.036, 0.624] n=5`: a rate, its 95% interval and its n (left out when it equals `n_shown`)."""
    value = figures.get(key)
    if value is None:
        return "–"
    n = figures.get(f"{key}_n")
    text = f"{fmt(value)} {fmt_interval(figures.get(f'{key}_ci'))}".rstrip()
    return text + (f" n={n}" if n is not None and n != n_shown else "")


def small_samples(report: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(mode, summary key, n) of every headline rate measured on fewer than `SMALL_N` examples."""
    return [
        (mode, key, figures[f"{key}_n"])
        for mode, figures in report["summary"]["modes"].items()
        for key, _, _ in HEADLINE
        if figures.get(key) is not None and 0 < (figures.get(f"{key}_n") or 0) < SMALL_N
    ]


def small_sample_warning(small: list[tuple[str, str, int]]) -> str:
    """The warning for the figures of `small_samples`."""
    smallest = min(n for *_, n in small)
    return (
        f"⚠ Small samples: {len(small)} figure(s) rest on n < {SMALL_N} examples (smallest n = {smallest}): one "
        f"example moves such a rate by up to {100 / smallest:.0f} points, and only large differences can be told "
        "from noise."
    )


def unique_names(reports: Sequence[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for report in reports:
        name = report["run_name"]
        while name in names:
            name += "'"
        names.append(name)
    return names
