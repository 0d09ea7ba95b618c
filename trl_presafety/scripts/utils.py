# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Helpers shared by the training scripts and the `trl-presafety` CLI: strict recipe parsing, dataset loading and
the packaged accelerate configs."""

import difflib
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import ScriptArguments

from ..labeling.state import ALLOW_INCOMPLETE_LABELS_HELP, check_label_folder


logger = logging.getLogger(__name__)


@dataclass
class PreSafetyScriptArguments(ScriptArguments):
    r"""
    TRL's `ScriptArguments` (the data of `trl-presafety sft`, `dpo` and `grpo`) plus:

    allow_incomplete_labels (`bool`, *optional*, defaults to `False`):
        Train on a label folder (`trl-presafety label` output) whose `labeling_state.json` says the labeling did not
        finish. By default such a folder is refused, since it would train on only its first rows.
    """

    allow_incomplete_labels: bool = field(default=False, metadata={"help": ALLOW_INCOMPLETE_LABELS_HELP})


# A short usage line: argparse prints it above every error, and the full one lists hundreds of options
RECIPE_USAGE = "%(prog)s --config RECIPE.yaml [--<field> VALUE ...]"


def make_script_parser(
    command: str, dataclass_types: tuple[type, ...], usage: str | None = RECIPE_USAGE, allow_abbrev: bool = False
) -> Any:
    """The `TrlParser` of `trl-presafety <command>`. Without abbreviations, a shortened key is an error rather than
    another field set silently."""
    from trl import TrlParser

    return TrlParser(dataclass_types, prog=f"trl-presafety {command}", usage=usage, allow_abbrev=allow_abbrev)


def _warn(message: str) -> None:
    # Parse-time warnings come before any accelerate state exists (accelerate's logger refuses to log then): print
    # them once, on the main process of a launch
    if os.environ.get("RANK", "0") == "0":
        logger.warning(message)


# Shipped inside the package (pyproject `package-data`), so `--accelerate_config zero3` works after `pip install`. In the
# repository the folder is a link to `accelerate_configs/` at the root (what `accelerate launch --config_file` reads in
# the docs): one copy, which wheels and sdists carry as files.
ACCELERATE_CONFIGS_DIR = Path(__file__).resolve().parent.parent / "accelerate_configs"
ACCELERATE_CONFIG_ALIASES = {
    "multi_gpu": "multi_gpu",
    "zero2": "deepspeed_zero2",
    "zero3": "deepspeed_zero3",
    "deepspeed_zero2": "deepspeed_zero2",
    "deepspeed_zero3": "deepspeed_zero3",
    "zero3_multinode": "deepspeed_zero3_multinode",
    "deepspeed_zero3_multinode": "deepspeed_zero3_multinode",
    "fsdp2": "fsdp2",
}


def resolve_accelerate_config(name_or_path: str) -> Path:
    """The accelerate config file for `--accelerate_config`: an existing path, or a name of a packaged config.

    Names: `multi_gpu`, `zero2` / `deepspeed_zero2`, `zero3` / `deepspeed_zero3`, `zero3_multinode` /
    `deepspeed_zero3_multinode` (several machines: docs/scaling.md), `fsdp2`.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = ACCELERATE_CONFIG_ALIASES.get(name_or_path.removesuffix(".yaml"))
    if name is None:
        raise ValueError(
            f"Accelerate config {name_or_path!r} is neither a file nor a packaged config. Use a path to an accelerate "
            f"config YAML or one of {sorted(ACCELERATE_CONFIG_ALIASES)}."
        )
    return ACCELERATE_CONFIGS_DIR / f"{name}.yaml"


def accelerate_launch_options() -> set[str]:
    """Destinations of the options of `accelerate launch` (`num_processes`, `mixed_precision`, `cpu`, ...)."""
    from accelerate.commands.launch import launch_command_parser

    parser = launch_command_parser()
    return {action.dest for action in parser._actions if action.option_strings and action.dest != "help"}


def _config_path(argv: Sequence[str]) -> str | None:
    if "--config" in argv:
        index = list(argv).index("--config")
        return argv[index + 1] if index + 1 < len(argv) else None
    return None


def _unknown_keys(remaining: Sequence[str]) -> list[str]:
    return [item[2:].split("=", 1)[0] for item in remaining if item.startswith("--")]


def _describe_unknown(keys: Sequence[str], known: Sequence[str]) -> str:
    described = []
    for key in keys:
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
        described.append(f"`{key}`" + (f" (did you mean `{close[0]}`?)" if close else ""))
    return ", ".join(described)


def parser_fields(parser: Any) -> list[str]:
    """Every argument name the parser knows (the fields of its dataclasses)."""
    return [action.dest for action in parser._actions if action.option_strings and action.dest != "help"]


def _unknown_message(
    parser: Any,
    config_path: str | None,
    config_keys: Sequence[str],
    cli_remaining: Sequence[str],
    launch_options: set[str],
) -> str | None:
    """The error for unknown keys of the recipe (other than `accelerate launch` options) and the command line."""
    known = parser_fields(parser)
    unknown_config = [key for key in config_keys if key not in launch_options]
    # Options are named by their key; a stray value with no option (e.g. a positional) by itself
    unknown_cli = _unknown_keys(cli_remaining) or list(cli_remaining)
    problems = []
    if unknown_config:
        problems.append(f"Unknown key(s) in recipe {config_path}: {_describe_unknown(unknown_config, known)}.")
    if unknown_cli:
        problems.append(f"Unknown command-line argument(s): {_describe_unknown(unknown_cli, known)}.")
    if not problems:
        return None
    hint = (
        " (the pre-CoT head's options all start with `presafety_`)"
        if any(name.startswith("presafety_") for name in known)
        else ""
    )
    return " ".join(problems) + f" Check the spelling against `{parser.prog} --help`{hint}, or remove the key."


def _unknown_before_build(parser: Any, argv: Sequence[str], config_path: str | None) -> tuple[list[str], list[str]]:
    """Keys of the recipe and strings of the command line that the parser does not know, found without building the
    dataclasses (whose `__post_init__` may be what failed)."""
    import argparse

    import yaml

    dests = {action.dest for action in parser._actions}
    config_keys = []
    if config_path is not None:
        try:
            with open(config_path) as f:
                config = yaml.safe_load(f)
        except (OSError, yaml.YAMLError):
            config = None
        if isinstance(config, dict):
            config_keys = [str(key) for key in config if key != "env" and key not in dests]
    cli = list(argv)
    if "--config" in cli:
        index = cli.index("--config")
        del cli[index : index + 2]
    try:
        # argparse alone: no dataclass is built. The recipe's values are already the parser's defaults (TRL set
        # them before failing), so its required fields are not reported missing
        _, cli_remaining = argparse.ArgumentParser.parse_known_args(parser, cli)
    except SystemExit:
        cli_remaining = []
    return config_keys, cli_remaining


def _check_recipe_types(parser: Any, config_path: str) -> None:
    """A recipe's values reach the dataclasses as YAML parsed them (argparse converts only command-line strings): a
    list or a string where a number is expected fails here, naming the key."""
    import yaml

    from ..validation import check_field_types

    try:
        with open(config_path) as f:
            config = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return  # TRL's parser reports unreadable recipes
    if isinstance(config, dict):
        check_field_types(parser.dataclass_types, config, f"recipe {config_path}", strings_converted=True)


def parse_args_strict(parser: Any, argv: Sequence[str] | None = None) -> tuple[Any, ...]:
    """`TrlParser.parse_args_and_config`, except that an unknown key fails instead of being ignored.

    TRL's own scripts parse with `fail_with_unknown_args=False`, so a misspelled key in a recipe (say
    `presafety_loss_wieght`) would silently train with the default. Here an unknown key, in the YAML or on the command
    line, stops the run at parse time with its name and the closest valid one. Keys that are options of
    `accelerate launch` (e.g. `num_processes`) are allowed in a YAML recipe, as with the `trl` CLI: `trl-presafety
    <command>` passes them to `accelerate launch`, a direct launch ignores them with a warning.

    Wrong values fail at parse time too: argparse rejects values of the wrong type (naming the argument), and the
    configs' `__post_init__` rejects out-of-range values and bad choices; the error is re-raised with the recipe's path.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    config_path = _config_path(argv)
    where = f"recipe {config_path}" if config_path else "command line"
    launch_options = accelerate_launch_options()
    if config_path is not None:
        _check_recipe_types(parser, config_path)
    try:
        *outputs, config_remaining, cli_remaining = parser.parse_args_and_config(
            argv, return_remaining_strings=True, separate_remaining_strings=True
        )
    except (ValueError, TypeError) as error:
        # A misspelled key often causes the failure (a required field left unset): name it rather than its effect
        config_keys, cli_remaining = _unknown_before_build(parser, argv, config_path)
        message = _unknown_message(parser, config_path, config_keys, cli_remaining, launch_options)
        if message:
            raise ValueError(f"{message} (Parsing stopped at: {error})") from error
        raise type(error)(f"Invalid arguments ({where}): {error}") from error
    config_keys = _unknown_keys(config_remaining)
    message = _unknown_message(parser, config_path, config_keys, cli_remaining, launch_options)
    if message:
        raise ValueError(message)
    launch_keys = [key for key in config_keys if key in launch_options]
    if launch_keys:
        _warn(
            f"Recipe {config_path} sets `accelerate launch` options {launch_keys}: they apply when the recipe is run "
            "with `trl-presafety <command> --config ...`, and are ignored by a direct `accelerate launch -m ...`."
        )
    return tuple(outputs)


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
        _warn(
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


def check_training_inputs(script_args: Any, dataset_args: Any, model_args: Any) -> None:
    """Stops before anything loads (or tries the network) when a local input of the recipe is missing: the data (a
    label folder not written yet, or one whose labeling did not finish), then the model folder. Each error names the
    field and the command that makes the input."""
    from ..inputs import check_data_input, check_model_input, looks_local

    _check_data_inputs(script_args, dataset_args, check_data_input, looks_local)
    for path in _local_dataset_paths(script_args, dataset_args):
        check_label_folder(path, script_args.allow_incomplete_labels)
    check_model_input(model_args.model_name_or_path)


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
    trainer.accelerator.print(f"💾 Model and safety head saved to {training_args.output_dir}.")
