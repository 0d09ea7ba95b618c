# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The `trl-presafety` console script: dispatch, `--accelerate_config` and `accelerate launch` options (as `trl` does),
and the packaged accelerate configs."""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trl_presafety import cli
from trl_presafety.scripts.arguments import (
    ACCELERATE_CONFIG_ALIASES,
    ACCELERATE_CONFIGS_DIR,
    resolve_accelerate_config,
)

from .testing_utils import run_cli_in_fresh_process


REPO_ROOT = Path(__file__).resolve().parent.parent
TINY_SFT = REPO_ROOT / "recipes" / "tiny" / "sft" / "config_presafety.yaml"
EXPECTED_CONFIGS = {
    "multi_gpu": ("MULTI_GPU", None),
    "deepspeed_zero2": ("DEEPSPEED", 2),
    "deepspeed_zero3": ("DEEPSPEED", 3),
    "deepspeed_zero3_multinode": ("DEEPSPEED", 3),
    "fsdp2": ("FSDP", None),
}


def test_usage_lists_the_commands_one_line_each(capsys):
    cli.main([])
    usage = capsys.readouterr().out
    listing = usage.split("commands:\n", 1)[1].split("\n\n", 1)[0]
    lines = {line.split()[0]: line for line in listing.splitlines()}
    assert list(lines) == list(cli.COMMANDS)
    for command, line in lines.items():
        assert line.split(None, 1)[1] == cli.COMMANDS_HELP[command][1] and len(line) <= 119
    assert "--accelerate_config" in usage and "trl-presafety --version" in usage
    with pytest.raises(SystemExit, match="Unknown command 'stf'. Valid commands: sft, dpo"):
        cli.main(["stf"])


def test_version(capsys):
    from trl_presafety import __version__

    for flag in ("--version", "-V"):
        cli.main([flag])
        assert capsys.readouterr().out == f"trl-presafety {__version__}\n"


# Imported by the child: what `--help`, `--version` and `import trl_presafety` may not pull in (seconds of start-up,
# and third-party import-time noise such as bitsandbytes' kernel warning)
HEAVY_MODULES = ("torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate")


@pytest.mark.parametrize("argv", [["--help"], ["--version"]])
def test_help_and_version_import_no_heavy_package(argv):
    out, loaded, stderr = run_cli_in_fresh_process(argv, HEAVY_MODULES)
    assert loaded == [] and out.startswith(("usage:", "trl-presafety "))
    assert "gemm_4bit_forward" not in stderr


def test_package_is_lazy_but_complete():
    import trl_presafety

    assert set(trl_presafety.__all__) <= set(dir(trl_presafety))
    for name in trl_presafety.__all__:
        assert getattr(trl_presafety, name).__name__ == name
    from trl_presafety import PreSafetySFTTrainer
    from trl_presafety.trainer import PreSafetySFTTrainer as direct

    assert PreSafetySFTTrainer is direct
    with pytest.raises(AttributeError, match="has no attribute 'PreSafetyTrainer'"):
        trl_presafety.PreSafetyTrainer  # noqa: B018


def test_eval_help_does_not_import_bitsandbytes():
    """bitsandbytes comes in through peft, which transformers' Trainer imports: commands that train need it, the
    evaluation's `--help` does not (nor its run, which loads models without the Trainer)."""
    out, loaded, stderr = run_cli_in_fresh_process(["eval", "--help"], ("bitsandbytes", "peft"))
    assert "--model_name_or_path" in out and loaded == []
    assert "gemm_4bit_forward" not in stderr


def test_registry_names_the_scripts():
    assert cli.COMMANDS["sft"] == "trl_presafety.scripts.sft"
    assert cli.COMMANDS["dpo"] == "trl_presafety.scripts.dpo"
    assert {"label", "train-classifier", "eval"} <= cli.COMMANDS.keys()


def test_packaged_accelerate_configs_are_the_repository_ones():
    """`pip install` ships `trl_presafety/accelerate_configs/`; `accelerate_configs/` is what the docs launch. One copy:
    the package folder is a relative link to the repository's, whose files wheels and sdists carry."""
    from accelerate.commands.config.config_args import load_config_from_file

    assert ACCELERATE_CONFIGS_DIR.is_symlink() and os.readlink(ACCELERATE_CONFIGS_DIR) == "../accelerate_configs"
    assert ACCELERATE_CONFIGS_DIR.resolve() == (REPO_ROOT / "accelerate_configs").resolve()
    packaged = {p.name for p in ACCELERATE_CONFIGS_DIR.glob("*.yaml")}
    assert packaged == {f"{name}.yaml" for name in EXPECTED_CONFIGS}
    for name, (distributed_type, zero_stage) in EXPECTED_CONFIGS.items():
        config = load_config_from_file(str(ACCELERATE_CONFIGS_DIR / f"{name}.yaml"))
        assert config.distributed_type.value == distributed_type
        if zero_stage is not None:
            assert config.deepspeed_config["zero_stage"] == zero_stage
    zero3 = yaml.safe_load((ACCELERATE_CONFIGS_DIR / "deepspeed_zero3.yaml").read_text())
    # Without it, `save_model` under ZeRO-3 writes no consolidated weights and the head cannot be re-loaded
    assert zero3["deepspeed_config"]["zero3_save_16bit_model"] is True
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert '"accelerate_configs/*.yaml"' in pyproject


@pytest.mark.parametrize("name", sorted(ACCELERATE_CONFIG_ALIASES))
def test_resolve_accelerate_config_names(name):
    path = resolve_accelerate_config(name)
    assert path.is_file() and path.parent == ACCELERATE_CONFIGS_DIR
    assert path.stem == ACCELERATE_CONFIG_ALIASES[name]


def test_resolve_accelerate_config_path_and_unknown(tmp_path):
    own = tmp_path / "my_config.yaml"
    own.write_text("distributed_type: MULTI_GPU\n")
    assert resolve_accelerate_config(str(own)) == own
    with pytest.raises(ValueError, match=r"'zero4' is neither a file nor a packaged config.*'zero3'"):
        resolve_accelerate_config("zero4")


def test_split_launch_args_separates_launcher_and_script(tmp_path):
    module = __import__("trl_presafety.scripts.sft", fromlist=["make_parser"])
    args = ["--accelerate_config", "zero3", "--num_processes", "2", "--config", str(TINY_SFT), "--max_steps", "2"]
    config, launch_args, script_args = cli.split_launch_args("sft", module, args + ["--mixed_precision", "no"])
    assert config == "zero3"
    assert launch_args == ["--num_processes", "2", "--mixed_precision", "no"]
    assert script_args == ["--config", str(TINY_SFT), "--max_steps", "2"]

    # `accelerate launch` options may also sit in the recipe, as with `trl sft`
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(TINY_SFT.read_text() + "num_processes: 4\n")
    config, launch_args, script_args = cli.split_launch_args("sft", module, ["--config", str(recipe)])
    assert (config, launch_args, script_args) == (None, ["--num_processes", "4"], ["--config", str(recipe)])

    # Anything else fails before a process is launched, naming the key
    with pytest.raises(ValueError, match=r"`presafety_los_weight` \(did you mean `presafety_loss_weight`\?\)"):
        cli.split_launch_args("sft", module, ["--config", str(TINY_SFT), "--presafety_los_weight", "2"])
    with pytest.raises(SystemExit, match="needs a value"):
        cli.split_launch_args("sft", module, ["--accelerate_config", "--config", str(TINY_SFT)])


def test_main_hands_the_run_to_accelerate_launch(monkeypatch):
    """What `trl-presafety sft --accelerate_config zero3 ...` asks `accelerate launch` for (the real launch of a
    packaged config runs in `test_console_script_launches_two_processes` and tests/test_distributed.py)."""
    import accelerate.commands.launch

    launched = []
    monkeypatch.setattr(accelerate.commands.launch, "launch_command", launched.append)
    cli.main(
        ["dpo", "--accelerate_config=zero3", "--config", str(TINY_SFT).replace("sft", "dpo"), "--num_processes", "8"]
    )
    (namespace,) = launched
    assert Path(namespace.config_file) == ACCELERATE_CONFIGS_DIR / "deepspeed_zero3.yaml"
    assert namespace.module and namespace.training_script == "trl_presafety.scripts.dpo"
    assert namespace.num_processes == 8
    assert namespace.training_script_args == ["--config", str(TINY_SFT).replace("sft", "dpo")]


def test_main_without_launch_options_runs_in_process(tiny_model_dirs, tmp_path):
    output_dir = tmp_path / "out"
    cli.main(
        [
            "sft",
            "--config",
            str(TINY_SFT),
            "--model_name_or_path",
            tiny_model_dirs["qwen3"],
            "--output_dir",
            str(output_dir),
            "--max_steps",
            "1",
        ]
    )
    assert (output_dir / "safety_head_config.json").is_file()
    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == 1
    # The training prompts are recorded (hashes), for `eval` to find evaluation prompts the model was trained on
    recorded = json.loads((output_dir / "training_prompts.json").read_text())
    assert recorded["num_prompts"] == 140 and len(recorded["sha256"]) == 140


@pytest.mark.slow  # three processes: the console script, and the two it launches
@pytest.mark.distributed
def test_console_script_launches_two_processes(tiny_model_dirs, tmp_path):
    """The installed `trl-presafety` with the packaged FSDP2 config (the other packaged configs launch in
    tests/test_distributed.py): 2 processes on CPU over gloo, each with half the batch, the head saved."""
    script = Path(sys.executable).parent / "trl-presafety"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "trl_presafety.cli"]
    with socket.socket() as sock:  # other sessions may launch on this machine too: not the default port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    output_dir = tmp_path / "out"
    command += [
        "sft",
        "--accelerate_config",
        "fsdp2",
        "--num_processes",
        "2",
        "--mixed_precision",
        "no",
        "--main_process_port",
        str(port),
        "--config",
        str(TINY_SFT),
        "--model_name_or_path",
        tiny_model_dirs["qwen3"],
        "--output_dir",
        str(output_dir),
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "4",
        "--logging_steps",
        "1",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, check=False, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-6000:]
    state = json.loads((output_dir / "trainer_state.json").read_text())
    first = next(e for e in state["log_history"] if e.get("step") == 1 and "loss" in e)
    # 140 examples, 2 processes x 4 per step: an epoch is ceil(70 / 4) = 18 steps (one process would need 35)
    assert first["epoch"] == pytest.approx(1 / math.ceil(140 / 2 / 4))
    assert "presafety/loss" in first
    # FSDP gathers a full state dict on save: the head is in it
    from transformers import AutoModelForCausalLM

    from trl_presafety import load_safety_head

    head = load_safety_head(AutoModelForCausalLM.from_pretrained(output_dir), output_dir)
    assert head.proj.weight.shape == (1, 16)


def _abbreviation(parser) -> tuple[str, str]:
    """A string-valued option of `parser` and a prefix of it that no other option shares (what argparse's
    `allow_abbrev` would accept as that option)."""
    options = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    for action in parser._actions:
        for option in action.option_strings:
            if option.startswith("--") and len(option) > 8 and action.type in (None, str) and action.nargs is None:
                prefix = option[:-2]
                if [o for o in options if o.startswith(prefix)] == [option]:
                    return option, prefix
    raise AssertionError("no option to abbreviate")


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_refuses_abbreviated_and_unknown_keys(command, tmp_path):
    import importlib

    from trl_presafety.scripts.arguments import parse_args_strict

    module = importlib.import_module(cli.COMMANDS[command])
    parser = module.make_parser()
    assert parser.prog == f"trl-presafety {command}"
    option, prefix = _abbreviation(parser)
    if command == "pipeline":  # its --config is a file of stages (tests/test_pipeline.py), not a recipe of its options
        with pytest.raises(ValueError, match=rf"Unknown command-line argument\(s\): `{prefix[2:]}` \(did you mean"):
            module.main(["--config", "x.yaml", prefix, "value"])
        recipe = tmp_path / "pipeline.yaml"
        recipe.write_text(yaml.safe_dump({f"{option[2:]}x": "value"}))
        with pytest.raises(ValueError, match=rf"Unknown key\(s\) in pipeline file {recipe}: `{option[2:]}x`"):
            module.main(["--config", str(recipe)])
        return
    # A shortened key would silently set another field's neighbour; here it is an unknown key, named with the fix
    with pytest.raises(ValueError, match=rf"Unknown command-line argument\(s\): `{prefix[2:]}` \(did you mean"):
        parse_args_strict(parser, [prefix, "value"])
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({f"{option[2:]}x": "value"}))
    with pytest.raises(ValueError, match=rf"Unknown key\(s\) in recipe {recipe}: `{option[2:]}x`"):
        module.main(["--config", str(recipe)])
