# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
import logging

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig

from trl_presafety import (
    PreSafetySFTConfig,
    PreSafetySFTTrainer,
    SafetyGate,
    get_safety_head,
    load_safety_head,
)
from trl_presafety.anchors import MISSING_LABEL

from .testing_utils import config_kwargs, head_probs, load_tiny_sft_rows, params_snapshot, to_messages, to_standard


def make_config(tmp_path, **kwargs) -> PreSafetySFTConfig:
    return PreSafetySFTConfig(**config_kwargs(tmp_path, **kwargs))


def make_trainer(model_dir, tmp_path, rows, **kwargs) -> PreSafetySFTTrainer:
    return PreSafetySFTTrainer(
        model=model_dir, args=make_config(tmp_path, **kwargs), train_dataset=Dataset.from_list(rows)
    )


def dataset_prompts(trainer, rows, tokenizer, n) -> list:
    """The prompts of the first `n` prepared examples, in order, found by their tokens (not by position in `rows`)."""
    by_ids = {
        tuple(
            tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, return_dict=True)["input_ids"]
        ): r["prompt"]
        for r in rows
    }
    prompts = []
    for i in range(n):
        ids = trainer.train_dataset[i]["input_ids"]
        prompts.append(next(p for key, p in by_ids.items() if tuple(ids[: len(key)]) == key))
    return prompts


def reference_probs(trainer, batch) -> torch.Tensor:
    """The same probabilities computed independently: a plain forward with hidden states, indexed at the anchors."""
    model = trainer.model
    kwargs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")}
    with torch.no_grad():
        hidden = model(**kwargs, output_hidden_states=True).hidden_states[-1]
        rows, cols = batch["presafety_index"].unbind(1)
        return torch.sigmoid(get_safety_head(model)(hidden[rows, cols]).float())


# --- anchors -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("style", ["qwen3", "r1"])
@pytest.mark.parametrize("data_format", ["conversational", "messages", "standard"])
@pytest.mark.parametrize("anchor", ["prompt_end", "think_end"])
def test_anchor_is_at_the_expected_token(tiny_model_dirs, tmp_path, style, data_format, anchor):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dirs[style])
    rows = load_tiny_sft_rows(6)
    data = {"conversational": rows, "messages": to_messages(rows), "standard": to_standard(rows, tokenizer)}[
        data_format
    ]
    trainer = make_trainer(tiny_model_dirs[style], tmp_path, data, presafety_anchor=anchor)
    think_id = tokenizer.convert_tokens_to_ids("<think>")
    for row, example in zip(rows, trainer.train_dataset, strict=True):
        positions = example["presafety_anchor_positions"]
        assert len(positions) == 1 and example["presafety_anchor_labels"] == [row["safety_label"]]
        position, ids = positions[0], example["input_ids"]
        prompt_ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, return_dict=True)[
            "input_ids"
        ]
        if anchor == "prompt_end" or style == "r1":
            # The last prompt token predicts the first completion token; for R1 it is the "\n" after <think>
            expected = len(prompt_ids) - 1 if anchor == "prompt_end" else len(prompt_ids) - 2
        else:
            expected = len(prompt_ids)  # Qwen3: the completion opens with <think>
        assert position == expected
        assert ids[: len(prompt_ids)] == prompt_ids
        if anchor == "think_end":
            assert ids[position] == think_id
        # The anchor is never inside the CoT: no reasoning token precedes it
        assert tokenizer.convert_tokens_to_ids("</think>") not in ids[: position + 1]


def test_head_reads_the_hidden_state_at_the_anchor(tiny_model_dirs, tmp_path):
    trainer = make_trainer(tiny_model_dirs["qwen3"], tmp_path, load_tiny_sft_rows(6))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(5)])
    torch.testing.assert_close(head_probs(trainer, batch), reference_probs(trainer, batch))


def test_collator_compact_anchors_equal_per_token_targets(tiny_model_dirs, tmp_path):
    # The prepared dataset stores anchors compactly; a user's per-token column must give the very same batch
    rows = load_tiny_sft_rows(8)
    for kwargs in ({}, {"padding_free": True, "max_length": None}, {"packing": True, "max_length": 300}):
        trainer = make_trainer(tiny_model_dirs["qwen3"], tmp_path, rows, **kwargs)
        assert "presafety_labels" not in trainer.train_dataset.column_names
        examples = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
        per_token = []
        for ex in examples:
            targets = [MISSING_LABEL] * len(ex["input_ids"])
            for position, label in zip(ex["presafety_anchor_positions"], ex["presafety_anchor_labels"], strict=True):
                targets[position] = label
            rest = {k: v for k, v in ex.items() if not k.startswith("presafety_anchor")}
            per_token.append(dict(rest, presafety_labels=targets))
        compact, reference = trainer.data_collator(examples), trainer.data_collator(per_token)
        assert compact.keys() == reference.keys()
        for key in compact:
            torch.testing.assert_close(compact[key], reference[key], msg=f"{key} with {kwargs}")
        assert compact["presafety_labels"].numel() == len(rows)


def test_padded_equals_padding_free_and_packed(tiny_model_dirs, tmp_path):
    rows = load_tiny_sft_rows(8)
    padded = make_trainer(tiny_model_dirs["qwen3"], tmp_path, rows)
    flat = make_trainer(tiny_model_dirs["qwen3"], tmp_path, rows, padding_free=True, max_length=None)
    packed = make_trainer(tiny_model_dirs["qwen3"], tmp_path, rows, packing=True, max_length=300)
    examples = [padded.train_dataset[i] for i in range(8)]
    p_batch = padded.data_collator(examples)
    f_batch = flat.data_collator([flat.train_dataset[i] for i in range(8)])
    # One flattened row: the anchors carry each example's offset, and span starts are the sequence starts
    assert f_batch["input_ids"].shape[0] == 1
    lengths = torch.tensor([len(e["input_ids"]) for e in examples])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)[:-1]])
    torch.testing.assert_close(f_batch["presafety_index"][:, 1], p_batch["presafety_index"][:, 1] + offsets)
    torch.testing.assert_close(f_batch["presafety_span_start"], offsets)
    torch.testing.assert_close(head_probs(flat, f_batch), head_probs(padded, p_batch), atol=1e-5, rtol=1e-5)

    # BFD packing reorders examples: compare the multiset of (label, prob) pairs
    assert len(packed.train_dataset) < len(rows)
    k_batch = packed.data_collator([packed.train_dataset[i] for i in range(len(packed.train_dataset))])
    assert k_batch["presafety_labels"].numel() == len(rows)
    got = sorted(head_probs(packed, k_batch).tolist())
    want = sorted(head_probs(padded, p_batch).tolist())
    assert got == pytest.approx(want, abs=1e-5)


def test_truncation_cuts_anchor_or_completion(tiny_model_dirs, tmp_path, caplog):
    rows = load_tiny_sft_rows(6)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dirs["qwen3"])
    lengths = [
        len(tokenizer.apply_chat_template(r["prompt"] + r["completion"], return_dict=True)["input_ids"]) for r in rows
    ]
    # keep_end with a short max_length cuts the prompt, and with it the anchor
    with pytest.raises(
        ValueError,
        match=r"anchor cut by max_length=20.*indices \[0, 1, 2, 3, 4, 5\].*presafety_on_missing_anchor='skip'",
    ):
        make_trainer(tiny_model_dirs["qwen3"], tmp_path, rows, max_length=20, truncation_mode="keep_end")
    trainer = make_trainer(
        tiny_model_dirs["qwen3"],
        tmp_path,
        rows,
        max_length=20,
        truncation_mode="keep_end",
        presafety_on_missing_anchor="skip",
    )
    assert all(ex["presafety_anchor_positions"] == [] for ex in trainer.train_dataset)
    assert all(len(ex["input_ids"]) == 20 for ex in trainer.train_dataset)
    # keep_start with a max_length between the prompt lengths: the longer prompts lose their whole completion and are
    # dropped, as SFTTrainer drops them, with a warning rather than an anchor error
    prompt_lengths = [
        len(tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, return_dict=True)["input_ids"])
        for r in rows
    ]
    cut = sorted(prompt_lengths)[2]
    with caplog.at_level(logging.WARNING):
        trainer = make_trainer(tiny_model_dirs["qwen3"], tmp_path, rows, max_length=cut)
    kept = [i for i, n in enumerate(prompt_lengths) if n < cut]
    assert len(trainer.train_dataset) == len(kept) > 0
    assert f"{len(rows) - len(kept)} examples of the train dataset lose their whole completion" in caplog.text
    # A max_length that keeps the anchor but cuts the completion's end keeps the label
    keep = max(prompt_lengths) + 2
    assert keep < max(lengths)
    trainer = make_trainer(tiny_model_dirs["qwen3"], tmp_path, rows, max_length=keep)
    assert sum(len(ex["presafety_anchor_positions"]) for ex in trainer.train_dataset) == len(rows)


# --- training invariants ---------------------------------------------------------------------------------------------
# (weight 0, alignment loss, gradient accumulation and empty data, shared with DPO: `test_presafety_trainers.py`)
def test_aux_loss_reaches_the_backbone_and_trains_the_head(tiny_model_dirs, tmp_path):
    rows = load_tiny_sft_rows(8)
    runs = {}
    for weight in (0.0, 1.0):
        trainer = make_trainer(tiny_model_dirs["qwen3"], tmp_path, rows, presafety_loss_weight=weight)
        before = params_snapshot(trainer.model)
        trainer.train()
        runs[weight] = (before, params_snapshot(trainer.model))
    (b0, a0), (b1, a1) = runs[0.0], runs[1.0]
    head = [n for n in a1 if n.startswith("safety_head")]
    backbone = [n for n in a1 if n.startswith("model.layers")]
    assert head and backbone
    assert all(not torch.equal(b1[n], a1[n]) for n in head)  # the head trained...
    assert all(torch.equal(b0[n], a0[n]) for n in head)  # ...only because of its loss
    # Same init, same data: the backbone differs only through the aux gradient
    assert all(torch.equal(b0[n], b1[n]) for n in backbone)
    assert sum(not torch.equal(a0[n], a1[n]) for n in backbone) == len(backbone)


@pytest.mark.parametrize("layer", [None, 0])
def test_gradient_checkpointing_gives_the_same_update(tiny_model_dirs, tmp_path, layer):
    rows = load_tiny_sft_rows(8)
    params = []
    for gc in (False, True):
        trainer = make_trainer(
            tiny_model_dirs["qwen3"], tmp_path, rows, gradient_checkpointing=gc, presafety_layer=layer, max_steps=2
        )
        trainer.train()
        params.append(dict(trainer.model.named_parameters()))
    for name, param in params[0].items():
        torch.testing.assert_close(param, params[1][name], atol=1e-6, rtol=1e-5, msg=name)


def test_intermediate_layer_trains_only_layers_below(tiny_model_dirs, tmp_path):
    rows = load_tiny_sft_rows(8)
    snapshots = {}
    for weight in (0.0, 1.0):
        trainer = make_trainer(
            tiny_model_dirs["qwen3"], tmp_path, rows, presafety_layer=0, presafety_loss_weight=weight, max_steps=1
        )
        trainer.train()
        snapshots[weight] = params_snapshot(trainer.model)
    differs = {n for n in snapshots[1.0] if not torch.equal(snapshots[0.0][n], snapshots[1.0][n])}
    assert any(n.startswith("model.layers.0.") for n in differs)
    assert "model.embed_tokens.weight" in differs
    assert not any(n.startswith("model.layers.1.") for n in differs)  # layer 1 is after the read-out


# --- evaluation, saving, resuming, reloading ---------------------------------------------------------------------------
def test_eval_metrics(tiny_model_dirs, tmp_path):
    rows = load_tiny_sft_rows(16)
    trainer = PreSafetySFTTrainer(
        model=tiny_model_dirs["qwen3"],
        args=make_config(tmp_path, eval_strategy="steps", eval_steps=2, per_device_eval_batch_size=4),
        train_dataset=Dataset.from_list(rows[:8]),
        eval_dataset=Dataset.from_list(rows[8:]),
    )
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_presafety/accuracy"] <= 1.0
    assert 0.0 <= metrics["eval_presafety/auroc"] <= 1.0
    assert metrics["eval_presafety/loss"] > 0
    labels = torch.tensor([r["safety_label"] for r in rows[8:]], dtype=torch.float32)
    # The eval AUROC covers the whole eval set
    probs = head_probs(trainer, trainer.data_collator([trainer.eval_dataset[i] for i in range(8)]))
    from sklearn.metrics import roc_auc_score

    assert metrics["eval_presafety/auroc"] == pytest.approx(roc_auc_score(labels.numpy(), probs.numpy()), abs=1e-6)
    trainer.train()
    assert any("eval_presafety/loss" in h for h in trainer.state.log_history)


def test_save_resume_and_reload(tiny_model_dirs, tmp_path):
    rows = load_tiny_sft_rows(24)
    full = make_trainer(
        tiny_model_dirs["qwen3"], tmp_path / "a", rows, max_steps=4, save_strategy="steps", save_steps=2
    )
    full.train()
    checkpoint = tmp_path / "a" / "out" / "checkpoint-2"
    assert (checkpoint / "safety_head_config.json").is_file()
    resumed = make_trainer(tiny_model_dirs["qwen3"], tmp_path / "a", rows, max_steps=4, save_strategy="no")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    final = dict(full.model.named_parameters())
    for name, param in resumed.model.named_parameters():
        # Adam moments of the head must come back too, or its update after resuming would differ
        torch.testing.assert_close(param, final[name], atol=1e-6, rtol=1e-6, msg=name)

    out = tmp_path / "saved"
    full.save_model(str(out))
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert get_safety_head(reloaded) is None  # from_pretrained drops the head...
    head = load_safety_head(reloaded, out)  # ...and load_safety_head brings it back
    x = torch.randn(5, reloaded.config.hidden_size)
    torch.testing.assert_close(head(x), get_safety_head(full.model)(x))
    # The gate reads the same probabilities as the training path, without generating, prompt by prompt
    tokenizer = AutoTokenizer.from_pretrained(out)
    batch = full.data_collator([full.train_dataset[i] for i in range(4)])
    gate = SafetyGate(reloaded, tokenizer)
    prompts = dataset_prompts(full, rows, tokenizer, 4)
    torch.testing.assert_close(
        torch.tensor(gate.predict_proba(prompts)), reference_probs(full, batch), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("style", ["qwen3", "r1"])
def test_gate_think_end_and_left_padding(tiny_model_dirs, tmp_path, style):
    rows = load_tiny_sft_rows(6)
    trainer = make_trainer(tiny_model_dirs[style], tmp_path, rows, presafety_anchor="think_end", max_steps=1)
    trainer.train()
    trainer.save_model(str(tmp_path / "m"))
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    load_safety_head(model, tmp_path / "m")
    gate = SafetyGate(model, AutoTokenizer.from_pretrained(tmp_path / "m"), batch_size=6)
    prompts = [r["prompt"] for r in rows]
    batched = gate.predict_proba(prompts)  # left-padded batch of different lengths
    one_by_one = [gate(p) for p in prompts]
    assert batched == pytest.approx(one_by_one, abs=1e-5)
    # Same prompts in the same order as the training path: a prompt/probability mix-up fails here
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(6)])
    ordered = gate.predict_proba(dataset_prompts(trainer, rows, gate.tokenizer, 6))
    assert ordered == pytest.approx(reference_probs(trainer, batch).tolist(), abs=1e-5)
    assert len(set(round(p, 4) for p in ordered)) > 1  # the head tells the prompts apart


def test_peft_lora_head_trains_and_aux_loss_reaches_the_adapter(tiny_model_dirs, tmp_path):
    from peft import LoraConfig, PeftModel

    rows = load_tiny_sft_rows(8)
    snapshots, trainers = {}, {}
    for weight in (0.0, 1.0):
        trainer = PreSafetySFTTrainer(
            model=tiny_model_dirs["qwen3"],
            args=make_config(tmp_path / str(weight), gradient_checkpointing=True, presafety_loss_weight=weight),
            train_dataset=Dataset.from_list(rows),
            peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
        )
        before = params_snapshot(trainer.model)
        trainer.train()
        after = params_snapshot(trainer.model)
        changed = {n for n in after if not torch.equal(before[n], after[n])}
        assert any("lora_" in n for n in changed)
        # The head trains although PEFT froze the base (with weight 0 its gradient is zero)
        assert any("safety_head" in n for n in changed) == (weight > 0)
        assert not any("base_layer" in n or "embed_tokens" in n for n in changed)  # the base stays frozen
        snapshots[weight], trainers[weight] = after, trainer
    # The auxiliary loss reaches the adapter: same data and seed, only the weight differs
    lora = [n for n in snapshots[1.0] if "lora_" in n]
    assert any(not torch.equal(snapshots[0.0][n], snapshots[1.0][n]) for n in lora)

    trainer = trainers[1.0]
    trainer.save_model(str(tmp_path / "adapter"))
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["qwen3"])
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter")
    head = load_safety_head(reloaded, tmp_path / "adapter")
    x = torch.randn(3, base.config.hidden_size)
    torch.testing.assert_close(head(x), get_safety_head(trainer.model)(x))


# --- bad input -----------------------------------------------------------------------------------------------------
def test_bad_input_errors(tiny_model_dirs, tmp_path):
    rows = load_tiny_sft_rows(6)
    model_dir = tiny_model_dirs["qwen3"]
    no_label = [{k: v for k, v in r.items() if k != "safety_label"} for r in rows]
    with pytest.raises(ValueError, match=r"no safety label column 'safety_label'.*presafety_label_column"):
        make_trainer(model_dir, tmp_path, no_label)
    with pytest.raises(ValueError, match=r"Safety label 3 in column 'safety_label' at index 2 is out of range"):
        make_trainer(model_dir, tmp_path, [dict(r, safety_label=3 if i == 2 else 1) for i, r in enumerate(rows)])
    with pytest.raises(ValueError, match=r"Every example .* missing safety label.*presafety_loss_weight=0"):
        make_trainer(model_dir, tmp_path, [dict(r, safety_label=None) for r in rows])
    # ...which weight 0 allows: the head then only probes
    make_trainer(model_dir, tmp_path, [dict(r, safety_label=None) for r in rows], presafety_loss_weight=0.0).train()
    with pytest.raises(ValueError, match=r"presafety_think_token='<reasoning>'.*not a token of the tokenizer"):
        make_trainer(model_dir, tmp_path, rows, presafety_anchor="think_end", presafety_think_token="<reasoning>")
    with pytest.raises(ValueError, match=r"Invalid `presafety_loss_weight`: -1.0. Use a finite weight >= 0"):
        make_config(tmp_path, presafety_loss_weight=-1.0)
    with pytest.raises(ValueError, match=r"Invalid `presafety_anchor`: 'middle'. Choose one of"):
        make_config(tmp_path, presafety_anchor="middle")
    # Anchor not found: completions without a think block, think_end anchor
    plain = [dict(r, completion=[{"role": "assistant", "content": "No."}]) for r in rows]
    plain[1] = rows[1]
    with pytest.raises(
        ValueError, match=r"5 of 6 labeled examples.*anchor 'think_end' not found.*indices \[0, 2, 3, 4, 5\]"
    ):
        make_trainer(model_dir, tmp_path, plain, presafety_anchor="think_end")
    trainer = make_trainer(
        model_dir, tmp_path, plain, presafety_anchor="think_end", presafety_on_missing_anchor="skip"
    )
    labeled = [len(ex["presafety_anchor_positions"]) > 0 for ex in trainer.train_dataset]
    assert sum(labeled) == 1
    trainer.train()  # batches without any label still run the head (multiplied by zero)


def test_plain_sft_config_still_works(tiny_model_dirs, tmp_path):
    # Existing code that only swaps the trainer class keeps its SFTConfig (eos/pad tokens included)
    args = SFTConfig(**config_kwargs(tmp_path, max_steps=1, eos_token="<|im_end|>"))
    trainer = PreSafetySFTTrainer(
        model=tiny_model_dirs["qwen3"], args=args, train_dataset=Dataset.from_list(load_tiny_sft_rows(4))
    )
    assert isinstance(trainer.args, PreSafetySFTConfig)
    assert trainer.args.presafety_loss_weight == 1.0 and trainer.args.eos_token == "<|im_end|>"
    trainer.train()
    assert "presafety/loss" in trainer.state.log_history[0]


def test_unlabeled_examples_get_no_aux_loss(tiny_model_dirs, tmp_path):
    rows = load_tiny_sft_rows(8)
    mixed = [dict(r, safety_label=(r["safety_label"] if i % 2 else None)) for i, r in enumerate(rows)]
    mixed[0]["safety_label"] = 0.3  # a soft label
    trainer = make_trainer(tiny_model_dirs["qwen3"], tmp_path, mixed)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(8)])
    assert batch["presafety_labels"].tolist() == pytest.approx(
        [0.3] + [rows[i]["safety_label"] for i in range(1, 8, 2)]
    )
    assert batch["presafety_index"][:, 0].tolist() == [0, 1, 3, 5, 7]


@pytest.mark.parametrize("packing", [False, True])
def test_iterable_dataset_gives_the_same_batches(tiny_model_dirs, tmp_path, packing):
    # A streamed dataset goes through the same preparation (anchors, truncation, packing, compaction)
    rows = load_tiny_sft_rows(8)
    kwargs = {"packing": packing, "max_length": 300 if packing else 256, "shuffle_dataset": False}
    mapped = make_trainer(tiny_model_dirs["qwen3"], tmp_path, rows, **kwargs)
    streamed = PreSafetySFTTrainer(
        model=tiny_model_dirs["qwen3"],
        args=make_config(tmp_path, **kwargs),
        train_dataset=Dataset.from_list(rows).to_iterable_dataset(),
    )
    want = [mapped.train_dataset[i] for i in range(len(mapped.train_dataset))]
    got = list(streamed.train_dataset)
    assert len(got) == len(want)
    for key in ("input_ids", "presafety_anchor_positions", "presafety_anchor_labels"):
        assert [ex[key] for ex in got] == [ex[key] for ex in want]
    streamed.args.max_steps = 2
    streamed.train()
    assert sum("presafety/loss" in h for h in streamed.state.log_history) == 2
