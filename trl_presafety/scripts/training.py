# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The training runtime shared by `trl-presafety sft`, `dpo` and `grpo`, as TRL's scripts run it: the training data
(a mixture or `dataset_name`, label folders checked), the checks that fail before the model loads (columns, trackers,
model name), the model loading options, and training then saving. Their arguments are parsed in `arguments.py`."""

import logging
import os
from pathlib import Path
from typing import Any

from ..labeling.state import check_label_folder
from .arguments import warn_on_main_process


logger = logging.getLogger(__name__)


def _local_dataset_paths(script_args: Any, dataset_args: Any) -> list[str]:
    """Every path a script reads data from: `dataset_name`, and each mixture entry's `path`, `data_dir` and
    `data_files` (a string, a list, or a split -> files mapping)."""
    paths = [script_args.dataset_name] if script_args.dataset_name else []
    for entry in dataset_args.datasets or []:
        paths.append(entry.path)
        if entry.data_dir:
            paths.append(str(Path(entry.path) / entry.data_dir))
        files = entry.data_files
        for value in files.values() if isinstance(files, dict) else [files]:
            paths.extend([value] if isinstance(value, str) else list(value or []))
    return [str(path) for path in paths]


def load_training_datasets(script_args: Any, dataset_args: Any) -> Any:
    """The dataset of a script: a mixture (`datasets:` in the recipe) or `dataset_name`, as TRL's scripts load it.

    A label folder whose labeling did not finish is refused (see `trl_presafety.labeling.check_label_folder`) unless
    `script_args.allow_incomplete_labels` is set.
    """
    from datasets import load_dataset
    from trl import get_dataset

    for path in _local_dataset_paths(script_args, dataset_args):
        check_label_folder(path, script_args.allow_incomplete_labels)
    if dataset_args.datasets and script_args.dataset_name:
        warn_on_main_process(
            "Both `datasets` and `dataset_name` are provided. The `datasets` argument will be used to load the "
            "dataset and `dataset_name` will be ignored."
        )
        return get_dataset(dataset_args)
    if dataset_args.datasets:
        return get_dataset(dataset_args)
    if script_args.dataset_name:
        return load_dataset(
            script_args.dataset_name, name=script_args.dataset_config, streaming=script_args.dataset_streaming
        )
    raise ValueError(
        "No training data: set `dataset_name` (a Hub id or a local folder/file of JSON lines) or a `datasets:` "
        "mixture in the recipe."
    )


# The columns TRL's trainers read, per command: SFT takes language modeling (`text` / `messages`) or prompt-completion
# rows, DPO preference rows (`prompt` optional: implicit prompts)
TRAINING_FORMATS = {
    "sft": (("text",), ("messages",), ("prompt", "completion")),
    "dpo": (("chosen", "rejected"),),
}
PRODUCERS = {
    "sft": "`trl-presafety build-sft` (prompt/completion rows), then `trl-presafety label` on its output folder",
    "dpo": "`trl-presafety build-sft --pairs_output_dir DIR` (prompt/chosen/rejected pairs), then `trl-presafety label` "
    "on DIR",
}


def check_training_columns(dataset: Any, command: str, where: str) -> None:
    """Fails before the trainer is built when the data has none of the column sets `command` trains on, naming them
    and the command that writes such data (TRL itself would stop with a bare `KeyError: 'completion'` inside its
    tokenization, e.g. on a label folder of prompts only)."""
    columns = getattr(dataset, "column_names", None)
    if columns is None:  # a streamed dataset: its columns are known only when read
        return
    formats = TRAINING_FORMATS[command]
    if any(all(column in columns for column in group) for group in formats):
        return
    expected = " or ".join("+".join(group) for group in formats)
    raise ValueError(
        f"`trl-presafety {command}` cannot train on {where}: it has the columns {sorted(columns)}, but needs "
        f"{expected}. A label folder of prompts only (such as labeled evaluation prompts) holds no training target. "
        f"Build the rows with {PRODUCERS[command]}, and point `dataset_name` at the labeled folder."
    )


def apply_model_init_kwargs(model_args: Any, training_args: Any) -> None:
    """Folds the `ModelConfig` loading options into `training_args.model_init_kwargs`, as TRL's scripts do."""
    model_init_kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
    }
    if training_args.model_init_kwargs is not None:
        model_init_kwargs.update(training_args.model_init_kwargs)
    training_args.model_init_kwargs = model_init_kwargs


# `report_to` value -> what installs it, for the trackers the recipes and the README name
TRACKER_INSTALL = {
    "trackio": "pip install trl-presafety[tracking]",
    "tensorboard": "pip install tensorboard",
    "wandb": "pip install wandb",
}


def check_trackers(training_args: Any) -> None:
    """Fails before the model loads when `report_to` names a tracker that is not installed (transformers would fail
    only when the trainer is built, after loading the model)."""
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    available = set(get_available_reporting_integrations())
    missing = [
        name for name in training_args.report_to or [] if name in INTEGRATION_TO_CALLBACK and name not in available
    ]
    if missing:
        installs = "; ".join(TRACKER_INSTALL.get(name, f"install {name}") for name in missing)
        raise ValueError(
            f"Invalid `report_to`: {training_args.report_to}, but {', '.join(missing)} is not installed. Install it "
            f"({installs}), or log without a tracker with `--report_to none`."
        )


def check_model_name(model_args: Any) -> str:
    if not model_args.model_name_or_path:
        raise ValueError("No model: set `model_name_or_path` in the recipe or on the command line.")
    return model_args.model_name_or_path


def recipe_precision(training_args: Any) -> str:
    """The precision the recipe asks for, in `accelerate`'s words: `"bf16"`, `"fp16"` or `"no"` (fp32)."""
    return "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "no"


def check_precision(training_args: Any) -> str:
    """Stops when the launcher's mixed precision overrides the recipe's, and logs the precision of the run.

    With `bf16: false` and `fp16: false`, transformers takes the precision from `ACCELERATE_MIXED_PRECISION`, which
    `accelerate launch` sets from its config (`mixed_precision: bf16` in the packaged `multi_gpu`, `zero2`, `zero3`
    and `fsdp2` configs): a recipe saying fp32 would silently train in bf16. `trl-presafety <command>
    --accelerate_config ...` passes the recipe's precision to the launcher; a direct `accelerate launch` must match.
    """
    wanted = recipe_precision(training_args)
    effective = getattr(training_args, "mixed_precision", wanted) or "no"
    if effective != wanted:
        raise ValueError(
            f"Precision conflict: the recipe says bf16={training_args.bf16}, fp16={training_args.fp16} (precision "
            f"{wanted!r}), but `accelerate launch` set mixed_precision={effective!r} (ACCELERATE_MIXED_PRECISION, from "
            f"its config file or `--mixed_precision`), which would win silently. Launch with `--mixed_precision "
            f"{wanted}` (or through `trl-presafety <command> --accelerate_config ...`, which passes the recipe's), or "
            f"set `{effective}: true` in the recipe to train in {effective}."
        )
    if os.environ.get("RANK", "0") == "0":
        logger.info(
            f"Precision: {'fp32' if wanted == 'no' else wanted} (recipe bf16={training_args.bf16}, "
            f"fp16={training_args.fp16})."
        )
    return wanted


def check_training_inputs(
    script_args: Any, dataset_args: Any, model_args: Any, training_args: Any | None = None
) -> None:
    """Stops before anything loads (or tries the network) when a local input of the recipe is missing: the data (a
    label folder not written yet, or one whose labeling did not finish), then the model folder. Each error names the
    field and the command that makes the input. Notes labels made with another model than the one trained (see
    [`note_label_provenance`]) and resolves `resume_from_checkpoint` (see [`resolve_resume_from_checkpoint`])."""
    from ..inputs import check_data_input, check_model_input, looks_local

    _check_data_inputs(script_args, dataset_args, check_data_input, looks_local)
    folders = []
    for path in _local_dataset_paths(script_args, dataset_args):
        folder = check_label_folder(path, script_args.allow_incomplete_labels)
        if folder is not None and folder not in folders:
            folders.append(folder)
    check_model_input(model_args.model_name_or_path)
    for folder in folders:
        note_label_provenance(folder, model_args.model_name_or_path)
    if training_args is not None:
        training_args.resume_from_checkpoint = resolve_resume_from_checkpoint(
            training_args.resume_from_checkpoint, training_args.output_dir
        )


def note_label_provenance(folder: str | Path, model_name_or_path: str | None) -> str | None:
    """A note (a warning, returned too) when a label folder's labels were made with other weights than the model about
    to be trained. The rule: a note, not an error. The method's safe model is usually the trained LRM itself with
    thinking off, so a mismatch is most often stale labels (a model retrained since, another checkpoint); but labels
    from a separate safe model are a legitimate choice, which the note names so that it is a visible one."""
    from ..fingerprints import fingerprint_path
    from ..labeling.state import label_folder_status

    state = label_folder_status(folder).get("state") or {}
    recorded = state.get("model_fingerprint")
    if state.get("command", "label") != "label" or not recorded or not model_name_or_path:
        return None
    if fingerprint_path(model_name_or_path) == recorded:
        return None
    note = (
        f"The labels in {folder} were made by another model ({state.get('model')!r}, fingerprint {recorded[:19]}...) "
        f"than the one trained here ({model_name_or_path!r}): the safety labels are that model's decisions. If it is "
        "the same model retrained since, or another checkpoint of it, relabel with `trl-presafety label` on this "
        "model; if a separate safe model is intended, this note only records it."
    )
    warn_on_main_process(note)
    return note


def resolve_resume_from_checkpoint(value: Any, output_dir: str | None) -> str | None:
    """`--resume_from_checkpoint true` as TRL users expect: the latest `checkpoint-N` in `output_dir` (transformers
    takes the string "true" for a folder name). `false`/`none` start fresh; a folder must exist."""
    from transformers.trainer_utils import get_last_checkpoint

    if value is None or value is False:
        return None
    text = str(value).strip()
    if text.lower() in ("", "false", "none", "no", "0"):
        return None
    if value is True or text.lower() in ("true", "yes", "1", "latest", "last"):
        latest = get_last_checkpoint(output_dir) if output_dir and Path(output_dir).is_dir() else None
        if latest is None:
            raise ValueError(
                f"Invalid `resume_from_checkpoint`: {value!r} resumes the latest `checkpoint-N` folder in `output_dir` "
                f"({output_dir!r}), but there is none. Remove the option to start a new run, or pass the path of a "
                "checkpoint folder."
            )
        return latest
    if not Path(text).is_dir():
        raise ValueError(
            f"Invalid `resume_from_checkpoint`: {value!r} is not a checkpoint folder. Pass the path of a "
            "`checkpoint-N` folder, or `true` to resume the latest one in `output_dir`."
        )
    return text


def _check_data_inputs(script_args: Any, dataset_args: Any, check_data_input: Any, looks_local: Any) -> None:
    if not dataset_args.datasets:
        check_data_input(script_args.dataset_name)
        return
    for i, entry in enumerate(dataset_args.datasets):
        if looks_local(entry.path):
            check_data_input(entry.path, f"datasets[{i}].path")
            continue
        files = entry.data_files
        for value in files.values() if isinstance(files, dict) else [files]:
            for item in [value] if isinstance(value, str) else list(value or []):
                if looks_local(item):
                    check_data_input(item, f"datasets[{i}].data_files")


def training_data_names(script_args: Any, dataset_args: Any) -> list[str]:
    """What the model card names as the training data: `dataset_name`, or each mixture entry (its files when it is
    read with a file builder such as `json`)."""
    if not dataset_args.datasets:
        return [script_args.dataset_name] if script_args.dataset_name else []
    names = []
    for entry in dataset_args.datasets:
        files = entry.data_files
        values = list(files.values()) if isinstance(files, dict) else [files]
        flat = [str(f) for value in values for f in ([value] if isinstance(value, str) else list(value or []))]
        names.extend(flat or [entry.path])
    return names


def train_and_save(trainer: Any, training_args: Any, train_dataset: Any, data_names: list[str] | None = None) -> None:
    """Trains, saves the model (with the head) and the trainer state, and logs the final metrics.

    `trainer_state.json` (with the `presafety/*` metrics of every logging step) is saved next to the model, as
    open-r1's scripts do, so a run can be inspected without a tracker. The model card (`README.md`, written by
    `save_model`) names the training data `data_names`.
    """
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    metrics = dict(train_result.metrics)
    if hasattr(train_dataset, "__len__"):
        metrics["train_samples"] = len(train_dataset)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    trainer.accelerator.print("✅ Training completed.")

    trainer.save_model(training_args.output_dir)
    if data_names:  # `save_model` does not know where the data came from: write the card again, naming it
        trainer.create_model_card(dataset_name=data_names)
    if trainer.is_world_process_zero() and hasattr(train_dataset, "__len__"):
        from ..overlap import TRAINING_PROMPTS_FILE, record_training_prompts

        # Hashes of the training prompts: `eval` says when its prompts were trained on
        record_training_prompts(train_dataset, training_args.output_dir, data_names or [])
        trainer.accelerator.print(f"Training prompts recorded in {TRAINING_PROMPTS_FILE} (hashes, for `eval`).")
    trainer.accelerator.print(f"💾 Model and safety head saved to {training_args.output_dir}.")
