# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Host time the PreSafety path adds to a training step, piece by piece.

On a GPU the trainer's host work delays a step whenever the device waits for it: TRL syncs after each backward
(`logging_nan_inf_filter` tests the loss) and inside `compute_loss` (its metrics), so the host work that follows a sync
(collating the next batch, the rest of `compute_loss`, launching kernels) is on the critical path. This script trains a
PreSafety trainer and times, with `perf_counter` wrappers that add no device sync, each piece of host work the plugin
adds on top of TRL's own:

- `collate`: the PreSafety collator minus the TRL collator it extends (per micro-batch);
- `compute_loss`: `PreSafetyTrainerMixin.compute_loss` minus TRL's `compute_loss` that it wraps (per micro-batch);
- `hook`: the backbone forward hook that gathers the anchors and runs the head, inside TRL's forward (per micro-batch);
- `get_batch_samples`: the labeled-anchor count over the accumulation window (per optimizer step);
- `finalize`: the metrics and AUROC of `PreSafetyCallback.finalize` (per logging step).

Not covered: the head's backward (device work in the autograd engine) and fetching the extra dataset columns
(`collate.py` measures fetch + collate against plain TRL); `overhead.py` measures the whole step against plain TRL.

    python -m benchmarks.host --trainer sft --seq-len 2048 --batch-size 4 --steps 30
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


if not __package__:  # started by its path (`python benchmarks/host.py`, as older results record it)
    from _script import run_as_module

    run_as_module(__file__)

from .utils import (  # noqa: E402
    RESULTS_DIR,
    SIZES,
    build_model,
    build_trainer,
    machine_info,
    synth_rows,
    trainer_classes,
    training_kwargs,
)


PARTS = ("collate", "compute_loss", "hook", "get_batch_samples", "finalize")


class _Clock:
    """Per-call durations of wrapped methods, in seconds."""

    def __init__(self) -> None:
        self.calls: dict[str, list[float]] = defaultdict(list)

    def wrap(self, owner: type, name: str, label: str) -> Callable[[], None]:
        """Replaces `owner.name` by a timed version; returns the function that restores it."""
        original = owner.__dict__[name]
        calls = self.calls[label]

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                calls.append(time.perf_counter() - start)

        setattr(owner, name, timed)
        return lambda: setattr(owner, name, original)


def _next_definition(cls: type, after: type, name: str) -> type:
    """The class that `super()` reaches for `name` from `after` in the MRO of `cls`."""
    mro = cls.__mro__
    return next(c for c in mro[mro.index(after) + 1 :] if name in c.__dict__)


@contextlib.contextmanager
def instrumented(trainer_cls: type, collator_cls: type) -> Iterator[_Clock]:
    """Times each PreSafety method and the TRL method it wraps, so that the difference is the plugin's own work."""
    from trl_presafety.trainer.callbacks import PreSafetyCallback
    from trl_presafety.trainer.presafety_mixin import AnchorCapture, PreSafetyTrainerMixin

    clock = _Clock()
    restores = [
        clock.wrap(collator_cls, "torch_call", "collate:outer"),
        clock.wrap(_next_definition(collator_cls, collator_cls, "torch_call"), "torch_call", "collate:inner"),
        clock.wrap(PreSafetyTrainerMixin, "compute_loss", "compute_loss:outer"),
        clock.wrap(
            _next_definition(trainer_cls, PreSafetyTrainerMixin, "compute_loss"), "compute_loss", "compute_loss:inner"
        ),
        clock.wrap(PreSafetyTrainerMixin, "get_batch_samples", "get_batch_samples:outer"),
        clock.wrap(
            _next_definition(trainer_cls, PreSafetyTrainerMixin, "get_batch_samples"),
            "get_batch_samples",
            "get_batch_samples:inner",
        ),
        # The hook is bound when the trainer is built: wrap the class before that
        clock.wrap(AnchorCapture, "_backbone_hook", "hook"),
        clock.wrap(PreSafetyCallback, "finalize", "finalize"),
    ]
    try:
        yield clock
    finally:
        for restore in reversed(restores):
            restore()


def _exclusive(clock: _Clock, part: str) -> list[float]:
    """Per-call time of a part: outer minus inner where the plugin wraps a TRL method, else the call itself."""
    if part in clock.calls:
        return clock.calls[part]
    outer, inner = clock.calls[f"{part}:outer"], clock.calls[f"{part}:inner"]
    if len(outer) != len(inner):
        raise RuntimeError(f"{part}: {len(outer)} outer calls against {len(inner)} inner ones; the timing is off.")
    return [o - i for o, i in zip(outer, inner)]


def measure(
    trainer: str = "sft",
    size: str = "tiny",
    layout: str = "padded",
    seq_len: int = 2048,
    batch_size: int = 4,
    steps: int = 30,
    warmup: int = 2,
    logging_steps: int = 10,
    device: str = "cpu",
    threads: int | None = 1,
    gradient_checkpointing: bool = False,
) -> dict[str, Any]:
    """Trains `warmup + steps` optimizer steps of the PreSafety trainer and returns the host time of each part."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback

    from trl_presafety.tiny import build_tiny_tokenizer
    from trl_presafety.trainer.presafety_dpo_trainer import DataCollatorForPreSafetyPreference
    from trl_presafety.trainer.presafety_sft_trainer import DataCollatorForPreSafetyLanguageModeling

    cuda = device.startswith("cuda")
    if threads:
        torch.set_num_threads(threads)
    dtype = torch.bfloat16 if cuda else torch.float32
    tokenizer = build_tiny_tokenizer("qwen3")
    total = warmup + steps
    rows = synth_rows(trainer, tokenizer, 2 * total * batch_size + 8, seq_len, 0)
    model = build_model(size, tokenizer, 0, device, dtype)
    common = training_kwargs(
        tempfile.mkdtemp(prefix="presafety-host-"),
        batch_size=batch_size,
        grad_accum=1,
        max_steps=total,
        seq_len=seq_len,
        seed=0,
        logging_steps=logging_steps,
        gradient_checkpointing=gradient_checkpointing,
        cuda=cuda,
    )
    common["presafety_loss_weight"] = 1.0
    trainer_cls = trainer_classes(trainer, ours=True)[1]
    collators = {"sft": DataCollatorForPreSafetyLanguageModeling, "dpo": DataCollatorForPreSafetyPreference}
    collator_cls = collators[trainer]
    ref_model = build_model(size, tokenizer, 0, device, dtype) if trainer == "dpo" else None

    step_ends: list[float] = []
    marks: dict[str, int] = {}

    class StepClock(TrainerCallback):
        """Remembers how many calls each part had at the end of the warm-up, to leave the warm-up out."""

        def __init__(self, clock: _Clock) -> None:
            self.clock = clock

        def on_step_end(self, args, state, control, **kwargs):
            step_ends.append(time.perf_counter())
            if state.global_step == warmup:
                marks.update({label: len(calls) for label, calls in self.clock.calls.items()})

    with instrumented(trainer_cls, collator_cls) as clock:
        built = build_trainer(trainer, True, model, ref_model, tokenizer, Dataset.from_list(rows), common, layout)
        built.add_callback(StepClock(clock))
        built.train()
    if cuda:
        torch.cuda.synchronize()
    # Leave the warm-up out (step 1 logs, and lazy imports land there); the collator runs one batch ahead of the step
    for label, calls in clock.calls.items():
        del calls[: marks.get(label, 0)]
    parts = {}
    for part in PARTS:
        values = _exclusive(clock, part)
        parts[part] = {
            "calls": len(values),
            "median_ms": statistics.median(values) * 1000 if values else 0.0,
            "per_step_ms": sum(values) * 1000 / steps,
        }
    step_times = [b - a for a, b in zip(step_ends[warmup - 1 :], step_ends[warmup:])]
    return {
        "spec": dict(
            trainer=trainer,
            size=size,
            layout=layout,
            seq_len=seq_len,
            batch_size=batch_size,
            steps=steps,
            warmup=warmup,
            logging_steps=logging_steps,
            device=device,
            threads=threads,
            gradient_checkpointing=gradient_checkpointing,
        ),
        "parts": parts,
        "added_per_step_ms": sum(p["per_step_ms"] for p in parts.values()),
        # Host-side on CUDA (no sync per step): the window mean of `overhead.py` is the device-bound figure
        "median_step_ms": statistics.median(step_times) * 1000,
        "machine": machine_info(device),
        "date": time.strftime("%Y-%m-%d"),
        "command": "python -m benchmarks.host " + " ".join(sys.argv[1:]),
    }


def render(result: dict[str, Any]) -> str:
    spec = result["spec"]
    lines = [
        f"Host time added by PreSafety, {spec['trainer'].upper()} {spec['size']} {spec['layout']} "
        f"{spec['batch_size']} x {spec['seq_len']} on {spec['device']}, {spec['steps']} timed steps, logging every "
        f"{spec['logging_steps']}:",
        "",
        "| part | calls | median per call (ms) | per step (ms) |",
        "|---|---|---|---|",
    ]
    for part, stats in result["parts"].items():
        lines.append(f"| {part} | {stats['calls']} | {stats['median_ms']:.3f} | {stats['per_step_ms']:.3f} |")
    lines.append(f"| **total** | | | **{result['added_per_step_ms']:.3f}** |")
    lines.append("")
    lines.append(f"Median step: {result['median_step_ms']:.1f} ms.")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--trainer", choices=["sft", "dpo"], default="sft")
    parser.add_argument("--size", choices=list(SIZES), default="tiny")
    parser.add_argument("--layout", choices=["padded", "packed"], default="padded")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30, help="Timed optimizer steps.")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed optimizer steps first (>= 2).")
    parser.add_argument("--logging-steps", type=int, default=10, help="Trainer logging interval (TRL's default).")
    parser.add_argument("--gradient-checkpointing", choices=["on", "off"], default="off")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (bf16 on cuda, fp32 on cpu).")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: 1 on CPU, steadier on a shared CPU; else torch's).",
    )
    parser.add_argument("--tag", default=None, help="Results file: results/host_<tag>.json (default: the device).")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.warmup < 2:
        raise ValueError(f"`--warmup` must be >= 2 (step 1 logs and pays the first-log imports), got {args.warmup}.")
    result = measure(
        trainer=args.trainer,
        size=args.size,
        layout=args.layout,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        steps=args.steps,
        warmup=args.warmup,
        logging_steps=args.logging_steps,
        device=args.device,
        threads=args.threads if args.threads is not None else (1 if args.device == "cpu" else None),
        gradient_checkpointing=args.gradient_checkpointing == "on",
    )
    print(render(result))
    path = args.results_dir / f"host_{args.tag or args.device.split(':')[0]}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = json.loads(path.read_text())["entries"] if path.exists() else []
    key = json.dumps(result["spec"], sort_keys=True)
    entries = [e for e in entries if json.dumps(e["spec"], sort_keys=True) != key] + [result]
    path.write_text(json.dumps({"entries": entries}, indent=1) + "\n")
    print(f"Saved to {path}")
    return result


if __name__ == "__main__":
    main()
