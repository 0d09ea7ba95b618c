# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The `trl-presafety` command: one subcommand per job, each a module of `trl_presafety.scripts` with `main(argv)`."""

import importlib
import sys


# Subcommand -> module. Each module exposes `main(argv: list[str] | None = None)` and parses its own arguments.
COMMANDS = {
    "sft": "trl_presafety.scripts.sft",
    "dpo": "trl_presafety.scripts.dpo",
    "grpo": "trl_presafety.scripts.grpo",
    "label": "trl_presafety.scripts.label",
    "train-classifier": "trl_presafety.scripts.train_classifier",
    "eval": "trl_presafety.scripts.evaluate",
    "eval-compare": "trl_presafety.scripts.eval_compare",
    "build-ipo-pairs": "trl_presafety.scripts.build_ipo_pairs",
    "build-alttrain": "trl_presafety.scripts.build_alttrain",
}


def _usage() -> str:
    lines = ["usage: trl-presafety <command> [options]", "", "commands:"]
    lines += [f"  {name}" for name in COMMANDS]
    lines += ["", "Run `trl-presafety <command> --help` for the options of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        raise SystemExit(f"Unknown command {command!r}. Valid commands: {', '.join(COMMANDS)}.")
    module = importlib.import_module(COMMANDS[command])
    module.main(rest)


if __name__ == "__main__":
    main()
