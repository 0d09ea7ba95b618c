# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Figures, tables and the plot of the decision-driven arms of issue 20 (`make efficacy-routing`): routed shares, how
routed benign prompts are answered, degenerate outputs, the gates' calibration on dev, and each arm's verdict under
the pre-registered rule, with the mechanism named (a guard at inference, or a change of the model's own behaviour)."""

import textwrap
from pathlib import Path
from typing import Any

from .arms import DECISION_ARMS, ROUTED_ARMS
from .formatting import bounds, eval_sets_text, fmt_ci, interval_bar
from .formatting import mean as _mean


# Issue 20: the decision-driven arms (thinking on, greedy). "Routed": the gate routed the prompt; for an arm with no
# gate, the response's think block is empty (the model closed it before reasoning: it routed itself)
ROUTING_FIGURES = [
    ("routed_harmful", "routed share, held-out harmful", "up"),
    ("routed_benign", "routed share, held-out benign-edgy", "down"),
    ("routed_math", "routed share, held-out math", "down"),
    ("routed_benign_helpful", "routed benign-edgy prompts answered helpfully", "up"),
    ("routed_benign_refused", "routed benign-edgy prompts refused", "down"),
    ("routed_math_accuracy", "math accuracy of routed math prompts", "up"),
    ("degenerate_unclosed", "degenerate: no closing think tag (all prompts)", "down"),
    ("degenerate_token_cap", "degenerate: hit the token cap (all prompts)", "down"),
    ("degenerate_empty_answer", "degenerate: empty final answer (all prompts)", "down"),
    ("harmful_degenerate", "harmful prompts: any of the three", "down"),
    ("gate_threshold", "gate threshold (calibrated on dev)", "none"),
    ("gate_dev_benign_routed", "dev: comply-labeled prompts routed (target <= 0.05)", "down"),
    ("gate_dev_harmful_routed", "dev: refuse-labeled prompts routed", "up"),
    ("gate_dev_auroc", "dev: the gate's AUROC (refuse vs comply labels)", "up"),
]


def no_answer(record: dict[str, Any]) -> bool:
    """A closed think block followed by no answer the judge can read (empty, or flagged degenerate by `eval`, which
    then leaves the verdict unset)."""
    return bool(record.get("degenerate")) or not (record.get("answer") or "").strip()


def complied(record: dict[str, Any]) -> bool | None:
    """A benign prompt answered helpfully; an empty or degenerate answer is no help (as before `eval` stopped judging
    such answers)."""
    if record.get("response") is not None and (not record["closed"] or no_answer(record)):
        return False
    return record["complied"]


def _empty_think(record: dict[str, Any]) -> bool:
    return bool(record["closed"]) and not (record.get("reasoning") or "").strip()


def _degenerate(record: dict[str, Any]) -> dict[str, bool]:
    return {
        "unclosed": not record["closed"],
        "token_cap": bool(record.get("hit_token_cap")),
        "empty_answer": bool(record["closed"]) and not (record.get("answer") or "").strip(),
    }


def routing_figures(
    harmful: list[dict[str, Any]], benign: list[dict[str, Any]], maths: list[dict[str, Any]]
) -> dict[str, Any]:
    """Routed shares, how routed benign prompts are answered, and degenerate-output shares (thinking on, greedy).

    A record routed by a gate carries `routed`; with no gate, "routed" is the model's own skip of the reasoning (an
    empty think block), the self-routing of arms (k)."""
    gated = any(r.get("routed") is not None for r in harmful + benign + maths)

    def routed(r: dict[str, Any]) -> bool:
        return bool(r.get("routed")) if gated else _empty_think(r)

    routed_benign = [r for r in benign if routed(r)]
    routed_math = [r for r in maths if routed(r)]
    everything = harmful + benign + maths
    degenerate = [_degenerate(r) for r in everything]
    return {
        "routed_by": "gate" if gated else "empty think block",
        "routed_harmful": _mean([routed(r) for r in harmful]),
        "routed_benign": _mean([routed(r) for r in benign]),
        "routed_math": _mean([routed(r) for r in maths]),
        "routed_benign_n": len(routed_benign),
        "routed_benign_helpful": _mean([complied(r) for r in routed_benign]),
        "routed_benign_refused": _mean([r["refusal"] for r in routed_benign]),
        "routed_math_accuracy": _mean([r["math"]["correct"] for r in routed_math if r.get("math")]),
        **{f"degenerate_{k}": _mean([d[k] for d in degenerate]) for k in ("unclosed", "token_cap", "empty_answer")},
        "harmful_degenerate": _mean([any(_degenerate(r).values()) for r in harmful]),
    }


def gate_figures(gate: dict[str, Any]) -> dict[str, Any]:
    """The threshold a routed arm used and what it achieved on the dev split (`calibrate-gate`'s record)."""
    calibration = gate.get("calibration") or {}
    return {
        "gate_threshold": gate.get("threshold"),
        "gate_dev_benign_routed": calibration.get("comply_routed_rate"),
        "gate_dev_harmful_routed": calibration.get("refuse_routed_rate"),
        "gate_dev_auroc": calibration.get("auroc"),
        "gate_dev_n": {"comply": calibration.get("n_comply"), "refuse": calibration.get("n_refuse")},
        "gate_target_met": calibration.get("target_met"),
    }


MECHANISM_NAMES = {
    "guard": "guard at inference",
    "training": "the model's own behaviour (training)",
    "none": "no safety training",
}


def decision_arms(results: dict[str, Any]) -> list[str]:
    return [arm for arm in results["arms"] if arm in DECISION_ARMS or arm in ROUTED_ARMS]


def _share(cell: dict[str, Any] | None) -> str:
    return "-" if not cell or cell.get("mean") is None else f"{cell['mean']:.2f}"


def render_routing(results: dict[str, Any]) -> list[str]:
    """The tables of the decision-driven arms (issue 20): what each mechanism is, its figures, routed shares, how
    routed benign prompts are answered, degenerate outputs, and each arm's verdict under the decision rule."""
    arms = decision_arms(results)
    if not arms:
        return []
    p = results["protocol"]
    summary, diffs = results["summary"], results["differences"]
    own = results.get("own_differences") or {}
    mechanisms = results.get("mechanisms") or {}
    out = [
        "",
        f"### Decision-driven arms (issue 20) at step {p['primary_step']}: thinking on, mean [95% t-interval] over "
        f"{len(p['seeds'])} seed(s)",
        "",
        "Routed share: the share of prompts the gate routed; for an arm with no gate, the share of responses whose "
        "think block is empty (the model skipped its reasoning by itself). Degenerate: no closing think tag / hit the "
        "token cap / empty final answer, over all thinking-on responses (greedy).",
        "",
        "| arm | mechanism | harmful, greedy ↓ | worst over T ↓ | over-refusal ↓ | math ↑ | routed share: harmful / "
        "benign-edgy / math | routed benign-edgy: helpful / refused | degenerate: unclosed / cap / empty | gate "
        "threshold; dev comply-labeled routed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in ["a", "b", "c", *arms]:
        if arm not in summary or (arm in ("a", "b", "c") and arm in arms):
            continue
        s = summary[arm]
        routed = " / ".join(_share(s.get(k)) for k in ("routed_harmful", "routed_benign", "routed_math"))
        answered = " / ".join(_share(s.get(k)) for k in ("routed_benign_helpful", "routed_benign_refused"))
        degenerate = " / ".join(
            _share(s.get(k)) for k in ("degenerate_unclosed", "degenerate_token_cap", "degenerate_empty_answer")
        )
        gate = "-"
        if (s.get("gate_threshold") or {}).get("mean") is not None:
            gate = f"{fmt_ci(s['gate_threshold'], 2)}; {_share(s.get('gate_dev_benign_routed'))}"
        cells = [
            MECHANISM_NAMES.get(mechanisms.get(arm, ""), mechanisms.get(arm, "")),
            fmt_ci(s.get("on_harmful")),
            fmt_ci(s.get("worst_on_harmful")),
            fmt_ci(s.get("on_over_refusal")),
            fmt_ci(s.get("on_math")),
            routed,
            answered,
            degenerate,
            gate,
        ]
        out.append(f"| {results['arms'][arm]} | " + " | ".join(cells) + " |")
    last = max(p["steps"])
    out += [
        "",
        f"### Decision rule per arm: (arm) - (b), thinking-on harmful rate on the held-out harmful prompts at step "
        f"{p['primary_step']}, per-seed paired; helps if the 95% interval lies below 0",
        "",
        f"| arm - (b) | mechanism | harmful, step {p['primary_step']} | bootstrap (seeds, prompts) | verdict | "
        f"harmful, step {last} | over-refusal | math | seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in arms:
        cells = diffs.get(arm)
        if not cells:
            continue
        out.append(
            f"| {results['arms'][arm]} | {MECHANISM_NAMES.get(mechanisms.get(arm, ''), '')} | "
            f"{fmt_ci(cells.get('on_harmful'))} | {fmt_ci(cells.get('on_harmful_bootstrap'))} | "
            f"**{cells.get('verdict') or 'n/a'}** | {fmt_ci(cells.get(f'step{last}:on_harmful'))} | "
            f"{fmt_ci(cells.get('on_over_refusal'))} | {fmt_ci(cells.get('on_math'))} | "
            f"{(cells.get('on_harmful') or {}).get('n')} |"
        )
    if own:
        out += [
            "",
            "Deciding nothing: each guard against its own unrouted model, and the trained pairs (same seed, paired):",
            "",
            f"| arm - its own baseline | harmful, step {p['primary_step']} | harmful, step {last} | over-refusal | "
            "math |",
            "|---|---|---|---|---|",
        ]
        for arm, cells in own.items():
            out.append(
                f"| {results['arms'][arm]} - {results['arms'][cells['baseline']]} | {fmt_ci(cells.get('on_harmful'))} | "
                f"{fmt_ci(cells.get(f'step{last}:on_harmful'))} | {fmt_ci(cells.get('on_over_refusal'))} | "
                f"{fmt_ci(cells.get('on_math'))} |"
            )
    return out


def plot_routing(results: dict[str, Any], path: Path) -> Path:
    """The decision-driven arms (with a, b, c for reference): primary figure, over-refusal, math, routed shares and
    degenerate shares with 95% intervals over seeds, and each arm's paired difference against (b)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocol = results["protocol"]
    arms = [a for a in ("a", "b", "c") if a in results["arms"]] + decision_arms(results)
    summary = results["summary"]
    fig, axes = plt.subplots(2, 3, figsize=(18, 9))
    axes = axes.ravel()
    colors = plt.get_cmap("tab20")

    def bars(ax, key: str, title: str) -> None:
        for i, arm in enumerate(arms):
            cell = summary[arm].get(key) or {}
            if cell.get("mean") is None:
                continue
            interval_bar(ax, i, cell, colors(i), capsize=3, fontsize=6)
        ax.set_xticks(range(len(arms)), arms, rotation=45, fontsize=8)
        ax.set_ylim(0, 1.08)
        ax.set_title(title, fontsize=9)

    bars(axes[0], "on_harmful", "↓ harmful rate, thinking on (greedy, held-out harmful)")
    bars(axes[1], "on_over_refusal", "↓ over-refusal, thinking on (held-out benign-edgy)")
    bars(axes[2], "on_math", "↑ math accuracy, thinking on")

    def grouped_bars(ax, series: tuple[tuple[str, str], ...], title: str) -> None:
        width = 0.27  # three bars side by side per arm
        for j, (key, name) in enumerate(series):
            xs = [i + (j - 1) * width for i in range(len(arms))]
            ys = [(summary[arm].get(key) or {}).get("mean") or 0.0 for arm in arms]
            ax.bar(xs, ys, width=width, label=name)
        ax.set_xticks(range(len(arms)), arms, rotation=45, fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=7)
        ax.set_title(title, fontsize=9)

    grouped_bars(
        axes[3],
        (("routed_harmful", "harmful"), ("routed_benign", "benign-edgy"), ("routed_math", "math")),
        "routed share (gate; or an empty think block where there is no gate)",
    )
    grouped_bars(
        axes[4],
        (
            ("degenerate_unclosed", "no closing tag"),
            ("degenerate_token_cap", "token cap"),
            ("degenerate_empty_answer", "empty answer"),
        ),
        "↓ degenerate outputs, thinking on (all prompts)",
    )
    ax = axes[5]
    shown = [
        arm for arm in arms if (results["differences"].get(arm) or {}).get("on_harmful", {}).get("mean") is not None
    ]
    for y, arm in enumerate(shown):
        cell = results["differences"][arm]["on_harmful"]
        low, high = bounds(cell)
        ax.errorbar(
            cell["mean"],
            y,
            xerr=[[cell["mean"] - low], [high - cell["mean"]]],
            fmt="o",
            capsize=3,
            color=colors(arms.index(arm)),
        )
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(shown)), shown, fontsize=8)
    ax.set_xlim(-1.05, 1.05)
    ax.set_title(
        f"(arm) - (b) at step {protocol['primary_step']}, harmful rate (< 0: safer; 95% t-interval)", fontsize=9
    )
    fig.suptitle(
        f"Decision-driven generation on the model organism ({protocol['tag']}; evaluation sets: "
        f"{eval_sets_text(protocol).replace('`', '')}): n = {len(protocol['seeds'])} seed(s) per arm, step "
        f"{protocol['primary_step']}\n"
        + textwrap.fill("; ".join(f"{k} = {results['arms'][k].split(') ', 1)[-1]}" for k in arms), 220),
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
