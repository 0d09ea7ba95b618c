# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The cost of the pre-CoT safety loss against plain TRL, measured side by side (issue 7).

Runs plain `SFTTrainer` / `DPOTrainer` and `PreSafetySFTTrainer` / `PreSafetyDPOTrainer` on the same random-init model
(same seed, data, order and settings), alternating the two within each repeat (ABBA order across repeats, so a drift in
machine load hits both), and reports per pair: the step time ratio (ours / plain of each run's median step time), the
peak memory ratio (CPU: peak RSS of a fresh subprocess per run; CUDA: `torch.cuda.max_memory_allocated`), tokens per
second and backbone forward calls per step, each with min/median/max over repeats. Warm-up steps are not timed. A step
is timed from the end of the previous optimizer step to the end of this one, so it includes loading and collating the
batch, forward, backward, the optimizer and the previous step's logging: everything the plugin could slow down.

    python -m benchmarks.overhead --sizes tiny,small --repeats 3 --steps 5   # CPU: results/overhead_cpu.json
    python -m benchmarks.overhead --device cuda --sizes 0.6b,1.7b --tag h100  # GPU (bf16): overhead_h100.json

Each call merges its figures into `benchmarks/results/overhead_<tag>.json` (a configuration measured again replaces
its old entry), then regenerates the tables of `benchmarks/RESULTS.md` (between its GENERATED markers) and the plot
`benchmarks/overhead.png` from every `overhead_*.json` in `benchmarks/results/`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any


if not __package__:  # started by its path (`python benchmarks/overhead.py`, as older results record it)
    from _script import run_as_module

    run_as_module(__file__)

from .report import (  # noqa: E402
    OVERHEAD_MARKS,
    load_entries,
    merge_into,
    plot,
    render_overhead_tables,
    write_generated_section,
)
from .stats import summarize  # noqa: E402
from .timed_run import RunSpec, run_in_subprocess, run_once  # noqa: E402
from .utils import IMPLS, LAYOUTS, RESULTS_DIR, SIZES, TRAINERS, machine_info  # noqa: E402


def _csv(kind: Callable[[str], Any], choices: Iterable[Any] | None = None) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        values = [kind(v.strip()) for v in text.split(",") if v.strip()]
        bad = [v for v in values if choices is not None and v not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"{bad} not in {sorted(choices)}")
        return values

    return parse


def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected 'on' or 'off', got {text!r}")
    return text == "on"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Step time, peak memory and tokens/s of the PreSafety trainers against plain TRL, side by side.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--sizes", type=_csv(str, SIZES), default="tiny", help=f"Model shapes, comma-separated: {list(SIZES)}."
    )
    parser.add_argument("--trainers", type=_csv(str, TRAINERS), default="sft,dpo", help="sft and/or dpo.")
    parser.add_argument(
        "--layouts", type=_csv(str, LAYOUTS), default="padded", help="SFT batches: padded and/or packed (BFD)."
    )
    parser.add_argument(
        "--gradient-checkpointing", type=_csv(_on_off), default="off", help="Gradient checkpointing: on and/or off."
    )
    parser.add_argument("--repeats", type=int, default=3, help="Pairs of runs (plain and ours) per configuration.")
    parser.add_argument("--steps", type=int, default=5, help="Timed optimizer steps per run.")
    parser.add_argument(
        "--warmup", type=int, default=2, help="Untimed optimizer steps at the start of each run (>= 2)."
    )
    parser.add_argument("--batch-size", type=int, default=4, help="Per-device batch size (pairs for DPO).")
    parser.add_argument("--seq-len", type=int, default=256, help="max_length; examples span [seq_len/2, seq_len].")
    parser.add_argument("--grad-accum", type=int, default=1, help="Gradient accumulation steps.")
    parser.add_argument("--logging-steps", type=int, default=10, help="Trainer logging interval (TRL's default).")
    parser.add_argument(
        "--presafety-loss-weight", type=float, default=1.0, help="presafety_loss_weight of the PreSafety runs."
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (bf16 on cuda, fp32 on cpu).")
    parser.add_argument(
        "--isolation",
        choices=["subprocess", "inprocess"],
        default=None,
        help="Fresh process per run (needed for CPU peak RSS; the default on cpu) or all runs in this process "
        "(the default on cuda, where memory is measured per run by the allocator).",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's).")
    parser.add_argument(
        "--warm-run",
        type=_on_off,
        default=None,
        help="on/off: one unrecorded run per configuration first (default: on with --isolation inprocess).",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--patch",
        default=None,
        help="Python file run before each run's trainer is built, e.g. a monkeypatch of a proposed trainer change: "
        "measures it against plain TRL without editing the package. Its name is added to the results key.",
    )
    parser.add_argument(
        "--tag", default=None, help="Results file: results/overhead_<tag>.json (default: the device type)."
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="Where the raw JSON goes.")
    parser.add_argument("--no-report", action="store_true", help="Do not regenerate RESULTS.md and the plot.")
    parser.add_argument(
        "--report-only", action="store_true", help="Only regenerate RESULTS.md and the plot from the JSON results."
    )
    parser.add_argument("--timeout", type=float, default=None, help="Seconds per subprocess run.")
    return parser


def configurations(args: argparse.Namespace) -> list[RunSpec]:
    """The pairs to measure, smallest model first (a run cut short by a time limit keeps the cheap figures)."""
    specs = []
    for size in sorted(args.sizes, key=list(SIZES).index):
        for trainer in args.trainers:
            for layout in args.layouts:
                if trainer == "dpo" and layout != "padded":
                    continue  # TRL 1.16's DPO has no packing and disables padding-free
                for gc_on in args.gradient_checkpointing:
                    specs.append(
                        RunSpec(
                            trainer=trainer,
                            impl="plain",
                            size=size,
                            gradient_checkpointing=gc_on,
                            layout=layout,
                            batch_size=args.batch_size,
                            seq_len=args.seq_len,
                            steps=args.steps,
                            warmup=args.warmup,
                            device=args.device,
                            seed=args.seed,
                            grad_accum=args.grad_accum,
                            logging_steps=args.logging_steps,
                            presafety_loss_weight=args.presafety_loss_weight,
                            threads=args.threads,
                            patch=str(Path(args.patch).resolve()) if args.patch else None,
                        )
                    )
    return specs


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    # Set here, not at import: a process that imports this module (the tests) keeps the tokenizers' own threading
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # silences the fork warning of the worker subprocesses
    args = build_parser().parse_args(argv)
    if args.report_only:
        report(args.results_dir)
        return []
    if args.steps < 1 or args.warmup < 2:
        # Step 1 logs (`logging_first_step`) and its log, with its lazy imports, is timed in step 2: both warm up
        raise ValueError(f"Need --steps >= 1 and --warmup >= 2, got --steps {args.steps} --warmup {args.warmup}.")
    isolation = args.isolation or ("inprocess" if args.device.startswith("cuda") else "subprocess")
    tag = args.tag or args.device.split(":")[0]
    command = "python -m benchmarks.overhead " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    machine = machine_info(args.device)
    entries = []
    warm_run = args.warm_run if args.warm_run is not None else isolation == "inprocess"
    for base in configurations(args):
        runs = []
        if warm_run:
            # In one process, the first run to meet a batch shape pays one-time costs (Triton autotuning of TRL's
            # chunked log-prob kernel, allocator growth): an unrecorded run takes them for both
            run_once(RunSpec(**{**asdict(base), "impl": "plain"}))
        for repeat in range(args.repeats):
            # ABBA: the order alternates between repeats, so a trend in the machine's load cancels in the median
            order = IMPLS if repeat % 2 == 0 else IMPLS[::-1]
            for impl in order:
                spec = RunSpec(**{**asdict(base), "impl": impl})
                try:
                    if isolation == "subprocess":
                        result = run_in_subprocess(spec, args.timeout)
                    else:
                        result = run_once(spec)
                except Exception as error:  # one failed configuration must not lose the others' figures
                    print(f"[overhead] FAILED {spec.key} {impl}: {error}", file=sys.stderr, flush=True)
                    runs = []
                    break
                result["repeat"] = repeat
                runs.append(result)
                print(
                    f"[overhead] {spec.key} {impl:9s} repeat {repeat}: step {result['step_time']:.4f}s "
                    f"peak {result.get('peak_allocated_mb', result['peak_rss_mb']):.0f} MB "
                    f"fwd/step {sorted(set(result['backbone_forwards_per_step']))} "
                    f"load {result['loadavg_after'][0]:.1f}",
                    flush=True,
                )
            if not runs:
                break
        if not runs:
            continue
        summary = summarize(runs)
        entry = {
            "key": base.key,
            "tag": tag,
            "spec": {k: v for k, v in asdict(base).items() if k != "impl"},
            "summary": summary,
            "machine": machine,
            "command": command,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "isolation": isolation,
            "runs": runs,
        }
        entries.append(entry)
        t, m = summary["step_time_ratio"], summary["memory_ratio"]
        print(
            f"[overhead] == {base.key}: step time ratio {t['median']:.4f} ({t['min']:.4f}-{t['max']:.4f}), "
            f"memory ratio {m['median']:.4f} ({m['min']:.4f}-{m['max']:.4f}), same forwards: "
            f"{summary['same_forward_count']}",
            flush=True,
        )
        # Written after each configuration: a run cut short keeps what it measured
        merge_into(args.results_dir / f"overhead_{tag}.json", [entry])
    if not args.no_report and entries:
        report(args.results_dir)
    return entries


def report(results_dir: Path = RESULTS_DIR) -> None:
    """Regenerates the tables of RESULTS.md and the plot from every `overhead_*.json`."""
    all_entries = load_entries(results_dir)
    for entry in all_entries:  # from the recorded runs, so that every figure follows the current definitions
        entry["summary"] = summarize(entry["runs"], entry.get("excluded_repeats", ()))
    write_generated_section(render_overhead_tables(all_entries), OVERHEAD_MARKS)
    plot(all_entries)


if __name__ == "__main__":
    main()
