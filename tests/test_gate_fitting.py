# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""A gate from any model: a head fitted on a frozen model's anchor states (read as the trainers and `SafetyGate` read
them), the logistic regression against scikit-learn's, the calibrated threshold, and the head folder bound to the
base model's weights."""

import json
import logging
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_presafety import SafetyGate, SafetyHeadConfig, calibrate_safety_head, fit_safety_head, load_safety_head
from trl_presafety.anchors import AnchorSpec, detect_template_family, inference_anchor
from trl_presafety.fingerprints import fingerprint_weights
from trl_presafety.gate_calibration import calibration_overlap, choose_threshold, split_slice
from trl_presafety.gate_fitting import fit_logistic_regression
from trl_presafety.modeling import SAFETY_HEAD_CONFIG_NAME, SAFETY_HEAD_WEIGHTS_NAME

from .testing_utils import load_tiny_sft_rows, params_snapshot


ROWS = load_tiny_sft_rows()  # 140 conversational rows with safety_label (40 refuse)
FIT, DEV = ROWS[:100], ROWS[100:]


def test_logistic_regression_matches_scikit_learn_and_is_deterministic():
    from sklearn.linear_model import LogisticRegression

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 12, generator=generator) * torch.linspace(0.1, 30.0, 12) + 5.0
    y = (((x[:, 0] - 5) / 0.1 + (x[:, 3] - 5) / 3.0 + torch.randn(300, generator=generator)) > 0.5).double()
    assert 50 < y.sum() < 250
    weight, bias, _ = fit_logistic_regression(x, y, l2=1.0)
    again, again_bias, _ = fit_logistic_regression(x, y, l2=1.0)
    assert torch.equal(weight, again) and torch.equal(bias, again_bias)

    mean, std = x.double().mean(0), x.double().std(0, unbiased=False)
    reference = LogisticRegression(C=1.0, class_weight="balanced", tol=1e-12, max_iter=10_000)
    reference.fit(((x.double() - mean) / std).numpy(), y.numpy())
    # Our weights are in the units of the raw features; map scikit-learn's back the same way
    expected_weight = torch.from_numpy(reference.coef_[0]) / std
    expected_bias = reference.intercept_[0] - (torch.from_numpy(reference.coef_[0]) * mean / std).sum()
    torch.testing.assert_close(weight, expected_weight, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(bias, expected_bias, atol=1e-5, rtol=1e-4)
    # Balanced classes: the fit is not the unweighted one
    unbalanced, *_ = fit_logistic_regression(x, y, l2=1.0, class_balance=False)
    assert not torch.allclose(weight, unbalanced)


def test_choose_threshold_routes_at_most_the_target_share():
    probs = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95] + [0.99, 0.97, 0.5]
    labels = [0.0] * 10 + [1.0] * 3
    # 10 comply-labeled: 10% allows one routed (0.95), so the threshold sits just above 0.9
    threshold = choose_threshold(probs, labels, 0.10)
    assert 0.9 < threshold <= 0.95 and threshold == pytest.approx(0.9)
    assert sum(p >= threshold for p, v in zip(probs, labels) if v == 0) == 1
    assert choose_threshold(probs, labels, 0.0) > 0.95  # nothing comply-labeled routed
    assert choose_threshold(probs, labels, 0.05) > 0.95  # floor(0.5) = 0 allowed
    # Ties: at most the target, never more
    tied = choose_threshold([0.8, 0.8, 0.8, 0.1], [0, 0, 0, 0], 0.5)
    assert sum(p >= tied for p in [0.8, 0.8, 0.8, 0.1]) == 0


def test_split_slices_read_like_datasets():
    assert split_slice("train") == ("train", None)
    name, rows = split_slice("train[:90%]")
    assert name == "train" and rows(140) == (0, 126)
    assert split_slice("dev[90%:]")[1](140) == (126, 140) and split_slice("train[10:20]")[1](140) == (10, 20)
    with pytest.raises(ValueError, match="Invalid split slice"):
        split_slice("train[a:b]")


@pytest.fixture(scope="module")
def fitted(tiny_model_dirs, tmp_path_factory):
    """A gate fitted (and calibrated on DEV) on each template family's frozen tiny model."""
    out = {}
    for family, model_dir in tiny_model_dirs.items():
        folder = tmp_path_factory.mktemp(f"gate-{family}")
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        before = params_snapshot(model)
        gate = fit_safety_head(model, FIT, folder, calibration_dataset=DEV, progress=False)
        out[family] = (gate, folder, before)
    return out


@pytest.mark.parametrize("family", ["qwen3", "r1"])
def test_fit_reads_the_gate_anchor_and_leaves_the_model_unchanged(fitted, tiny_model_dirs, family):
    gate, folder, before = fitted[family]
    after = params_snapshot(gate.model)
    for name, value in before.items():
        assert torch.equal(after[name], value), name
    assert not any(p.requires_grad for n, p in gate.model.named_parameters() if "safety_head" not in n)

    # The states the head was fitted on are the final hidden states at the gate's anchor, from a plain forward
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dirs[family])
    spec = AnchorSpec.from_tokenizer(tokenizer, "prompt_end")
    kind = detect_template_family(tokenizer)
    assert gate.config.template_family == kind == {"qwen3": "think_in_response", "r1": "think_in_prompt"}[family]
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dirs[family])
    expected = []
    for row in FIT[:6]:
        ids, position = inference_anchor(tokenizer, row["prompt"], spec, kind)
        with torch.no_grad():
            hidden = reference(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1]
        expected.append(hidden[0, position])
    states = gate.anchor_states([row["prompt"] for row in FIT[:6]])
    torch.testing.assert_close(states, torch.stack(expected), atol=1e-5, rtol=1e-5)

    # The head learned something real from frozen states: above chance on the fitting set
    assert gate.config.fit["train_auroc"] > 0.8
    assert gate.config.fit["n_comply"] + gate.config.fit["n_refuse"] == len(FIT)
    assert gate.config.detached and gate.config.loss_weight is None


@pytest.mark.parametrize("family", ["qwen3", "r1"])
def test_fitted_head_folder_loads_like_a_trained_one(fitted, tiny_model_dirs, family):
    gate, folder, _ = fitted[family]
    assert {p.name for p in folder.iterdir()} >= {SAFETY_HEAD_WEIGHTS_NAME, SAFETY_HEAD_CONFIG_NAME}
    assert not list(folder.glob("model*.safetensors")), "the base weights are not copied"
    config = SafetyHeadConfig.load(folder)
    assert config.base_model == tiny_model_dirs[family]
    assert config.backbone_fingerprint == fingerprint_weights(
        AutoModelForCausalLM.from_pretrained(tiny_model_dirs[family])
    )
    prompts = [row["prompt"] for row in DEV[:8]]
    expected = gate.predict_proba(prompts)

    # load_safety_head on the base model, and SafetyGate.from_pretrained from the head folder alone
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dirs[family])
    load_safety_head(model, folder)
    by_hand = SafetyGate(model, AutoTokenizer.from_pretrained(folder))
    loaded = SafetyGate.from_pretrained(folder)
    assert by_hand.predict_proba(prompts) == loaded.predict_proba(prompts) == expected
    # The calibrated threshold is the default of both
    assert by_hand.threshold == loaded.threshold == config.threshold == config.calibration["threshold"]
    assert loaded.should_refuse(prompts) == [p >= config.threshold for p in expected]


def test_calibration_record(fitted):
    gate, folder, _ = fitted["qwen3"]
    record = json.loads((folder / SAFETY_HEAD_CONFIG_NAME).read_text())["calibration"]
    probs = gate.predict_proba([row["prompt"] for row in DEV])
    labels = [row["safety_label"] for row in DEV]
    comply = [p for p, v in zip(probs, labels) if v == 0]
    refuse = [p for p, v in zip(probs, labels) if v == 1]
    assert record["n_comply"] == len(comply) == 29 and record["n_refuse"] == len(refuse) == 11
    assert record["target_comply_routed_rate"] == 0.05 and record["target_met"]
    assert record["comply_routed_rate"] == sum(p >= record["threshold"] for p in comply) / 29 <= 0.05
    assert record["refuse_routed_rate"] == sum(p >= record["threshold"] for p in refuse) / 11
    # The lowest such threshold: one step lower routes more comply-labeled prompts than the target allows
    lower = max(p for p in comply if p < record["threshold"])
    assert sum(p >= lower for p in comply) / 29 > 0.05
    assert record["source_fingerprint"].startswith("sha256:") and len(record["prompt_hashes"]) == len(DEV)
    assert calibration_overlap(folder, [row["prompt"] for row in DEV[:3] + FIT[:5]]) == 3
    assert calibration_overlap(folder, [row["prompt"][0]["content"] for row in DEV[:4]]) == 4


def test_threshold_defaults_to_half_without_calibration(tiny_model_dirs, tmp_path, caplog):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["qwen3"])
    with caplog.at_level(logging.INFO, logger="trl_presafety.gate"):
        gate = fit_safety_head(model, FIT, tmp_path / "gate", progress=False)
    assert gate.threshold == 0.5 and gate.config.threshold is None and gate.config.calibration is None
    assert "no calibrated threshold" in caplog.text
    assert SafetyGate.from_pretrained(tmp_path / "gate", threshold=0.3).threshold == 0.3
    # Calibrating the folder afterwards writes the threshold into it; the gate loaded from it then uses it
    record = calibrate_safety_head(tmp_path / "gate", DEV, target_rate=0.1)
    assert SafetyGate.from_pretrained(tmp_path / "gate").threshold == record["threshold"]
    assert record["comply_routed_rate"] <= 0.1


def test_calibration_refuses_evaluation_and_fitting_prompts(fitted, tiny_model_dirs, tmp_path):
    gate, _, _ = fitted["qwen3"]
    with pytest.raises(ValueError, match="3 of the 40 calibration prompts .* are prompts the evaluation reports on"):
        calibrate_safety_head(gate, DEV, evaluation_prompts=[row["prompt"] for row in DEV[:3]])
    # Evaluation sets hold the user's text, label folders chat messages: the same request either way
    with pytest.raises(ValueError, match="2 of the 40 calibration prompts"):
        calibrate_safety_head(gate, DEV, evaluation_prompts=[row["prompt"][0]["content"] + " " for row in DEV[:2]])
    with pytest.raises(ValueError, match="is the set the head is fitted on"):
        calibrate_safety_head(gate, FIT)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["qwen3"])
    with pytest.raises(ValueError, match="is the set the head is fitted on"):
        fit_safety_head(model, FIT, calibration_dataset=FIT, progress=False)
    with pytest.raises(ValueError, match="needs prompts of both classes"):
        fit_safety_head(model, [r for r in FIT if r["safety_label"] == 0], progress=False)


def test_head_folder_refuses_other_weights(fitted, tiny_model_dirs, tmp_path):
    """A fine-tune with the same names, shapes and sizes is other weights: the head is refused on them."""
    gate, folder, _ = fitted["qwen3"]
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dirs["qwen3"], base)
    head = tmp_path / "head"
    shutil.copytree(folder, head)
    # The same weights moved elsewhere load; an edited config does not (its checksum)
    assert SafetyGate.from_pretrained(head, base_model=str(base)).predict_proba(["Hi"])
    config = json.loads((head / SAFETY_HEAD_CONFIG_NAME).read_text())
    (head / SAFETY_HEAD_CONFIG_NAME).write_text(json.dumps({**config, "threshold": 0.01}))
    with pytest.raises(ValueError, match="was edited after it was saved"):
        SafetyGate.from_pretrained(head, base_model=str(base))
    (head / SAFETY_HEAD_CONFIG_NAME).write_text(json.dumps(config))
    tensors = load_file(base / "model.safetensors")
    tensors = {k: v + 1e-3 if v.dtype.is_floating_point else v for k, v in tensors.items()}
    save_file(tensors, base / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="was trained with other weights than this model's"):
        SafetyGate.from_pretrained(head, base_model=str(base))


def test_fit_and_calibrate_commands(tiny_model_dirs, tmp_path, capsys):
    from trl_presafety import cli

    data = tmp_path / "labels.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    out = tmp_path / "gate"
    common = ["--dataset_name", str(data), "--batch_size", "8"]
    cli.main(
        ["fit-gate", "--model_name_or_path", tiny_model_dirs["r1"], *common, "--dataset_split", "train[:100]"]
        + ["--calibration_dataset", str(data), "--calibration_split", "train[100:]", "--output_dir", str(out)]
    )
    printed = capsys.readouterr().out
    assert "Fitted on 29 refuse- and 71 comply-labeled prompts" in printed and "Threshold " in printed
    config = SafetyHeadConfig.load(out)
    assert config.calibration["n_comply"] == 29 and config.calibration["source"].endswith("(split 'train[100:]')")
    assert config.base_model == tiny_model_dirs["r1"] and config.template_family == "think_in_prompt"

    cli.main(
        ["calibrate-gate", "--head_path", str(out), *common, "--dataset_split", "train[100:]"]
        + ["--target_rate", "0.2"]
    )
    recalibrated = SafetyHeadConfig.load(out)
    assert recalibrated.calibration["target_comply_routed_rate"] == 0.2
    assert recalibrated.threshold <= config.threshold and recalibrated.calibration["comply_routed_rate"] <= 0.2
    with pytest.raises(ValueError, match=r"Invalid `target_rate`: 1.5\. Use a share in \[0, 1\)"):
        cli.main(["calibrate-gate", "--head_path", str(out), *common, "--target_rate", "1.5"])
    with pytest.raises(ValueError, match="Invalid `calibration_dataset`.*It is the fitting set"):
        cli.main(
            ["fit-gate", "--model_name_or_path", "m", *common, "--output_dir", "o", "--calibration_dataset", str(data)]
        )


def test_fit_gate_reads_a_label_folder_and_refuses_an_unfinished_one(tmp_path):
    """The folder `trl-presafety label` writes, as written: labels of the safe model's answers; an unfinished folder is
    refused, as every command refuses it."""
    from datasets import Dataset

    from trl_presafety.generation import GenerationArguments
    from trl_presafety.labeling import IncompleteLabelsError, label_dataset

    from .test_classifier import build_tiny_classifier
    from .test_generation import perturbed_tiny_model

    # A model whose answers are not blank (the default random init repeats a newline, which gets no label)
    model, tokenizer = perturbed_tiny_model("qwen3")
    model.save_pretrained(tmp_path / "lrm")
    tokenizer.save_pretrained(tmp_path / "lrm")
    prompts = Dataset.from_list([{"prompt": r["prompt"], "harmful": r["harmful"]} for r in ROWS[:48]])
    generation = GenerationArguments(backend="transformers", max_new_tokens=8, generation_batch_size=16)
    classifier = build_tiny_classifier(tmp_path / "classifier", seed=1)

    def label(folder, threshold):
        return label_dataset(
            prompts, str(tmp_path / "lrm"), None, classifier, generation=generation, output_dir=folder,
            shard_size=16, threshold=threshold, show_progress=False,
        )  # fmt: skip

    # The random classifier's P(refusal) sits near one value: label at its median, so both labels occur
    probs = sorted(p for p in label(tmp_path / "probe", 0.5)["safety_label_prob"] if p is not None)
    assert len(probs) >= 24, "most answers must get a label for this test"
    folder = tmp_path / "labels"
    labeled = label(folder, (probs[len(probs) // 2 - 1] + probs[len(probs) // 2]) / 2)
    first = [v for v in labeled["safety_label"][:32] if v is not None]
    assert 0 < sum(first) < len(first), "the random classifier must give both labels for this test"
    gate = fit_safety_head(str(tmp_path / "lrm"), str(folder), split="train[:32]", progress=False)
    assert gate.config.fit["source"] == f"{folder} (split 'train[:32]')"
    assert gate.config.fit["n_refuse"] == sum(first) and gate.config.fit["n_comply"] == len(first) - sum(first)

    state = json.loads((folder / "labeling_state.json").read_text())
    (folder / "labeling_state.json").write_text(json.dumps({**state, "complete": False}))
    with pytest.raises(IncompleteLabelsError, match="labeling is incomplete"):
        fit_safety_head(str(tmp_path / "lrm"), str(folder), progress=False)


def test_a_gate_fitted_on_a_lora_adapter_reads_the_merged_weights(tiny_model_dirs, tmp_path):
    """A LoRA run's output is an adapter folder: the gate is fitted on the merged weights, the ones an evaluation
    (which merges adapters) and a server run, and is bound to them."""
    from peft import LoraConfig, PeftModel, get_peft_model

    from trl_presafety.fingerprints import fingerprint_weights

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["qwen3"])
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # a trained adapter (B = 0 at init would merge to the base weights)
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.2, generator=torch.Generator().manual_seed(0))
    peft_model.save_pretrained(tmp_path / "adapter")
    gate = fit_safety_head(str(tmp_path / "adapter"), FIT, tmp_path / "gate", progress=False)

    merged = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dirs["qwen3"]), str(tmp_path / "adapter")
    ).merge_and_unload()
    fingerprint = fingerprint_weights(merged)
    assert gate.config.backbone_fingerprint == fingerprint
    assert fingerprint != fingerprint_weights(AutoModelForCausalLM.from_pretrained(tiny_model_dirs["qwen3"]))
    assert gate.config.base_model == str(tmp_path / "adapter")
    prompts = [row["prompt"] for row in DEV[:4]]
    assert SafetyGate.from_pretrained(tmp_path / "gate").predict_proba(prompts) == gate.predict_proba(prompts)
    load_safety_head(merged, tmp_path / "gate")  # the evaluation's merged model takes the head


def test_saving_a_gate_on_an_unmerged_adapter_into_a_folder_without_weights_is_refused(tiny_model_dirs, tmp_path):
    # The folder would hold no adapter and could name no base model: a later load could not find the weights read
    from peft import LoraConfig, get_peft_model

    from trl_presafety import attach_safety_head
    from trl_presafety.gate_fitting import head_config_for

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dirs["qwen3"])
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dirs["qwen3"]),
        LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]),
    )
    attach_safety_head(model, head_config_for(model, tokenizer))
    gate = SafetyGate(model, tokenizer)
    with pytest.raises(ValueError, match=r"is a PEFT adapter, whose weights .* would not hold"):
        gate.save_pretrained(tmp_path / "gate")
    assert not (tmp_path / "gate" / SAFETY_HEAD_CONFIG_NAME).exists()
