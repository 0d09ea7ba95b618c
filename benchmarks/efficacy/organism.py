# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The model organism: a small Qwen3 (architecture and thinking-switch chat template) trained from scratch here, with
the safety gap of reasoning models built in.

Trained with plain TRL `SFTTrainer` on the `organism` split (`data.organism_rows`): with thinking off it refuses
harmful requests and answers benign ones; with thinking on it plans an answer for every request (harmful ones
included, sometimes after noting the risk) and solves arithmetic word problems step by step. Its tokenizer is a
byte-level BPE trained on the same rows, with Qwen's pre-tokenizer split (digits one by one).

    python -m benchmarks.efficacy.organism --output_dir runs/efficacy/organism
"""

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from trl_presafety.reasoning import EMPTY_THINK_BLOCK

from .data import SPLITS_DIR, load_splits, organism_rows, write_jsonl


# Sized so that training takes a few minutes on 2 CPU cores (see RESULTS.md for the measured time)
MODEL_DEFAULTS = {
    "vocab_size": 1024,
    "hidden_size": 96,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 256,
}
TRAIN_DEFAULTS = {
    "max_steps": 1200,
    "per_device_train_batch_size": 16,
    "learning_rate": 3e-3,
    "warmup_steps": 50,
    "lr_scheduler_type": "cosine",
    "weight_decay": 0.01,
    "max_length": 192,
}


# The pre-tokenizer pattern of Qwen2/Qwen3's tokenizer.json
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _texts(rows: list[dict[str, Any]]) -> list[str]:
    return [row[key] for row in rows for key in ("prompt", "completion")]


def render_rows(rows: list[dict[str, Any]], tokenizer: Any) -> list[dict[str, Any]]:
    """Chat rows -> text prompt/completion, as the evaluation builds its prompts.

    Thinking off puts the empty think block in the *prompt* (what `enable_thinking=False` prefills), so the loss never
    teaches the model to close its think block at once by itself: with thinking on, it always reasons. (Trained as a
    conversational completion, the empty block would be learned as one of two ways to answer a thinking-on prompt.)
    """
    out = []
    for row in rows:
        content = row["completion"][0]["content"]
        thinking = not content.startswith(EMPTY_THINK_BLOCK)
        prompt = tokenizer.apply_chat_template(
            row["prompt"], add_generation_prompt=True, tokenize=False, enable_thinking=thinking
        )
        completion = content if thinking else content[len(EMPTY_THINK_BLOCK) :]
        out.append({**row, "prompt": prompt, "completion": completion + tokenizer.eos_token})
    return out


def train_tokenizer(texts: list[str], output_dir: str | Path, vocab_size: int = 1024) -> Any:
    """A byte-level BPE on `texts` with the special tokens and chat template of the tiny Qwen3-style models, saved to
    `output_dir`; digits are split one by one (as Qwen's tokenizers do)."""
    from tokenizers import Regex, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from trl_presafety.tiny import SPECIAL_TOKENS, STYLES, chat_template, train_byte_level_bpe

    # Qwen2/3's split: single digits, and a run of newlines is one piece whatever follows. (GPT-2's split, as in
    # `ByteLevel(use_regex=True)`, cuts "\n\n" into "\n" + "\n" before a word but keeps it whole at the end of a
    # prompt, so a model trained on prompt + completion would meet other tokens at generation time.)
    split = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer = train_byte_level_bpe(texts, vocab_size, pre_tokenizer=split)
    spec = STYLES["qwen3"]
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=spec["eos_token"],
        pad_token="<|endoftext|>",
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in {"<think>", "</think>"}],
    )
    fast.chat_template = chat_template("qwen3")
    fast.save_pretrained(output_dir)
    return fast


def _template_only_tokenizer() -> Any:
    """The bundled tiny tokenizer: only its chat template and EOS are used, to render texts before training ours."""
    from trl_presafety.tiny import build_tiny_tokenizer

    return build_tiny_tokenizer("qwen3")


def _exact_digest(model: Any) -> str:
    """sha256 of every tensor's bytes, in name order: bit-exact (the package's weight fingerprint samples values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode("utf-8"))
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def build_organism(
    output_dir: str | Path,
    splits_dir: str | Path = SPLITS_DIR,
    seed: int = 0,
    threads: int | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Trains the organism from scratch into `output_dir` (model, tokenizer, `organism_info.json`)."""
    import torch
    from datasets import Dataset
    from transformers import Qwen3Config, Qwen3ForCausalLM
    from trl import SFTConfig, SFTTrainer

    if threads:
        torch.set_num_threads(threads)
    model_kwargs = {k: overrides.pop(k, v) for k, v in MODEL_DEFAULTS.items()}
    train_kwargs = {k: overrides.pop(k, v) for k, v in TRAIN_DEFAULTS.items()}
    max_rows = overrides.pop("max_rows", None)
    if overrides:
        raise ValueError(
            f"Unknown organism setting(s) {sorted(overrides)}. Use keys of MODEL_DEFAULTS {sorted(MODEL_DEFAULTS)} "
            f"or TRAIN_DEFAULTS {sorted(TRAIN_DEFAULTS)}, or `max_rows`."
        )
    output_dir = Path(output_dir)
    started = time.time()
    chat_rows = organism_rows(load_splits(splits_dir)["organism"], seed=seed)[:max_rows]
    # The tokenizer learns its merges from the rendered texts (template included); then the rows are rendered with it
    tokenizer = train_tokenizer(
        _texts(render_rows(chat_rows, _template_only_tokenizer())), output_dir, model_kwargs.pop("vocab_size")
    )
    rows = render_rows(chat_rows, tokenizer)
    write_jsonl(output_dir / "train_data" / "train.jsonl", rows)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        head_dim=model_kwargs["hidden_size"] // model_kwargs["num_attention_heads"],
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **model_kwargs,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    initial_weights = _exact_digest(model)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    args = SFTConfig(
        output_dir=str(output_dir / "trainer"),
        seed=seed,
        bf16=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=50,
        gradient_checkpointing=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        **train_kwargs,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    result = trainer.train()
    trainer.save_model(str(output_dir))
    tokenizer.save_pretrained(str(output_dir))
    info = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "model": {**model_kwargs, "vocab_size": len(tokenizer)},
        "training": {**train_kwargs, "seed": seed, "rows": len(rows), "threads": torch.get_num_threads()},
        "final_train_loss": result.training_loss,
        # Where two builds part, if they do: the same tokenizer, data and initial weights, then the same training
        # log step by step, leave only the arithmetic (the CPU's kernels) to differ
        "fingerprints": {
            "tokenizer": hashlib.sha256((output_dir / "tokenizer.json").read_bytes()).hexdigest(),
            "train_data": hashlib.sha256((output_dir / "train_data" / "train.jsonl").read_bytes()).hexdigest(),
            "initial_weights": initial_weights,
            "final_weights": _exact_digest(model),
        },
        "log": [e for e in trainer.state.log_history if "loss" in e],
        "seconds": round(time.time() - started, 1),
        "torch_threads": torch.get_num_threads(),
    }
    (output_dir / "organism_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the efficacy study's model organism from scratch.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--splits_dir", default=str(SPLITS_DIR))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for a model this small)")
    parser.add_argument("--max_steps", type=int, default=TRAIN_DEFAULTS["max_steps"])
    args = parser.parse_args(argv)
    info = build_organism(
        args.output_dir, args.splits_dir, seed=args.seed, threads=args.threads, max_steps=args.max_steps
    )
    print(f"Organism: {info['parameters']:,} parameters, loss {info['final_train_loss']:.3f}, {info['seconds']} s")


if __name__ == "__main__":
    main()
