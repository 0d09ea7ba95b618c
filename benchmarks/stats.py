# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Statistics of the benchmarks: min/median/max over repeats, and the figures of an overhead pair from its runs."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

from .utils import IMPLS


def min_median_max(values: Iterable[float | None]) -> dict[str, float] | None:
    """`{"min", "median", "max"}` of the values that are not `None` (`None` when there are none)."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def summarize(runs: list[dict[str, Any]], exclude_repeats: Iterable[int] = ()) -> dict[str, Any]:
    """Figures of one pair from its runs: per-repeat ratios ours/plain, each as min/median/max over repeats.

    `exclude_repeats` leaves repeats out (e.g. one that paid a one-time cost); the runs themselves stay recorded.
    """
    by_repeat: dict[int, dict[str, dict[str, Any]]] = {}
    for run in runs:
        if run["repeat"] not in set(exclude_repeats):
            by_repeat.setdefault(run["repeat"], {})[run["spec"]["impl"]] = run
    for pair in by_repeat.values():
        for run in pair.values():
            run.setdefault("step_time", run["median_step_time"])  # results written before `step_time` existed
    pairs = [r for r in by_repeat.values() if set(r) == set(IMPLS)]
    memory_key = "peak_allocated_mb" if "peak_allocated_mb" in runs[0] else "peak_rss_mb"

    def ratio(field_name: str) -> list[float]:
        return [p["presafety"][field_name] / p["plain"][field_name] for p in pairs]

    def paired_ratio(steps_key: str, fallback: str) -> list[float]:
        """Per repeat, the median over step indices of ours/plain: the same step sees the same batch in both runs, so
        batch lengths that vary from step to step cancel, and a burst of another job spoils one step, not the figure.
        CUDA runs (host-side per-step times) and older results without per-step times use `fallback`'s ratio."""
        out = []
        for pair in pairs:
            plain, ours = pair["plain"], pair["presafety"]
            warmup = plain["spec"]["warmup"]
            p_steps, o_steps = plain.get(steps_key, [])[warmup:], ours.get(steps_key, [])[warmup:]
            if plain.get("step_time_kind", "median") == "median" and p_steps and len(p_steps) == len(o_steps):
                out.append(statistics.median(o / p for o, p in zip(o_steps, p_steps)))
            else:
                out.append(ours[fallback] / plain[fallback])
        return out

    forwards = {impl: sorted({f for p in pairs for f in p[impl]["backbone_forwards_per_step"]}) for impl in IMPLS}
    return {
        "repeats": len(pairs),
        "num_parameters": runs[0]["num_parameters"],
        "memory_metric": memory_key,
        "step_time_ratio": min_median_max(paired_ratio("step_times", "step_time")),
        "step_cpu_time_ratio": min_median_max(paired_ratio("step_cpu_times", "median_step_cpu_time")),
        "memory_ratio": min_median_max(ratio(memory_key)),
        "step_time_s": {impl: min_median_max(p[impl]["step_time"] for p in pairs) for impl in IMPLS},
        "memory_mb": {impl: min_median_max(p[impl][memory_key] for p in pairs) for impl in IMPLS},
        "tokens_per_second": {impl: min_median_max(p[impl]["tokens_per_second"] for p in pairs) for impl in IMPLS},
        "tokens_per_step": runs[0]["tokens_per_step"],
        "backbone_forwards_per_step": forwards,
        "same_forward_count": forwards["plain"] == forwards["presafety"],
        "loadavg": min_median_max(v for r in runs for v in (r["loadavg_before"][0], r["loadavg_after"][0])),
    }
