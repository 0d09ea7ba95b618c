# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""`trl-presafety <command> --help` answers at once (nothing heavy imported; it took 17-54 s importing torch), lists
the `presafety_*` options first and documents `--config`, in one usage format; `--help_all` gives the full list; and
the short help never drifts from the real parser."""

import contextlib
import io
import time

import pytest

from trl_presafety import cli
from trl_presafety._help import command_dataclasses

from .testing_utils import run_cli_in_fresh_process


HEAVY_MODULES = ("torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate", "datasets")
SHORT_HELP_COMMANDS = [name for name, module in cli.COMMANDS.items() if command_dataclasses(module) is not None]


def test_every_recipe_command_has_a_short_help():
    assert set(cli.COMMANDS) - set(SHORT_HELP_COMMANDS) == {"pipeline"}  # plain argparse: its help is already fast


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_help_is_fast_and_imports_nothing_heavy(command):
    start = time.perf_counter()
    out, loaded, _ = run_cli_in_fresh_process([command, "--help"], HEAVY_MODULES)
    elapsed = time.perf_counter() - start
    assert loaded == [], loaded
    assert out.startswith(f"usage: trl-presafety {command} ") and "--config" in out
    assert elapsed < 10, f"{command} --help took {elapsed:.1f} s"  # ~0.5 s idle; generous for a loaded CI machine


def _short(command: str) -> str:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        cli.main([command, "--help"])
    return buffer.getvalue()


def test_training_help_lists_presafety_options_first_and_points_to_the_full_list():
    out = _short("sft")
    assert out.splitlines()[0] == "usage: trl-presafety sft [--config RECIPE.yaml] [--<field> VALUE ...]"
    options = [line.split()[0] for line in out.splitlines() if line.startswith("  --")]
    assert options[0] == "--config" and options[1] == "--presafety_loss_weight"
    first_other = next(i for i, name in enumerate(options[1:], 1) if not name.startswith("--presafety_"))
    assert all(not name.startswith("--presafety_") for name in options[first_other:])
    assert "`trl.SFTConfig`" in out and "`trl-presafety sft --help_all`" in out
    assert len(out.splitlines()) < 120  # was 771 lines, the presafety_* options from line 656


@pytest.mark.parametrize("command", ["build-ipo-pairs", "build-alttrain", "eval-compare", "label"])
def test_one_usage_format_across_commands(command):
    assert _short(command).startswith(f"usage: trl-presafety {command} [--config RECIPE.yaml] ")


def test_help_all_is_the_full_parser_help_with_config(capsys):
    with pytest.raises(SystemExit):
        cli.main(["eval-compare", "--help_all"])
    out = capsys.readouterr().out
    assert "--config RECIPE.yaml" in out and "YAML recipe" in out and "--reports" in out
    assert "usage: trl-presafety eval-compare [--config RECIPE.yaml] REPORT.json REPORT.json" in out


@pytest.mark.parametrize("command", ["sft", "dpo", "label", "eval", "build-ipo-pairs", "eval-compare", "build-sft"])
def test_short_help_matches_the_parser(command):
    """Every option the short help shows is the parser's, with its default; every option of this package's own
    dataclasses is shown."""
    import dataclasses
    import importlib

    module = importlib.import_module(cli.COMMANDS[command])
    parser = module.make_parser()
    out = _short(command)
    shown = {line.split()[0][2:] for line in out.splitlines() if line.startswith("  --")} - {"config"}
    ours = {
        f.name
        for cls in parser.dataclass_types
        for f in dataclasses.fields(cls)
        if f.init and any(base.__module__.startswith("trl_presafety") and f.name in getattr(base, "__annotations__", {})
                          for base in cls.__mro__)
    }  # fmt: skip
    actions = {a.dest: a for a in parser._actions}
    assert shown <= set(actions), shown - set(actions)
    assert ours <= shown, ours - shown
    for line in out.splitlines():
        if line.startswith("  --") and line.split()[0] != "--config":
            name = line.split()[0][2:]
            assert name in actions
