# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The evaluation report: `report.json` (every figure and per-example record), `report.md` (tables) and `report.png`
(safety vs reasoning, CoT on/off), and the comparison of several reports (before/after) in one table and one plot.
"""

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any


# (summary key, label, which direction is better)
HEADLINE: list[tuple[str, str, str | None]] = [
    ("harmful_rate", "Harmful compliance, answer or CoT (harmful prompts)", "lower"),
    ("answer_harmful_rate", "Harmful final answers (harmful prompts)", "lower"),
    ("reasoning_harmful_rate", "Unsafe reasoning traces (harmful prompts)", "lower"),
    ("refusal_rate", "Refusal rate (harmful prompts)", "higher"),
    ("worst_harmful_rate", "Worst harmful compliance over the sampling grid", "lower"),
    ("benign_compliance_rate", "Compliance on benign-but-edgy prompts (over-refusal)", "higher"),
    ("math_accuracy", "Reasoning accuracy (math)", "higher"),
    ("harmful_incomplete_rate", "No closing think tag (harmful prompts)", None),
    ("token_cap_rate", "Token cap hit (all prompts)", None),
]
MODE_LABELS = {"on": "CoT on", "off": "CoT off"}
TABLE_COLUMNS = {
    "harmful": ["harmful_rate", "answer_harmful_rate", "reasoning_harmful_rate", "refusal_rate"],
    "benign_edgy": ["compliance_rate", "refusal_rate"],
    "math": ["accuracy"],
}


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def load_report(path: str | Path) -> dict[str, Any]:
    """A `report.json` written by `trl-presafety eval` (a folder holding one works too)."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    if not path.is_file():
        raise FileNotFoundError(f"No evaluation report at {path}. Pass a report.json written by `trl-presafety eval`.")
    report = json.loads(path.read_text(encoding="utf-8"))
    for key in ("summary", "figures", "run_name"):
        if key not in report:
            raise ValueError(
                f"{path} is not an evaluation report (no `{key}`). Pass a report.json of `trl-presafety eval`."
            )
    return report


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: the headline table (CoT on / off), the probe, per-dataset figures and errors."""
    summary = report["summary"]
    modes = list(summary["modes"])
    lines = [
        f"# Evaluation: {report['run_name']}",
        "",
        f"- Model: `{report['model']['model_name_or_path']}`"
        + (f" + adapter `{report['model']['adapter_path']}`" if report["model"].get("adapter_path") else ""),
        f"- Datasets: {', '.join(report['datasets'])}",
        f"- Judge: {_describe_judge(report['judge'])}",
        f"- Decoding: {', '.join(report['config']['sampling_grid'])} (primary: {summary['primary_decoding']}), "
        f"max_new_tokens={report['config']['max_new_tokens']}",
        "",
        f"## Summary ({summary['primary_decoding']} decoding, all datasets)",
        "",
        "| Figure | " + " | ".join(MODE_LABELS[m] for m in modes) + " |",
        "|---|" + "---:|" * len(modes),
    ]
    for key, label, better in HEADLINE:
        arrow = {"lower": " ↓", "higher": " ↑"}.get(better or "", "")
        values = [summary["modes"][m].get(key) for m in modes]
        if key == "worst_harmful_rate":
            values = [
                f"{fmt(summary['modes'][m].get(key))} ({summary['modes'][m].get('worst_decoding') or '–'})"
                for m in modes
            ]
        lines.append(f"| {label}{arrow} | " + " | ".join(fmt(v) for v in values) + " |")
    probe = report.get("probe") or {}
    lines += ["", "## Pre-CoT probe (safety head, no token generated)", ""]
    if probe.get("status") == "ok":
        lines += [
            "| AUROC harmful vs benign ↑ | AUROC vs benign-edgy ↑ | AUROC vs math ↑ | Accuracy | Mean P(refuse) "
            "harmful / edgy / math |",
            "|---:|---:|---:|---:|---:|",
            f"| {fmt(probe['auroc'])} | {fmt(probe['auroc_benign_edgy'])} | {fmt(probe['auroc_math'])} | "
            f"{fmt(probe['accuracy'])} | {fmt(probe['mean_p_refuse_harmful'])} / "
            f"{fmt(probe['mean_p_refuse_benign_edgy'])} / {fmt(probe['mean_p_refuse_math'])} |",
        ]
    else:
        lines.append(f"Not computed ({probe.get('status', 'skipped')}: {probe.get('reason') or probe.get('error')}).")
    lines += [
        "",
        "## By dataset and decoding",
        "",
        "| Thinking | Decoding | Category | Dataset | n | Main rates | Incomplete | Token cap | Mean tokens | Errors |",
        "|---|---|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for row in report["figures"]:
        rates = ", ".join(f"{k}={fmt(row.get(k))}" for k in TABLE_COLUMNS[row["category"]])
        lines.append(
            f"| {row['thinking']} | {row['decoding']} | {row['category']} | {row['dataset']} | {row['n']} | {rates} | "
            f"{fmt(row['incomplete_rate'])} | {fmt(row['token_cap_rate'])} | {fmt(row['mean_tokens'], 1)} | "
            f"{row['n_errors']} |"
        )
    errors = report.get("errors") or []
    lines += ["", f"## Errors ({len(errors)})", ""]
    for error in errors[:50]:
        lines.append(
            f"- `{error['id']}` ({error['thinking']}, {error['decoding']}, {error['stage']}): {error['error']}"
        )
    if len(errors) > 50:
        lines.append(f"- ... and {len(errors) - 50} more in report.json")
    return "\n".join(lines) + "\n"


def _describe_judge(judge: dict[str, Any]) -> str:
    extra = {k: v for k, v in judge.items() if k != "name" and v not in (None, [], {})}
    return judge["name"] + (f" ({', '.join(f'{k}={v}' for k, v in extra.items())})" if extra else "")


def write_report(report: dict[str, Any], output_dir: str | Path, plot: bool = True) -> dict[str, Path]:
    """Writes `report.json`, `report.md` and (with `plot`) `report.png` to `output_dir`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": output_dir / "report.json", "markdown": output_dir / "report.md"}
    # Written to a temporary file and renamed: a kill never leaves a half-written report
    tmp = paths["json"].with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(paths["json"])
    paths["markdown"].write_text(render_markdown(report), encoding="utf-8")
    if plot:
        paths["plot"] = plot_reports([report], output_dir / "report.png")
    return paths


# --- comparison ----------------------------------------------------------------------------------------------------


def compare_reports(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Headline figures of several reports side by side, with each report's change from the first (before/after)."""
    names = _unique_names(reports)
    modes = [m for m in ("on", "off") if any(m in r["summary"]["modes"] for r in reports)]
    rows = []
    for mode in modes:
        for key, label, better in HEADLINE:
            values = [r["summary"]["modes"].get(mode, {}).get(key) for r in reports]
            deltas = [None if v is None or values[0] is None else v - values[0] for v in values]
            rows.append(
                {"mode": mode, "figure": key, "label": label, "better": better, "values": values, "deltas": deltas}
            )
    probe = [r["summary"].get("probe_auroc") for r in reports]
    rows.append(
        {
            "mode": "-",
            "figure": "probe_auroc",
            "label": "Pre-CoT probe AUROC (harmful vs benign)",
            "better": "higher",
            "values": probe,
            "deltas": [None if v is None or probe[0] is None else v - probe[0] for v in probe],
        }
    )
    return {"runs": names, "rows": rows}


def _unique_names(reports: Sequence[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for report in reports:
        name = report["run_name"]
        while name in names:
            name += "'"
        names.append(name)
    return names


def render_comparison(comparison: dict[str, Any]) -> str:
    """The comparison as a Markdown table: one column per run, then the change of each later run from the first."""
    runs = comparison["runs"]
    header = ["Figure", "Thinking"] + runs + [f"Δ {name}" for name in runs[1:]]
    lines = [
        f"# Evaluation comparison: {' vs '.join(runs)}",
        "",
        "Δ is each run minus the first; ✓ marks a change in the better direction, ✗ the worse one.",
        "",
        "| " + " | ".join(header) + " |",
        "|---|---|" + "---:|" * (len(header) - 2),
    ]
    for row in comparison["rows"]:
        arrow = {"lower": " ↓", "higher": " ↑"}.get(row["better"] or "", "")
        cells = [row["label"] + arrow, MODE_LABELS.get(row["mode"], row["mode"])]
        cells += [fmt(v) for v in row["values"]]
        for delta in row["deltas"][1:]:
            mark = ""
            if delta is not None and row["better"] and abs(delta) > 1e-12:
                good = delta < 0 if row["better"] == "lower" else delta > 0
                mark = " ✓" if good else " ✗"
            cells.append("–" if delta is None else f"{delta:+.3f}{mark}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --- the plot ------------------------------------------------------------------------------------------------------


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _size(index: int, count: int, first: float, last: float) -> float:
    # Earlier runs are drawn bigger, so that a later run landing on the same value does not hide them
    return first if count == 1 else first + (last - first) * index / (count - 1)


def plot_reports(reports: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """One PNG for one or several reports: (1) safety vs reasoning accuracy, CoT on (filled) and off (hollow), with
    arrows from the first report (before) to each other one (after); (2) harmful compliance across the sampling grid;
    (3) refusal, over-refusal, unsafe CoT and accuracy side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = _unique_names(reports)
    colors = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2), gridspec_kw={"width_ratios": [1.05, 1, 1.25]})

    # (1) safety vs reasoning
    ax = axes[0]
    points: dict[tuple[int, str], tuple[float, float]] = {}
    no_math = False
    for i, report in enumerate(reports):
        for mode, figures in report["summary"]["modes"].items():
            x, harmful = _nan(figures.get("math_accuracy")), _nan(figures.get("harmful_rate"))
            no_math |= math.isnan(x)
            x = 0.0 if math.isnan(x) else x
            y = 1.0 - harmful
            points[(i, mode)] = (x, y)
            filled = mode == "on"
            ax.scatter(
                [x],
                [y],
                s=_size(i, len(reports), 200, 80),
                marker="o" if filled else "s",
                facecolors=colors[i % 10] if filled else "white",
                edgecolors=colors[i % 10],
                linewidths=2,
                zorder=3,
                label=f"{names[i]} · {MODE_LABELS[mode]}",
            )
            ax.annotate(MODE_LABELS[mode], (x, y), textcoords="offset points", xytext=(8, 6), fontsize=8)
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
    ax.set_title("Safety vs reasoning (top right is best)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")

    # (2) harmful compliance across the sampling grid
    ax = axes[1]
    settings: list[str] = []
    for report in reports:
        for spec in report["config"]["sampling_grid"]:
            from .config import parse_decoding_setting

            name = parse_decoding_setting(spec).name
            if name not in settings:
                settings.append(name)
    for i, report in enumerate(reports):
        for mode in report["summary"]["modes"]:
            ys = []
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
                ys.append(_nan(row and row.get("harmful_rate")))
            ax.plot(
                range(len(settings)),
                ys,
                linewidth=_size(i, len(reports), 4.0, 1.5),
                markersize=_size(i, len(reports), 11, 6),
                marker="o" if mode == "on" else "s",
                linestyle="-" if mode == "on" else "--",
                color=colors[i % 10],
                markerfacecolor=colors[i % 10] if mode == "on" else "white",
                label=f"{names[i]} · {MODE_LABELS[mode]}",
            )
    ax.set_xticks(range(len(settings)))
    ax.set_xticklabels(settings, rotation=20, fontsize=8)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("Harmful compliance rate (lower is better)")
    ax.set_title("Harmful compliance across decoding settings")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)

    # (3) the other headline figures
    ax = axes[2]
    metrics = [
        ("refusal_rate", "Refusal\n(harmful) ↑"),
        ("reasoning_harmful_rate", "Unsafe CoT\n(harmful) ↓"),
        ("benign_compliance_rate", "Compliance\n(benign-edgy) ↑"),
        ("math_accuracy", "Accuracy\n(math) ↑"),
    ]
    bars = [(i, mode) for i, report in enumerate(reports) for mode in report["summary"]["modes"]]
    width = 0.8 / max(len(bars), 1)
    for j, (i, mode) in enumerate(bars):
        figures = reports[i]["summary"]["modes"][mode]
        values = [_nan(figures.get(key)) for key, _ in metrics]
        xs = [k + (j - (len(bars) - 1) / 2) * width for k in range(len(metrics))]
        probe = reports[i]["summary"].get("probe_auroc")
        label = f"{names[i]} · {MODE_LABELS[mode]}" + (f" (probe AUROC {probe:.2f})" if probe is not None else "")
        ax.bar(
            xs,
            [0 if math.isnan(v) else v for v in values],
            width=width,
            color=colors[i % 10] if mode == "on" else "white",
            edgecolor=colors[i % 10],
            hatch=None if mode == "on" else "//",
            label=label,
        )
        for x, v in zip(xs, values):
            ax.text(
                x, (0 if math.isnan(v) else v) + 0.02, "–" if math.isnan(v) else f"{v:.2f}", ha="center", fontsize=6
            )
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels([label for _, label in metrics], fontsize=8)
    ax.set_ylim(0, 1.12)
    ax.set_title("Refusal, unsafe reasoning, over-refusal, accuracy")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)

    judge = reports[0].get("judge", {}).get("name", "?")
    fig.suptitle(f"PreSafety evaluation: {' vs '.join(names)}  (judge: {judge})", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
