# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""What the benchmarks share: model shapes, synthetic data, the trainers they time, and the machine they ran on.

Every benchmark trains the same random-init Qwen3 shapes (`SIZES`) on the same synthetic data (`synth_rows`: the
bundled tiny prompts and labels, think blocks lengthened to the benchmark length), with the trainer of `build_trainer`
(plain TRL or PreSafety, SFT or DPO) configured by `training_kwargs`; `machine_info` records where a figure was taken.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
from pathlib import Path
from typing import Any


BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

QWEN3_VOCAB = 151936
# Published Qwen3 configs (Qwen/Qwen3-0.6B, Qwen/Qwen3-1.7B config.json): random init, no weights needed. "tiny" and
# "small" are for quick runs; "0.6b-4l" keeps the 0.6B width and vocabulary with 4 of its 28 layers, which fits a CPU.
QWEN3_0_6B = dict(
    hidden_size=1024,
    intermediate_size=3072,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    vocab_size=QWEN3_VOCAB,
)
QWEN3_1_7B = dict(QWEN3_0_6B, hidden_size=2048, intermediate_size=6144)
SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        vocab_size=1024,
    ),
    "small": dict(
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        vocab_size=QWEN3_VOCAB,
    ),
    "0.6b-4l": dict(QWEN3_0_6B, num_hidden_layers=4),
    "0.6b": QWEN3_0_6B,
    "1.7b": QWEN3_1_7B,
}
TRAINERS = ("sft", "dpo")
LAYOUTS = ("padded", "packed")
IMPLS = ("plain", "presafety")  # the two runs of a pair: plain TRL and the PreSafety trainer


# --- data ------------------------------------------------------------------------------------------------------------
def _filler_sentences(rows: list[dict[str, Any]]) -> list[str]:
    """Sentences from the bundled reasoning traces, used to lengthen the think blocks to benchmark lengths."""
    sentences = set()
    for row in rows:
        for key in ("completion", "chosen", "rejected"):
            for message in row.get(key, []):
                think = message["content"].split("</think>")[0].replace("<think>", "")
                sentences.update(s.strip() + "." for s in think.split(".") if len(s.strip()) > 10)
    return sorted(sentences)


def _long_think(
    tokenizer: Any, answer: str, fillers: list[str], n_tokens: int, rng: random.Random, lengths: dict[str, int]
) -> str:
    """An assistant message `<think>...</think>answer` of about `n_tokens` tokens."""
    parts, total = [], len(tokenizer(answer, add_special_tokens=False)["input_ids"]) + 6
    while total < n_tokens:
        sentence = rng.choice(fillers)
        if sentence not in lengths:
            lengths[sentence] = len(tokenizer(" " + sentence, add_special_tokens=False)["input_ids"])
        parts.append(sentence)
        total += lengths[sentence]
    return "<think>\n" + " ".join(parts) + "\n</think>\n\n" + answer


def synth_rows(trainer: str, tokenizer: Any, n: int, seq_len: int, seed: int) -> list[dict[str, Any]]:
    """`n` conversational rows with a `safety_label`, lengths spread over [seq_len / 2, seq_len] (so padding exists).

    The prompts, labels and answers come from the bundled tiny data; the think blocks are lengthened with sentences of
    the bundled traces. Deterministic in `seed`, so the plain and PreSafety runs see the same data.
    """
    from trl_presafety.tiny import load_tiny_rows

    base = load_tiny_rows(trainer)
    fillers = _filler_sentences(base)
    rng = random.Random(seed)
    lengths: dict[str, int] = {}
    rows = []
    for i in range(n):
        row = base[i % len(base)]
        target = rng.randint(seq_len // 2, seq_len)
        prompt_len = len(tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True))
        if trainer == "sft":
            answer = row["completion"][0]["content"].split("</think>")[-1].strip()
            content = _long_think(tokenizer, answer, fillers, target - prompt_len, rng, lengths)
            rows.append(
                {
                    "prompt": row["prompt"],
                    "completion": [{"role": "assistant", "content": content}],
                    "safety_label": row["safety_label"],
                }
            )
        else:
            out = {"prompt": row["prompt"], "safety_label": row["safety_label"]}
            for key in ("chosen", "rejected"):
                answer = row[key][0]["content"].split("</think>")[-1].strip()
                content = _long_think(tokenizer, answer, fillers, target - prompt_len, rng, lengths)
                out[key] = [{"role": "assistant", "content": content}]
            rows.append(out)
    return rows


# --- models and trainers ---------------------------------------------------------------------------------------------
def build_model(size: str, tokenizer: Any, seed: int, device: str, dtype: Any) -> Any:
    """A random-init Qwen3ForCausalLM of the shape `size`, built directly on `device` in `dtype`."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    shape = dict(SIZES[size])
    shape["vocab_size"] = max(shape["vocab_size"], len(tokenizer))  # the tiny tokenizer's ids are < 1024
    config = Qwen3Config(
        **shape,
        max_position_embeddings=40960,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    # Built on the device in its dtype: a CPU fp32 init of 1.7B parameters takes far longer than the timed steps
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen3ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def training_kwargs(
    output_dir: str,
    batch_size: int,
    grad_accum: int,
    max_steps: int,
    seq_len: int,
    seed: int,
    logging_steps: int,
    gradient_checkpointing: bool,
    cuda: bool,
) -> dict[str, Any]:
    """The config fields every benchmark run shares (plain and PreSafety, SFT and DPO)."""
    return dict(
        output_dir=output_dir,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        max_steps=max_steps,
        learning_rate=1e-5,
        lr_scheduler_type="constant",
        gradient_checkpointing=gradient_checkpointing,
        max_length=seq_len,
        seed=seed,
        logging_steps=logging_steps,
        # The first log's lazy imports (e.g. scikit-learn for the AUROC) fall in warm-up step 2, not in the timing
        logging_first_step=True,
        bf16=cuda,
        use_cpu=not cuda,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def trainer_classes(trainer: str, ours: bool) -> tuple[type, type]:
    """(config class, trainer class) of a benchmark run: plain TRL or PreSafety, SFT or DPO."""
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from trl_presafety import PreSafetyDPOConfig, PreSafetyDPOTrainer, PreSafetySFTConfig, PreSafetySFTTrainer

    classes = {
        ("sft", False): (SFTConfig, SFTTrainer),
        ("sft", True): (PreSafetySFTConfig, PreSafetySFTTrainer),
        ("dpo", False): (DPOConfig, DPOTrainer),
        ("dpo", True): (PreSafetyDPOConfig, PreSafetyDPOTrainer),
    }
    if (trainer, ours) not in classes:
        raise ValueError(f"`trainer` must be one of {list(TRAINERS)}, got {trainer!r}.")
    return classes[trainer, ours]


def build_trainer(
    trainer: str,
    ours: bool,
    model: Any,
    ref_model: Any,
    tokenizer: Any,
    dataset: Any,
    common: dict[str, Any],
    layout: str,
) -> Any:
    """The trainer of a benchmark run, built from `training_kwargs` (plus `presafety_*` fields for ours)."""
    config_cls, trainer_cls = trainer_classes(trainer, ours)
    if trainer == "sft":
        args = config_cls(**common, packing=layout == "packed")
        return trainer_cls(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    if layout != "padded":
        raise ValueError(f"DPO runs padded only (TRL 1.16 disables DPO padding-free); got layout={layout!r}.")
    return trainer_cls(
        model=model, ref_model=ref_model, args=config_cls(**common), train_dataset=dataset, processing_class=tokenizer
    )


# --- machine ---------------------------------------------------------------------------------------------------------
def machine_info(device: str) -> dict[str, Any]:
    import torch
    import transformers
    import trl

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
        cpu = names[0] if names else cpu
    try:
        import psutil

        memory_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        memory_gb = None
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "memory_gb": memory_gb,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "device": device,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info
