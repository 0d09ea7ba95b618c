# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""GPU checks (bf16, CUDA): skipped on CPU-only machines and in CI, run on a lent GPU."""

import pytest
import torch
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from trl_presafety import (
    PreSafetyDPOConfig,
    PreSafetyDPOTrainer,
    PreSafetySFTConfig,
    PreSafetySFTTrainer,
    get_safety_head,
)

from .testing_utils import load_tiny_dpo_rows, load_tiny_sft_rows, params_snapshot


pytestmark = pytest.mark.gpu

GPU_KWARGS = dict(bf16=True, report_to="none", save_strategy="no", disable_tqdm=True, logging_steps=1, seed=0)


def test_bf16_sft_head_dtype_parity_and_training(tiny_model_dirs, tmp_path):
    rows = load_tiny_sft_rows(16)
    common = dict(per_device_train_batch_size=4, max_steps=3, learning_rate=1e-3, max_length=256, **GPU_KWARGS)
    plain = SFTTrainer(
        model=tiny_model_dirs["qwen3"],
        args=SFTConfig(output_dir=str(tmp_path / "plain"), model_init_kwargs={"dtype": torch.bfloat16}, **common),
        train_dataset=Dataset.from_list(rows),
    )
    plain.train()
    ours = PreSafetySFTTrainer(
        model=tiny_model_dirs["qwen3"],
        args=PreSafetySFTConfig(
            output_dir=str(tmp_path / "ours"),
            model_init_kwargs={"dtype": torch.bfloat16},
            presafety_loss_weight=0.0,
            **common,
        ),
        train_dataset=Dataset.from_list(rows),
    )
    head = get_safety_head(ours.model)
    assert head.proj.weight.dtype == torch.bfloat16 and head.proj.weight.is_cuda  # same dtype as the model (ZeRO-3)
    ours.train()
    losses = lambda t: [h["loss"] for h in t.state.log_history if "loss" in h]  # noqa: E731
    assert len(losses(plain)) == 3 and losses(ours) == losses(plain)  # 3 logged steps, not two empty lists
    plain_params = dict(plain.model.named_parameters())
    for name, param in ours.model.named_parameters():
        if not name.startswith("safety_head"):
            assert torch.equal(param, plain_params[name]), name

    trained = PreSafetySFTTrainer(
        model=tiny_model_dirs["qwen3"],
        args=PreSafetySFTConfig(
            output_dir=str(tmp_path / "w1"),
            model_init_kwargs={"dtype": torch.bfloat16},
            gradient_checkpointing=True,
            **common,
        ),
        train_dataset=Dataset.from_list(rows),
    )
    before = params_snapshot(trained.model)
    trained.train()
    after = params_snapshot(trained.model)
    head_names = [n for n in after if n.startswith("safety_head")]
    assert head_names and all(not torch.equal(before[n], after[n]) for n in head_names)
    logs = [h["presafety/loss"] for h in trained.state.log_history if "loss" in h]
    assert len(logs) == 3 and all(torch.isfinite(torch.tensor(loss)) and loss > 0 for loss in logs), logs


def test_bf16_dpo_with_peft(tiny_model_dirs, tmp_path):
    from peft import LoraConfig

    rows = load_tiny_dpo_rows(16)
    trainer = PreSafetyDPOTrainer(
        model=tiny_model_dirs["r1"],
        args=PreSafetyDPOConfig(
            output_dir=str(tmp_path),
            per_device_train_batch_size=4,
            max_steps=3,
            learning_rate=1e-3,
            model_init_kwargs={"dtype": torch.bfloat16},
            presafety_anchor="think_end",
            **GPU_KWARGS,
        ),
        train_dataset=Dataset.from_list(rows),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    before = params_snapshot(trainer.model)
    trainer.train()
    after = params_snapshot(trainer.model)
    # The trained copy of the head (PEFT's `modules_to_save`) changed
    assert any(not torch.equal(before[n], after[n]) for n in after if "safety_head" in n and "modules_to_save" in n)
    assert trainer._presafety_capture.forward_calls == 2 * 3  # policy + reference through the same backbone
