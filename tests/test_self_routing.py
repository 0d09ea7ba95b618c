# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Self-routing: the closed-think-block data, the first reasoning position, and the tied head (the auxiliary logit is
the model's own next-token log-odds of `</think>` there), in both template families."""

import json

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_presafety import PreSafetySFTConfig, SafetyGate, load_safety_head
from trl_presafety.anchors import (
    AnchorSpec,
    Boundary,
    conversation_prompt,
    detect_template_family,
    inference_anchor,
    locate_anchor,
)
from trl_presafety.data.self_routing import CLOSED_THINK_PREFIX, self_routing_dataset
from trl_presafety.modeling import SAFETY_HEAD_WEIGHTS_NAME, SafetyHeadConfig, token_log_odds

from .testing_utils import build_trainer, head_probs, load_tiny_sft_rows


TIED = {"presafety_head": "tied", "presafety_anchor": "reasoning_start"}


def self_routed(rows: list[dict]) -> list[dict]:
    """Tiny SFT rows in self-routing form: a refuse-labeled row answers after an immediately closed think block."""
    out = []
    for row in rows:
        row = json.loads(json.dumps(row))
        if row["safety_label"] == 1:
            answer = row["completion"][0]["content"].split("</think>")[-1]
            row["completion"][0]["content"] = CLOSED_THINK_PREFIX + answer.strip()
        out.append(row)
    return out


def close_probability(model, tokenizer, rows: list[dict]) -> torch.Tensor:
    """Plain-torch reference: softmax probability of `</think>` after `prompt + <think>\\n`, from a full forward."""
    close_id = tokenizer.convert_tokens_to_ids("</think>")
    spec = AnchorSpec.from_tokenizer(tokenizer, "reasoning_start")
    family = detect_template_family(tokenizer)
    probs = []
    with torch.no_grad():
        for row in rows:
            ids, position = inference_anchor(tokenizer, row["prompt"], spec, family)
            logits = model(input_ids=torch.tensor([ids])).logits[0, position].float()
            probs.append(torch.softmax(logits, -1)[close_id])
    return torch.stack(probs)


@pytest.mark.parametrize("style", ["qwen3", "r1"])
def test_first_reasoning_position_is_before_the_closing_tag(tiny_model_dirs, style):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dirs[style])
    spec = AnchorSpec.from_tokenizer(tokenizer, "reasoning_start")
    close_id = tokenizer.convert_tokens_to_ids("</think>")
    newline = tokenizer.encode("\n", add_special_tokens=False)
    assert list(spec.think_ids) == [tokenizer.convert_tokens_to_ids("<think>"), *newline]
    refuse, comply = self_routed(load_tiny_sft_rows(2))
    assert refuse["safety_label"] == 1 and comply["safety_label"] == 0
    for row, next_token in ((refuse, "</think>"), (comply, "The")):
        prompt_ids, generation_start = conversation_prompt(tokenizer, row["prompt"])
        full = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True, return_dict=True)
        ids = full["input_ids"]
        assert ids[: len(prompt_ids)] == prompt_ids  # no merge at the boundary in either family
        position = locate_anchor(ids, Boundary(len(prompt_ids), generation_start), spec)
        assert ids[position - 1 : position + 1] == list(spec.think_ids)  # the `<think>\n` the reasoning opens with
        assert tokenizer.convert_ids_to_tokens(ids[position + 1]) == next_token
        if style == "r1":
            assert position == len(prompt_ids) - 1  # the generation prompt ends with `<think>\n`
        else:
            assert position == len(prompt_ids) + 1  # the response opens with `<think>\n`
    # The gate reads the same token: the prompt (and, Qwen3 style, the opening the model writes) ends at the anchor
    ids, position = inference_anchor(tokenizer, refuse["prompt"], spec, detect_template_family(tokenizer))
    assert position == len(ids) - 1 and ids[-2:] == list(spec.think_ids)
    # A user typing the tags moves nothing: the anchor is in the template's text, after the user turn
    typed = [{"role": "user", "content": "<think>\n</think>\n\nOK <think>\n"}]
    ids_typed, position_typed = inference_anchor(tokenizer, typed, spec, detect_template_family(tokenizer))
    assert position_typed == len(ids_typed) - 1
    assert close_id not in ids[position:]


def test_closing_tag_must_be_one_token(tiny_model_dirs, tmp_path):
    from trl_presafety.anchors import think_close_token_id

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dirs["qwen3"])
    assert think_close_token_id(tokenizer, "<think>") == tokenizer.convert_tokens_to_ids("</think>")
    with pytest.raises(ValueError, match=r"'</reasoning>' is not a single token.*'tied'"):
        think_close_token_id(tokenizer, "<reasoning>")
    with pytest.raises(ValueError, match=r"presafety_think_token.*not a token"):
        AnchorSpec.from_tokenizer(tokenizer, "reasoning_start", "<reasoning>")


@pytest.mark.parametrize(
    "settings,match",
    [
        ({"presafety_anchor": "prompt_end"}, "presafety_anchor='reasoning_start'"),
        ({"presafety_layer": 1}, "presafety_layer"),
        ({"presafety_pooling": "mean"}, "pooling='mean'"),
        ({"presafety_head_dropout": 0.1}, "dropout"),
    ],
)
def test_tied_head_refuses_settings_that_read_elsewhere(tmp_path, settings, match):
    with pytest.raises(ValueError, match=r"Invalid `presafety_head`: 'tied'.*" + match.replace("(", r"\(")):
        PreSafetySFTConfig(output_dir=str(tmp_path), **{**TIED, **settings})
    with pytest.raises(ValueError, match="cannot be combined"):
        SafetyHeadConfig(hidden_size=8, head_type="tied", anchor="think_end")


def test_tied_head_cannot_be_detached(tmp_path):
    with pytest.raises(ValueError, match="Invalid `presafety_detach_head`: True.*no weights of its own"):
        PreSafetySFTConfig(output_dir=str(tmp_path), presafety_detach_head=True, **TIED)


@pytest.mark.parametrize("style", ["qwen3", "r1"])
def test_tied_logit_is_the_log_odds_of_the_closing_token(tiny_model_dirs, tmp_path, style):
    rows = self_routed(load_tiny_sft_rows(6))
    trainer = build_trainer("sft", tiny_model_dirs[style], tmp_path, rows, max_steps=1, **TIED)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(6)])
    # The head's probability, through the training path (the hook in TRL's own forward)
    probs = head_probs(trainer, batch)
    # Reference: a separate full forward of the plain model, softmax at the anchor, the closing tag's entry
    model = trainer.model
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    rows_, cols = batch["presafety_index"].unbind(1)
    close_id = trainer.processing_class.convert_tokens_to_ids("</think>")
    reference = torch.softmax(logits[rows_, cols].float(), -1)[:, close_id]
    torch.testing.assert_close(probs, reference, atol=1e-6, rtol=1e-5)
    # ... and the logit is log p - log(1 - p) (the closing token's logit minus the logsumexp of the others)
    z = token_log_odds(logits[rows_, cols], close_id)
    torch.testing.assert_close(z, torch.log(reference) - torch.log1p(-reference), atol=1e-4, rtol=1e-4)
    # In every row the anchor is the token before the one that closes the block (refuse) or opens reasoning (comply)
    for (r, c), label in zip(batch["presafety_index"].tolist(), batch["presafety_labels"].tolist()):
        assert (batch["input_ids"][r, c + 1].item() == close_id) == (label == 1.0)


def test_tied_weight_zero_is_plain_trl(tiny_model_dirs, tmp_path):
    rows = self_routed(load_tiny_sft_rows(12))
    plain = build_trainer("sft", tiny_model_dirs["qwen3"], tmp_path, rows, plain=True)
    plain.train()
    ours = build_trainer("sft", tiny_model_dirs["qwen3"], tmp_path, rows, presafety_loss_weight=0.0, **TIED)
    ours.train()
    assert [h["loss"] for h in ours.state.log_history if "loss" in h] == [
        h["loss"] for h in plain.state.log_history if "loss" in h
    ]
    plain_params = dict(plain.model.named_parameters())
    for name, param in ours.model.named_parameters():
        assert torch.equal(param, plain_params[name]), name
    assert not list(ours.model.safety_head.parameters())  # no weights of its own
    assert ours._presafety_capture.forward_calls == 3  # one forward per step, as plain TRL
    # At weight 0 a tied head is still the model's own P(</think>), which the SFT loss trains on self-routing data:
    # the evaluation's probe reads it instead of reporting an untrained head
    from trl_presafety.evaluation.config import EvalConfig
    from trl_presafety.evaluation.probe import run_probe

    ours.save_model(str(tmp_path / "m"))
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    examples = [
        {"id": str(i), "dataset": "tiny", "category": "harmful" if r["safety_label"] else "benign_edgy",
         "prompt": r["prompt"][0]["content"]}
        for i, r in enumerate(rows)
    ]  # fmt: skip
    config = EvalConfig(model_name_or_path=str(tmp_path / "m"), output_dir=str(tmp_path / "eval"))
    figures, records = run_probe(model, ours.processing_class, str(tmp_path / "m"), examples, config)
    assert figures["status"] == "ok" and figures["loss_weight"] == 0.0 and len(records) == len(rows)
    reference = close_probability(model, ours.processing_class, rows)
    assert [r["p_refuse"] for r in records] == pytest.approx(reference.tolist(), abs=1e-5)


@pytest.mark.parametrize("style", ["qwen3", "r1"])
def test_tied_loss_raises_the_closing_probability_of_refused_prompts(tiny_model_dirs, tmp_path, style):
    # Ordinary traces (every row reasons): only the tied loss asks for `</think>` at the first reasoning position
    rows = load_tiny_sft_rows(16)
    refuse = [r for r in rows if r["safety_label"] == 1]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dirs[style])
    untrained = AutoModelForCausalLM.from_pretrained(tiny_model_dirs[style])
    before = close_probability(untrained, tokenizer, refuse).mean().item()
    kwargs = dict(max_steps=20, learning_rate=3e-2)
    tied = build_trainer("sft", tiny_model_dirs[style], tmp_path / "tied", rows, presafety_loss_weight=1.0, **TIED,
                         **kwargs)  # fmt: skip
    tied.train()
    without = build_trainer("sft", tiny_model_dirs[style], tmp_path / "w0", rows, presafety_loss_weight=0.0, **TIED,
                            **kwargs)  # fmt: skip
    without.train()
    tied_refuse = close_probability(tied.model.eval(), tokenizer, refuse).mean().item()
    plain_refuse = close_probability(without.model.eval(), tokenizer, refuse).mean().item()
    # Untrained 0.0009; after 20 steps, tied 0.31 (Qwen3) / 0.34 (R1) against 0.05 / 0.07 for the same SFT without the
    # tied loss (the SFT loss alone raises it a little: every trace has a `</think>` somewhere, and a 16-wide model
    # barely tells where)
    assert tied_refuse > 10 * before
    assert tied_refuse > 3 * plain_refuse


@pytest.mark.parametrize("style", ["qwen3", "r1"])
def test_tied_head_saves_no_weights_and_gates_from_the_lm_head(tiny_model_dirs, tmp_path, style):
    rows = self_routed(load_tiny_sft_rows(8))
    trainer = build_trainer("sft", tiny_model_dirs[style], tmp_path, rows, max_steps=2, **TIED)
    trainer.train()
    trainer.save_model(str(tmp_path / "m"))
    assert not (tmp_path / "m" / SAFETY_HEAD_WEIGHTS_NAME).exists()
    config = SafetyHeadConfig.load(tmp_path / "m")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "m")
    assert config.head_type == "tied" and config.close_token_id == tokenizer.convert_tokens_to_ids("</think>")
    assert config.anchor_token_id == tokenizer.encode("\n", add_special_tokens=False)[0]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    load_safety_head(model, tmp_path / "m")
    gate = SafetyGate(model, tokenizer, batch_size=4)
    reference = close_probability(model, tokenizer, rows)
    torch.testing.assert_close(torch.tensor(gate.predict_proba([r["prompt"] for r in rows])), reference, atol=1e-5,
                               rtol=1e-5)  # fmt: skip
    # A config naming a token outside the vocabulary is refused
    bad = tmp_path / "bad"
    SafetyHeadConfig(**{**config.__dict__, "close_token_id": 10**6}).save(bad)
    with pytest.raises(ValueError, match="outside this model's vocabulary"):
        load_safety_head(model, bad)


def test_tied_head_in_dpo(tiny_model_dirs, tmp_path):
    from .testing_utils import load_tiny_dpo_rows

    rows = load_tiny_dpo_rows(8)
    trainer = build_trainer("dpo", tiny_model_dirs["r1"], tmp_path, rows, max_steps=2, **TIED)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "presafety/loss" in h]
    assert logs and all(torch.isfinite(torch.tensor(h["presafety/loss"])) for h in logs)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    probs = head_probs(trainer, batch)
    tokenizer = trainer.processing_class
    rows_ = [{"prompt": rows[i]["prompt"]} for i in range(4)]
    labeled = [i for i in range(4) if rows[i]["safety_label"] is not None]
    torch.testing.assert_close(probs, close_probability(trainer.model, tokenizer, [rows_[i] for i in labeled]),
                               atol=1e-5, rtol=1e-5)  # fmt: skip


# --- data ------------------------------------------------------------------------------------------------------
def labeled_rows() -> list[dict]:
    rows = load_tiny_sft_rows(4)
    answers = ["I can't help with that.", "Vaccines show the immune system a harmless piece.", "", "No.<think>"]
    for row, answer in zip(rows, answers):
        row["safe_response"] = answer
    return rows


def test_self_routing_rows_keep_columns_and_replace_refused_targets():
    rows = labeled_rows()
    rows[2]["safety_label"], rows[3]["safety_label"] = 1, 1
    out, counts = self_routing_dataset(Dataset.from_list(rows))
    assert counts == {"kept_trace": 1, "kept_trace:empty_answer": 1, "kept_trace:stray_think_tag": 1, "self_routed": 1}
    assert out[0]["completion"] == [{"role": "assistant", "content": "<think>\n</think>\n\nI can't help with that."}]
    assert out[1]["completion"] == rows[1]["completion"]  # the safe model complied: the trace stays
    assert out["self_routed"] == [True, False, False, False]
    for column in ("prompt", "safety_label", "harmful", "safe_response"):
        assert out[column] == [r[column] for r in rows]
    with pytest.raises(ValueError, match="'safe_response'.*trl-presafety label"):
        self_routing_dataset(Dataset.from_list(load_tiny_sft_rows(2)))


def write_label_folder(path, rows: list[dict], complete: bool = True, thinking: bool = False):
    from trl_presafety.shards import ShardedJob

    state = {"version": 1, "command": "label", "thinking": thinking, "model": "m", "classifier": "c"}
    job = ShardedJob({"labels": path}, state, ("version",), num_rows=len(rows), shard_size=2)
    for index in range(job.num_shards if complete else 1):
        job.write(index, {"labels": Dataset.from_list(rows[2 * index : 2 * index + 2])})
    if complete:
        job.finish({})
    return path


def test_build_self_routing_command(tmp_path, monkeypatch):
    from datasets import load_dataset

    from trl_presafety import cli
    from trl_presafety.labeling import IncompleteLabelsError, check_label_folder

    monkeypatch.chdir(tmp_path)
    labels = write_label_folder(tmp_path / "labels", labeled_rows())
    cli.main(["build-self-routing", "--labels", str(labels), "--output_dir", "out"])
    data = load_dataset(str(tmp_path / "out"), split="train")
    assert data["self_routed"] == [True, False, False, False]
    assert data[0]["completion"][0]["content"].startswith("<think>\n</think>\n\n")
    record = json.loads((tmp_path / "out" / "self_routing.json").read_text())
    assert record["counts"]["self_routed"] == 1 and record["source"]["thinking"] is False
    assert check_label_folder(tmp_path / "out") == tmp_path / "out"  # complete, as every reader checks
    state = json.loads((tmp_path / "out" / "labeling_state.json").read_text())
    assert state["command"] == "build-self-routing" and state["labels_sha256"].startswith("sha256:")
    cli.main(["build-self-routing", "--labels", str(labels), "--output_dir", "out"])  # the same labels: reused
    other = labeled_rows()
    other[1]["safety_label"] = 1
    relabeled = write_label_folder(tmp_path / "relabeled", other)
    with pytest.raises(ValueError, match="other data or settings.*labels_sha256"):
        cli.main(["build-self-routing", "--labels", str(relabeled), "--output_dir", "out"])
    cli.main(["build-self-routing", "--labels", str(relabeled), "--output_dir", "out", "--overwrite_output_dir"])
    assert load_dataset(str(tmp_path / "out"), split="train")["self_routed"] == [True, True, False, False]
    # Its output is not a label folder: self-routing it again is refused
    with pytest.raises(ValueError, match="written by `trl-presafety build-self-routing`"):
        cli.main(["build-self-routing", "--labels", str(tmp_path / "out"), "--output_dir", "out4"])
    incomplete = write_label_folder(tmp_path / "partial", labeled_rows(), complete=False)
    with pytest.raises(IncompleteLabelsError, match="1 of 2 shards done"):
        cli.main(["build-self-routing", "--labels", str(incomplete), "--output_dir", "out2"])
    thinking = write_label_folder(tmp_path / "thinking", labeled_rows(), thinking=True)
    with pytest.raises(ValueError, match="thinking: True.*thinking-off"):
        cli.main(["build-self-routing", "--labels", str(thinking), "--output_dir", "out3"])
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out3").exists()


# --- build-sft --self_routing -------------------------------------------------------------------------------------
def test_build_sft_self_routing_rows():
    from trl_presafety.data.build_sft import CompletionJudges, SFTRowBuilder
    from trl_presafety.data.build_sft_config import BuildSFTConfig
    from trl_presafety.judges import RefusalCueJudge
    from trl_presafety.tiny import build_tiny_tokenizer

    from .test_build_sft import ANSWER, EDGY, HARMFUL, MATH, REFUSAL, ScriptedGenerator, math_answer, prompt_row

    tokenizer = build_tiny_tokenizer("qwen3")
    generator = ScriptedGenerator(
        {(HARMFUL, True): [REFUSAL], (EDGY, False): [ANSWER], (MATH, False): [math_answer(5)]}, tokenizer
    )
    off = {HARMFUL: "I can't help with that.", EDGY: "I'm sorry, I can't help with killing.", MATH: "5"}
    off_texts = []

    def thinking_off(texts, seed):
        off_texts.extend(texts)
        return [next(answer for prompt, answer in off.items() if prompt in text) for text in texts]

    config = BuildSFTConfig(num_samples=1, self_routing=True)
    builder = SFTRowBuilder(generator, tokenizer, config, CompletionJudges(RefusalCueJudge()),
                            generate_thinking_off=thinking_off)  # fmt: skip
    rows = [prompt_row(HARMFUL, 1, "harmful"), prompt_row(EDGY, 0, "benign_edgy"), prompt_row(MATH, 0, "math", "5")]
    sft, _, _, stats = builder.build(rows, seed=0)
    # The safe model answered with thinking off (the template's switch), once per prompt
    assert len(off_texts) == 3 and all(t.endswith("<think>\n\n</think>\n\n") for t in off_texts)
    assert [r["safety_label"] for r in sft] == [1, 1, 0]
    assert [r["completion"][0]["content"] for r in sft] == [
        "<think>\n</think>\n\nI can't help with that.",
        "<think>\n</think>\n\nI'm sorry, I can't help with killing.",  # the safe model's over-refusal, as it is
        math_answer(5),  # complied: the reasoning row stays
    ]
    assert [r["origin"] for r in sft] == ["self_routed", "self_routed", "generated"]
    assert [r["self_routed"] for r in sft] == [True, True, False] and [r["harmful"] for r in sft] == [1, 0, 0]
    assert [r["safe_response"] for r in sft] == list(off.values())
    assert stats["harmful"]["self_routed"] == 1 and stats["math"]["safe_model:complied"] == 1
    with pytest.raises(ValueError, match="generate_thinking_off"):
        SFTRowBuilder(generator, tokenizer, config, CompletionJudges(RefusalCueJudge()))


def test_build_sft_self_routing_command(tiny_model_dirs, tmp_path, monkeypatch):
    from dataclasses import replace

    from datasets import load_dataset

    import trl_presafety.generation
    from trl_presafety.judges import RefusalCueJudge
    from trl_presafety.scripts import build_sft

    from .test_build_sft import args_for

    # The random model's greedy thinking-off answers are blank lines, and it never refuses in words: the real
    # generation runs, its answers get a text, and the cue judge is told that the prompts of even length were refused
    generate, off_calls = trl_presafety.generation.generate_responses_from_texts, []

    def generate_and_mark(model, tokenizer, texts, **kwargs):
        outputs = generate(model, tokenizer, texts, **kwargs)
        if kwargs["generation"].do_sample:
            return outputs
        off_calls.append((list(texts), kwargs["num_return_sequences"]))
        return [f"Answer {i}." + text for i, text in enumerate(outputs)]

    judge = RefusalCueJudge.judge

    def decide(self, prompts, texts, **kwargs):
        verdicts = judge(self, prompts, texts, **kwargs)
        return [replace(v, refusal=len(p) % 2 == 0) for p, v in zip(prompts, verdicts)]

    monkeypatch.setattr(trl_presafety.generation, "generate_responses_from_texts", generate_and_mark)
    monkeypatch.setattr(RefusalCueJudge, "judge", decide)
    args = [a for a in args_for(tiny_model_dirs["qwen3"], tmp_path) if a != "--pairs_output_dir"]
    args.remove(str(tmp_path / "pairs"))
    build_sft.main([*args, "--self_routing", "--answer_judge", "cues"])
    # One greedy answer per prompt, with thinking off (Qwen3's switch)
    assert sum(len(texts) for texts, _ in off_calls) == 12 and {n for _, n in off_calls} == {1}
    assert all(text.endswith("<think>\n\n</think>\n\n") for texts, _ in off_calls for text in texts)
    sft = load_dataset(str(tmp_path / "sft"), split="train")
    assert {"safety_label", "safe_response", "self_routed", "harmful"} <= set(sft.column_names)
    assert 0 < sum(sft["self_routed"]) < len(sft)
    for row in sft:
        assert row["safety_label"] == int(len(row["prompt"][0]["content"]) % 2 == 0)
        assert row["self_routed"] == (row["origin"] == "self_routed") == (row["safety_label"] == 1)
        content = row["completion"][0]["content"]
        assert content.startswith("<think>\n</think>\n\n") == row["self_routed"]
        if row["self_routed"]:
            assert content == "<think>\n</think>\n\n" + row["safe_response"].strip()


@pytest.mark.parametrize("style", ["qwen3", "r1"])
def test_p_refuse_is_the_closing_tag_logprob_any_engine_returns(tiny_model_dirs, tmp_path, style):
    from trl_presafety.data.self_routing import decision_prompt_ids, is_self_routed

    rows = self_routed(load_tiny_sft_rows(4))
    trainer = build_trainer("sft", tiny_model_dirs[style], tmp_path, rows, max_steps=2, **TIED)
    trainer.train()
    trainer.save_model(str(tmp_path / "m"))
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "m")
    load_safety_head(model, tmp_path / "m")
    gate = SafetyGate(model, tokenizer)
    close_id = tokenizer.convert_tokens_to_ids("</think>")
    for row in rows:
        ids = decision_prompt_ids(tokenizer, row["prompt"])
        # An engine's first-token log-probabilities (here transformers' generate, as vLLM's `logprobs` give them)
        out = model.generate(torch.tensor([ids]), max_new_tokens=1, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        logprob = torch.log_softmax(out.logits[0][0].float(), -1)[close_id].item()
        assert logprob == pytest.approx(float(torch.log(torch.tensor(gate(row["prompt"])))), abs=1e-5)
    assert is_self_routed("<think>\n</think>\n\nI can't help with that.") and is_self_routed("</think>\n\nNo.")
    assert not is_self_routed("<think>\nLet me think.\n</think>\n\nOK") and not is_self_routed("<think>\nstill")
    assert not is_self_routed("Hello")


@pytest.mark.parametrize(
    "name,extra",
    [("Cohere", {"logit_scale": 0.3}), ("Gemma2", {"final_logit_softcapping": 0.5, "head_dim": 8}),
     ("Granite", {"logits_scaling": 4.0}), ("Qwen3", {})],
)  # fmt: skip
def test_tied_logits_scale_like_the_model_forward(name, extra):
    import transformers

    from trl_presafety.modeling import lm_logits

    config = getattr(transformers, f"{name}Config")(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, eos_token_id=0, bos_token_id=0, pad_token_id=0, **extra,
    )  # fmt: skip
    torch.manual_seed(0)
    model = getattr(transformers, f"{name}ForCausalLM")(config).eval()
    with torch.no_grad():
        out = model(torch.randint(1, 64, (2, 7)), output_hidden_states=True)
        torch.testing.assert_close(lm_logits(model, out.hidden_states[-1]), out.logits, atol=1e-6, rtol=1e-5)


def test_tiny_pipeline_has_a_self_routing_path(tmp_path, monkeypatch, capsys):
    from trl_presafety.pipeline.config import load_pipeline
    from trl_presafety.pipeline.run import run_pipeline

    from .test_recipes import REPO_ROOT

    monkeypatch.chdir(REPO_ROOT)
    recipe = REPO_ROOT / "recipes" / "tiny" / "pipeline.yaml"
    _, _, stages = load_pipeline(recipe)
    chosen = [s.name for s in stages if "self_routing" in s.paths]
    # The shared stages (model, classifier, build-sft, label) and the plain-SFT baseline, not the PreSafety SFT path
    assert {"label", "plain-sft", "eval-plain-sft", "self-routing-data", "compare-self-routing"} <= set(chosen)
    assert "presafety-sft" not in chosen and "presafety-dpo" not in chosen
    run_pipeline(str(recipe), paths=["self_routing"], dry_run=True, run_dir=str(tmp_path / "run"))
    out = capsys.readouterr().out
    for name in ("self-routing-data", "self-routing-sft", "self-routing-sft-data-only", "compare-self-routing"):
        assert name in out


def test_self_routing_stages_run_in_the_pipeline(tiny_model_dirs, tmp_path, monkeypatch):
    # build-self-routing -> SFT with the tied head, from the command lines the pipeline builds, in order (run by
    # `cli.main` in this process: the subprocess runner is tested by tests/test_pipeline.py's chain)
    import yaml

    from trl_presafety.pipeline.run import run_pipeline

    from .test_recipes import REPO_ROOT
    from .testing_utils import run_stage_in_process

    monkeypatch.chdir(REPO_ROOT)
    rows = load_tiny_sft_rows(16)
    for row in rows:
        row["safe_response"] = row["completion"][0]["content"].split("</think>")[-1].strip()
    labels = write_label_folder(tmp_path / "labels", rows)
    config = yaml.safe_load((REPO_ROOT / "recipes" / "tiny" / "pipeline.yaml").read_text())
    overrides = {
        "self-routing-data": {"labels": str(labels)},
        "self-routing-sft": {"model_name_or_path": tiny_model_dirs["qwen3"], "max_steps": 2, "max_length": 64},
    }
    stages = [{**s, "args": {**s["args"], **overrides[s["name"]]}} for s in config["stages"] if s["name"] in overrides]
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run"), "stages": stages}, sort_keys=False))
    state = run_pipeline(str(path), paths=["self_routing"], runner=run_stage_in_process)
    assert all(state["stages"][name]["complete"] for name in overrides)
    run = tmp_path / "run"
    assert json.loads((run / "self-routing-data" / "self_routing.json").read_text())["counts"]["self_routed"] == 8
    assert SafetyHeadConfig.load(run / "self-routing-sft").head_type == "tied"
    assert not (run / "self-routing-sft" / SAFETY_HEAD_WEIGHTS_NAME).exists()


@pytest.mark.parametrize("style", ["qwen3", "r1"])
@pytest.mark.parametrize("policy", ["no_think", "primer"])
def test_routed_generation_with_the_tied_head(style, policy):
    # A self-routing model can also be routed by its own P(</think>): one prefill, outputs equal plain generation on the
    # chosen path (Qwen3 style the gate reads after `<think>\n`, which the thinking-off path does not share entirely)
    from trl_presafety import RoutedGenerator
    from trl_presafety.modeling import attach_safety_head
    from trl_presafety.reasoning import build_prompt
    from trl_presafety.tiny import build_tiny_model

    from .test_routing import PROMPTS, plain, split_threshold

    model, tokenizer = build_tiny_model(style, hidden_size=16, num_attention_heads=2, num_key_value_heads=1)
    config = SafetyHeadConfig(
        hidden_size=16, model_type="qwen3", head_type="tied", anchor="reasoning_start",
        template_family=detect_template_family(tokenizer), close_token_id=tokenizer.convert_tokens_to_ids("</think>"),
    )  # fmt: skip
    attach_safety_head(model, config)
    model.eval()
    reference = close_probability(model, tokenizer, [{"prompt": [{"role": "user", "content": p}]} for p in PROMPTS])
    with RoutedGenerator(model, tokenizer, policy=policy, threshold=0.5) as router:
        probs = router.predict_proba(PROMPTS)
        assert probs == pytest.approx(reference.tolist(), abs=1e-6)
        router.threshold = split_threshold(probs)
        outputs = router.generate(PROMPTS, max_new_tokens=8, backend="transformers", batch_size=4)
    assert sum(o.routed for o in outputs) == 2
    for output, proba in zip(outputs, probs):
        assert output.proba == pytest.approx(proba, abs=1e-6)
        assert output.text == plain(model, tokenizer, output.prompt_text)
    assert any(not o.routed and o.prompt_text == build_prompt(tokenizer, p, thinking=True) for o, p in
               zip(outputs, PROMPTS))  # fmt: skip
