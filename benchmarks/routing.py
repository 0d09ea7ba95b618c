# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""What routed generation costs against plain generation, on one random-init model (no download).

For a batch of prompts of `--prompt_tokens` tokens, four ways to answer, each repeated `--repeats` times in rotating
order (so a drift in machine load hits all), greedy, `--new_tokens` new tokens (no stop token: the random model never
emits it, and every run generates the same number of tokens):

- `plain`: `generate_responses_from_texts` on the thinking prompts (no gate at all);
- `routed, none routed`: `RoutedGenerator` at threshold 1 (the gate reads the generation's own prefill);
- `routed, all no_think`: `RoutedGenerator` at threshold 0 (every prompt continues with the thinking-off block);
- `gate request + plain`: `SafetyGate.predict_proba` (its own forward), then plain generation of the same prompts.

For each: the backbone's forwards and the tokens it processed (counted by a hook, padding included), and the median
wall time. The tokens are exact; the times depend on the machine (on a shared CPU they are noisy: look at the ratio).

    python -m benchmarks.routing                                   # CPU defaults: ~1 min
    python -m benchmarks.routing --hidden_size 512 --layers 8 --prompt_tokens 1024 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time


if not __package__:  # started by its path
    from _script import run_as_module

    run_as_module(__file__)


def main(argv: list[str] | None = None) -> list[dict]:
    import torch

    from trl_presafety import RoutedGenerator, SafetyGate, SafetyHeadConfig, attach_safety_head
    from trl_presafety.generation import generate_responses_from_texts
    from trl_presafety.modeling import get_base_causal_lm
    from trl_presafety.reasoning import build_prompt
    from trl_presafety.tiny import build_tiny_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden_size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--prompt_tokens", type=int, default=512)
    parser.add_argument("--new_tokens", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--style", default="qwen3", choices=["qwen3", "r1"])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    model, tokenizer = build_tiny_model(
        args.style, hidden_size=args.hidden_size, num_hidden_layers=args.layers, num_attention_heads=4
    )
    model.to(args.device).eval()
    attach_safety_head(model, SafetyHeadConfig(hidden_size=args.hidden_size, model_type="qwen3"), seed=0)
    # Prompts of about `prompt_tokens` tokens, each different
    words = "the model reads a long request about chemistry history and safety before it answers".split()
    prompts = []
    for i in range(args.batch_size):
        text, n = f"Request {i}:", 0
        while n < args.prompt_tokens:
            text += " " + words[(n + i) % len(words)]
            n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        prompts.append(text)
    thinking = [build_prompt(tokenizer, p, thinking=True) for p in prompts]
    settings = {"max_new_tokens": args.new_tokens, "backend": "transformers", "batch_size": args.batch_size}
    # No stop id the random model could emit: every way generates exactly `new_tokens` tokens
    model.generation_config.eos_token_id = None
    tokenizer.eos_token = None

    counts = {"calls": 0, "tokens": 0}

    def count(module, args_, kwargs):
        ids = kwargs.get("input_ids", args_[0] if args_ else None)
        counts["calls"] += 1
        counts["tokens"] += ids.numel()

    handle = get_base_causal_lm(model).get_decoder().register_forward_pre_hook(count, with_kwargs=True)
    router = RoutedGenerator(model, tokenizer, policy="no_think", threshold=0.5, batch_size=args.batch_size)

    def routed(threshold: float):
        def run():
            router.threshold = threshold
            return router.generate(prompts, **settings)

        return run

    def gate_then_plain():
        gate = SafetyGate(model, tokenizer, threshold=0.5, batch_size=args.batch_size)
        try:
            gate.predict_proba(prompts)
        finally:
            gate.close()
        return generate_responses_from_texts(model, tokenizer, thinking, show_progress=False, **settings)

    ways = {
        "plain": lambda: generate_responses_from_texts(model, tokenizer, thinking, show_progress=False, **settings),
        "routed, none routed": routed(1.0),
        "routed, all no_think": routed(0.0),
        "gate request + plain": gate_then_plain,
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    tallies: dict[str, dict[str, int]] = {}
    names = list(ways)
    for repeat in range(args.repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            counts.update(calls=0, tokens=0)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            ways[name]()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
            tallies[name] = dict(counts)
    handle.remove()
    router.close()

    base = statistics.median(times["plain"])
    rows = []
    print(
        f"{args.batch_size} prompts of ~{args.prompt_tokens} tokens, {args.new_tokens} new tokens, hidden "
        f"{args.hidden_size}, {args.layers} layers, {args.device}, median of {args.repeats}\n"
    )
    print("| way | backbone forwards | tokens processed (padding included) | median time (s) | time / plain |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        median = statistics.median(times[name])
        row = {"way": name, **tallies[name], "seconds": median, "ratio": median / base}
        rows.append(row)
        print(f"| {name} | {row['calls']} | {row['tokens']} | {median:.3f} | {row['ratio']:.2f} |")
    return rows


if __name__ == "__main__":
    main()
