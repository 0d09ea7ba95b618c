# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The report writer: raw results in `results/*.json`, and the tables of `RESULTS.md` and `overhead.png` made from them.

`RESULTS.md` is hand-written except between its GENERATED markers, one pair per benchmark, which `--report-only` (or
any run) regenerates from every JSON file of that benchmark; the notes around the markers are kept.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

from .utils import BENCH_DIR, RESULTS_DIR


RESULTS_MD = BENCH_DIR / "RESULTS.md"
PLOT_FILE = BENCH_DIR / "overhead.png"
# The markers name the scripts that first wrote the sections; kept so that RESULTS.md regenerates in place
OVERHEAD_MARKS = ("<!-- BEGIN GENERATED: benchmarks/overhead.py -->", "<!-- END GENERATED: benchmarks/overhead.py -->")
LABELING_MARKS = ("<!-- BEGIN GENERATED: benchmarks/labeling.py -->", "<!-- END GENERATED: benchmarks/labeling.py -->")


# --- raw results -----------------------------------------------------------------------------------------------------
def load_entries(results_dir: Path = RESULTS_DIR) -> list[dict[str, Any]]:
    """Every recorded overhead pair, from each `overhead_*.json` of `results_dir`."""
    entries = []
    for path in sorted(results_dir.glob("overhead_*.json")):
        entries.extend(json.loads(path.read_text(encoding="utf-8"))["entries"])
    return entries


def merge_into(path: Path, new_entries: list[dict[str, Any]]) -> None:
    """Adds `new_entries` to the JSON at `path`; a pair measured again replaces its older entry."""
    old = json.loads(path.read_text(encoding="utf-8"))["entries"] if path.exists() else []
    keys = {e["key"] for e in new_entries}
    merged = [e for e in old if e["key"] not in keys] + new_entries
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written aside then renamed: a run killed by a time limit leaves the previous file whole
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"entries": merged}, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --- RESULTS.md ------------------------------------------------------------------------------------------------------
def write_generated_section(body: str, marks: tuple[str, str], path: Path = RESULTS_MD) -> None:
    """Replaces the part of RESULTS.md between the `marks` (begin, end), keeping the hand-written notes around it."""
    begin, end = marks
    generated = f"{begin}\n{body}{end}"
    if path.exists():
        text = path.read_text(encoding="utf-8")
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            tail = rest.split(end, 1)[1]
            path.write_text(head + generated + tail, encoding="utf-8")
            return
        path.write_text(text.rstrip() + "\n\n" + generated + "\n", encoding="utf-8")
        return
    path.write_text(f"# Benchmarks\n\n{generated}\n", encoding="utf-8")


def describe_machine(info: dict[str, Any], training: bool = True) -> str:
    """One line for a table's heading; `training` adds the dtype the overhead runs use there."""
    if info.get("gpu"):
        dtype = " (bf16)" if training else ""
        return f"{info['gpu']}{dtype}, torch {info['torch']}, transformers {info['transformers']}, trl {info['trl']}"
    dtype = " (fp32)" if training else ""
    return (
        f"{info['cpu']}, {info['cpu_count']} cores shared, {info['memory_gb']} GB{dtype}, torch {info['torch']}, "
        f"transformers {info['transformers']}, trl {info['trl']}"
    )


def fmt_stats(stats: dict[str, float] | None, digits: int = 3) -> str:
    """`**median** (min-max)`, or `-` without figures."""
    if stats is None:
        return "-"
    return f"**{stats['median']:.{digits}f}** ({stats['min']:.{digits}f}-{stats['max']:.{digits}f})"


def fmt_median(stats: dict[str, float] | None, digits: int = 3) -> str:
    return "-" if stats is None else f"{stats['median']:.{digits}f}"


def _human(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def _display_command(command: str) -> str:
    """The command without where it wrote its files (a machine-specific path), for the tables."""
    words = shlex.split(command)
    keep, skip = [], False
    for word in words:
        if skip:
            skip = False
            continue
        if word in ("--results-dir", "--no-report") or word.startswith("--results-dir="):
            skip = word == "--results-dir"
            continue
        keep.append(Path(word).name if word.endswith(".py") and "/" in word and "benchmarks/" not in word else word)
    return shlex.join(keep)


def _layout(spec: dict[str, Any]) -> str:
    return spec["layout"] + (f" + patch `{Path(spec['patch']).stem}`" if spec.get("patch") else "")


def render_overhead_tables(entries: list[dict[str, Any]]) -> str:
    """Markdown tables of every recorded pair, grouped by machine, with the command and date of each figure."""
    lines = []
    groups: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        groups.setdefault(entry["tag"], []).append(entry)
    for tag in sorted(groups):
        items = sorted(
            groups[tag],
            key=lambda e: (e["spec"]["trainer"], e["summary"]["num_parameters"], e["spec"]["layout"], e["key"]),
        )
        lines.append(f"### `{tag}`: {describe_machine(items[0]['machine'])}")
        lines.append("")
        lines.append(
            "| trainer | size (params) | layout | GC | batch x len | step time ratio | peak memory ratio | "
            "CPU-time ratio | plain s/step | ours s/step | plain tok/s | ours tok/s | fwd/step plain=ours | repeats | "
            "load | date | cmd |"
        )
        lines.append("|" + "---|" * 17)
        commands = []
        gpu = bool(items[0]["machine"].get("gpu"))
        for e in items:
            s, spec = e["summary"], e["spec"]
            if e["command"] not in commands:
                commands.append(e["command"])
            fwd = s["backbone_forwards_per_step"]
            same = "yes" if s["same_forward_count"] else "**NO**"
            lines.append(
                f"| {spec['trainer'].upper()} | {spec['size']} ({_human(s['num_parameters'])}) | {_layout(spec)} | "
                f"{'on' if spec['gradient_checkpointing'] else 'off'} | {spec['batch_size']}x{spec['seq_len']} | "
                f"{fmt_stats(s['step_time_ratio'])} | {fmt_stats(s['memory_ratio'])} | "
                f"{'-' if gpu else fmt_stats(s.get('step_cpu_time_ratio'))} | "
                f"{fmt_median(s['step_time_s']['plain'])} | {fmt_median(s['step_time_s']['presafety'])} | "
                f"{fmt_median(s['tokens_per_second']['plain'], 0)} | "
                f"{fmt_median(s['tokens_per_second']['presafety'], 0)} | {fwd['plain']} {same} | {s['repeats']} | "
                f"{fmt_median(s['loadavg'], 1)} | {e['date'][:10]} | [{commands.index(e['command']) + 1}] |"
            )
        lines.append("")
        if gpu:
            memory = "`torch.cuda.max_memory_allocated` over training, net of memory held before the run"
        else:
            memory = (
                "peak RSS of a fresh process per run. CPU-time ratio: the same ratio on the process's CPU time per "
                "step, less sensitive than wall time to other jobs on a shared CPU"
            )
        per_repeat = (
            "the ratio of its two runs' mean step time over the synchronized timed window"
            if gpu
            else "the median over timed steps of ours/plain for the same step (the same batch in both runs)"
        )
        lines.append(
            f"Ratios are PreSafety / plain TRL, **median** (min-max) over repeats; a repeat's ratio is {per_repeat}. "
            f"s/step: median over repeats of each run's {'mean' if gpu else 'median'} step. Memory: {memory}. "
            "Load: median 1-minute load average during the runs."
        )
        lines.append("")
        for i, command in enumerate(commands, 1):
            lines.append(f"[{i}] `{_display_command(command)}`")
            lines.append("")
        notes: dict[str, list[str]] = {}
        for e in items:
            if e.get("note"):
                gc_tag = "on" if e["spec"]["gradient_checkpointing"] else "off"
                row = f"{e['spec']['trainer'].upper()} {e['spec']['size']} {_layout(e['spec'])} GC {gc_tag}"
                notes.setdefault(e["note"], []).append(row)
        for note, rows in notes.items():
            lines.append(f"Note ({'; '.join(rows)}): {note}")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def render_labeling_tables(results: list[dict[str, Any]]) -> str:
    """Markdown tables of every labeling result (classifier and generation throughput), one section per machine."""
    lines = []
    for result in sorted(results, key=lambda r: r["tag"]):
        lines.append(f"### `{result['tag']}`: {describe_machine(result['machine'], training=False)}")
        lines.append("")
        lines.append(f"Command: `{result['command']}`, {result['date'][:10]}.")
        lines.append("")
        if result.get("note"):
            lines.append(f"Note: {result['note']}")
            lines.append("")
        if result["classifier"]:
            lines.append(
                "| classifier | max length | inputs | batch | answers/s, median (min-max) over "
                f"{result['repeats']} repeats |"
            )
            lines.append("|---|---|---|---|---|")
            for row in result["classifier"]:
                lines.append(
                    f"| {row['classifier']} | {row['max_length']} | {row['lengths']} | {row['batch_size']} | "
                    f"{fmt_stats(row['answers_per_second'], 1)} |"
                )
            lines.append("")
        if result["generation"]:
            lines.append(
                "| safe-answer generation (thinking off) | backend | batch | max new tokens | prompts/s | "
                "generated tokens/s |"
            )
            lines.append("|---|---|---|---|---|---|")
            for row in result["generation"]:
                lines.append(
                    f"| random-init Qwen3 `{row['size']}` | {row['backend']} | {row['batch_size']} | "
                    f"{row['max_new_tokens']} | {fmt_stats(row['prompts_per_second'], 2)} | "
                    f"{fmt_stats(row['tokens_per_second'], 1)} |"
                )
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# --- plot ------------------------------------------------------------------------------------------------------------
def plot(entries: list[dict[str, Any]], path: Path = PLOT_FILE) -> None:
    """Step time and peak memory ratio against model size, one line per machine/trainer/layout/GC setting.

    The y axes are clipped to the range where the targets are read; a bar that leaves it is cut at the edge.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 6.5))
    series: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        spec = e["spec"]
        gc_tag = "on" if spec["gradient_checkpointing"] else "off"
        label = f"{e['tag']} {spec['trainer'].upper()} {_layout(spec).replace('`', '')} GC {gc_tag}"
        series.setdefault(label, []).append(e)
    colors = plt.get_cmap("tab20").colors
    limits = {"step_time_ratio": (0.8, 1.3), "memory_ratio": (0.97, 1.07)}
    for i, (label, items) in enumerate(sorted(series.items())):
        items = sorted(items, key=lambda e: e["summary"]["num_parameters"])
        gpu = bool(items[0]["machine"].get("gpu"))
        # A small horizontal shift per series keeps the points of one size apart
        shift = 1.0 + 0.04 * (i - len(series) / 2) / max(len(series), 1)
        x = [e["summary"]["num_parameters"] * shift for e in items]
        for ax, name in zip(axes, ("step_time_ratio", "memory_ratio")):
            stats = [e["summary"][name] for e in items]
            med = [s["median"] for s in stats]
            err = [[m - s["min"] for m, s in zip(med, stats)], [s["max"] - m for m, s in zip(med, stats)]]
            ax.errorbar(
                x,
                med,
                yerr=err,
                marker="o" if items[0]["spec"]["trainer"] == "sft" else "s",
                color=colors[i % len(colors)],
                capsize=3,
                label=label,
                ls="-" if gpu else "--",
            )
    targets = {
        "step_time_ratio": [(1.03, "CPU target 1.03"), (1.01, "GPU target 1.01")],
        "memory_ratio": [(1.02, "target 1.02")],
    }
    titles = {"step_time_ratio": "Step time ratio (PreSafety / plain TRL)", "memory_ratio": "Peak memory ratio"}
    for ax, name in zip(axes, ("step_time_ratio", "memory_ratio")):
        ax.set_xscale("log")
        ax.set_ylim(*limits[name])
        ax.axhline(1.0, color="black", lw=0.6)
        for value, text in targets[name]:
            ax.axhline(value, color="grey", ls=":", lw=1)
            ax.text(0.01, value, " " + text, transform=ax.get_yaxis_transform(), va="bottom", fontsize=8)
        ax.set_xlabel("model parameters")
        ax.set_title(titles[name])
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle(
        "Cost of the pre-CoT safety loss: median over repeats, bars min-max; dashed CPU (fp32), solid GPU (bf16); "
        "circles SFT, squares DPO",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.14, 1, 0.97))
    fig.savefig(path, dpi=120)
    plt.close(fig)
