# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
from collections import defaultdict

import pytest
import torch
from datasets import Dataset
from transformers import TrainerState, TrainingArguments

from trl_presafety import (
    PreSafetyCallback,
    PreSafetySFTConfig,
    PreSafetySFTTrainer,
    gather_anchor_states,
    get_safety_head,
)

from .testing_utils import CPU_TRAINING_KWARGS, load_tiny_sft_rows


def state(step: int, max_steps: int, epoch: float, num_epochs: int = 5) -> TrainerState:
    s = TrainerState()
    s.global_step, s.max_steps, s.epoch, s.num_train_epochs = step, max_steps, epoch, num_epochs
    return s


def test_weight_schedules():
    args = TrainingArguments(output_dir="unused", num_train_epochs=5, report_to="none")
    constant = PreSafetyCallback(weight=0.5)
    assert constant.weight_at(args, state(0, 100, 0.0)) == 0.5
    warmup = PreSafetyCallback(weight=2.0, schedule="linear_warmup", warmup_ratio=0.1)
    assert [warmup.weight_at(args, state(s, 100, 0.0)) for s in (0, 4, 9, 50)] == pytest.approx([0.2, 1.0, 2.0, 2.0])
    # SafeKey: the head loss only in the last 2 of 5 epochs
    last = PreSafetyCallback(weight=0.2, schedule="last_epochs", last_epochs=2)
    weights = [last.weight_at(args, state(0, 100, e)) for e in (0.0, 1.5, 2.99, 3.0, 4.5)]
    assert weights == [0.0, 0.0, 0.0, 0.2, 0.2]


def test_metrics_window_and_auroc():
    cb = PreSafetyCallback(threshold=0.5)
    metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    # Window 1. Micro-batch accuracies 1 and 1/2 (not only all-or-nothing values, which `all()` would also give)
    cb.record(metrics, "train", torch.tensor([0.1, 0.2]), torch.tensor([0.9, 0.4]), torch.tensor([1.0, 0.0]))
    cb.record(metrics, "train", torch.tensor([0.3, 0.5]), torch.tensor([0.7, 0.6]), torch.tensor([0.0, 1.0]))
    cb.finalize(metrics, "train")
    assert metrics["train"]["presafety/loss"] == pytest.approx([0.15, 0.4])
    assert metrics["train"]["presafety/accuracy"] == [1.0, 0.5]
    # Over the window: positives 0.9, 0.6 and negatives 0.4, 0.7; 3 of the 4 (positive, negative) pairs ranked right
    assert metrics["train"]["presafety/auroc"] == [0.75]
    # Window 2, soft labels (0.9 -> refuse, 0.2 -> comply), ranked the wrong way: its AUROC is its own, not mixed
    # with window 1's scores
    cb.record(metrics, "train", torch.tensor([1.0, 1.0]), torch.tensor([0.2, 0.8]), torch.tensor([0.9, 0.2]))
    cb.finalize(metrics, "train")
    assert metrics["train"]["presafety/accuracy"] == [1.0, 0.5, 0.0] and metrics["train"]["presafety/auroc"] == [0.0]
    cb.finalize(metrics, "train")  # an empty window adds nothing
    assert len(metrics["train"]["presafety/loss"]) == 3 and metrics["train"]["presafety/auroc"] == [0.0]


def test_schedule_drives_the_trainer_and_is_logged(tiny_model_dirs, tmp_path):
    rows = load_tiny_sft_rows(8)
    args = PreSafetySFTConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        num_train_epochs=2,
        logging_steps=1,
        presafety_weight_schedule="last_epochs",
        presafety_last_epochs=1,
        presafety_loss_weight=0.7,
        gradient_checkpointing=False,
        **CPU_TRAINING_KWARGS,
    )
    trainer = PreSafetySFTTrainer(model=tiny_model_dirs["qwen3"], args=args, train_dataset=Dataset.from_list(rows))
    trainer.train()
    weights = [h["presafety/weight"] for h in trainer.state.log_history if "presafety/weight" in h and "loss" in h]
    assert weights == [0.0] * 4 + [0.7] * 4


def test_mean_pooling_reads_the_prompt_span(tiny_model_dirs, tmp_path):
    rows = load_tiny_sft_rows(4)
    args = PreSafetySFTConfig(
        output_dir=str(tmp_path), presafety_pooling="mean", gradient_checkpointing=False, **CPU_TRAINING_KWARGS
    )
    trainer = PreSafetySFTTrainer(model=tiny_model_dirs["qwen3"], args=args, train_dataset=Dataset.from_list(rows))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    trainer.model.eval()
    with torch.no_grad():
        trainer.compute_loss(trainer.model, dict(batch))
        hidden = trainer.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True
        ).hidden_states[-1]
    got = torch.cat(trainer.presafety_callback._scores["eval"][0])
    head = get_safety_head(trainer.model)
    want = [torch.sigmoid(head(hidden[r, : c + 1].mean(0))) for r, c in batch["presafety_index"].tolist()]
    torch.testing.assert_close(got, torch.stack(want), atol=1e-5, rtol=1e-5)
    pooled = gather_anchor_states(hidden, batch["presafety_index"], "mean", batch["presafety_span_start"])
    assert not torch.allclose(pooled, gather_anchor_states(hidden, batch["presafety_index"], "last"))
