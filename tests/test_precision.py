# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""A launcher config never changes the recipe's precision silently: `--accelerate_config multi_gpu` (whose
`mixed_precision: bf16` transformers takes when the recipe sets neither `bf16` nor `fp16`) trains in what the recipe
says, and says so; an explicit contradiction is refused."""

import json

import pytest

from trl_presafety import cli

from .testing_utils import REPO_ROOT


TINY_SFT = REPO_ROOT / "recipes" / "tiny" / "sft" / "config_presafety.yaml"  # bf16: false


@pytest.fixture
def launched(monkeypatch):
    import accelerate.commands.launch

    calls = []
    monkeypatch.setattr(accelerate.commands.launch, "launch_command", calls.append)
    return calls


def test_recipe_precision_wins_over_the_accelerate_config_and_is_reported(launched, capsys):
    cli.main(["sft", "--accelerate_config", "multi_gpu", "--num_processes", "2", "--config", str(TINY_SFT)])
    (namespace,) = launched
    assert namespace.mixed_precision == "no"  # the packaged multi_gpu config says bf16
    err = capsys.readouterr().err
    assert "Precision: training in fp32, as the recipe says (bf16=False" in err
    assert "says mixed_precision: bf16" in err


def test_explicit_mixed_precision_against_the_recipe_is_refused(launched):
    with pytest.raises(ValueError, match=r"Precision conflict: `--mixed_precision bf16`.*bf16=False"):
        cli.main(["sft", "--accelerate_config", "multi_gpu", "--mixed_precision", "bf16", "--config", str(TINY_SFT)])
    assert not launched
    cli.main(["sft", "--accelerate_config", "multi_gpu", "--mixed_precision", "no", "--config", str(TINY_SFT)])
    assert launched[0].mixed_precision == "no"


def test_direct_launch_with_another_precision_stops_before_loading(tmp_path, monkeypatch):
    """`accelerate launch --config_file multi_gpu.yaml -m trl_presafety.scripts.sft` exports
    ACCELERATE_MIXED_PRECISION=bf16: the script refuses it rather than train a `bf16: false` recipe in bf16."""
    from trl_presafety.scripts import sft

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    argv = ["--config", str(TINY_SFT), "--model_name_or_path", str(model), "--output_dir", str(tmp_path / "out")]
    with pytest.raises(ValueError, match=r"Precision conflict: the recipe says bf16=False.*--mixed_precision no"):
        sft.main(argv)
