# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The arguments of the `trl-presafety` commands: their parser (strict recipe parsing: an unknown key or a wrong type
fails at parse time), the data arguments of the training scripts, and the packaged accelerate configs. The training
runtime the scripts share (loading data, training, saving) is in `training.py`."""

import difflib
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import ScriptArguments

from ..labeling.state import ALLOW_INCOMPLETE_LABELS_HELP


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
RECIPE_USAGE = "%(prog)s [--config RECIPE.yaml] [--<field> VALUE ...]"
CONFIG_HELP = (
    "YAML recipe: any option of this command as a key; options given on the command line override it (TRL's "
    "`--config`)."
)


def make_script_parser(
    command: str, dataclass_types: tuple[type, ...], usage: str | None = RECIPE_USAGE, allow_abbrev: bool = False
) -> Any:
    """The `TrlParser` of `trl-presafety <command>`. Without abbreviations, a shortened key is an error rather than
    another field set silently."""
    import argparse

    from trl import TrlParser

    parser = TrlParser(dataclass_types, prog=f"trl-presafety {command}", usage=usage, allow_abbrev=allow_abbrev)
    # Shown in the help only: TRL reads `--config` before argparse does (SUPPRESS: never a parsed value)
    parser.add_argument("--config", metavar="RECIPE.yaml", default=argparse.SUPPRESS, help=CONFIG_HELP)
    return parser


def warn_on_main_process(message: str) -> None:
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
        from ..recipe_files import RecipeError, check_recipe_file

        try:  # a duplicate key (the last value would win silently), unknown keys for from_pretrained / checkpointing
            check_recipe_file(config_path)
        except OSError:
            pass  # TRL's parser reports a missing recipe
        except RecipeError as error:
            raise ValueError(str(error)) from None
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
        warn_on_main_process(
            f"Recipe {config_path} sets `accelerate launch` options {launch_keys}: they apply when the recipe is run "
            "with `trl-presafety <command> --config ...`, and are ignored by a direct `accelerate launch -m ...`."
        )
    return tuple(outputs)
