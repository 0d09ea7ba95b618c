# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Small helpers the efficacy study's result modules share: means that skip missing values, and how a figure with
its interval and the evaluation sets are written and drawn."""

from typing import Any


def mean(values: list[Any]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def fmt_ci(cell: dict[str, Any] | None, digits: int = 3) -> str:
    if not cell or cell.get("mean") is None:
        return "-"
    if cell.get("low") is None:
        return fmt(cell["mean"], digits)
    return f"{fmt(cell['mean'], digits)} [{fmt(cell['low'], digits)}, {fmt(cell['high'], digits)}]"


def eval_sets_text(protocol: dict[str, Any]) -> str:
    files = [p for p in (protocol.get("harmful_prompts"), protocol.get("benign_prompts")) if p]
    if files:
        return "the user's files " + ", ".join(f"`{f}`" for f in files)
    return "`held-out`" if protocol["eval_sets"] == "heldout" else f"`{protocol['eval_sets']}`"


def bounds(cell: dict[str, Any]) -> tuple[float, float]:
    """`(low, high)` of a figure's interval; its mean where a bound is missing (one seed has no interval)."""
    low = cell["low"] if cell.get("low") is not None else cell["mean"]
    high = cell["high"] if cell.get("high") is not None else cell["mean"]
    return low, high


def interval_bar(ax: Any, x: float, cell: dict[str, Any], color: Any, capsize: float, fontsize: float) -> None:
    """One bar of a figure's mean with its interval, the value written above it."""
    low, high = bounds(cell)
    ax.bar(x, cell["mean"], color=color, alpha=0.85)
    ax.errorbar(x, cell["mean"], yerr=[[cell["mean"] - low], [high - cell["mean"]]], color="black", capsize=capsize)
    ax.text(x, min(high + 0.02, 1.02), f"{cell['mean']:.2f}", ha="center", va="bottom", fontsize=fontsize)
