# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""What each stage of a pipeline reads and writes: its outputs, its inputs (and which earlier stage makes each), the
check of an input before a stage runs, and whether a stage's output is complete."""

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..labeling.state import SHARDS_DIR, STATE_FILE, IncompleteLabelsError, check_label_folder, label_folder_status
from .config import TRAINING, PipelineError, Stage, _as_list


@dataclass
class Input:
    """A path a stage reads, and the columns it needs there (`None`: not a dataset)."""

    path: str
    key: str
    columns: tuple[str, ...] | None = None
    one_of: tuple[tuple[str, ...], ...] = ()


def stage_outputs(stage: Stage) -> list[str]:
    """The folders or files a stage writes (what later stages may read)."""
    if stage.module is not None:
        return list(stage.outputs)
    values = stage.values()
    outputs = [values.get("output_dir") or {"eval": "eval_results", "eval-compare": "eval_compare"}.get(stage.command)]
    if stage.command == "build-sft" and values.get("pairs_output_dir"):
        outputs.append(values["pairs_output_dir"])
    return [str(o) for o in outputs if o]


def stage_inputs(stage: Stage) -> list[Input]:
    """The paths a stage reads, with the columns its command needs there."""
    if stage.module is not None:
        return []
    values = stage.values()
    inputs = []
    model = values.get("model_name_or_path")
    if model and stage.command != "train-classifier":
        inputs.append(Input(str(model), "model_name_or_path"))
    if stage.command == "label":
        inputs.append(Input(str(values.get("dataset_name")), "dataset_name", (values.get("prompt_column", "prompt"),)))
        if values.get("classifier_name_or_path"):
            inputs.append(Input(str(values["classifier_name_or_path"]), "classifier_name_or_path"))
    elif stage.command in ("sft", "dpo"):
        label = values.get("presafety_label_column", "safety_label")
        if stage.command == "sft":
            inputs.append(Input(str(values.get("dataset_name")), "dataset_name", (label,), (("messages",), ("text",),
                                                                                            ("prompt", "completion"))))  # fmt: skip
        else:
            inputs.append(Input(str(values.get("dataset_name")), "dataset_name", (label, "chosen", "rejected")))
    elif stage.command == "build-sft":
        if values.get("classifier_path"):
            inputs.append(Input(str(values["classifier_path"]), "classifier_path"))
        for spec in _as_list(values.get("prompts") or []):
            body = str(spec).split("@")[0]
            if "=" in body:
                inputs.append(Input(body.split("=", 1)[1], "prompts"))
    elif stage.command == "eval":
        for key in ("adapter_path", "route_gate"):  # the head that routes (`--route`), e.g. a `fit-gate` output
            if values.get(key) and str(values[key]).lower() != "none":
                inputs.append(Input(str(values[key]), key))
    elif stage.command in ("fit-gate", "calibrate-gate", "export-gate"):
        # A gate's labeled prompts (a label folder) and, for the last two, the head folder it reads
        columns = (values.get("prompt_column", "prompt"), values.get("label_column", "safety_label"))
        for key in ("dataset_name", "calibration_dataset"):
            if stage.command != "export-gate" and values.get(key):
                inputs.append(Input(str(values[key]), key, columns))
        if values.get("head_path"):
            inputs.append(Input(str(values["head_path"]), "head_path"))
    elif stage.command == "eval-compare":
        inputs.extend(Input(str(report), "reports") for report in _as_list(values.get("reports") or []))
    elif stage.command == "train-classifier" and values.get("dataset_name"):
        inputs.append(Input(str(values["dataset_name"]), "dataset_name"))
    return [item for item in inputs if item.path not in ("None", "")]


def _norm(path: str) -> str:
    return os.path.normpath(path)


def producer_of(path: str, stages: Sequence[Stage], before: int) -> Stage | None:
    """The last stage before index `before` that writes `path` (or a folder holding it)."""
    target = Path(_norm(path))
    for stage in reversed(stages[:before]):
        for output in stage_outputs(stage):
            out = Path(_norm(output))
            # the folder itself, a file in it, or (an output declared as a file) the folder holding it
            if target == out or out in target.parents or target in out.parents:
                return stage
    return None


def dataset_columns(path: str | Path) -> list[str] | None:
    """The columns of a local dataset: a folder of parquet shards (label / build-sft output), a folder or file of
    JSON lines / parquet; `None` when they cannot be read without loading it."""
    path = Path(path)
    files = []
    if path.is_dir():
        shards = sorted((path / SHARDS_DIR).glob("*.parquet")) or sorted(path.glob("*.parquet"))
        files = shards or sorted(path.glob("*.jsonl")) or sorted(path.glob("*.json"))
    elif path.is_file():
        files = [path]
    for file in files:
        if file.suffix == ".parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(file).names)
        if file.suffix in (".jsonl", ".json"):
            with open(file, encoding="utf-8") as handle:
                first = handle.readline().strip()
            if first.startswith("{"):
                return list(json.loads(first))
    return None


def check_input(stage: Stage, item: Input, stages: Sequence[Stage], index: int) -> None:
    """Raises [`PipelineError`] naming the stage that should have produced `item` when it is missing, incomplete or
    lacks a column. Paths no earlier stage writes and that do not exist locally are taken as hub ids."""
    producer = producer_of(item.path, stages, index)
    local = Path(item.path).exists()
    if producer is None and not local:
        return  # a hub id (the command itself reports a missing one)
    origin = (
        f"It should have been produced by stage `{producer.name}` ({producer.shell()}); rerun the pipeline to run "
        f"it, or `--force {producer.name}` to run it again."
        if producer is not None
        else "No stage of this pipeline writes it: check the path."
    )
    problem = None
    if not local:
        problem = "does not exist"
    else:
        try:
            check_label_folder(item.path)
        except IncompleteLabelsError as error:
            problem = f"is not complete ({error})"
        if problem is None and (item.columns or item.one_of):
            columns = dataset_columns(item.path)
            if columns is not None:
                missing = [c for c in item.columns or () if c not in columns]
                if item.one_of and not any(all(c in columns for c in group) for group in item.one_of):
                    missing.append(" or ".join("+".join(group) for group in item.one_of))
                if missing:
                    problem = f"has no column(s) {missing} (its columns: {sorted(columns)})"
    if problem is not None:
        raise PipelineError(
            f"Stage {stage.label} ({stage.command}) cannot start: its input {item.path} (`{item.key}`) {problem}. "
            f"{origin}"
        )


def output_complete(stage: Stage) -> bool:
    """Whether the stage's outputs are on disk and complete (the pipeline state says whether they match its args)."""
    outputs = stage_outputs(stage)
    if not outputs:
        return False
    for output in outputs:
        path = Path(output)
        if stage.module is not None:
            if not path.exists():
                return False
        elif stage.command in ("build-sft", "label", "build-self-routing"):
            if not (path / STATE_FILE).is_file() or not label_folder_status(path)["complete"]:
                return False
        elif stage.command in TRAINING:
            # `train_results.json` is written once training ends; the weights (full model or adapter) once saved
            weights = (path / "config.json").is_file() or (path / "adapter_config.json").is_file()
            if not (path / "train_results.json").is_file() or not weights:
                return False
        elif stage.command == "eval":
            if not (path / "report.json").is_file():
                return False
        elif stage.command == "eval-compare":
            if not (path / "compare.md").is_file():
                return False
        elif stage.command == "train-classifier":
            if not (path / "classifier_results.json").is_file():
                return False
        elif stage.command == "fit-gate":
            from ..modeling import SAFETY_HEAD_CONFIG_NAME

            # The head's config is written after its weights, the tokenizer last
            if not (path / SAFETY_HEAD_CONFIG_NAME).is_file() or not (path / "tokenizer_config.json").is_file():
                return False
        elif stage.command == "export-gate":
            # The model card is written after the weights and the tokenizer
            if not (path / "README.md").is_file() or not (path / "config.json").is_file():
                return False
        elif not path.exists():
            return False
    return True


def missing_requirements(stages: Sequence[Stage], selected: Sequence[Stage]) -> list[str]:
    """What this machine lacks to run the `selected` stages, beyond their arguments: local inputs that no earlier
    stage writes, the extras their settings need (DeepSpeed, vLLM), and a GPU for stages launched on GPUs."""
    import importlib.util

    from ..inputs import looks_local

    missing = []
    has_cuda = None
    for stage in selected:
        index = list(stages).index(stage)
        for item in stage_inputs(stage):
            if item.path in ("None", "") or Path(item.path).exists() or producer_of(item.path, stages, index):
                continue
            if looks_local(item.path):
                missing.append(
                    f"`{item.path}` ({item.field} of stage `{stage.name}`): no such file or folder here, and no stage "
                    "of this pipeline writes it."
                )
        config = str(stage.accelerate_config or "")
        if ("zero" in config or "deepspeed" in config) and importlib.util.find_spec("deepspeed") is None:
            missing.append(f"deepspeed (stage `{stage.name}`: accelerate_config {config}): `pip install deepspeed`.")
        values = stage.values() if stage.module is None else {}
        if str(values.get("backend", "")) == "vllm" and importlib.util.find_spec("vllm") is None:
            missing.append(f"vllm (stage `{stage.name}`: backend vllm): `pip install trl-presafety[vllm]`.")
        if config:
            if has_cuda is None:
                import torch

                has_cuda = torch.cuda.is_available()
            if not has_cuda:
                missing.append(
                    f"a CUDA GPU (stage `{stage.name}` launches with accelerate_config {config}, written for GPUs)."
                )
    return missing
