# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The `trl-presafety` command: one subcommand per job, each a module of `trl_presafety.scripts` with `main(argv)`.

Like the `trl` CLI, a subcommand accepts `--accelerate_config <name|path>` and the options of `accelerate launch`
(`--num_processes 8`, also as keys of the YAML recipe); it then runs
`accelerate launch --config_file <config> [launch options] -m trl_presafety.scripts.<cmd> <script arguments>`.
Packaged configs: `multi_gpu`, `zero2` (`deepspeed_zero2`), `zero3` (`deepspeed_zero3`), `fsdp2`. Without any of them,
the command runs in this process, as `python -m trl_presafety.scripts.<cmd>` would.

    trl-presafety sft --accelerate_config zero3 --config recipes/Qwen3-8B/sft/config_presafety.yaml
    trl-presafety dpo --accelerate_config multi_gpu --num_processes 4 --config recipes/Qwen3-8B/dpo/config_presafety.yaml
    trl-presafety label --config recipes/Qwen3-8B/label.yaml
"""

import importlib
import sys
from collections.abc import Callable
from typing import Any


# Subcommand -> (module, one-line description). Each module exposes `main(argv: list[str] | None = None)` and parses
# its own arguments. The descriptions live here, not in the modules: `--help` must not import them (torch, trl).
COMMANDS_HELP = {
    "sft": ("trl_presafety.scripts.sft", "SFT with the pre-CoT safety head (TRL's `trl sft` plus `presafety_*`)."),
    "dpo": ("trl_presafety.scripts.dpo", "DPO with the pre-CoT safety head (TRL's `trl dpo` plus `presafety_*`)."),
    "grpo": ("trl_presafety.scripts.grpo", "GRPO with safety rewards on the reasoning and the answer separately."),
    "label": ("trl_presafety.scripts.label", "Label prompts with the safe model's decision (`safety_label`)."),
    "train-classifier": (
        "trl_presafety.scripts.train_classifier",
        "Train or evaluate the refusal/compliance classifier that labels answers.",
    ),
    "eval": ("trl_presafety.scripts.evaluate", "Evaluate one model: safety CoT on/off, over-refusal, math, probe."),
    "eval-compare": (
        "trl_presafety.scripts.eval_compare",
        "Compare evaluation reports (before/after), with significance tests.",
    ),
    "build-ipo-pairs": ("trl_presafety.scripts.build_ipo_pairs", "Build IPO preference pairs from unsafe traces."),
    "build-alttrain": ("trl_presafety.scripts.build_alttrain", "Build AltTrain SFT data (safety assessment first)."),
}
COMMANDS = {name: module for name, (module, _) in COMMANDS_HELP.items()}
# Training subcommands: their YAML recipes may carry `accelerate launch` options (`num_processes: 8`), as with `trl`
TRAINING_COMMANDS = ("sft", "dpo", "grpo")
ACCELERATE_CONFIG_FLAG = "--accelerate_config"


def _usage() -> str:
    lines = [
        "usage: trl-presafety <command> [--accelerate_config NAME|PATH] [options]",
        "       trl-presafety --version",
        "",
        "commands:",
    ]
    width = max(len(name) for name in COMMANDS_HELP)
    lines += [f"  {name:<{width}}  {description}" for name, (_, description) in COMMANDS_HELP.items()]
    lines += [
        "",
        "Run `trl-presafety <command> --help` for the options of a command. `--accelerate_config` (multi_gpu, zero2,",
        "zero3, fsdp2 or a path) and `accelerate launch` options run the command through `accelerate launch`.",
    ]
    return "\n".join(lines)


def _pop_accelerate_config(args: list[str]) -> tuple[str | None, list[str]]:
    """Removes `--accelerate_config VALUE` (or `--accelerate_config=VALUE`) from `args`."""
    for i, item in enumerate(args):
        if item == ACCELERATE_CONFIG_FLAG:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise SystemExit(
                    f"`{ACCELERATE_CONFIG_FLAG}` needs a value: multi_gpu, zero2, zero3, fsdp2 or a path to a config."
                )
            return args[i + 1], args[:i] + args[i + 2 :]
        if item.startswith(ACCELERATE_CONFIG_FLAG + "="):
            return item.split("=", 1)[1], args[:i] + args[i + 1 :]
    return None, args


def _subtract_subsequence(items: list[str], subsequence: list[str]) -> list[str]:
    """`items` without the ordered `subsequence` (the parser returns unknown arguments in command-line order)."""
    remaining = iter(subsequence)
    current = next(remaining, None)
    result = []
    for item in items:
        if current is not None and item == current:
            current = next(remaining, None)
        else:
            result.append(item)
    return result


def split_launch_args(command: str, module: Any, args: list[str]) -> tuple[str | None, list[str], list[str]]:
    """Splits a subcommand's arguments into `(accelerate config, accelerate launch options, script arguments)`.

    The script's own parser reads the recipe and the command line (so a bad recipe fails here, before any process is
    launched); what it does not know must be an `accelerate launch` option, or the run stops naming the unknown key.
    """
    from .scripts.utils import _describe_unknown, _unknown_keys, accelerate_launch_options, parser_fields

    config, args = _pop_accelerate_config(list(args))
    make_parser = getattr(module, "make_parser", None)
    parser = make_parser() if make_parser is not None else None
    if parser is None or not hasattr(parser, "parse_args_and_config"):
        return config, [], args  # a script without a TrlParser: only `--accelerate_config` is for the launcher

    *_, config_remaining, cli_remaining = parser.parse_args_and_config(
        args, return_remaining_strings=True, separate_remaining_strings=True
    )
    launch_options = accelerate_launch_options()
    unknown = [key for key in _unknown_keys(config_remaining + cli_remaining) if key not in launch_options]
    if unknown:
        raise ValueError(
            f"`trl-presafety {command}`: unknown argument(s) {_describe_unknown(unknown, parser_fields(parser))}; "
            f"they are neither options of `{parser.prog}` nor of `accelerate launch`. Check the spelling against "
            f"`trl-presafety {command} --help`, or remove them."
        )
    if command not in TRAINING_COMMANDS:
        config_remaining = []  # the YAML of a non-training job is its own business
    return config, config_remaining + cli_remaining, _subtract_subsequence(args, cli_remaining)


def launch(
    module_name: str,
    config: str | None,
    launch_args: list[str],
    script_args: list[str],
    launch_command_fn: Callable[[Any], None] | None = None,
) -> list[str]:
    """Runs `accelerate launch [--config_file CONFIG] LAUNCH_ARGS -m MODULE SCRIPT_ARGS`, as `trl <command>` does.

    Returns the `accelerate launch` argument list (after `accelerate launch`), for logging and tests.
    """
    from accelerate.commands.launch import launch_command, launch_command_parser

    from .scripts.utils import resolve_accelerate_config

    accelerate_args = ["--config_file", str(resolve_accelerate_config(config))] if config is not None else []
    accelerate_args += [*launch_args, "--module", module_name, *script_args]
    (launch_command_fn or launch_command)(launch_command_parser().parse_args(accelerate_args))
    return accelerate_args


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return
    if argv[0] in {"-V", "--version"}:
        from . import __version__

        print(f"trl-presafety {__version__}")
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        raise SystemExit(f"Unknown command {command!r}. Valid commands: {', '.join(COMMANDS)}.")
    module = importlib.import_module(COMMANDS[command])
    wants_launch = any(
        item == ACCELERATE_CONFIG_FLAG or item.startswith(ACCELERATE_CONFIG_FLAG + "=") for item in rest
    )
    if command in TRAINING_COMMANDS or wants_launch:
        config, launch_args, script_args = split_launch_args(command, module, rest)
        if config is not None or launch_args:
            launch(COMMANDS[command], config, launch_args, script_args)
            return
        rest = script_args
    module.main(rest)


if __name__ == "__main__":
    main()
