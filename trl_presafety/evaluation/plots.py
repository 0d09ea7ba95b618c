# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The plot of one or several reports: one function per panel (safety vs reasoning accuracy, harmful compliance across
the sampling grid, the headline rates side by side), every point and bar with its 95% interval."""

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import parse_decoding_setting
from .formatting import CATEGORY_LABELS, MODE_LABELS, fmt, fmt_interval, is_routed, unique_names


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _size(index: int, count: int, first: float, last: float) -> float:
    # Earlier runs are drawn bigger, so that a later run landing on the same value does not hide them
    return first if count == 1 else first + (last - first) * index / (count - 1)


def _errors(value: float, interval: Sequence[float] | None) -> list[list[float]]:
    """matplotlib's `[[below], [above]]` error extents of a value inside its interval (none when unknown)."""
    if interval is None or math.isnan(value):
        return [[0.0], [0.0]]
    return [[max(0.0, value - interval[0])], [max(0.0, interval[1] - value)]]


def _category_scope(reports: Sequence[dict[str, Any]], category: str, key: str) -> str:
    """`harmful n=5 (smoke)`: the examples behind `key` in each run (one n per run when they differ) and their
    datasets."""
    ns = [max((figures.get(f"{key}_n") or 0) for figures in r["summary"]["modes"].values()) for r in reports]
    datasets = sorted(
        {row["dataset"] for r in reports for row in r["figures"] if row["category"] == category} - {"all"}
    )
    n_text = f"n={ns[0]}" if len(set(ns)) == 1 else "n=" + "/".join(str(n) for n in ns)
    return f"{CATEGORY_LABELS[category]} {n_text} ({', '.join(datasets) or 'no data'})"


def _plot_safety_vs_reasoning(ax: Any, reports: Sequence[dict[str, Any]], names: list[str], colors: Any) -> bool:
    """Panel 1: safety (1 - harmful compliance) vs math accuracy with 95% intervals, CoT on (filled) and off
    (hollow), arrows from the first run to each later one. Returns whether some run had no math set."""
    points: dict[tuple[int, str], tuple[float, float]] = {}
    # Mode labels per drawn place: runs and modes landing on one point share one label ("CoT on, off")
    labels: dict[tuple[float, float], list[str]] = {}
    not_measured: list[str] = []
    no_math = False
    for i, report in enumerate(reports):
        for mode, figures in report["summary"]["modes"].items():
            x, harmful = _nan(figures.get("math_accuracy")), _nan(figures.get("harmful_rate"))
            if math.isnan(harmful):  # no judged answer (n = 0): nothing to draw, said in the title
                not_measured.append(f"{names[i]} · {MODE_LABELS[mode]}")
                continue
            no_math |= math.isnan(x)
            x = 0.0 if math.isnan(x) else x
            y = 1.0 - harmful
            safety_ci = figures.get("harmful_rate_ci")
            safety_ci = None if safety_ci is None else [1.0 - safety_ci[1], 1.0 - safety_ci[0]]
            points[(i, mode)] = (x, y)
            filled = mode == "on"
            ax.errorbar(
                [x],
                [y],
                xerr=_errors(x, figures.get("math_accuracy_ci")),
                yerr=_errors(y, safety_ci),
                fmt="none",
                ecolor=colors[i % 10],
                elinewidth=1,
                capsize=3,
                alpha=0.6,
                zorder=2,
            )
            ax.scatter(
                [x],
                [y],
                s=_size(i, len(reports), 200, 80),
                marker="o" if filled else "s",
                # Hollow, not white: a CoT-on point at the same place stays visible under it
                facecolors=colors[i % 10] if filled else "none",
                edgecolors=colors[i % 10],
                linewidths=2,
                zorder=3,
                label=f"{names[i]} · {MODE_LABELS[mode]}",
            )
            place = labels.setdefault((round(x, 2), round(y, 2)), [])
            if mode not in place:
                place.append(mode)
    for (x, y), modes in labels.items():
        text = "CoT " + ", ".join(m for m in ("on", "off") if m in modes)
        # Right of the point, or left of it near the right edge: inside the axes, off the marker
        right = x < 0.75
        ax.annotate(
            text,
            (x, y),
            textcoords="offset points",
            xytext=(10 if right else -10, 8),
            ha="left" if right else "right",
            fontsize=8,
        )
    for i in range(1, len(reports)):
        for mode in ("on", "off"):
            if (0, mode) in points and (i, mode) in points:
                ax.annotate(
                    "",
                    xy=points[(i, mode)],
                    xytext=points[(0, mode)],
                    arrowprops={"arrowstyle": "->", "color": colors[i % 10], "lw": 1.5, "alpha": 0.8},
                )
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("Reasoning accuracy (math)" + (" — no math set: shown at 0" if no_math else ""))
    ax.set_ylabel("Safety = 1 − harmful compliance")
    missing = f"\nnot measured (n = 0 judged answers): {', '.join(not_measured)}" if not_measured else ""
    ax.set_title(
        "Safety vs reasoning (top right is best)\n"
        f"{_category_scope(reports, 'harmful', 'harmful_rate')}; {_category_scope(reports, 'math', 'math_accuracy')}"
        + missing,
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    return no_math


def _plot_decoding_grid(ax: Any, reports: Sequence[dict[str, Any]], names: list[str], colors: Any) -> None:
    """Panel 2: harmful compliance (with 95% intervals) across the sampling grid."""
    settings: list[str] = []
    for report in reports:
        for spec in report["config"]["sampling_grid"]:
            name = parse_decoding_setting(spec).name
            if name not in settings:
                settings.append(name)
    for i, report in enumerate(reports):
        for mode in report["summary"]["modes"]:
            ys, low, high = [], [], []
            for name in settings:
                row = next(
                    (
                        r
                        for r in report["figures"]
                        if r["thinking"] == mode
                        and r["decoding"] == name
                        and r["category"] == "harmful"
                        and r["dataset"] == "all"
                    ),
                    None,
                )
                y = _nan(row and row.get("harmful_rate"))
                below, above = _errors(y, row and row.get("harmful_rate_ci"))
                ys, low, high = ys + [y], low + below, high + above
            # Runs side by side within a setting, so that equal values and their intervals stay visible
            offset = (i - (len(reports) - 1) / 2) * 0.06 + (0.02 if mode == "off" else -0.02)
            ax.errorbar(
                [k + offset for k in range(len(settings))],
                ys,
                yerr=[low, high],
                linewidth=_size(i, len(reports), 3.0, 1.5),
                markersize=_size(i, len(reports), 10, 6),
                marker="o" if mode == "on" else "s",
                linestyle="-" if mode == "on" else "--",
                color=colors[i % 10],
                markerfacecolor=colors[i % 10] if mode == "on" else "white",
                capsize=3,
                elinewidth=1,
                label=f"{names[i]} · {MODE_LABELS[mode]}",
            )
    ax.set_xticks(range(len(settings)))
    ax.set_xticklabels(settings, rotation=20, fontsize=8)
    ax.set_xlabel(decoding_legend(settings), fontsize=8)
    ax.set_xlim(-0.5, len(settings) - 0.5)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("Harmful compliance rate (lower is better)")
    ax.set_title(
        f"Harmful compliance across decoding settings\n{_category_scope(reports, 'harmful', 'harmful_rate')}",
        fontsize=9,
    )
    ax.grid(alpha=0.3)


def decoding_legend(settings: Sequence[str]) -> str:
    """What the decoding tick labels mean: `t1_p0.95_k50` is temperature 1, top-p 0.95, top-k 50."""
    sampled = [s for s in settings if s != "greedy"]
    text = "Decoding: greedy = argmax" if "greedy" in settings else "Decoding"
    if sampled:
        text += f"; sampled as t<temperature>_p<top-p>_k<top-k> (e.g. {sampled[0]})"
    return text


HEADLINE_BARS = [
    ("refusal_rate", "Refusal\n(harmful) ↑"),
    ("reasoning_harmful_rate", "Unsafe CoT\n(harmful) ↓"),
    ("benign_compliance_rate", "Compliance\n(benign-edgy) ↑"),
    ("math_accuracy", "Accuracy\n(math) ↑"),
]


def _plot_headline_bars(ax: Any, reports: Sequence[dict[str, Any]], names: list[str], colors: Any) -> None:
    """Panel 3: refusal, unsafe CoT, over-refusal and accuracy side by side, with 95% intervals."""
    bars = [(i, mode) for i, report in enumerate(reports) for mode in report["summary"]["modes"]]
    width = 0.8 / max(len(bars), 1)
    for j, (i, mode) in enumerate(bars):
        figures = reports[i]["summary"]["modes"][mode]
        values = [_nan(figures.get(key)) for key, _ in HEADLINE_BARS]
        errors = [_errors(v, figures.get(f"{key}_ci")) for v, (key, _) in zip(values, HEADLINE_BARS)]
        xs = [k + (j - (len(bars) - 1) / 2) * width for k in range(len(HEADLINE_BARS))]
        # A figure with n = 0 is not measured: no bar (a bar at 0 would read "0% unsafe"), a label saying so
        drawn = [k for k, v in enumerate(values) if not math.isnan(v)]
        ax.bar(
            [xs[k] for k in drawn],
            [values[k] for k in drawn],
            width=width,
            yerr=[[errors[k][0][0] for k in drawn], [errors[k][1][0] for k in drawn]],
            error_kw={"elinewidth": 1, "capsize": 2, "ecolor": "0.3"},
            color=colors[i % 10] if mode == "on" else "white",
            edgecolor=colors[i % 10],
            hatch=None if mode == "on" else "//",
            label=f"{names[i]} · {MODE_LABELS[mode]}",
        )
        for x, v in zip(xs, values):
            text = "not measured (n=0)" if math.isnan(v) else f"{v:.2f}"
            ax.text(
                x, 0.01, text, ha="center", va="bottom", fontsize=7, rotation=90, color="0.4" if math.isnan(v) else "k"
            )
    ax.set_xticks(range(len(HEADLINE_BARS)))
    ax.set_xticklabels([label for _, label in HEADLINE_BARS], fontsize=8)
    ax.set_ylim(0, 1.05)
    scopes = "; ".join(
        _category_scope(reports, category, key)
        for category, key in (
            ("harmful", "refusal_rate"),
            ("benign_edgy", "benign_compliance_rate"),
            ("math", "math_accuracy"),
        )
    )
    ax.set_title(f"Refusal, unsafe reasoning, over-refusal, accuracy\n{scopes}", fontsize=9)
    ax.grid(axis="y", alpha=0.3)


def _probe_caption(report: dict[str, Any], name: str) -> str:
    probe = report.get("probe") or {}
    if probe.get("status") == "ok" and probe.get("auroc") is not None:
        return (
            f"{name}: {probe['auroc']:.2f} {fmt_interval(probe.get('auroc_ci'), 2)} "
            f"(n={probe['n_harmful']}+{probe['n_benign']})"
        )
    return f"{name}: {probe.get('status', 'skipped')}"


def _route_caption(report: dict[str, Any], name: str) -> str:
    routing, on = report["routing"], report["summary"]["modes"].get("on", {})
    shares = ", ".join(
        f"{label} {fmt(on.get(key), 2)} (n={on.get(f'{key}_n', 0)})"
        for key, label in (
            ("harmful_routed_rate", "harmful"),
            ("benign_routed_rate", "benign-edgy"),
            ("math_routed_rate", "math"),
        )
    )
    return f"{name}: {routing['policy']} at P(refuse) ≥ {routing['threshold']:.3g}, routed share {shares}"


def build_report_figure(reports: Sequence[dict[str, Any]]) -> Any:
    """The matplotlib figure of `plot_reports` (three panels, one legend below them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = unique_names(reports)
    colors = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(1, 3, figsize=(18, 6.4), gridspec_kw={"width_ratios": [1.05, 1, 1.25]})
    _plot_safety_vs_reasoning(axes[0], reports, names, colors)
    _plot_decoding_grid(axes[1], reports, names, colors)
    _plot_headline_bars(axes[2], reports, names, colors)

    # One legend for the three panels (same runs and modes), below them: it never covers a point. Drawn from proxies,
    # so that a run whose points are all "not measured" is in it too
    from matplotlib.lines import Line2D

    handles, labels = [], []
    for i, report in enumerate(reports):
        for mode in report["summary"]["modes"]:
            filled = mode == "on"
            handles.append(
                Line2D(
                    [], [], color=colors[i % 10], marker="o" if filled else "s", linestyle="-" if filled else "--",
                    markerfacecolor=colors[i % 10] if filled else "none", markersize=9, linewidth=1.5,
                )
            )  # fmt: skip
            labels.append(f"{names[i]} · {MODE_LABELS[mode]}")
    fig.legend(
        handles,
        labels,
        loc="lower center",
        ncol=min(len(labels), 4),
        fontsize=8,
        frameon=False,
        bbox_to_anchor=(0.5, 0),
    )
    judge = reports[0].get("judge", {}).get("name", "?")
    primary = reports[0]["summary"].get("primary_decoding", "?")
    probes = "; ".join(_probe_caption(r, n) for r, n in zip(reports, names))
    routes = "; ".join(_route_caption(r, n) for r, n in zip(reports, names) if is_routed(r))
    fig.suptitle(
        f"PreSafety evaluation: {' vs '.join(names)}  (judge: {judge}; panels 1 and 3: {primary} decoding; "
        "filled: CoT on, hollow / hatched: CoT off; whiskers: 95% Wilson intervals; degenerate answers left out)\n"
        f"Pre-CoT probe AUROC [95% bootstrap interval] — {probes}"
        + (f"\nRouted CoT-on generation — {routes}" if routes else ""),
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.035 + 0.03 * math.ceil(len(labels) / 4), 1, 1))
    return fig


def plot_reports(reports: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """One PNG for one or several reports: (1) safety vs reasoning accuracy, CoT on (filled) and off (hollow), with
    arrows from the first report (before) to each other one (after); (2) harmful compliance across the sampling grid;
    (3) refusal, over-refusal, unsafe CoT and accuracy side by side. Every point and bar has its 95% Wilson interval,
    every panel title its n and datasets; the legend sits below the panels, off the data."""
    import matplotlib.pyplot as plt

    fig = build_report_figure(reports)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
