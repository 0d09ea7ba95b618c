# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
import importlib.util
import os

import pytest
import torch


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

require_torch_accelerator = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA accelerator")
require_deepspeed = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="needs deepspeed")
require_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vllm")

# CPU settings for every trainer config built in tests
CPU_TRAINING_KWARGS = {
    "bf16": False,
    "use_cpu": True,
    "report_to": "none",
    "save_strategy": "no",
    "disable_tqdm": True,
    "dataloader_num_workers": 0,
}


def load_tiny_sft_rows(n: int | None = None) -> list[dict]:
    """Rows of the bundled tiny SFT set (conversational prompt-completion with `safety_label`)."""
    import json

    from trl_presafety.tiny import TINY_DATA_DIR

    rows = [json.loads(line) for line in (TINY_DATA_DIR / "sft" / "train.jsonl").read_text().splitlines()]
    return rows[:n] if n is not None else rows


def load_tiny_dpo_rows(n: int | None = None) -> list[dict]:
    import json

    from trl_presafety.tiny import TINY_DATA_DIR

    rows = [json.loads(line) for line in (TINY_DATA_DIR / "dpo" / "train.jsonl").read_text().splitlines()]
    return rows[:n] if n is not None else rows


def to_messages(rows: list[dict]) -> list[dict]:
    """Conversational prompt-completion rows as conversational language-modeling ("messages") rows."""
    return [{"messages": r["prompt"] + r["completion"], "safety_label": r["safety_label"]} for r in rows]


def to_standard(rows: list[dict], tokenizer) -> list[dict]:
    """Conversational prompt-completion rows as standard (text) prompt-completion rows, rendered by the template."""
    out = []
    for r in rows:
        prompt = tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=False)
        out.append({"prompt": prompt, "completion": full[len(prompt) :], "safety_label": r["safety_label"]})
    return out


def params_snapshot(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def config_kwargs(tmp_path, **kwargs) -> dict:
    """Keyword arguments of a small CPU trainer config (SFT or DPO) writing under `tmp_path`."""
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=1e-2,
        logging_steps=1,
        gradient_checkpointing=False,
        max_length=256,
        seed=0,
        **CPU_TRAINING_KWARGS,
    )
    defaults.update(kwargs)
    return defaults


def safetensors_keys(folder) -> set[str]:
    """Every tensor name in the `*.safetensors` files of `folder`."""
    from pathlib import Path

    from safetensors import safe_open

    keys = set()
    for file in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            keys.update(f.keys())
    return keys
