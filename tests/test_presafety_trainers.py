# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Invariants that both PreSafety trainers keep against plain TRL, tested the same way for SFT and DPO: weight 0 is the
plain trainer, the alignment loss is the plain loss, gradient accumulation is the large batch, bad data fails clearly."""

import pytest
import torch
from datasets import Dataset

from .testing_utils import build_trainer, config_kwargs, load_tiny_rows, trainer_classes


@pytest.mark.parametrize(
    "kind,variant",
    [("sft", {}), ("sft", {"packing": True, "max_length": 300}), ("dpo", {})],
    ids=["sft", "sft-packed", "dpo"],
)
def test_weight_zero_gives_the_plain_loss_and_update(tiny_model_dirs, tmp_path, kind, variant):
    rows = load_tiny_rows(kind, 16 if kind == "sft" else 12)
    plain = build_trainer(kind, tiny_model_dirs["qwen3"], tmp_path, rows, plain=True, **variant)
    plain_calls = []
    plain.model.get_decoder().register_forward_hook(lambda *a: plain_calls.append(1))
    plain.train()
    ours = build_trainer(kind, tiny_model_dirs["qwen3"], tmp_path, rows, presafety_loss_weight=0.0, **variant)
    ours.train()
    plain_losses = [h["loss"] for h in plain.state.log_history if "loss" in h]
    our_losses = [h["loss"] for h in ours.state.log_history if "loss" in h]
    assert our_losses == plain_losses
    plain_params = dict(plain.model.named_parameters())
    for name, param in ours.model.named_parameters():
        if name.startswith("safety_head"):
            continue
        assert torch.equal(param, plain_params[name]), name
    # No extra forward pass: one backbone forward per micro-batch, as in the plain trainer (DPO: one policy forward
    # over [chosen; rejected], the reference model is separate)
    assert ours._presafety_capture.forward_calls == len(plain_calls) == 3
    # The head still ran, as a probe
    assert "presafety/loss" in ours.state.log_history[0] and "presafety/accuracy" in ours.state.log_history[0]


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_detached_head_gives_the_plain_update_and_a_trained_gate(tiny_model_dirs, tmp_path, kind, monkeypatch):
    """`presafety_detach_head`: with a weight of 5 and clipping that binds, the model's update is bit-identical to
    plain TRL's while the head trains, and the saved folder is a gate (`SafetyGate.from_pretrained`)."""
    from trl_presafety import SafetyGate, SafetyHeadConfig, calibrate_safety_head
    from trl_presafety.trainer.presafety_mixin import PreSafetyTrainerMixin

    rows = load_tiny_rows(kind, 16 if kind == "sft" else 12)
    kwargs = dict(max_grad_norm=0.5)
    plain = build_trainer(kind, tiny_model_dirs["qwen3"], tmp_path, rows, plain=True, **kwargs)
    plain.train()
    ours = build_trainer(
        kind, tiny_model_dirs["qwen3"], tmp_path, rows, presafety_loss_weight=5.0, presafety_detach_head=True, **kwargs
    )
    initial_head = {n: p.detach().clone() for n, p in ours.model.safety_head.named_parameters()}
    ours.train()
    plain_logs = [h for h in plain.state.log_history if "loss" in h and "train_runtime" not in h]
    our_logs = [h for h in ours.state.log_history if "loss" in h and "train_runtime" not in h]
    assert all(h["grad_norm"] > 0.5 for h in plain_logs), "clipping must bind for this test to mean anything"
    # The model's gradient norm (what clipping used) is plain TRL's, and so is the alignment loss
    assert [h["grad_norm"] for h in our_logs] == [h["grad_norm"] for h in plain_logs]
    assert [h["presafety/alignment_loss"] for h in our_logs] == pytest.approx(
        [h["loss"] for h in plain_logs], abs=1e-5
    )
    plain_params = dict(plain.model.named_parameters())
    for name, param in ours.model.named_parameters():
        if not name.startswith("safety_head"):
            assert torch.equal(param, plain_params[name]), name
    for name, param in ours.model.safety_head.named_parameters():
        assert not torch.equal(param, initial_head[name]), f"the head did not train: {name}"

    ours.save_model()
    out = tmp_path / "out"
    config = SafetyHeadConfig.load(out)
    assert config.detached and config.loss_weight == 5.0
    gate = SafetyGate.from_pretrained(out)
    assert len(gate.predict_proba([r["prompt"] for r in rows[:3]])) == 3
    # The run's output is a gate to calibrate in place: the threshold joins the config, the weights' binding stays
    record = calibrate_safety_head(out, rows, target_rate=0.25)
    recalibrated = SafetyHeadConfig.load(out)
    assert recalibrated.threshold == record["threshold"] and record["comply_routed_rate"] <= 0.25
    assert recalibrated.backbone_fingerprint == config.backbone_fingerprint
    assert SafetyGate.from_pretrained(out).threshold == record["threshold"]

    # Controls: the same run without detaching, and detached but clipped by one norm over model and head, both move
    # the model elsewhere
    for control, options in (("attached", {}), ("one-norm", {"presafety_detach_head": True})):
        if control == "one-norm":
            monkeypatch.setattr(PreSafetyTrainerMixin, "_presafety_clips_apart", lambda self: False)
        other = build_trainer(
            kind, tiny_model_dirs["qwen3"], tmp_path / control, rows, presafety_loss_weight=5.0, **options, **kwargs
        )
        other.train()
        assert any(
            not torch.equal(param, plain_params[name])
            for name, param in other.model.named_parameters()
            if not name.startswith("safety_head")
        ), control


def test_detached_head_needs_a_positive_weight(tmp_path):
    from trl_presafety import PreSafetySFTConfig

    with pytest.raises(ValueError, match=r"Invalid `presafety_detach_head`: True\. A detached head is trained by"):
        PreSafetySFTConfig(**config_kwargs(tmp_path, presafety_detach_head=True, presafety_loss_weight=0.0))


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_alignment_loss_is_logged_on_the_scale_of_the_plain_loss(tiny_model_dirs, tmp_path, kind):
    # Same model, batch and first step: the alignment part of our loss is the plain trainer's loss (with GA, too)
    rows = load_tiny_rows(kind, 8)
    kwargs = dict(max_steps=1, per_device_train_batch_size=2, gradient_accumulation_steps=2)
    plain = build_trainer(kind, tiny_model_dirs["qwen3"], tmp_path, rows, plain=True, **kwargs)
    plain.train()
    ours = build_trainer(kind, tiny_model_dirs["qwen3"], tmp_path, rows, presafety_loss_weight=5.0, **kwargs)
    ours.train()
    (plain_log,), (our_log,) = (
        [h for h in t.state.log_history if "loss" in h and "train_runtime" not in h] for t in (plain, ours)
    )
    assert our_log["presafety/alignment_loss"] == pytest.approx(plain_log["loss"], abs=1e-4)
    # The logged loss adds the weighted head loss on top
    assert our_log["loss"] == pytest.approx(
        our_log["presafety/alignment_loss"] + 5.0 * our_log["presafety/loss"], abs=2e-3
    )
    assert our_log["loss"] > our_log["presafety/alignment_loss"] + 1.0  # 5 x the head's BCE on top


@pytest.mark.parametrize(
    "kind,columns,truncated",
    [
        ("sft", ["prompt", "completion"], r"Every example of the train dataset \(6 rows\) was removed.*max_length=4"),
        (
            "dpo",
            ["prompt", "chosen", "rejected"],
            r"Every example of the train dataset \(6 rows\).*every prompt fills",
        ),
    ],
    ids=["sft", "dpo"],
)
def test_empty_or_fully_truncated_datasets_fail_clearly(tiny_model_dirs, tmp_path, kind, columns, truncated):
    config_cls, trainer_cls = trainer_classes(kind)
    empty = Dataset.from_dict({column: [] for column in columns + ["safety_label"]})
    with pytest.raises(ValueError, match=r"The train dataset is empty \(0 rows\)"):
        trainer_cls(model=tiny_model_dirs["qwen3"], args=config_cls(**config_kwargs(tmp_path)), train_dataset=empty)
    # A max_length that leaves no completion token in any example (SFT: keep_start truncation; DPO: every prompt
    # fills it)
    with pytest.raises(ValueError, match=truncated):
        build_trainer(kind, tiny_model_dirs["qwen3"], tmp_path, load_tiny_rows(kind, 6), max_length=4)


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_gradient_accumulation_equals_the_large_batch(tiny_model_dirs, tmp_path, kind):
    # 4 examples, one unlabeled: the two micro-batches hold 2 and 1 labels, so a per-micro-batch mean would differ
    rows = load_tiny_rows(kind, 4)
    rows[0] = dict(rows[0], safety_label=None)
    # SGD: the update is the gradient (Adam's first step would be its sign)
    common = dict(max_steps=1, presafety_loss_weight=5.0, optim="sgd", learning_rate=1.0)
    big = build_trainer(kind, tiny_model_dirs["qwen3"], tmp_path, rows, per_device_train_batch_size=4, **common)
    big.train()
    acc = build_trainer(
        kind,
        tiny_model_dirs["qwen3"],
        tmp_path,
        rows,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        **common,
    )
    acc.train()
    acc_params = dict(acc.model.named_parameters())
    for name, param in big.model.named_parameters():
        torch.testing.assert_close(param, acc_params[name], atol=2e-6, rtol=1e-5, msg=name)
    assert big.state.log_history[0]["loss"] == pytest.approx(acc.state.log_history[0]["loss"], rel=1e-5)
