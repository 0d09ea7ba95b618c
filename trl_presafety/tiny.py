# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Tiny reasoning models built locally, for the demo, the tests and the benchmarks: no model hub needed.

A small byte-level BPE tokenizer (trained on the bundled data, shipped in `assets/tiny_tokenizer`) carries the think
tags and the special tokens of both chat-template families the package supports:

- `"qwen3"`: the generation prompt stops before `<think>`; the completion opens the think block; the template has a
  thinking switch (`enable_thinking=False`).
- `"r1"`: the generation prompt ends with `<think>\\n` (DeepSeek-R1 distills); no switch.

The model is a random-init `Qwen3ForCausalLM` built from a config and saved with `save_pretrained`, so that code under
test loads it with the real `from_pretrained`.

    python -m trl_presafety.tiny --output_dir runs/tiny-qwen3 --style qwen3
    python -m trl_presafety.tiny --retrain_tokenizer  # rewrites assets/tiny_tokenizer from the bundled data
"""

import argparse
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM


ASSETS_DIR = Path(__file__).parent / "assets"
TEMPLATES_DIR = Path(__file__).parent / "templates"
TOKENIZER_FILE = ASSETS_DIR / "tiny_tokenizer" / "tokenizer.json"
TINY_DATA_DIR = Path(__file__).parent / "data" / "tiny"

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<think>",
    "</think>",
    "<｜begin▁of▁sentence｜>",
    "<｜end▁of▁sentence｜>",
    "<｜User｜>",
    "<｜Assistant｜>",
]
STYLES = {
    "qwen3": {"template": "qwen3_style.jinja", "eos_token": "<|im_end|>", "bos_token": None},
    "r1": {"template": "r1_style.jinja", "eos_token": "<｜end▁of▁sentence｜>", "bos_token": "<｜begin▁of▁sentence｜>"},
}


def load_tiny_rows(kind: str, n: int | None = None) -> list[dict]:
    """The first `n` rows (all by default) of the bundled tiny set `kind`, a folder of `TINY_DATA_DIR`: `"sft"`
    (conversational prompt-completion with `safety_label`), `"dpo"` (prompt/chosen/rejected), `"eval"`, `"rl"`, ..."""
    import json

    path = TINY_DATA_DIR / kind / "train.jsonl"
    if not path.is_file():
        kinds = sorted(p.parent.name for p in TINY_DATA_DIR.glob("*/train.jsonl"))
        raise ValueError(f"No bundled tiny set {kind!r} ({path} does not exist). Choose one of {kinds}.")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return rows[:n] if n is not None else rows


def chat_template(style: str) -> str:
    """The Jinja chat template of a template family (`"qwen3"` or `"r1"`)."""
    if style not in STYLES:
        raise ValueError(f"Unknown chat template style {style!r}. Choose one of {sorted(STYLES)}.")
    return (TEMPLATES_DIR / STYLES[style]["template"]).read_text(encoding="utf-8")


def train_byte_level_bpe(texts: list[str], vocab_size: int, pre_tokenizer: Any = None) -> Any:
    """A byte-level BPE (`tokenizers.Tokenizer`) trained on `texts`, with the tiny models' special tokens and the think
    tags. `pre_tokenizer` defaults to GPT-2's byte-level split (the bundled tokenizer's)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizer or pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    # Like Qwen3's and R1's tokenizers, the think tags are added tokens that are not special: decoding with
    # `skip_special_tokens=True` (as TRL's GRPO does) keeps them
    tokenizer.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in ("<think>", "</think>")])
    return tokenizer


def train_tiny_tokenizer(vocab_size: int = 1024, output_file: str | Path = TOKENIZER_FILE) -> Path:
    """(Re)trains the bundled byte-level BPE on the bundled data (`--retrain_tokenizer`). The result is committed and
    shipped; retraining reproduces it byte for byte, which the tests check, so the asset always has its recipe."""
    import json

    texts = []
    for path in sorted(p for name in ("sft", "dpo", "eval") for p in (TINY_DATA_DIR / name).glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            for value in row.values():
                if isinstance(value, str):
                    texts.append(value)
                elif isinstance(value, list):
                    texts.extend(m["content"] for m in value if isinstance(m, dict) and "content" in m)
    tokenizer = train_byte_level_bpe(texts, vocab_size)
    output_file = Path(output_file)
    output_file.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(output_file))
    return output_file


def build_tiny_tokenizer(style: str = "qwen3") -> PreTrainedTokenizerFast:
    """The bundled tiny tokenizer with the chat template and special tokens of `style`."""
    template = chat_template(style)
    spec = STYLES[style]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(TOKENIZER_FILE),
        eos_token=spec["eos_token"],
        bos_token=spec["bos_token"],
        pad_token="<|endoftext|>",
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in {"<think>", "</think>"}],
    )
    tokenizer.chat_template = template
    return tokenizer


def build_tiny_model(
    style: str = "qwen3",
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    output_dir: str | Path | None = None,
) -> tuple[Qwen3ForCausalLM, PreTrainedTokenizerFast]:
    """A random-init Qwen3 causal LM sized by the arguments, with the tiny tokenizer of `style`.

    With `output_dir`, both are saved there (`save_pretrained`) so that they load with `from_pretrained`.
    """
    tokenizer = build_tiny_tokenizer(style)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        head_dim=hidden_size // num_attention_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # A private generator keeps the caller's global RNG untouched
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config).to(dtype)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if output_dir is not None:
        model.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
    return model, tokenizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build a tiny random-init reasoning model with think tags.")
    parser.add_argument("--output_dir", help="Where the model and tokenizer are saved (required to build a model).")
    parser.add_argument("--style", default="qwen3", choices=sorted(STYLES))
    parser.add_argument("--hidden_size", type=int, default=32)
    parser.add_argument("--num_hidden_layers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--retrain_tokenizer",
        nargs="?",
        const=str(TOKENIZER_FILE),
        metavar="FILE",
        help="Instead of building a model, retrain the tiny tokenizer on the bundled data into FILE (default: the "
        "shipped asset, which it reproduces byte for byte).",
    )
    args = parser.parse_args(argv)
    if args.retrain_tokenizer is not None:
        print(f"Saved the tiny tokenizer to {train_tiny_tokenizer(output_file=args.retrain_tokenizer)}")
        return
    if args.output_dir is None:
        parser.error("the following arguments are required: --output_dir")
    build_tiny_model(
        style=args.style,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_hidden_layers,
        seed=args.seed,
        output_dir=args.output_dir,
    )
    print(f"Saved a tiny {args.style}-style model to {args.output_dir}")


if __name__ == "__main__":
    main()
