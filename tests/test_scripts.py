# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The training scripts run in this process on the tiny recipes: YAML and command-line overrides mixed, LoRA flags,
dataset mixtures, the DPO reference model, and the saved output (model + head + trainer state)."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_presafety import SafetyHeadConfig, load_safety_head
from trl_presafety.scripts import dpo, sft
from trl_presafety.scripts.arguments import parse_args_strict


REPO_ROOT = Path(__file__).resolve().parent.parent
TINY_SFT = REPO_ROOT / "recipes" / "tiny" / "sft" / "config_presafety.yaml"
TINY_DPO = REPO_ROOT / "recipes" / "tiny" / "dpo" / "config_presafety.yaml"
R1_TRAINING_TEMPLATE = (
    REPO_ROOT / "recipes" / "DeepSeek-R1-Distill-Qwen-7B" / "sft" / "deepseek_r1_distill_training.jinja"
)
TINY_SFT_DATA = REPO_ROOT / "trl_presafety" / "data" / "tiny" / "sft" / "train.jsonl"


def _head_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    from trl_presafety import get_safety_head

    head = get_safety_head(model)
    return {k: v.detach().clone() for k, v in head.state_dict().items()}


def _assert_saved_head_matches(output_dir: Path, base_model_dir: str | Path, trained: dict[str, torch.Tensor]) -> None:
    model = AutoModelForCausalLM.from_pretrained(base_model_dir)
    if (Path(output_dir) / "adapter_config.json").is_file():  # the head is bound to the base weights + the adapter
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, output_dir)
    loaded = load_safety_head(model, output_dir).state_dict()
    assert loaded.keys() == trained.keys()
    for name, value in trained.items():
        torch.testing.assert_close(loaded[name], value, rtol=0, atol=0)


def test_sft_main_mixes_recipe_and_command_line(tiny_model_dirs, tmp_path):
    output_dir = tmp_path / "sft"
    trainer = sft.main(
        [
            "--config",
            str(TINY_SFT),
            "--model_name_or_path",
            tiny_model_dirs["qwen3"],
            "--output_dir",
            str(output_dir),
            "--max_steps",
            "3",
            "--per_device_train_batch_size",
            "4",
            "--logging_steps",
            "1",
            "--presafety_pooling",
            "mean",
        ]
    )
    args = trainer.args
    # From the command line
    assert (args.max_steps, args.per_device_train_batch_size, args.presafety_pooling) == (3, 4, "mean")
    # From the recipe
    assert (args.learning_rate, args.max_length, args.presafety_anchor, args.seed) == (3e-3, 128, "prompt_end", 42)
    assert args.presafety_loss_weight == 1.0 and args.ddp_find_unused_parameters is False

    steps = [e for e in trainer.state.log_history if "loss" in e and "train_runtime" not in e]
    assert [e["step"] for e in steps] == [1, 2, 3]
    # The head's metrics come from the overridden batch of 4 labeled rows (an accuracy in [0, 1] would pass anything)
    assert all(0 < e["presafety/loss"] < 5 and (4 * e["presafety/accuracy"]).is_integer() for e in steps)
    assert [e["presafety/weight"] for e in steps] == [1.0] * 3  # the recipe's presafety_loss_weight

    # Saved: model + head + its config + the trainer state with the logged metrics
    head_config = SafetyHeadConfig.load(output_dir)
    assert head_config.pooling == "mean"
    # ... with the weight it was trained with, which `trl-presafety eval` reads (weight 0: an untrained head), once
    assert head_config.loss_weight == 1.0 and head_config.extra == {}
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert [e["presafety/loss"] for e in state["log_history"] if "loss" in e] == [e["presafety/loss"] for e in steps]
    _assert_saved_head_matches(output_dir, output_dir, _head_state(trainer.model))


def test_dpo_main_with_reference_from_path_and_chat_template(tiny_model_dirs, tmp_path):
    output_dir = tmp_path / "dpo"
    trainer = dpo.main(
        [
            "--config",
            str(TINY_DPO),
            "--model_name_or_path",
            tiny_model_dirs["r1"],
            "--output_dir",
            str(output_dir),
            "--max_steps",
            "2",
            "--per_device_train_batch_size",
            "4",
            "--logging_steps",
            "1",
            "--chat_template_path",
            str(R1_TRAINING_TEMPLATE),
        ]
    )
    # A model loaded from a folder has a path: DPO builds its frozen reference model from it
    assert trainer.ref_model is not None and trainer.ref_model is not trainer.model
    template = R1_TRAINING_TEMPLATE.read_text()
    assert trainer.processing_class.chat_template == template
    assert AutoTokenizer.from_pretrained(output_dir).chat_template == template

    steps = [e for e in trainer.state.log_history if "loss" in e and "train_runtime" not in e]
    assert [e["step"] for e in steps] == [1, 2]
    for entry in steps:
        assert {"presafety/loss", "presafety/accuracy", "rewards/margins"} <= entry.keys()
    # The training template keeps the reasoning: the chosen completions are longer than the bare answers
    first = trainer.train_dataset[0]
    assert "</think>" in trainer.processing_class.decode(first["chosen_ids"])
    _assert_saved_head_matches(output_dir, output_dir, _head_state(trainer.model))


def test_sft_lora_flags_train_the_head_with_the_adapter(tiny_model_dirs, tmp_path):
    from peft import PeftModel

    output_dir = tmp_path / "lora"
    trainer = sft.main(
        [
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
            "--use_peft",
            "--lora_r",
            "4",
            "--lora_alpha",
            "8",
            "--lora_target_modules",
            "q_proj",
            "v_proj",
        ]
    )
    assert isinstance(trainer.model, PeftModel)
    peft_config = trainer.model.peft_config["default"]
    assert (peft_config.r, peft_config.lora_alpha) == (4, 8)
    assert set(peft_config.target_modules) == {"q_proj", "v_proj"}
    assert not peft_config.modules_to_save  # the head is saved in its own file, beside the adapter
    # The adapter folder carries the head: re-attached on the base model, it is the trained one
    assert (output_dir / "adapter_model.safetensors").is_file()
    _assert_saved_head_matches(output_dir, tiny_model_dirs["qwen3"], _head_state(trainer.model))


def test_sft_dataset_mixture(tiny_model_dirs, tmp_path):
    recipe = tmp_path / "mixture.yaml"
    text = TINY_SFT.read_text().replace("dataset_name: trl_presafety/data/tiny/sft\n", "")
    text += (
        "datasets:\n"
        f"  - path: json\n    data_files: {TINY_SFT_DATA}\n    split: train[:24]\n"
        f"  - path: json\n    data_files: {TINY_SFT_DATA}\n    split: train[100:116]\n"
    )
    recipe.write_text(text)
    trainer = sft.main(
        [
            "--config",
            str(recipe),
            "--model_name_or_path",
            tiny_model_dirs["qwen3"],
            "--output_dir",
            str(tmp_path / "out"),
            "--max_steps",
            "1",
        ]
    )
    assert len(trainer.train_dataset) == 24 + 16


def test_quantization_and_lora_flags_reach_trl_helpers():
    from trl import get_peft_config, get_quantization_config

    _, _, model_args, _ = parse_args_strict(
        sft.make_parser(),
        ["--config", str(TINY_SFT), "--use_peft", "--lora_r", "16", "--load_in_4bit", "--dtype", "bfloat16"],
    )
    assert get_peft_config(model_args).r == 16
    quantization = get_quantization_config(model_args)
    assert quantization.load_in_4bit and quantization.bnb_4bit_compute_dtype == torch.bfloat16


def test_script_without_data_fails_clearly(tiny_model_dirs, tmp_path):
    recipe = tmp_path / "no-data.yaml"
    recipe.write_text(TINY_SFT.read_text().replace("dataset_name: trl_presafety/data/tiny/sft\n", ""))
    with pytest.raises(ValueError, match="No training data: set `dataset_name`"):
        sft.main(["--config", str(recipe), "--model_name_or_path", tiny_model_dirs["qwen3"]])


def test_demo_trains_the_tiny_recipe_and_gates(tiny_model_dirs, tmp_path, capsys):
    """`make demo` (`python -m trl_presafety.demo`), on the session's tiny model: the head learns, and the gate
    separates harmful from benign prompts it never saw."""
    from trl_presafety import demo

    result = demo.main(["--model_dir", tiny_model_dirs["qwen3"], "--output_dir", str(tmp_path / "demo")])
    assert result["end"]["presafety/loss"] < 0.5 * result["start"]["presafety/loss"]
    assert result["end"]["presafety/accuracy"] >= 0.9
    harmful = result["refusal_probability"]["harmful"].values()
    benign = result["refusal_probability"]["benign"].values()
    assert min(harmful) > max(benign)
    printed = capsys.readouterr().out
    assert "presafety/auroc" in printed and "Pre-CoT refusal probability" in printed
    # It ends with what happened (metrics on training batches) and the next command
    assert "on training batches" in printed and "Next: evaluate it" in printed
    assert f"trl-presafety eval --config recipes/tiny/eval.yaml --model_name_or_path {tmp_path / 'demo'}" in printed


def test_demo_ends_with_what_happened_and_the_next_command():
    """Before, `make demo` ended on the gate's probabilities: no word that its metrics are on training batches, and no
    next step."""
    from trl_presafety import demo

    text = "\n".join(demo.closing_lines("runs/tiny-presafety-sft", 50))
    assert "50 steps" in text and "on training batches" in text and "accuracy of 1.000 at the end is expected" in text
    assert (
        "trl-presafety eval --config recipes/tiny/eval.yaml --model_name_or_path runs/tiny-presafety-sft "
        "--output_dir runs/tiny-presafety-sft/eval" in text
    )
