# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The efficacy study's settings (`StudyConfig`) and where everything it writes goes (`Layout`)."""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .arms import (
    DEFAULT_ARMS,
    LORA_LEARNING_RATE,
    Arm,
    RoutedArm,
    arm_spec,
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
