# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""A missing local input (model, classifier or label folder) stops a command at once, naming the field and the fix,
before anything loads or tries the network."""

import json

import pytest

from trl_presafety.inputs import MissingInputError, check_local_input, looks_local

from .testing_utils import REPO_ROOT


def _fake_model(folder):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    return str(folder)


@pytest.mark.parametrize(
    "value, local",
    [
        ("runs/refusal-classifier", True),
        ("./model", True),
        ("/abs/model", True),
        ("a/b/c", True),
        ("data.jsonl", True),
        ("Qwen/Qwen3-8B", False),
        ("gpt2", False),
    ],
)
def test_looks_local(value, local):
    assert looks_local(value) is local


def test_check_local_input_names_field_and_fix(tmp_path, monkeypatch):
    with pytest.raises(MissingInputError, match=r"`classifier_name_or_path`='runs/nothing-here'.*make it"):
        check_local_input("runs/nothing-here", "classifier_name_or_path", "a classifier", "make it")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MissingInputError, match="holds none of"):
        check_local_input(str(empty), "model_name_or_path", "a model folder", "fix", required_files=("config.json",))
    check_local_input(
        _fake_model(tmp_path / "m"), "model_name_or_path", "a model", "fix", required_files=("config.json",)
    )
    # Offline, a hub id that is not in the local cache cannot load: said at once
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(MissingInputError, match="HF_HUB_OFFLINE"):
        check_local_input("someone/some-model", "model_name_or_path", "a model", "fix")
    (tmp_path / "cache" / "models--someone--some-model").mkdir(parents=True)
    check_local_input("someone/some-model", "model_name_or_path", "a model", "fix")


def test_label_without_classifier_fails_fast(tmp_path, monkeypatch):
    """Old behaviour: generation ran, then `OSError: We couldn't connect to 'https://huggingface.co'`."""
    from trl_presafety.scripts import label

    monkeypatch.chdir(tmp_path)
    model = _fake_model(tmp_path / "runs" / "tiny-qwen3")
    argv = [
        "--config", str(REPO_ROOT / "recipes/tiny/label.yaml"),
        "--dataset_name", str(REPO_ROOT / "trl_presafety/data/tiny/prompts"),
        "--model_name_or_path", model,
        "--output_dir", str(tmp_path / "labels"),
    ]  # fmt: skip
    with pytest.raises(MissingInputError, match=r"classifier_name_or_path.*train-classifier"):
        label.main(argv)
    assert not (tmp_path / "labels").exists()


def test_label_without_model_fails_fast(tmp_path):
    from trl_presafety.scripts import label

    argv = [
        "--config", str(REPO_ROOT / "recipes/tiny/label.yaml"),
        "--dataset_name", str(REPO_ROOT / "trl_presafety/data/tiny/prompts"),
        "--model_name_or_path", str(tmp_path / "no-model"),
        "--output_dir", str(tmp_path / "labels"),
    ]  # fmt: skip
    with pytest.raises(MissingInputError, match=r"model_name_or_path.*trl_presafety.tiny"):
        label.main(argv)


def test_eval_without_model_folder_fails_fast(tmp_path):
    from trl_presafety.evaluation import EvalConfig, evaluate

    config = EvalConfig(
        model_name_or_path=str(tmp_path / "missing"), datasets=["smoke"], output_dir=str(tmp_path / "e")
    )
    with pytest.raises(MissingInputError, match="model_name_or_path"):
        evaluate(config)
    assert not (tmp_path / "e").exists()


def test_sft_without_label_folder_fails_fast(tmp_path, monkeypatch):
    from trl_presafety.scripts import sft

    monkeypatch.chdir(tmp_path)
    argv = [
        "--config", str(REPO_ROOT / "recipes/tiny/sft/config_presafety.yaml"),
        "--model_name_or_path", _fake_model(tmp_path / "model"),
        "--dataset_name", "runs/tiny-labels",
        "--output_dir", str(tmp_path / "out"),
        "--report_to", "none",
    ]  # fmt: skip
    with pytest.raises(MissingInputError, match=r"`dataset_name`='runs/tiny-labels'.*trl-presafety label"):
        sft.main(argv)
