# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The comparison of several reports (before/after): headline figures side by side with their n and 95% intervals,
and each later run's change from the first with the interval of the change and a test of whether it is beyond noise
(exact McNemar on the same prompts, Fisher's exact test on different ones, a bootstrap for the probe's AUROC)."""

from collections.abc import Sequence
from typing import Any

from ..overlap import overlap_warning
from .formatting import (
    HEADLINE,
    MODE_LABELS,
    ROUTING_KEYS,
    fmt,
    fmt_interval,
    is_routed,
    small_sample_warning,
    small_samples,
    unique_names,
)
from .metrics import COMMON_OUTCOMES, RATE_OUTCOMES, SUMMARY_SOURCES
from .stats import (
    ALPHA,
    BOOTSTRAP_RESAMPLES,
    PAIRED_INTERVAL,
    PAIRED_TEST,
    UNPAIRED_INTERVAL,
    UNPAIRED_TEST,
    bootstrap_auroc_difference,
    compare_outcomes,
)


def outcomes(report: dict[str, Any], mode: str, key: str) -> dict[tuple[str, str], bool] | None:
    """The per-example outcomes behind the summary rate `key` of `mode`, keyed by (dataset, id); `None` for a figure
    with no per-example outcome (the worst setting of the grid is picked after the fact: not tested)."""
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
    names = unique_names(reports)
    modes = [m for m in ("on", "off") if any(m in r["summary"]["modes"] for r in reports)]
    # The routed shares are shown when a run routes (`route`); thinking off is never routed
    routed = any(is_routed(r) for r in reports)
    rows = [
        _rate_row(reports, mode, key, label, better)
        for mode in modes
        for key, label, better in HEADLINE
        if key not in ROUTING_KEYS or (routed and mode == "on")
    ]
    rows.append(_probe_row(reports))
    warnings = []
    small = [item for report in reports for item in small_samples(report)]
    if small:
        warnings.append(small_sample_warning(small))
    for name, report in zip(names, reports):
        overlap = overlap_warning(report.get("training_overlap"))
        if overlap:
            warnings.append(f"`{name}`: " + overlap)
        degenerate = report["summary"].get("output_warnings") or []
        if degenerate:
            warnings.append(
                f"⚠ Figures of `{name}` rest on degenerate outputs (neither refusal nor compliance, left out of its "
                "rates) or on answers cut at the token cap: " + " ".join(degenerate)
            )
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
    policies = [
        f"{n}: {r['routing']['policy']} at P(refuse) ≥ {r['routing']['threshold']:.4g}"
        if is_routed(r)
        else f"{n}: none"
        for n, r in zip(names, reports)
    ]
    if routed:
        warnings.append("Routed generation (thinking on): " + "; ".join(policies) + ".")
    datasets = [sorted(r.get("datasets") or []) for r in reports]
    if any(d != datasets[0] for d in datasets):
        warnings.append(
            "⚠ The runs were evaluated on different datasets ("
            + "; ".join(f"{n}: {', '.join(d)}" for n, d in zip(names, datasets))
            + "): their prompts differ, so the rates are compared unpaired."
        )
    return {"runs": names, "datasets": dict(zip(names, datasets)), "alpha": ALPHA, "warnings": warnings, "rows": rows}


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
