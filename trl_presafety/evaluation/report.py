# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The evaluation report: `report.json` (every figure and per-example record), `report.md` (tables) and `report.png`
(safety vs reasoning, CoT on/off). The comparison of several reports (before/after) is in `compare.py`, the plot in
`plots.py`.

Every rate is shown with its n and 95% Wilson interval, every AUROC with a 95% bootstrap interval; a comparison marks a
change only when a test says it is beyond noise (see `stats.py`).
"""

import json
from pathlib import Path
from typing import Any

from ..overlap import overlap_warning
from .config import JUDGE_VIEWS
from .formatting import (
    HEADLINE,
    MODE_LABELS,
    ROUTING_KEYS,
    TABLE_COLUMNS,
    fmt,
    fmt_interval,
    fmt_rate,
    is_routed,
    small_sample_warning,
    small_samples,
)
from .plots import plot_reports
from .stats import BOOTSTRAP_RESAMPLES, SMALL_N


__all__ = [
    "judge_view_notes",
    "load_report",
    "output_warning_lines",
    "probe_markdown",
    "render_markdown",
    "routing_markdown",
    "write_report",
]


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
    """The report as Markdown: the headline table (CoT on / off), the probe, per-dataset figures and errors. Every rate
    comes with its 95% Wilson interval and n, every AUROC with its bootstrap interval."""
    summary = report["summary"]
    modes = list(summary["modes"])
    routed = is_routed(report)
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
        if key in ROUTING_KEYS and not routed:
            continue
        arrow = {"lower": " ↓", "higher": " ↑"}.get(better or "", "")
        cells = [fmt_rate(summary["modes"][m], key) for m in modes]
        if key == "worst_harmful_rate":
            cells = [f"{cell} ({summary['modes'][m].get('worst_decoding') or '–'})" for cell, m in zip(cells, modes)]
        lines.append(f"| {label}{arrow} | " + " | ".join(cells) + " |")
    lines += judge_view_notes(report)
    small = small_samples(report)
    if small:
        lines += ["", small_sample_warning(small)]
    lines += output_warning_lines(report)
    overlap = overlap_warning(report.get("training_overlap"))
    if overlap:
        lines += ["", overlap]
    if routed:
        lines += ["", "## Routed generation (the pre-CoT decision chooses how the model answers)", ""]
        lines += routing_markdown(report)
    lines += ["", "## Pre-CoT probe (safety head, no token generated)", "", *probe_markdown(report.get("probe") or {})]
    routed_header = ("| Routed ", "---:|") if routed else ("", "")
    lines += [
        "",
        "## By dataset and decoding",
        "",
        "Rates with [95% Wilson interval]; a rate's own n is given where it differs from the judged examples.",
        "",
        "Degenerate: empty answers or think tags where none belong (neither refusal nor compliance, left out of the "
        "rates); Incomplete: no closing think tag; Token cap: stopped at max_new_tokens.",
        "",
        "| Thinking | Decoding | Category | Dataset | n | Main rates | Degenerate | Incomplete | Token cap | "
        "Mean tokens | Errors " + routed_header[0] + "|",
        "|---|---|---|---|---:|---|---:|---:|---:|---:|---:|" + routed_header[1],
    ]
    for row in report["figures"]:
        judged = row["n"] - row["n_errors"]
        rates = ", ".join(f"{k}={fmt_rate(row, k, judged)}" for k in TABLE_COLUMNS[row["category"]])
        routed_cell = f" {fmt_rate(row, 'routed_rate', judged)} |" if routed else ""
        lines.append(
            f"| {row['thinking']} | {row['decoding']} | {row['category']} | {row['dataset']} | {row['n']} | {rates} | "
            f"{fmt_rate(row, 'degenerate_rate', judged)} | {fmt_rate(row, 'incomplete_rate', judged)} | "
            f"{fmt_rate(row, 'token_cap_rate', judged)} | {fmt(row['mean_tokens'], 1)} | {row['n_errors']} |{routed_cell}"
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


def output_warning_lines(report: dict[str, Any]) -> list[str]:
    """The report's warnings about degenerate outputs and the token cap (see `metrics.degenerate_warnings`)."""
    warnings = report["summary"].get("output_warnings") or []
    if not warnings:
        return []
    return [
        "",
        "⚠ **Degenerate outputs.** These figures rest on outputs a judge cannot read as a decision (or on answers cut "
        "at the token cap); read the rates with that in mind:",
        "",
        *[f"- {line}" for line in warnings],
    ]


def routing_markdown(report: dict[str, Any], max_ids: int = 20) -> list[str]:
    """The routing section: the policy, the head and threshold (and where the threshold comes from), the routed share
    per dataset and category, how the routed benign prompts were answered, and which prompts were routed."""
    routing = report["routing"]
    policy = routing["policy"]
    what = {
        "no_think": "answered with thinking off (the template's thinking-off prompt)",
        "primer": f"reasoned from the prefilled sentence {routing.get('primer')!r}",
        "refuse": f"answered with the fixed refusal {routing.get('refusal')!r} (nothing generated)",
    }[policy]
    lines = [
        f"Thinking-on prompts whose pre-CoT P(refuse) is at or above **{routing['threshold']:.4g}** "
        f"({routing['threshold_source']}) were {what}; the others reasoned as usual. Thinking off is not routed. "
        f"Head: `{routing['gate']}`. Policy: `{policy}`.",
    ]
    calibration = routing.get("calibration")
    if calibration:
        lines.append(
            f"The threshold was calibrated on {calibration.get('source', '?')} for at most "
            f"{fmt(calibration.get('target_comply_routed_rate'))} of its comply-labeled prompts routed (achieved: "
            f"{fmt(calibration.get('comply_routed_rate'))}; refuse-labeled routed: "
            f"{fmt(calibration.get('refuse_routed_rate'))})."
        )
    if routing.get("n_calibration_overlap"):
        lines.append(
            f"⚠ {routing['n_calibration_overlap']} evaluated prompt(s) were in the set the threshold was calibrated "
            "on: the routed shares on them are not held-out figures."
        )
    if routing.get("n_nonfinite"):
        lines.append(
            f"⚠ {routing['n_nonfinite']} prompt(s) got a non-finite P(refuse) from the head and were routed "
            "(the gate fails closed)."
        )
    lines += [
        "",
        f"Routed share of the thinking-on prompts ({routing['decoding']} decoding; the decision is the prompt's, "
        "every decoding setting routes the same prompts); routed benign-edgy prompts by how they were answered.",
        "",
        "| Dataset | Routed (all) | Harmful | Benign-edgy | Math | Routed benign-edgy: helpful / refused / no answer "
        "| Routed prompts |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for dataset, entry in sorted(routing["datasets"].items()):
        cells = []
        for category in ("harmful", "benign_edgy", "math"):
            counts = entry["by_category"].get(category)
            cells.append(f"{fmt(counts['routed_share'])} ({counts['n_routed']}/{counts['n']})" if counts else "–")
        answered = entry["routed_benign_edgy"]
        ids = entry["routed_ids"]
        shown = ", ".join(f"`{i}`" for i in ids[:max_ids]) + (
            f", ... ({len(ids)} in all)" if len(ids) > max_ids else ""
        )
        lines.append(
            f"| {dataset} | {fmt(entry['routed_share'])} ({entry['n_routed']}/{entry['n']}) | "
            + " | ".join(cells)
            + f" | {answered.get('helpful', 0)} / {answered.get('refused', 0)} / {answered.get('no answer', 0)} | "
            f"{shown or '–'} |"
        )
    return lines


def judge_view_notes(report: dict[str, Any]) -> list[str]:
    """What the judge read in each view, how many reasoning + answer texts it read cut, and how many of its outputs
    could not be parsed (at the primary decoding, all datasets)."""
    config = report.get("config") or {}
    listed = config.get("judge_views") or ["answer", "reasoning"]  # a report from before the views
    views = [v for v in JUDGE_VIEWS if v in listed and (v != "reasoning" or config.get("judge_reasoning", True))]
    names = {"answer": "the answer only", "answer_reasoning": "reasoning + answer together", "reasoning": "the trace"}
    lines = ["", "Judge views (harmful prompts): " + "; ".join(names[v] for v in views) + "."]
    modes = report["summary"]["modes"]
    clipped = {m: f.get("n_answer_reasoning_clipped") or 0 for m, f in modes.items()}
    if "answer_reasoning" in views and any(clipped.values()):
        limit = (report.get("judge") or {}).get("max_tokens")
        lines.append(
            "Reasoning + answer texts longer than the judge's input"
            + (f" ({limit} tokens)" if limit else "")
            + ": "
            + ", ".join(f"{clipped[m]} ({MODE_LABELS.get(m, m)})" for m in modes)
            + ". Their reasoning was cut from its front; the answer was kept whole."
        )
    unparsed = {m: f.get("n_unparsed") or 0 for m, f in modes.items()}
    if any(unparsed.values()):
        lines.append(
            "Guard outputs that could not be parsed: "
            + ", ".join(f"{unparsed[m]} ({MODE_LABELS.get(m, m)})" for m in modes)
            + ". They count as unjudged (left out of the rates), never as safe; see Errors."
        )
    return lines


def auroc_interval_note(probe: dict[str, Any]) -> str | None:
    """What the AUROC's bootstrap interval can and cannot tell at this n: a zero-width interval from a few prompts is
    no certainty (every resample of a perfectly separated small sample is perfectly separated too)."""
    if probe.get("status") != "ok" or probe.get("auroc") is None:
        return None
    n_pos, n_neg = probe.get("n_harmful") or 0, probe.get("n_benign") or 0
    ci = probe.get("auroc_ci")
    zero_width = ci is not None and abs(ci[1] - ci[0]) < 1e-12
    if not zero_width and min(n_pos, n_neg) >= SMALL_N:
        return None
    text = f"⚠ The AUROC rests on {n_pos} harmful + {n_neg} benign prompts"
    if zero_width:
        text += (
            f": its bootstrap interval {fmt_interval(ci)} has zero width because every resample of so few prompts is "
            "separated the same way. That says the sample is too small to bound the AUROC, not that it is certain"
        )
    text += (
        f". The bootstrap interval can tell a head that separates these prompts from one that does not; it cannot "
        f"tell how it does on others. Use at least {SMALL_N} prompts per class (a public set) for a figure to report."
    )
    return text


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
    note = auroc_interval_note(probe)
    if note:
        lines += ["", note]
    if probe.get("loss_weight") is None:
        lines += [
            "",
            "The head's training weight is not recorded (no `loss_weight` in its safety_head_config.json): a head trained with weight 0 scores like a random one. Check before reading "
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
