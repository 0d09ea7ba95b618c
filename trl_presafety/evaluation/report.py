# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The evaluation report: `report.json` (every figure and per-example record), `report.md` (tables) and `report.png`
(safety vs reasoning, CoT on/off), and the comparison of several reports (before/after) in one table and one plot.

Every rate is shown with its n and 95% Wilson interval, every AUROC with a 95% bootstrap interval; a comparison marks a
change only when a test says it is beyond noise (see `stats.py`).
"""

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .stats import (
    ALPHA,
    BOOTSTRAP_RESAMPLES,
    PAIRED_INTERVAL,
    PAIRED_TEST,
    SMALL_N,
    UNPAIRED_INTERVAL,
    UNPAIRED_TEST,
    bootstrap_auroc_difference,
    compare_outcomes,
)


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


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: the headline table (CoT on / off), the probe, per-dataset figures and errors. Every rate
    comes with its 95% Wilson interval and n, every AUROC with its bootstrap interval."""
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
        "Each rate: value [95% Wilson interval] n = examples judged.",
        "",
        "| Figure | " + " | ".join(MODE_LABELS[m] for m in modes) + " |",
        "|---|" + "---:|" * len(modes),
    ]
    for key, label, better in HEADLINE:
        arrow = {"lower": " ↓", "higher": " ↑"}.get(better or "", "")
        cells = [fmt_rate(summary["modes"][m], key) for m in modes]
        if key == "worst_harmful_rate":
            cells = [f"{cell} ({summary['modes'][m].get('worst_decoding') or '–'})" for cell, m in zip(cells, modes)]
        lines.append(f"| {label}{arrow} | " + " | ".join(cells) + " |")
    small = small_samples(report)
    if small:
        lines += ["", small_sample_warning(small)]
    lines += ["", "## Pre-CoT probe (safety head, no token generated)", "", *probe_markdown(report.get("probe") or {})]
    lines += [
        "",
        "## By dataset and decoding",
        "",
        "Rates with [95% Wilson interval]; a rate's own n is given where it differs from the judged examples.",
        "",
        "| Thinking | Decoding | Category | Dataset | n | Main rates | Incomplete | Token cap | Mean tokens | Errors |",
        "|---|---|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for row in report["figures"]:
        judged = row["n"] - row["n_errors"]
        rates = ", ".join(f"{k}={fmt_rate(row, k, judged)}" for k in TABLE_COLUMNS[row["category"]])
        lines.append(
            f"| {row['thinking']} | {row['decoding']} | {row['category']} | {row['dataset']} | {row['n']} | {rates} | "
            f"{fmt_rate(row, 'incomplete_rate', judged)} | {fmt_rate(row, 'token_cap_rate', judged)} | "
            f"{fmt(row['mean_tokens'], 1)} | {row['n_errors']} |"
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


def probe_markdown(probe: dict[str, Any]) -> list[str]:
    """The probe's section: AUROCs with bootstrap intervals, or why there are none (skipped, untrained, error)."""
    if probe.get("status") == "untrained":
        return [f"**Untrained head: no AUROC reported.** {probe['reason']}"]
    if probe.get("status") != "ok":
        return [f"Not computed ({probe.get('status', 'skipped')}: {probe.get('reason') or probe.get('error')})."]
    bootstrap = probe.get("bootstrap") or {}

    def auroc(key: str) -> str:
        return f"{fmt(probe.get(key))} {fmt_interval(probe.get(f'{key}_ci'))}".rstrip()

    lines = [
        f"Harmful prompts are the positives (n={probe['n_harmful']}), benign the negatives "
        f"(n={probe['n_benign']}: {probe.get('n_benign_edgy', '?')} benign-edgy, {probe.get('n_math', '?')} math). "
        f"AUROC with a 95% stratified bootstrap interval ({bootstrap.get('resamples', BOOTSTRAP_RESAMPLES)} "
        f"resamples, seed {bootstrap.get('seed', '?')}); accuracy at P(refuse) > {probe['threshold']} with its Wilson "
        "interval.",
        "",
        "| AUROC harmful vs benign ↑ | AUROC vs benign-edgy ↑ | AUROC vs math ↑ | Accuracy | Mean P(refuse) "
        "harmful / edgy / math |",
        "|---:|---:|---:|---:|---:|",
        f"| {auroc('auroc')} | {auroc('auroc_benign_edgy')} | {auroc('auroc_math')} | {fmt_rate(probe, 'accuracy')} | "
        f"{fmt(probe['mean_p_refuse_harmful'])} / {fmt(probe['mean_p_refuse_benign_edgy'])} / "
        f"{fmt(probe['mean_p_refuse_math'])} |",
    ]
    if probe.get("loss_weight") is None:
        lines += [
            "",
            "The head's training weight is not recorded (no `presafety_loss_weight` in the `extra` of its "
            "safety_head_config.json): a head trained with weight 0 scores like a random one. Check before reading "
            "these AUROCs.",
        ]
    return lines


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


def outcomes(report: dict[str, Any], mode: str, key: str) -> dict[tuple[str, str], bool] | None:
    """The per-example outcomes behind the summary rate `key` of `mode`, keyed by (dataset, id); `None` for a figure
    with no per-example outcome (the worst setting of the grid is picked after the fact: not tested)."""
    from .runner import COMMON_OUTCOMES, RATE_OUTCOMES, SUMMARY_SOURCES

    if key not in SUMMARY_SOURCES or "examples" not in report:
        return None
    category, source = SUMMARY_SOURCES[key]
    primary = report["summary"]["primary_decoding"]
    result = {}
    for record in report["examples"]:
        if record["thinking"] != mode or record["decoding"] != primary or record["response"] is None:
            continue
        if category is not None and record["category"] != category:
            continue
        outcome = (COMMON_OUTCOMES.get(source) or RATE_OUTCOMES[record["category"]][source])(record)
        if outcome is not None:
            result[(record["dataset"], record["id"])] = bool(outcome)
    return result


def _probe_scores(report: dict[str, Any]) -> dict[tuple[str, str], tuple[int, float]]:
    return {
        (r["dataset"], r["id"]): (int(r["category"] == "harmful"), r["p_refuse"])
        for r in report.get("probe_examples") or []
    }


def _rate_row(reports: Sequence[dict[str, Any]], mode: str, key: str, label: str, better: str | None) -> dict:
    figures = [r["summary"]["modes"].get(mode, {}) for r in reports]
    values = [f.get(key) for f in figures]
    row = {
        "mode": mode,
        "figure": key,
        "label": label,
        "better": better,
        "values": values,
        "n": [f.get(f"{key}_n") for f in figures],
        "ci": [f.get(f"{key}_ci") for f in figures],
        "deltas": [None if v is None or values[0] is None else v - values[0] for v in values],
        "tests": [None] * len(reports),
    }
    first = outcomes(reports[0], mode, key)
    for i, report in enumerate(reports[1:], start=1):
        later = outcomes(report, mode, key)
        if first is not None and later is not None:
            row["tests"][i] = compare_outcomes(first, later)
    return row


def _probe_row(reports: Sequence[dict[str, Any]], seed: int = 0) -> dict:
    probes = [r.get("probe") or {} for r in reports]
    statuses = [p.get("status", "skipped") for p in probes]
    values = [p.get("auroc") if s == "ok" else None for p, s in zip(probes, statuses)]
    row = {
        "mode": "-",
        "figure": "probe_auroc",
        "label": "Pre-CoT probe AUROC (harmful vs benign)",
        "better": "higher",
        "values": values,
        "status": statuses,
        "n": [[p.get("n_harmful"), p.get("n_benign")] if s == "ok" else None for p, s in zip(probes, statuses)],
        "ci": [p.get("auroc_ci") if s == "ok" else None for p, s in zip(probes, statuses)],
        "deltas": [None if v is None or values[0] is None else v - values[0] for v in values],
        "tests": [None] * len(reports),
    }
    first = _probe_scores(reports[0])
    for i, report in enumerate(reports[1:], start=1):
        later = _probe_scores(report)
        if row["deltas"][i] is None or not first or not later:
            continue
        paired = set(first) == set(later)
        keys = sorted(first)
        before = [first[k] for k in keys] if paired else list(first.values())
        after = [later[k] for k in keys] if paired else list(later.values())
        interval = bootstrap_auroc_difference(
            ([lab for lab, _ in before], [sc for _, sc in before]),
            ([lab for lab, _ in after], [sc for _, sc in after]),
            paired=paired,
            seed=seed,
        )
        if interval is not None:
            row["tests"][i] = {
                "difference": row["deltas"][i],
                "paired": paired,
                "test": f"{'paired' if paired else 'unpaired'} stratified bootstrap of the AUROC difference "
                f"({BOOTSTRAP_RESAMPLES} resamples): marked when its 95% interval excludes 0",
                "ci": list(interval),
                "p_value": None,
                "significant": interval[0] > 0 or interval[1] < 0,
            }
    return row


def compare_reports(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Headline figures of several reports side by side, each with its n and 95% interval, and each later report's
    change from the first (before/after) with the interval of the change and a test of whether it is beyond noise:
    exact McNemar on the same prompts, Fisher's exact test on different ones, a bootstrap for the probe's AUROC."""
    names = _unique_names(reports)
    modes = [m for m in ("on", "off") if any(m in r["summary"]["modes"] for r in reports)]
    rows = [_rate_row(reports, mode, key, label, better) for mode in modes for key, label, better in HEADLINE]
    rows.append(_probe_row(reports))
    warnings = []
    small = [item for report in reports for item in small_samples(report)]
    if small:
        warnings.append(small_sample_warning(small))
    for name, report in zip(names, reports):
        probe = report.get("probe") or {}
        if probe.get("status") == "untrained":
            warnings.append(
                f"⚠ The probe of `{name}` is untrained (presafety_loss_weight=0): no AUROC is reported or compared."
            )
        elif probe.get("status") == "ok" and probe.get("loss_weight") is None:
            warnings.append(
                f"The training weight of `{name}`'s head is not recorded: its AUROC is only meaningful if the head was "
                "trained (presafety_loss_weight > 0)."
            )
    datasets = [sorted(r.get("datasets") or []) for r in reports]
    if any(d != datasets[0] for d in datasets):
        warnings.append(
            "⚠ The runs were evaluated on different datasets ("
            + "; ".join(f"{n}: {', '.join(d)}" for n, d in zip(names, datasets))
            + "): their prompts differ, so the rates are compared unpaired."
        )
    return {"runs": names, "datasets": dict(zip(names, datasets)), "alpha": ALPHA, "warnings": warnings, "rows": rows}


def _unique_names(reports: Sequence[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for report in reports:
        name = report["run_name"]
        while name in names:
            name += "'"
        names.append(name)
    return names


def _value_cell(row: dict[str, Any], i: int) -> str:
    if row.get("status") and row["status"][i] != "ok":
        return row["status"][i]  # "untrained", "skipped", "error": no AUROC to show
    value = row["values"][i]
    if value is None:
        return "–"
    n = row["n"][i]
    n_text = f"n={n[0]}+{n[1]}" if isinstance(n, list) else ("" if n is None else f"n={n}")  # no n: older report
    return " ".join(part for part in (fmt(value), fmt_interval(row["ci"][i]), n_text) if part)


def _delta_cells(row: dict[str, Any], i: int) -> list[str]:
    delta, test = row["deltas"][i], row["tests"][i]
    if delta is None:
        return ["–", "–"]
    mark = ""
    if test is not None and test["significant"] and row["better"] and abs(delta) > 1e-12:
        good = delta < 0 if row["better"] == "lower" else delta > 0
        mark = " ✓" if good else " ✗"
    if test is None:
        why = "not tested (max over settings)" if row["figure"] == "worst_harmful_rate" else "not tested"
        return [f"{delta:+.3f}", why]
    if test.get("p_value") is None:
        return [f"{delta:+.3f} {fmt_interval(test['ci'])}{mark}", "bootstrap"]
    kind = "McNemar" if test["paired"] else "Fisher"
    return [f"{delta:+.3f} {fmt_interval(test['ci'])}{mark}", f"{test['p_value']:.3g} ({kind})"]


def render_comparison(comparison: dict[str, Any]) -> str:
    """The comparison as Markdown: the warnings, the tests used, and one table with each run's figures (value, 95%
    interval, n), then per later run the change from the first with its 95% interval and p-value."""
    runs = comparison["runs"]
    alpha = comparison.get("alpha", ALPHA)
    header = ["Figure", "Thinking"] + runs
    for name in runs[1:]:
        header += [f"Δ {name} [95% CI]", f"p {name}"]
    datasets = comparison.get("datasets") or {}
    lines = [f"# Evaluation comparison: {' vs '.join(runs)}", ""]
    if datasets:
        lines += ["Datasets: " + "; ".join(f"{n}: {', '.join(d) or '?'}" for n, d in datasets.items()), ""]
    lines += [
        "- Each figure: value [95% interval] n. Rates: Wilson score interval, n = examples judged. Probe AUROC: "
        f"stratified bootstrap interval ({BOOTSTRAP_RESAMPLES} resamples), n = harmful + benign prompts.",
        "- Δ: each run minus the first, with its 95% interval: "
        f"{PAIRED_INTERVAL} when both runs judged the same prompts, {UNPAIRED_INTERVAL} when their prompts differ.",
        f"- ✓ / ✗: a change in the better / worse direction, marked only when it is beyond noise: p < {alpha:g} in the "
        f"{PAIRED_TEST} (same prompts) or in {UNPAIRED_TEST} (different prompts); for the probe, when the bootstrap "
        "interval of the AUROC difference excludes 0. The mark follows the exact test, which is stricter than the "
        "interval when few prompts changed. Each row is tested on its own (no correction for the number of rows).",
        "",
    ]
    for warning in comparison.get("warnings") or []:
        lines += [f"> {warning}", ""]
    lines += ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for row in comparison["rows"]:
        arrow = {"lower": " ↓", "higher": " ↑"}.get(row["better"] or "", "")
        cells = [row["label"] + arrow, MODE_LABELS.get(row["mode"], row["mode"])]
        cells += [_value_cell(row, i) for i in range(len(runs))]
        for i in range(1, len(runs)):
            cells += _delta_cells(row, i)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --- the plot ------------------------------------------------------------------------------------------------------


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
    no_math = False
    for i, report in enumerate(reports):
        for mode, figures in report["summary"]["modes"].items():
            x, harmful = _nan(figures.get("math_accuracy")), _nan(figures.get("harmful_rate"))
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
            ax.annotate(
                MODE_LABELS[mode], (x, y), textcoords="offset points", xytext=(8, 6 if filled else -12), fontsize=8
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
    ax.set_title(
        "Safety vs reasoning (top right is best)\n"
        f"{_category_scope(reports, 'harmful', 'harmful_rate')}; {_category_scope(reports, 'math', 'math_accuracy')}",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    return no_math


def _plot_decoding_grid(ax: Any, reports: Sequence[dict[str, Any]], names: list[str], colors: Any) -> None:
    """Panel 2: harmful compliance (with 95% intervals) across the sampling grid."""
    from .config import parse_decoding_setting

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
    ax.set_xlim(-0.5, len(settings) - 0.5)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("Harmful compliance rate (lower is better)")
    ax.set_title(
        f"Harmful compliance across decoding settings\n{_category_scope(reports, 'harmful', 'harmful_rate')}",
        fontsize=9,
    )
    ax.grid(alpha=0.3)


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
        ax.bar(
            xs,
            [0 if math.isnan(v) else v for v in values],
            width=width,
            yerr=[[e[0][0] for e in errors], [e[1][0] for e in errors]],
            error_kw={"elinewidth": 1, "capsize": 2, "ecolor": "0.3"},
            color=colors[i % 10] if mode == "on" else "white",
            edgecolor=colors[i % 10],
            hatch=None if mode == "on" else "//",
            label=f"{names[i]} · {MODE_LABELS[mode]}",
        )
        for x, v in zip(xs, values):
            ax.text(x, 0.01, "–" if math.isnan(v) else f"{v:.2f}", ha="center", va="bottom", fontsize=7, rotation=90)
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


def build_report_figure(reports: Sequence[dict[str, Any]]) -> Any:
    """The matplotlib figure of `plot_reports` (three panels, one legend below them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = _unique_names(reports)
    colors = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(1, 3, figsize=(18, 6.4), gridspec_kw={"width_ratios": [1.05, 1, 1.25]})
    _plot_safety_vs_reasoning(axes[0], reports, names, colors)
    _plot_decoding_grid(axes[1], reports, names, colors)
    _plot_headline_bars(axes[2], reports, names, colors)

    # One legend for the three panels (same runs and modes), below them: it never covers a point
    handles, labels = axes[0].get_legend_handles_labels()
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
    fig.suptitle(
        f"PreSafety evaluation: {' vs '.join(names)}  (judge: {judge}; panels 1 and 3: {primary} decoding; "
        f"bars and whiskers: 95% Wilson intervals)\nPre-CoT probe AUROC [95% bootstrap interval] — {probes}",
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
