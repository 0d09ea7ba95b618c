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
import math
import multiprocessing
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import data as D
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


HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]


def _shown(path: Path) -> Path:
    """Relative to the repository root when run from there, so that the logged commands read as a user types them."""
    return Path(os.path.relpath(path)) if Path.cwd() == REPO_ROOT else path


RECIPES = _shown(HERE / "recipes")
CLASSIFIER_RECIPE = _shown(REPO_ROOT / "recipes" / "tiny" / "train_classifier.yaml")
RESULTS_DIR = HERE / "results"


@dataclass
class StudyConfig:
    output_dir: str = "runs/efficacy"
    tag: str = "default"
    seeds: list[int] = field(default_factory=lambda: list(range(10)))
    arms: list[str] = field(default_factory=lambda: list(DEFAULT_ARMS))
    steps: list[int] = field(default_factory=lambda: [20, 40, 80, 160])  # checkpoints evaluated, every arm alike
    primary_step: int = 40  # the step of the headline figures and the decision rule
    eval_sets: str = "heldout"  # "heldout" (the study) or "dev" (developing the organism and the arms' settings)
    harmful_prompts: str | None = None
    benign_prompts: str | None = None
    jobs: int = 2  # two single-threaded processes use both cores of a 2-core machine
    threads: int = 1
    subprocess: bool = False
    organism_steps: int | None = None
    learning_rate: float | None = None  # None: the recipes' value (the same for every arm)
    lora_learning_rate: float | None = LORA_LEARNING_RATE  # the LoRA arms' rate (chosen on dev; None: the recipe's)
    gate_target: float = 0.05  # routed arms: at most this share of comply-labeled dev prompts routed
    greedy_only: bool = False  # every evaluation thinking on and greedy (a run cut for time; see RESULTS.md)
    # The label the gates are fitted and calibrated on: the safe model's decision (the smoke test's 3-step organism
    # labels every prompt alike, so it gates on `harmful` there)
    gate_label_column: str = "safety_label"
    report_only: bool = False
    organism_overrides: dict[str, Any] | None = None  # settings of organism.MODEL_DEFAULTS / TRAIN_DEFAULTS
    # Sizes for the smoke test (None: the recipes' values)
    smoke: bool = False
    eval_per_category: int | None = None
    max_new_tokens: int | None = None
    classifier_steps: int | None = None
    write_results: bool = True

    @property
    def eval_name(self) -> str:
        """Which evaluation files and report folders: `heldout`, `dev`, or `user-<tag>` for a user's prompt files (the
        trained models are shared; only the evaluations are run again)."""
        if self.harmful_prompts or self.benign_prompts:
            return self.tag if self.tag.startswith("user") else f"user-{self.tag}"
        return self.eval_sets

    def arm_specs(self) -> list[Arm | RoutedArm]:
        return [arm_spec(key) for key in self.arms]


# --- running commands ----------------------------------------------------------------------------------------------


def _set_threads(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(threads)


def run_cli(argv: list[str], config: StudyConfig, log: Path) -> float:
    """Runs `trl-presafety <argv>` (in this process, or as a subprocess) and appends it to the command log."""
    started = time.time()
    if config.subprocess:
        env = {**os.environ, "OMP_NUM_THREADS": str(config.threads), "HF_HUB_OFFLINE": "1"}
        result = subprocess.run([sys.executable, "-m", "trl_presafety.cli", *argv], env=env, capture_output=True)
        if result.returncode != 0:
            raise RuntimeError(f"`trl-presafety {shlex.join(argv)}` failed:\n{result.stderr.decode()[-4000:]}")
    else:
        from trl_presafety.cli import main as cli_main

        cli_main(list(argv))
    seconds = time.time() - started
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"trl-presafety {shlex.join(argv)}  # {seconds:.1f} s\n")
    return seconds


# --- layout --------------------------------------------------------------------------------------------------------


class Layout:
    def __init__(self, config: StudyConfig):
        self.root = Path(config.output_dir)
        self.organism = self.root / "organism"
        self.classifier = self.root / "classifier"
        self.data = self.root / "data"
        self.labels = self.root / "labels"
        self.commands = self.root / "commands.sh"

    def eval_files(self, eval_name: str) -> list[Path]:
        if eval_name == "dev":
            return [self.data / "eval" / "dev.jsonl"]
        folder = self.data / "eval" if eval_name == "heldout" else self.data / "eval" / eval_name
        return [folder / f"{name}.jsonl" for name in ("heldout_harmful", "heldout_benign", "heldout_math")]

    def arm_dir(self, arm: str, seed: int) -> Path:
        return self.root / "arms" / arm / f"seed{seed}"

    def checkpoint(self, arm: str, seed: int, step: int) -> Path:
        return self.organism if arm == "a" else self.arm_dir(arm, seed) / f"checkpoint-{step}"

    def model_args(self, arm: str, seed: int, step: int) -> list[str]:
        """`--model_name_or_path` (and `--adapter_path` for a LoRA arm) of an arm's checkpoint."""
        spec = arm_spec(arm)
        if spec.routed:
            return self.model_args(spec.base, seed, step)
        if spec.peft:
            return [
                "--model_name_or_path",
                str(self.organism),
                "--adapter_path",
                str(self.checkpoint(arm, seed, step)),
            ]
        return ["--model_name_or_path", str(self.checkpoint(arm, seed, step))]

    def gate_dir(self, arm: str, seed: int, step: int) -> Path:
        return self.root / "gates" / arm / f"seed{seed}" / f"step{step}"

    def eval_dir(self, arm: str, seed: int, step: int, eval_name: str) -> Path:
        suffix = "" if eval_name == "heldout" else f"-{eval_name}"
        return self.root / f"eval{suffix}" / arm / f"seed{seed}" / f"step{step}"


# --- stages --------------------------------------------------------------------------------------------------------


def write_data(config: StudyConfig, layout: Layout) -> dict[str, Any]:
    """Safety SFT/DPO data and the evaluation files (held-out, or the user's own prompt files)."""
    splits = D.load_splits()
    D.write_jsonl(layout.data / "safety_sft" / "train.jsonl", D.safety_sft_rows(splits["safety"]))
    D.write_jsonl(layout.data / "safety_dpo" / "train.jsonl", D.safety_dpo_rows(splits["safety"]))
    # The dev split, labeled like the safety split: the routed arms' thresholds are calibrated on it, never on what
    # the study evaluates
    dev_rows = D.sample_rows(splits["dev"], config.eval_per_category) if config.eval_per_category else splits["dev"]
    D.write_jsonl(layout.data / "safety_dev" / "train.jsonl", D.prompt_rows(dev_rows))
    heldout = {
        "heldout_harmful": splits["heldout_harmful"],
        "heldout_benign": splits["heldout_benign"],
        "heldout_math": splits["heldout_math"],
    }
    if config.harmful_prompts:
        heldout["heldout_harmful"] = D.user_prompts_file(config.harmful_prompts, "harmful", "heldout_harmful")
    if config.benign_prompts:
        heldout["heldout_benign"] = D.user_prompts_file(config.benign_prompts, "benign_edgy", "heldout_benign")
    user_dir = layout.eval_files(config.eval_name)[0].parent
    dev = {
        "dev": splits["dev"],
        # A sample of the organism's own training prompts: the gap on prompts it was trained on
        "organism_seen": D.sample_rows(splits["organism"], 40, seed=1),
    }
    for name, rows in {**heldout, **dev}.items():
        if config.eval_per_category:
            rows = D.sample_rows(rows, config.eval_per_category)
        folder = user_dir if name in heldout else layout.data / "eval"
        D.write_jsonl(folder / f"{name}.jsonl", D.eval_rows(rows))
    return {"splits": D.split_summary(splits), "eval": {k: len(v) for k, v in heldout.items()}}


def build_organism_stage(config: StudyConfig, layout: Layout) -> dict[str, Any]:
    from .organism import build_organism

    info_path = layout.organism / "organism_info.json"
    if info_path.is_file():
        return {**json.loads(info_path.read_text()), "reused": True}
    overrides = dict(config.organism_overrides or {})
    if config.organism_steps is not None:
        overrides["max_steps"] = config.organism_steps
    info = build_organism(layout.organism, threads=config.threads, **overrides)
    with open(layout.commands, "a", encoding="utf-8") as f:
        f.write(f"python -m benchmarks.efficacy.organism --output_dir {layout.organism}  # {info['seconds']} s\n")
    return info


def organism_seen_eval_stage(config: StudyConfig, layout: Layout) -> float:
    """`trl-presafety eval` of the organism on a sample of its own training prompts (the gap on prompts it saw)."""
    out = layout.root / "eval" / "organism_seen"
    if (out / "report.json").is_file():
        return 0.0
    argv = [
        "eval",
        "--config", str(RECIPES / "eval.yaml"),
        "--model_name_or_path", str(layout.organism),
        "--datasets", str(layout.data / "eval" / "organism_seen.jsonl"),
        "--output_dir", str(out),
        "--sampling_grid", "greedy",
        "--run_name", "organism-seen",
    ]  # fmt: skip
    if config.max_new_tokens is not None:
        argv += ["--max_new_tokens", str(config.max_new_tokens)]
    return run_cli(argv, config, layout.commands)


def classifier_stage(config: StudyConfig, layout: Layout) -> float:
    if (layout.classifier / "classifier_results.json").is_file():
        return 0.0
    argv = [
        "train-classifier",
        "--config",
        str(CLASSIFIER_RECIPE),
        "--output_dir",
        str(layout.classifier),
    ]
    if config.classifier_steps is not None:
        argv += ["--max_steps", str(config.classifier_steps), "--max_train_samples", "32", "--eval_strategy", "no"]
        argv += ["--max_length", "64"]
    return run_cli(argv, config, layout.commands)


def label_stage(config: StudyConfig, layout: Layout, name: str) -> float:
    output = layout.labels / name
    state = output / "labeling_state.json"
    if state.is_file() and json.loads(state.read_text()).get("complete"):
        return 0.0
    argv = [
        "label",
        "--model_name_or_path", str(layout.organism),
        "--dtype", "float32",
        "--dataset_name", str(layout.data / f"safety_{name}" / "train.jsonl"),
        "--output_dir", str(output),
        "--classifier_name_or_path", str(layout.classifier),
        "--thinking", "false",
        "--backend", "transformers",
        "--max_new_tokens", "64",
        "--generation_batch_size", "64",
        "--shard_size", "512",
    ]  # fmt: skip
    if config.smoke:
        # A 3-step organism answers blank: read such answers as compliance, so that the smoke run has labels (the
        # study's organism never answers blank, and its blank answers would stay unlabeled)
        argv += ["--blank_answer_label", "0"]
    return run_cli(argv, config, layout.commands)


def train_argv(arm: Arm, seed: int, config: StudyConfig, layout: Layout) -> list[str]:
    argv = [
        arm.command,
        "--config", str(RECIPES / arm.recipe),
        "--model_name_or_path", str(layout.organism),
        "--dataset_name", str(layout.labels / arm.data),
        "--output_dir", str(layout.arm_dir(arm.key, seed)),
        "--seed", str(seed),
        "--max_steps", str(max(config.steps)),
    ]  # fmt: skip
    if config.learning_rate is not None:
        argv += ["--learning_rate", str(config.learning_rate)]
    if arm.peft and config.lora_learning_rate is not None:
        argv += ["--learning_rate", str(config.lora_learning_rate)]
    # A checkpoint at every evaluated step (the recipe's save_steps is right for its own steps only)
    argv += ["--save_steps", str(math.gcd(*config.steps))]
    if config.smoke:
        argv += ["--logging_steps", "1"]
    for key, value in arm.overrides:
        argv += [f"--{key}", value]
    return argv


def eval_argv(arm: str, seed: int, step: int, primary: bool, config: StudyConfig, layout: Layout) -> list[str]:
    argv = [
        "eval",
        "--config", str(RECIPES / "eval.yaml"),
        *layout.model_args(arm, seed, step),
        "--datasets", *map(str, layout.eval_files(config.eval_name)),
        "--output_dir", str(layout.eval_dir(arm, seed, step, config.eval_name)),
        "--seed", str(seed),
        "--run_name", f"{arm}-seed{seed}-step{step}",
    ]  # fmt: skip
    if not primary or config.greedy_only:  # intermediate checkpoints: the step curve, thinking on and greedy only
        argv += ["--thinking_modes", "on", "--sampling_grid", "greedy"]
    elif not arm_spec(arm).routed and not arm_spec(arm).thinking_off:
        argv += ["--thinking_modes", "on"]  # the arm's figures are all thinking on (its protocol)
    if config.max_new_tokens is not None:
        argv += ["--max_new_tokens", str(config.max_new_tokens)]
    return argv


def run_arm_seed(task: tuple[str, int, StudyConfig]) -> dict[str, Any]:
    """Train one arm with one seed (unless it is the organism) and evaluate its checkpoints; returns timings."""
    arm_key, seed, config = task
    _set_threads(config.threads)
    layout = Layout(config)
    arm = arm_spec(arm_key)
    if arm.routed:
        from .routing import run_routed_arm

        return run_routed_arm(arm, seed, config, layout, run_cli, eval_argv)
    timings: dict[str, float] = {}
    if arm.command is not None:
        final = layout.checkpoint(arm_key, seed, max(config.steps))
        if not (final / "config.json").is_file():
            timings["train"] = run_cli(train_argv(arm, seed, config, layout), config, layout.commands)
            # Keep the evaluated checkpoints only
            for path in layout.arm_dir(arm_key, seed).glob("checkpoint-*"):
                if int(path.name.split("-")[1]) not in config.steps:
                    shutil.rmtree(path)
    for step in arm_steps(arm_key, config):
        primary = step in (0, config.primary_step)
        report = layout.eval_dir(arm_key, seed, step, config.eval_name) / "report.json"
        if not report.is_file():
            argv = eval_argv(arm_key, seed, step, primary, config, layout)
            timings[f"eval_step{step}"] = run_cli(argv, config, layout.commands)
        if primary:
            probe_path = report.parent / "fitted_probe.json"
            if not probe_path.is_file():
                from .probe import fitted_probe

                started = time.time()
                figures = fitted_probe(layout.checkpoint(arm_key, seed, step), layout, config.eval_name, peft=arm.peft)
                probe_path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
                timings["probe"] = time.time() - started
    return {"arm": arm_key, "seed": seed, "seconds": timings}


def seed_order(arms: list[str]) -> list[str]:
    """The arms of one seed in the order given, each routed arm moved after its base and the arm whose gate it
    reuses: `a g b h j c i ...` runs every guard as soon as its checkpoint exists."""
    order: list[str] = []

    def add(key: str) -> None:
        if key in order:
            return
        spec = arm_spec(key)
        if spec.routed:
            add(spec.base)
            if spec.gate not in ("fit", "own"):
                add(spec.gate)
        order.append(key)

    for key in arms:
        add(key)
    return order


def run_seed(task: tuple[int, StudyConfig]) -> list[dict[str, Any]]:
    """Every arm of one seed, in `seed_order`. With routed arms the study runs seed by seed, so that each finished
    seed is complete, and a guard is evaluated as soon as the checkpoint it reads exists."""
    seed, config = task
    return [run_arm_seed((key, seed, config)) for key in seed_order(config.arms)]


def methods_data_stage(config: StudyConfig, layout: Layout) -> dict[str, float]:
    """Data of the optional arms: IPO pairs from the organism's own thinking-on traces, AltTrain traces."""
    from .methods import alttrain_stage, ipo_stage

    timings = {}
    if "e" in config.arms:
        timings["ipo"] = ipo_stage(config, layout, run_cli)
    if "f" in config.arms:
        timings["alttrain"] = alttrain_stage(config, layout, run_cli)
    if any(arm_spec(k).data == "self_routing" for k in config.arms):
        from .routing import self_routing_stage

        timings["self_routing"] = self_routing_stage(config, layout, run_cli)
    return timings


def compare_stage(config: StudyConfig, layout: Layout) -> float:
    """`trl-presafety eval-compare` of the arms at the primary step, one table per seed."""
    total = 0.0
    for seed in config.seeds:
        reports, names = [], []
        for arm in config.arms:
            step = 0 if arm in STEPLESS_ARMS else config.primary_step
            reports.append(str(layout.eval_dir(arm, seed, step, config.eval_name) / "report.json"))
            names.append(arm)
        if len(reports) < 2:
            continue
        suffix = "" if config.eval_name == "heldout" else f"-{config.eval_name}"
        out = layout.root / f"compare{suffix}" / f"seed{seed}"
        if (out / "compare.json").is_file():
            continue
        total += run_cli(
            ["eval-compare", *reports, "--run_names", *names, "--output_dir", str(out)], config, layout.commands
        )
    return total


def machine() -> dict[str, Any]:
    import torch
    import transformers
    import trl

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
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
    from .results import collect_results, write_outputs

    path = RESULTS_DIR / f"efficacy_{config.tag}.json"
    previous = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else partial_run_record(config)
    results = {**previous, **collect_results(config, Layout(config))}
    if config.write_results:
        write_outputs(results, config)
    return results


def run_study(config: StudyConfig, command: str = "") -> dict[str, Any]:
    """Runs (or resumes) the whole study and returns the results (also written to `results/efficacy_<tag>.json`)."""
    from .results import collect_results, write_outputs

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
