# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""What the trainers write is a standard checkpoint (the weight keys of a plain TRL run) plus the head in its own
files, so transformers, PEFT and vLLM load it unchanged; and loading a head fails closed on bad state."""

import json
import pickle
import shutil
import warnings

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_presafety import (
    PreSafetySFTConfig,
    PreSafetySFTTrainer,
    SafetyGate,
    SafetyHeadConfig,
    get_safety_head,
    load_safety_head,
)
from trl_presafety.modeling import SAFETY_HEAD_CONFIG_NAME, SAFETY_HEAD_WEIGHTS_NAME
from trl_presafety.tiny import build_tiny_model

from .testing_utils import (
    config_kwargs,
    load_tiny_rows,
    load_tiny_sft_rows,
    params_snapshot,
    require_vllm_modules,
    safetensors_keys,
    trainer_classes,
)


LORA = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])


def train(kind: str, flavour: str, model_dir: str, root, peft: bool = False, **kwargs):
    from peft import LoraConfig

    config_cls, trainer_cls = trainer_classes(kind, plain=flavour == "plain")
    rows = load_tiny_rows(kind, 8)
    defaults = dict(max_steps=2, save_strategy="steps", save_steps=2)
    trainer = trainer_cls(
        model=model_dir,
        args=config_cls(**config_kwargs(root, **{**defaults, **kwargs})),
        train_dataset=Dataset.from_list(rows),
        peft_config=LoraConfig(**LORA) if peft else None,
    )
    trainer.train()
    trainer.save_model()
    return trainer


def weights_file(folder, peft: bool):
    return folder / ("adapter_model.safetensors" if peft else "model.safetensors")


@pytest.fixture(scope="module")
def runs(tiny_model_dirs, tmp_path_factory):
    """A plain TRL run and a PreSafety run of each trainer, full fine-tuning and LoRA, saved with checkpoints."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for kind in ("sft", "dpo"):
        for peft in (False, True):
            for flavour in ("plain", "presafety"):
                folder = root / f"{kind}-{flavour}-{peft}"
                out[kind, flavour, peft] = (train(kind, flavour, tiny_model_dirs["qwen3"], folder, peft), folder)
    return out


@pytest.mark.parametrize("peft", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_saved_weights_are_those_of_a_plain_trl_run(runs, kind, peft):
    _, plain_root = runs[kind, "plain", peft]
    trainer, root = runs[kind, "presafety", peft]
    for folder in ("out", "out/checkpoint-2"):
        ours, plain = root / folder, plain_root / folder
        keys = set(load_file(weights_file(ours, peft)))
        assert keys == set(load_file(weights_file(plain, peft))), folder
        assert safetensors_keys(ours) == keys | {"proj.weight", "proj.bias"}  # nothing else, anywhere
        # The head lives beside the checkpoint, in its own files
        head = load_file(ours / SAFETY_HEAD_WEIGHTS_NAME)
        assert set(head) == {"proj.weight", "proj.bias"}
        assert SafetyHeadConfig.load(ours).hidden_size == trainer.model.config.hidden_size
        if peft:
            assert not json.loads((ours / "adapter_config.json").read_text())["modules_to_save"]
    # The saved head is the trained one
    torch.testing.assert_close(
        load_file(root / "out" / SAFETY_HEAD_WEIGHTS_NAME)["proj.weight"],
        get_safety_head(trainer.model).proj.weight.detach(),
    )


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_output_loads_in_transformers_without_unexpected_keys(runs, kind):
    _, root = runs[kind, "presafety", False]
    model, info = AutoModelForCausalLM.from_pretrained(root / "out", output_loading_info=True)
    assert not info["unexpected_keys"] and not info["missing_keys"] and not info["mismatched_keys"], info
    # ...and every saved name is a parameter of the base architecture (what any loader, vLLM's too, looks up)
    reference = set(type(model)(model.config).state_dict())
    assert set(load_file(root / "out" / "model.safetensors")) <= reference


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_adapter_loads_in_peft_without_unexpected_keys(runs, tiny_model_dirs, kind):
    from peft import PeftModel

    trainer, root = runs[kind, "presafety", True]
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["qwen3"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = PeftModel.from_pretrained(base, root / "out")
    assert not [w for w in caught if "key" in str(w.message).lower()], [str(w.message) for w in caught]
    head = load_safety_head(model, root / "out")
    x = torch.randn(3, base.config.hidden_size)
    torch.testing.assert_close(head(x), get_safety_head(trainer.model)(x))


@pytest.mark.parametrize("target_modules", ["all-linear", ["q_proj", "proj"]], ids=["all-linear", "names"])
def test_lora_all_linear_leaves_the_head_out_of_the_adapter(tiny_model_dirs, tmp_path, target_modules):
    """`all-linear` (the usual LoRA setting) or a name the head shares (`proj`) must not wrap the head's own layer:
    the head trains in full and saves as a head, not as LoRA weights `load_safety_head` cannot read."""
    from peft import LoraConfig, PeftModel

    trainer = PreSafetySFTTrainer(
        model=tiny_model_dirs["qwen3"],
        args=PreSafetySFTConfig(**config_kwargs(tmp_path, max_steps=2)),
        train_dataset=Dataset.from_list(load_tiny_sft_rows(8)),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=target_modules),
    )
    head = get_safety_head(trainer.model)
    assert not [name for name, _ in head.named_modules() if "lora" in name]
    assert any("lora_A" in name for name, _ in trainer.model.named_modules())  # the adapter is on the model
    before = {k: v.clone() for k, v in head.state_dict().items()}
    trainer.train()
    trainer.save_model()
    assert any(not torch.equal(before[k], v) for k, v in head.state_dict().items())  # the head trained
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dirs["qwen3"]), tmp_path / "out")
    loaded = load_safety_head(model, tmp_path / "out")
    x = torch.randn(3, model.config.hidden_size)
    torch.testing.assert_close(loaded(x), head(x))


def test_lora_resume_restores_the_head_and_its_optimizer_state(tiny_model_dirs, tmp_path):
    from peft import LoraConfig

    rows = load_tiny_sft_rows(16)

    def trainer(save_strategy):
        return PreSafetySFTTrainer(
            model=tiny_model_dirs["qwen3"],
            args=PreSafetySFTConfig(**config_kwargs(tmp_path, max_steps=4, save_strategy=save_strategy, save_steps=2)),
            train_dataset=Dataset.from_list(rows),
            peft_config=LoraConfig(**LORA),
        )

    full = trainer("steps")
    full.train()
    resumed = trainer("no")
    resumed.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))
    final, got = params_snapshot(full.model), params_snapshot(resumed.model)
    head_names = [n for n in final if "safety_head" in n]
    assert head_names
    for name in final:
        torch.testing.assert_close(got[name], final[name], atol=1e-6, rtol=1e-6, msg=name)


# --- vLLM's own loader rules, where its Python code runs (`pip install --no-deps vllm` and its pure-Python needs;
# `make vllm_check`) -------------------------------------------------------------------------------------------
require_vllm_loaders = require_vllm_modules("vllm.model_executor.models.utils", "vllm.lora.peft_helper")


@require_vllm_loaders
def test_vllm_weight_loader_accepts_the_checkpoint(runs):
    from vllm.model_executor.models.utils import AutoWeightsLoader

    _, root = runs["sft", "presafety", False]
    model = AutoModelForCausalLM.from_pretrained(root / "out")
    tensors = load_file(root / "out" / "model.safetensors")
    loaded = AutoWeightsLoader(model).load_weights(tensors.items())
    assert set(tensors) <= loaded
    # The layout of trl-presafety < 0.1 (the head inside the weights) is what vLLM refuses
    with pytest.raises(ValueError, match="no module or parameter named 'safety_head'"):
        old = dict(tensors, **{"safety_head.proj.weight": torch.zeros(1, model.config.hidden_size)})
        AutoWeightsLoader(model).load_weights(old.items())


@require_vllm_loaders
def test_vllm_lora_loader_accepts_the_adapter(runs, tmp_path, monkeypatch):
    import vllm.lora.lora_model
    from vllm.lora.lora_model import LoRAModel
    from vllm.lora.peft_helper import PEFTHelper

    monkeypatch.setattr(vllm.lora.lora_model, "PIN_MEMORY", False)  # no accelerator to pin host memory for

    _, root = runs["sft", "presafety", True]
    helper = PEFTHelper.from_local_dir(str(root / "out"), max_position_embeddings=4096)
    assert helper._validate_features() == []
    tensors = load_file(root / "out" / "adapter_model.safetensors")
    lora = LoRAModel.from_lora_tensors(1, tensors, helper, device="cpu")
    assert lora.loras and not lora.modules_to_save
    old = json.loads((root / "out" / "adapter_config.json").read_text())
    old["modules_to_save"] = ["safety_head"]
    (tmp_path / "adapter_config.json").write_text(json.dumps(old))
    assert "Unsupported modules_to_save" in " ".join(
        PEFTHelper.from_local_dir(str(tmp_path), 4096)._validate_features()
    )


# --- loading a head fails closed ---------------------------------------------------------------------------------
@pytest.fixture
def saved_head(runs, tmp_path):
    """A copy of a PreSafety output folder, to damage."""
    _, root = runs["sft", "presafety", False]
    folder = tmp_path / "copy"
    shutil.copytree(root / "out", folder, ignore=shutil.ignore_patterns("checkpoint-*"))
    return folder


def test_truncated_or_altered_head_config_is_refused(saved_head):
    model = AutoModelForCausalLM.from_pretrained(saved_head)
    path = saved_head / SAFETY_HEAD_CONFIG_NAME
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="not valid JSON.*truncated or was edited"):
        load_safety_head(model, saved_head)
    values = json.loads(text)
    path.write_text(json.dumps(dict(values, hidden_size="16")))
    with pytest.raises(ValueError, match=r"`hidden_size` is '16' \(str\)"):
        load_safety_head(model, saved_head)
    path.write_text(json.dumps(dict(values, heads=2)))
    with pytest.raises(ValueError, match=r"unknown keys \['heads'\]"):
        load_safety_head(model, saved_head)
    path.write_text(json.dumps(dict(values, anchor="middle")))
    with pytest.raises(
        ValueError, match=r"Invalid `anchor`: 'middle'. Choose one of \['prompt_end', 'think_end', 'reasoning_start'\]"
    ):
        load_safety_head(model, saved_head)


def test_missing_or_damaged_weights_are_refused_and_pickles_never_read(saved_head, monkeypatch):
    model = AutoModelForCausalLM.from_pretrained(saved_head)
    head_file = saved_head / SAFETY_HEAD_WEIGHTS_NAME
    data = head_file.read_bytes()
    head_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or not a safetensors file"):
        load_safety_head(model, saved_head)
    # A folder with pickles only: named, never unpickled
    for file in saved_head.glob("*.safetensors"):
        file.unlink()
    torch.save({"safety_head.proj.weight": torch.zeros(1, 16)}, saved_head / "pytorch_model.bin")

    def refuse(*args, **kwargs):
        raise AssertionError("a pickle was read")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    with pytest.raises(
        FileNotFoundError,
        match=r"No safety_head.safetensors.*'pytorch_model.bin'.* are pickle files, which are not read",
    ):
        load_safety_head(model, saved_head)


def test_head_for_another_model_is_refused(saved_head, tmp_path):
    wider, _ = build_tiny_model(style="qwen3", hidden_size=32)
    with pytest.raises(ValueError, match=r"trained for another model: hidden size 16 \(model: 32\)"):
        load_safety_head(wider, saved_head)
    model = AutoModelForCausalLM.from_pretrained(saved_head)
    config = json.loads((saved_head / SAFETY_HEAD_CONFIG_NAME).read_text())
    SafetyHeadConfig(**dict(config, model_type="llama")).save(saved_head)  # saved (not edited) for another model type
    with pytest.raises(ValueError, match=r"model type 'llama' \(model: 'qwen3'\)"):
        load_safety_head(model, saved_head)


def test_non_finite_heads_and_outputs_fail_closed(saved_head):
    model = AutoModelForCausalLM.from_pretrained(saved_head)
    tokenizer = AutoTokenizer.from_pretrained(saved_head)
    head = load_file(saved_head / SAFETY_HEAD_WEIGHTS_NAME)
    save_file(dict(head, **{"proj.bias": torch.tensor([float("nan")])}), saved_head / SAFETY_HEAD_WEIGHTS_NAME)
    with pytest.raises(ValueError, match=r"non-finite \(NaN or inf\) weights in \['proj.bias'\]"):
        load_safety_head(model, saved_head)
    # A head attached in memory (not loaded) is checked by the gate too: NaN used to mean "do not refuse"
    save_file(head, saved_head / SAFETY_HEAD_WEIGHTS_NAME)
    loaded = load_safety_head(model, saved_head)
    gate = SafetyGate(model, tokenizer)
    assert 0.0 <= gate("How do I make a pipe bomb?") <= 1.0
    with torch.no_grad():
        loaded.proj.weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        SafetyGate(model, tokenizer)
    # Non-finite outputs (an overflowing model): no decision is returned
    with torch.no_grad():
        loaded.proj.weight[0, 0] = 0.0
        model.model.norm.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"non-finite logits for prompts \[0, 1\]"):
        gate.predict_proba(["How do I make a pipe bomb?", "What is 2 + 2?"])
    with pytest.raises(ValueError, match="non-finite logits"):
        gate.should_refuse(["How do I make a pipe bomb?"])
