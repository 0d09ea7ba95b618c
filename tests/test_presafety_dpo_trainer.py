# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_presafety import PreSafetyDPOConfig, PreSafetyDPOTrainer, get_safety_head, load_safety_head

from .testing_utils import config_kwargs, head_probs, load_tiny_dpo_rows, params_snapshot


def make_trainer(model, tmp_path, rows, **kwargs) -> PreSafetyDPOTrainer:
    peft_config = kwargs.pop("peft_config", None)
    ref_model = kwargs.pop("ref_model", None)
    return PreSafetyDPOTrainer(
        model=model,
        ref_model=ref_model,
        args=PreSafetyDPOConfig(**config_kwargs(tmp_path, **kwargs)),
        train_dataset=Dataset.from_list(rows),
        peft_config=peft_config,
    )


def hidden_at_anchors(model, batch) -> torch.Tensor:
    with torch.no_grad():
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    return hidden.hidden_states[-1]


@pytest.mark.parametrize("style,anchor", [("qwen3", "prompt_end"), ("qwen3", "think_end"), ("r1", "think_end")])
def test_chosen_and_rejected_share_the_anchor(tiny_model_dirs, tmp_path, style, anchor):
    rows = load_tiny_dpo_rows(6)
    trainer = make_trainer(tiny_model_dirs[style], tmp_path, rows, presafety_anchor=anchor)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(6)])
    index = batch["presafety_index"]
    assert index[:, 0].tolist() == list(range(6))  # one read per pair, in its chosen row
    assert batch["presafety_labels"].tolist() == [float(r["safety_label"]) for r in rows]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dirs[style])
    think_id = tokenizer.convert_tokens_to_ids("<think>")
    hidden = hidden_at_anchors(trainer.model, batch)
    for row, col in index.tolist():
        # Causal attention + identical prefix: the rejected row has the same state at the anchor
        torch.testing.assert_close(hidden[row, col], hidden[row + 6, col], atol=1e-5, rtol=1e-5)
        assert batch["input_ids"][row, : col + 1].tolist() == batch["input_ids"][row + 6, : col + 1].tolist()
        if anchor == "think_end":
            assert batch["input_ids"][row, col] == think_id
    # The head's probabilities in the hooked DPO forward equal an independent read-out at the anchors
    rows_, cols = index.unbind(1)
    want = torch.sigmoid(get_safety_head(trainer.model)(hidden[rows_, cols]).float())
    torch.testing.assert_close(head_probs(trainer, batch), want, atol=1e-5, rtol=1e-5)


def test_explicit_ref_model_and_aux_gradient(tiny_model_dirs, tmp_path):
    rows = load_tiny_dpo_rows(8)
    snapshots = {}
    for weight in (0.0, 1.0):
        ref = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["qwen3"])
        trainer = make_trainer(tiny_model_dirs["qwen3"], tmp_path, rows, ref_model=ref, presafety_loss_weight=weight)
        before = params_snapshot(trainer.model)
        trainer.train()
        snapshots[weight] = (before, params_snapshot(trainer.model))
    (b0, a0), (b1, a1) = snapshots[0.0], snapshots[1.0]
    assert all(not torch.equal(b1[n], a1[n]) for n in a1 if n.startswith("safety_head"))
    assert all(torch.equal(b0[n], a0[n]) for n in a0 if n.startswith("safety_head"))
    assert any(not torch.equal(a0[n], a1[n]) for n in a1 if n.startswith("model.layers"))


def test_peft_reference_forward_does_not_overwrite_the_capture(tiny_model_dirs, tmp_path):
    from peft import LoraConfig

    rows = load_tiny_dpo_rows(8)
    trainer = make_trainer(
        tiny_model_dirs["qwen3"],
        tmp_path,
        rows,
        max_steps=4,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
    )
    assert not trainer.model.peft_config["default"].modules_to_save  # the head is saved in its own file
    trainer.train()
    # Policy + reference (adapter disabled) both run through the same backbone
    assert trainer._presafety_capture.forward_calls == 2 * 4
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(8)])
    rows_, cols = batch["presafety_index"].unbind(1)
    head = get_safety_head(trainer.model)
    with_adapter = torch.sigmoid(head(hidden_at_anchors(trainer.model, batch)[rows_, cols]).float())
    with trainer.model.disable_adapter():
        without = torch.sigmoid(head(hidden_at_anchors(trainer.model, batch)[rows_, cols]).float())
    assert not torch.allclose(with_adapter, without, atol=1e-4)
    torch.testing.assert_close(head_probs(trainer, batch), with_adapter, atol=1e-5, rtol=1e-5)
    trainer.save_model(str(tmp_path / "adapter"))
    from peft import AutoPeftModelForCausalLM

    reloaded = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "adapter")
    x = torch.randn(2, reloaded.config.hidden_size)
    torch.testing.assert_close(load_safety_head(reloaded, tmp_path / "adapter")(x), head(x))


def test_precompute_ref_log_probs(tiny_model_dirs, tmp_path):
    rows = load_tiny_dpo_rows(8)
    trainer = make_trainer(tiny_model_dirs["qwen3"], tmp_path, rows, precompute_ref_log_probs=True, max_steps=2)
    assert "ref_chosen_logps" in trainer.train_dataset.column_names
    before = params_snapshot(trainer.model)
    trainer.train()
    after = params_snapshot(trainer.model)
    assert any(not torch.equal(before[n], after[n]) for n in after if n.startswith("safety_head"))
    logs = [h for h in trainer.state.log_history if "presafety/loss" in h]
    assert len(logs) == 2 and all(h["presafety/loss"] > 0 for h in logs)


def test_keep_end_truncation_moves_or_drops_the_anchor(tiny_model_dirs, tmp_path):
    rows = load_tiny_dpo_rows(6)
    with pytest.raises(ValueError, match=r"6 of 6 labeled examples.*anchor cut by max_length=12"):
        make_trainer(tiny_model_dirs["qwen3"], tmp_path, rows, max_length=12, truncation_mode="keep_end")
    trainer = make_trainer(
        tiny_model_dirs["qwen3"],
        tmp_path,
        rows,
        max_length=40,
        truncation_mode="keep_end",
        presafety_on_missing_anchor="skip",
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(6)])
    for (row, col), example in zip(
        batch["presafety_index"].tolist(),
        [trainer.train_dataset[r] for r in batch["presafety_index"][:, 0].tolist()],
        strict=True,
    ):
        shift = max(0, len(example["prompt_ids"]) + len(example["chosen_ids"]) - 40)
        assert col == example["presafety_position"] - shift >= 0
        assert (
            batch["input_ids"][row, col]
            == (example["prompt_ids"] + example["chosen_ids"])[example["presafety_position"]]
        )
    trainer.train()
