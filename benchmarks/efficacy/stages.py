# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The stages of the efficacy study, each one or more `trl-presafety` commands run as a user runs them (logged to
`commands.sh` with their wall time): the data, the organism, the classifier and labels, every arm's training and
evaluation per seed, the method data (IPO, AltTrain) and the comparisons. `study.py` runs them in order."""

import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import data as D
from .arms import (
    STEPLESS_ARMS,
    Arm,
    arm_spec,
    arm_steps,
)
from .layout import CLASSIFIER_RECIPE, RECIPES, Layout, StudyConfig


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
