# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""A gate exported as a sequence-classification checkpoint: `transformers.pipeline("text-classification")` and vLLM's
own loader and classification head read it, and give `SafetyGate`'s probabilities and decisions (both template
families); heads a sequence classifier cannot serve are refused."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, pipeline

from trl_presafety import fit_safety_head
from trl_presafety.gate_export import EXPORT_CONFIG_KEY, export_gate

from .testing_utils import load_tiny_sft_rows, require_vllm_modules


ROWS = load_tiny_sft_rows()
FIT, DEV = ROWS[:100], ROWS[100:]


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@pytest.fixture(scope="module")
def exported(tiny_model_dirs, tmp_path_factory):
    out = {}
    for family, model_dir in tiny_model_dirs.items():
        gate = fit_safety_head(model_dir, FIT, calibration_dataset=DEV, progress=False)
        folder = export_gate(gate, tmp_path_factory.mktemp(f"export-{family}"))
        out[family] = (gate, folder)
    return out


def rendered(folder, rows) -> list[str]:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return [tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in rows]


@pytest.mark.parametrize("family", ["qwen3", "r1"])
def test_pipeline_gives_the_gate_probabilities_and_decisions(exported, family):
    gate, folder = exported[family]
    config = json.loads((folder / "config.json").read_text())
    info = config[EXPORT_CONFIG_KEY]
    assert config["architectures"] == ["Qwen3ForSequenceClassification"] and config["id2label"] == {"0": "refuse"}
    assert not (folder / "safety_head.safetensors").exists() and "lm_head.weight" not in load_file(
        folder / "model.safetensors"
    )
    classifier = pipeline("text-classification", model=str(folder), tokenizer=str(folder), device="cpu")
    # Batched (padded) as a server would, over prompts of both labels
    scores = [r["score"] for r in classifier(rendered(folder, DEV), batch_size=8)]
    expected = gate.predict_proba([r["prompt"] for r in DEV])
    probs = [sigmoid(s + info["logit_bias"]) for s in scores]
    assert max(abs(p - e) for p, e in zip(probs, expected)) < 1e-4
    assert [s >= info["score_threshold"] for s in scores] == gate.should_refuse([r["prompt"] for r in DEV])
    assert 0 < sum(gate.should_refuse([r["prompt"] for r in DEV])) < len(DEV), "the decision must not be constant"
    assert info["threshold"] == gate.threshold == gate.config.calibration["threshold"]


def test_export_refuses_heads_a_classifier_cannot_serve(tiny_model_dirs, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["qwen3"])
    gate = fit_safety_head(model, FIT, anchor="think_end", layer=0, progress=False)
    with pytest.raises(ValueError, match=r"cannot be exported.*`anchor='think_end'`.*`layer=0`.*fit-gate --anchor"):
        export_gate(gate, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_command(exported, tmp_path, capsys, tiny_model_dirs):
    from trl_presafety import cli

    gate, _ = exported["r1"]
    gate.save_pretrained(tmp_path / "gate")
    cli.main(["export-gate", "--head_path", str(tmp_path / "gate"), "--output_dir", str(tmp_path / "cls")])
    printed = capsys.readouterr().out
    assert "Exported Qwen3ForSequenceClassification" in printed and '"logit_mean": ' in printed
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "cls")
    torch.testing.assert_close(
        model.score.weight.reshape(-1), gate.model.safety_head.proj.weight.reshape(-1), rtol=0, atol=0
    )


# --- vLLM's own code, where it is installed (`make vllm_check`) ------------------------------------------------------
require_vllm_pooling = require_vllm_modules(
    "vllm.model_executor.models.utils", "vllm.model_executor.layers.pooler.seqwise.heads"
)


@require_vllm_pooling
@pytest.mark.parametrize("family", ["qwen3", "r1"])
def test_vllm_loads_the_classifier_and_its_head_gives_the_gate_probabilities(exported, family):
    from vllm.config.pooler import PoolerConfig
    from vllm.model_executor.layers.pooler.activations import get_act_fn
    from vllm.model_executor.layers.pooler.seqwise.heads import ClassifierPoolerHead
    from vllm.model_executor.models.registry import ModelRegistry
    from vllm.model_executor.models.utils import AutoWeightsLoader

    gate, folder = exported[family]
    info = json.loads((folder / "config.json").read_text())[EXPORT_CONFIG_KEY]
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    # vLLM resolves the architecture to a classification (pooling) runner over its own Qwen3 implementation
    architecture = model.config.architectures[0]
    resolved = ModelRegistry._normalize_arch(architecture, SimpleNamespace(runner_type=None, convert_type=None))
    assert resolved == "Qwen3ForCausalLM" and resolved in ModelRegistry.get_supported_archs()
    # Its weight loader accepts every tensor of the checkpoint (as `make vllm_check` does for the trainers' output)
    tensors = load_file(folder / "model.safetensors")
    assert set(tensors) <= AutoWeightsLoader(model).load_weights(tensors.items())
    # Its classification head with the calibration the export records (`--pooler-config '{"logit_mean": -b}'`), over
    # the last token's final hidden state, returns the gate's logit
    pooler = PoolerConfig(**info["vllm_pooler_config"])
    head = ClassifierPoolerHead(
        classifier=model.score, logit_mean=pooler.logit_mean, activation=get_act_fn(model.config)
    )
    texts = rendered(folder, DEV[:12])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    pooled = []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, add_special_tokens=info["add_special_tokens"], return_tensors="pt")["input_ids"]
            pooled.append(model.model(ids).last_hidden_state[0, -1])
    metadata = SimpleNamespace(pooling_params=[SimpleNamespace(use_activation=True)] * len(pooled))
    with torch.no_grad():
        logits = head(torch.stack(pooled), metadata).reshape(-1).tolist()
    expected = gate.predict_proba([r["prompt"] for r in DEV[:12]])
    assert max(abs(sigmoid(z) - e) for z, e in zip(logits, expected)) < 1e-4


def test_export_refuses_a_tied_head_with_where_to_read_it(exported):
    from dataclasses import replace

    from trl_presafety.gate_export import check_exportable

    gate, _ = exported["qwen3"]
    tied = SimpleNamespace(config=replace(gate.config, head_type="tied", anchor="reasoning_start"), model=gate.model)
    with pytest.raises(ValueError, match=r"tied head.*logprobs; there is no classifier to export"):
        check_exportable(tied)
