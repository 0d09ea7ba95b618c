# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Host cost of fetching and collating a batch: plain `SFTTrainer` against `PreSafetySFTTrainer`, same data.

TRL's training loop waits for each backward to finish (`logging_nan_inf_filter` tests the loss), so fetching and
collating the next batch is on the critical path of every step: what this script measures is paid per step on a GPU.

    python -m benchmarks.collate --layout padded --seq-len 2048 --batch-size 4
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time


if not __package__:  # started by its path (`python benchmarks/collate.py`)
    from _script import run_as_module

    run_as_module(__file__)

from .utils import build_model, build_trainer, synth_rows, training_kwargs  # noqa: E402


def measure(layout: str, seq_len: int, batch_size: int, steps: int, passes: int) -> dict[str, float]:
    import torch
    from datasets import Dataset

    from trl_presafety.tiny import build_tiny_tokenizer

    torch.set_num_threads(1)
    tokenizer = build_tiny_tokenizer("qwen3")
    rows = synth_rows("sft", tokenizer, 2 * steps * batch_size + 8, seq_len, 0)
    model = build_model("tiny", tokenizer, 0, "cpu", torch.float32)
    results = {}
    for name, ours in (("plain", False), ("presafety", True)):
        common = training_kwargs(
            tempfile.mkdtemp(prefix="presafety-collate-"),
            batch_size=batch_size,
            grad_accum=1,
            max_steps=steps,
            seq_len=seq_len,
            seed=0,
            logging_steps=10,
            gradient_checkpointing=False,
            cuda=False,
        )
        trainer = build_trainer("sft", ours, model, None, tokenizer, Dataset.from_list(rows), common, layout)
        loader = trainer.get_train_dataloader()
        per_batch = []
        for _ in range(passes):
            start, count = time.perf_counter(), 0
            for _batch in loader:
                count += 1
            per_batch.append((time.perf_counter() - start) / count * 1000)
        results[name] = statistics.median(per_batch)
    return results


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layout", choices=["padded", "packed"], default="padded")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=22, help="Batches per pass (the data holds about twice as many).")
    parser.add_argument("--passes", type=int, default=3, help="Passes over the data loader; the median is reported.")
    args = parser.parse_args(argv)
    results = measure(args.layout, args.seq_len, args.batch_size, args.steps, args.passes)
    print(
        f"fetch + collate, {args.layout} {args.batch_size} x {args.seq_len}, ms per batch (median of {args.passes} "
        f"passes): plain {results['plain']:.2f}, presafety {results['presafety']:.2f}, "
        f"added {results['presafety'] - results['plain']:+.2f}"
    )
    return results


if __name__ == "__main__":
    main()
