# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The efficacy study (issue 15): does the pre-CoT loss make a reasoning model safer than plain SFT on the same data?

Every model-facing step is a `trl-presafety` command, as a user runs it (each is written to `<output_dir>/commands.sh`
with its wall time):

1. the model organism (`organism.py`, plain TRL SFT from scratch) and its gap, measured with `trl-presafety eval`;
2. `trl-presafety train-classifier` (MiniLM refusal classifier) and `trl-presafety label` (the organism with thinking
   off answers the safety set; the classifier reads each answer into `safety_label`);
3. the arms, same data prompts, steps, learning rate and seeds: (a) the organism, (b) plain SFT
   (`presafety_loss_weight 0`), (c) PreSafety SFT, (d) PreSafety DPO; with `--methods`, (e) IPO pairs in DPO
   (`trl-presafety build-ipo-pairs`) and (f) AltTrain data in plain SFT (`trl-presafety build-alttrain`); with
   `--ablations`, PreSafety SFT with weight 0.2 / 5, anchor `think_end`, a middle layer, and plain / PreSafety SFT
   without gradient clipping;
4. `trl-presafety eval` of every arm, seed and checkpoint on the held-out prompts; `trl-presafety eval-compare` per
   seed; a linear probe fitted on the pre-CoT hidden state of every model (`probe.py`);
5. the figures, per seed and aggregated (`results/efficacy_<tag>.json`), `RESULTS.md` and `efficacy.png`.

    python -m benchmarks.efficacy.study          # the default study (arms a-d, 10 seeds): `make efficacy`
    python -m benchmarks.efficacy.study --arms a b c --methods --ablations --seeds 0 1 2 3 4 --tag extended
    python -m benchmarks.efficacy.study --harmful-prompts my_harmful.txt --benign-prompts my_benign.txt --tag user-mine
"""

import argparse
import json
import multiprocessing
import os
import platform
import resource
import shlex
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .arms import (  # noqa: F401 (ARMS, ABLATIONS: the registries, also read from here)
    ABLATIONS,
    ARMS,
    DECISION_ARMS,
    DEFAULT_ARMS,
    LORA_LEARNING_RATE,
    METHOD_ARMS,
    ROUTED_ARMS,
    ROUTING_ARMS,
    STEPLESS_ARMS,
    Arm,
    RoutedArm,
    arm_spec,
    arm_steps,
)
from .layout import RESULTS_DIR, Layout, StudyConfig
from .stages import (
    _set_threads,
    build_organism_stage,
    classifier_stage,
    compare_stage,
    label_stage,
    methods_data_stage,
    organism_seen_eval_stage,
    run_arm_seed,
    run_seed,
    write_data,
)


# --- running commands ----------------------------------------------------------------------------------------------


# --- layout --------------------------------------------------------------------------------------------------------


# --- stages --------------------------------------------------------------------------------------------------------


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        return None


def machine() -> dict[str, Any]:
    """What the figures may depend on besides the code: the same code and library versions on another CPU train
    another organism (float sums differ with the kernels torch picks for the CPU's instruction set), so the CPU, the
    SIMD level torch uses and every library on the training path are recorded."""
    from importlib.metadata import PackageNotFoundError, version

    import torch
    import transformers
    import trl

    libraries = {}
    for name in ("tokenizers", "datasets", "accelerate", "peft", "numpy", "safetensors"):
        try:
            libraries[name] = version(name)
        except PackageNotFoundError:
            libraries[name] = None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        **libraries,
    }


def partial_run_record(config: StudyConfig) -> dict[str, Any]:
    """What a run without a results file (stopped, or made of several invocations) can say of itself: its protocol,
    the machine, and, from `commands.sh`, every command with its wall time and the span of the run. The figures are
    those of the reports that exist; each table gives their n."""
    layout = Layout(config)
    lines = layout.commands.read_text(encoding="utf-8").splitlines() if layout.commands.is_file() else []
    starts = [datetime.fromisoformat(line.split()[1]) for line in lines if line.startswith("# ") and " study " in line]
    seconds = {"organism": 0.0, "classifier_and_labels": 0.0, "arms": 0.0}
    for line in lines:
        if line.startswith("#") or "  # " not in line:
            continue
        command, wall = line.rsplit("  # ", 1)
        stage = (
            "organism"
            if "benchmarks.efficacy.organism" in command or "organism_seen" in command
            else "classifier_and_labels"
            if " train-classifier " in command or " label " in command
            else "arms"
        )
        seconds[stage] += float(wall.split()[0])
    now = datetime.now(timezone.utc)
    return {
        "protocol": asdict(config),
        "machine": machine(),
        "date": now.isoformat(timespec="seconds"),
        "timings": {
            **seconds,
            "total": (now - min(starts)).total_seconds() if starts else 0.0,
            "partial": True,
            "note": "built from commands.sh (a run of several invocations, or stopped before its end): `arms` is the "
            "sum of the wall times of the commands that finished (several ran in parallel); `total` is the span from "
            "the first start of the study in this folder to this report",
        },
        "commands": lines[-400:],
        "argv": "(partial run; see commands.sh)",
        "organism": {
            k: v
            for k, v in json.loads((layout.organism / "organism_info.json").read_text(encoding="utf-8")).items()
            if k != "log"
        }
        if (layout.organism / "organism_info.json").is_file()
        else {},
    }


def report_only(config: StudyConfig) -> dict[str, Any]:
    """Recomputes the figures from the reports already in `output_dir` (after a change of `results.py`), keeping the
    protocol, machine, date and timings of the run's results file."""
    from .analysis import collect_results
    from .results import write_outputs

    path = RESULTS_DIR / f"efficacy_{config.tag}.json"
    previous = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else partial_run_record(config)
    results = {**previous, **collect_results(config, Layout(config))}
    if config.write_results:
        write_outputs(results, config)
    return results


def run_study(config: StudyConfig, command: str = "") -> dict[str, Any]:
    """Runs (or resumes) the whole study and returns the results (also written to `results/efficacy_<tag>.json`)."""
    from .analysis import collect_results
    from .results import write_outputs

    _set_threads(config.threads)
    routed = [arm_spec(key) for key in config.arms if arm_spec(key).routed]
    for arm in routed:
        needed = [arm.base] + ([arm.gate] if arm.gate not in ("fit", "own") else [])
        missing = [key for key in needed if key not in config.arms]
        if missing:
            raise ValueError(f"Arm {arm.key!r} evaluates the checkpoints or gate of {missing}: add them to `arms`.")
    if routed and config.eval_name == "dev":
        raise ValueError(
            "The routed arms calibrate their thresholds on the dev split, so they cannot be evaluated on it: use "
            "`eval_sets='heldout'` (or your own prompt files) for them."
        )
    if config.primary_step not in config.steps:
        raise ValueError(
            f"`primary_step` {config.primary_step} is not one of the evaluated `steps` {config.steps}: add it, or "
            "choose one of them."
        )
    layout = Layout(config)
    layout.root.mkdir(parents=True, exist_ok=True)
    started = time.time()
    timings: dict[str, Any] = {}
    with open(layout.commands, "a", encoding="utf-8") as f:
        f.write(f"# {datetime.now(timezone.utc).isoformat(timespec='seconds')} study {json.dumps(asdict(config))}\n")

    t = time.time()
    data_info = write_data(config, layout)
    organism = build_organism_stage(config, layout)
    organism_seen_eval_stage(config, layout)
    timings["organism"] = time.time() - t
    t = time.time()
    classifier_stage(config, layout)
    needs = {arm_spec(k).data for k in config.arms} - {None}
    if "self_routing" in needs:
        needs.add("sft")  # built from the safety split's label folder
    for name in sorted(needs & {"sft", "dpo"}):
        label_stage(config, layout, name)
    if routed:
        label_stage(config, layout, "dev")  # the calibration set of the gates
    timings["classifier_and_labels"] = time.time() - t
    t = time.time()
    timings["methods_data"] = methods_data_stage(config, layout)
    timings["methods_data_total"] = time.time() - t

    # One task per arm and seed; with routed arms (which evaluate the checkpoints of trained ones), one task per seed
    t = time.time()
    if routed:
        function, tasks = run_seed, [(seed, config) for seed in config.seeds]
    else:
        function, tasks = run_arm_seed, [(arm, seed, config) for seed in config.seeds for arm in config.arms]
    if config.jobs > 1:
        with multiprocessing.get_context("spawn").Pool(config.jobs) as pool:
            task_timings = pool.map(function, tasks, chunksize=1)
    else:
        task_timings = [function(task) for task in tasks]
    if routed:
        task_timings = [x for xs in task_timings for x in xs]
    timings["arms"] = time.time() - t
    timings["per_task"] = task_timings
    t = time.time()
    compare_stage(config, layout)
    timings["compare"] = time.time() - t
    timings["total"] = time.time() - started
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    timings["cpu_seconds"] = sum(u.ru_utime + u.ru_stime for u in usage)

    results = collect_results(config, layout)
    results.update(
        protocol=asdict(config),
        data=data_info,
        organism={k: v for k, v in organism.items() if k != "log"},
        machine=machine(),
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        timings=timings,
        commands=layout.commands.read_text(encoding="utf-8").splitlines()[-400:],
        argv=command,
    )
    if config.write_results:
        write_outputs(results, config)
    return results


def parse_args(argv: list[str] | None = None) -> StudyConfig:
    defaults = StudyConfig()
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--output_dir", default=defaults.output_dir, help="Run folder (models, reports, commands.sh).")
    parser.add_argument("--tag", default=defaults.tag, help="Name of the results file results/efficacy_<tag>.json.")
    parser.add_argument("--seeds", type=int, nargs="+", default=defaults.seeds)
    parser.add_argument(
        "--arms",
        nargs="+",
        default=None,
        help=f"Arms: {sorted(ARMS)}; ablations: {sorted(ABLATIONS)}; decision-driven (issue 20): "
        f"{sorted(DECISION_ARMS)} (trained), {sorted(ROUTED_ARMS)} (routed).",
    )
    parser.add_argument("--methods", action="store_true", help="Add arms (e) IPO and (f) AltTrain.")
    parser.add_argument("--ablations", action="store_true", help="Add the ablations of weight, anchor and layer.")
    parser.add_argument(
        "--routing",
        action="store_true",
        help="Add the decision-driven arms of issue 20: gates and routing (g-j, m), self-routing (k), LoRA (l).",
    )
    parser.add_argument("--steps", type=int, nargs="+", default=defaults.steps, help="Checkpoints evaluated.")
    parser.add_argument("--primary_step", type=int, default=defaults.primary_step)
    parser.add_argument("--eval_sets", choices=["heldout", "dev"], default=defaults.eval_sets)
    parser.add_argument(
        "--harmful-prompts", dest="harmful_prompts", help="Your own held-out harmful prompts, one a line."
    )
    parser.add_argument(
        "--benign-prompts", dest="benign_prompts", help="Your own held-out benign prompts, one a line."
    )
    parser.add_argument("--jobs", type=int, default=defaults.jobs, help="Arm-seed tasks run in parallel processes.")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="torch threads per process.")
    parser.add_argument("--subprocess", action="store_true", help="Run each command in a fresh process.")
    parser.add_argument("--organism_steps", type=int, default=None)
    parser.add_argument("--learning_rate", type=float, default=None, help="Overrides the recipes' rate, every arm.")
    parser.add_argument(
        "--lora_learning_rate",
        type=float,
        default=defaults.lora_learning_rate,
        help="The LoRA arms' learning rate (the protocol chooses it on the dev split).",
    )
    parser.add_argument(
        "--greedy_only",
        action="store_true",
        help="Evaluate thinking on and greedy only, also at the primary step (no thinking off, no sampling grid).",
    )
    parser.add_argument(
        "--report_only", action="store_true", help="Recompute the figures from the reports in output_dir; run nothing."
    )
    args = parser.parse_args(argv)
    arms = args.arms or list(DEFAULT_ARMS)
    if args.methods:
        arms += [a for a in METHOD_ARMS if a not in arms]
    if args.ablations:
        arms += [a for a in ABLATIONS if a not in arms]
    if args.routing:
        arms += [a for a in ROUTING_ARMS if a not in arms]
    for key in arms:
        arm_spec(key)  # a clear error for an unknown arm
    for path in (args.harmful_prompts, args.benign_prompts):
        if path is not None and not Path(path).is_file():
            raise SystemExit(f"Prompt file {path!r} does not exist: pass a text file with one prompt a line.")
    if (args.harmful_prompts or args.benign_prompts) and args.tag == defaults.tag:
        args.tag = "user"  # never overwrite the default study's results with an evaluation on other prompts
    return StudyConfig(
        output_dir=args.output_dir,
        tag=args.tag,
        seeds=args.seeds,
        arms=arms,
        steps=sorted(set(args.steps)),
        primary_step=args.primary_step,
        eval_sets=args.eval_sets,
        harmful_prompts=args.harmful_prompts,
        benign_prompts=args.benign_prompts,
        jobs=args.jobs,
        threads=args.threads,
        subprocess=args.subprocess,
        organism_steps=args.organism_steps,
        learning_rate=args.learning_rate,
        lora_learning_rate=args.lora_learning_rate,
        greedy_only=args.greedy_only,
        report_only=args.report_only,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    config = parse_args(argv)
    command = shlex.join(sys.argv[1:] if argv is None else argv)
    results = report_only(config) if config.report_only else run_study(config, command=command)
    from .results import render_summary

    print(render_summary(results))
    return results


if __name__ == "__main__":
    main()
