# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""One timed training run of `overhead.py`: the spec shared by the two runs of a pair, the run, and its worker process.

`run_once` trains in this process; `run_in_subprocess` runs it in a fresh interpreter (`python -m benchmarks.timed_run
SPEC_JSON`), so that the CPU peak RSS it reports is its own and no run warms another's caches.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .utils import REPO_DIR, build_model, build_trainer, synth_rows, training_kwargs


WORKER_PREFIX = "OVERHEAD_RESULT "


@dataclass
class RunSpec:
    """One training run: everything that must be identical between the plain and the PreSafety run of a pair."""

    trainer: str
    impl: str
    size: str
    gradient_checkpointing: bool
    layout: str
    batch_size: int
    seq_len: int
    steps: int
    warmup: int
    device: str
    seed: int = 0
    grad_accum: int = 1
    presafety_loss_weight: float = 1.0
    logging_steps: int = 10
    threads: int | None = None
    patch: str | None = None

    @property
    def key(self) -> str:
        """The pair this run belongs to (the impl left out)."""
        gc_tag = "gc" if self.gradient_checkpointing else "nogc"
        key = (
            f"{self.device}/{self.trainer}/{self.size}/{self.layout}/{gc_tag}/b{self.batch_size}x{self.seq_len}"
            f"/ga{self.grad_accum}"
        )
        return key + (f"/patch={Path(self.patch).stem}" if self.patch else "")


class _Sampler:
    """Peak RSS of this process while a block runs (sampled every 5 ms; `ru_maxrss` covers the whole process)."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def _count_tokens(batch: dict[str, Any], pad_token_id: int | None) -> int:
    """Non-padding tokens of a collated batch, counted on the CPU (no device sync)."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    if "position_ids" in batch or pad_token_id is None:  # padding-free: one flattened row, no padding
        return int(batch["input_ids"].numel())
    return int((batch["input_ids"] != pad_token_id).sum())


def run_once(spec: RunSpec) -> dict[str, Any]:
    """Builds the trainer of `spec`, trains `warmup + steps` optimizer steps and returns the measurements."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback

    from trl_presafety.tiny import build_tiny_tokenizer

    if spec.patch:
        # A local change to the trainers (e.g. a monkeypatch), measured without editing them; applies to both runs
        import runpy

        runpy.run_path(spec.patch, run_name="__presafety_bench_patch__")
    cuda = spec.device.startswith("cuda")
    if spec.threads:
        # One thread is steadier on a CPU shared with other jobs: OpenMP barriers stall when a core is taken
        torch.set_num_threads(spec.threads)
    dtype = torch.bfloat16 if cuda else torch.float32
    tokenizer = build_tiny_tokenizer("qwen3")
    total_steps = spec.warmup + spec.steps
    # Twice the rows the steps consume: packing fits about 1.3 examples per row
    n_rows = 2 * total_steps * spec.batch_size * spec.grad_accum + 8
    rows = synth_rows(spec.trainer, tokenizer, n_rows, spec.seq_len, spec.seed)

    if cuda:
        torch.cuda.synchronize()
        gc.collect()
        torch.cuda.empty_cache()
    allocated_before = torch.cuda.memory_allocated() if cuda else 0
    model = build_model(spec.size, tokenizer, spec.seed, spec.device, dtype)
    num_parameters = sum(p.numel() for p in model.parameters())
    ref_model = build_model(spec.size, tokenizer, spec.seed, spec.device, dtype) if spec.trainer == "dpo" else None

    output_dir = tempfile.mkdtemp(prefix="presafety-bench-")
    common = training_kwargs(
        output_dir,
        batch_size=spec.batch_size,
        grad_accum=spec.grad_accum,
        max_steps=total_steps,
        seq_len=spec.seq_len,
        seed=spec.seed,
        logging_steps=spec.logging_steps,
        gradient_checkpointing=spec.gradient_checkpointing,
        cuda=cuda,
    )
    ours = spec.impl == "presafety"
    if ours:
        common["presafety_loss_weight"] = spec.presafety_loss_weight
    dataset = Dataset.from_list(rows)
    trainer = build_trainer(spec.trainer, ours, model, ref_model, tokenizer, dataset, common, spec.layout)

    # Tokens are counted as the collator builds batches (CPU tensors: no device sync that would change the timing)
    batch_tokens: list[int] = []
    collator = trainer.data_collator
    pad_id = tokenizer.pad_token_id

    def counting_collator(examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = collator(examples)
        batch_tokens.append(_count_tokens(batch, pad_id))
        return batch

    trainer.data_collator = counting_collator

    forward_calls = [0]
    backbone = trainer.model.get_decoder() if hasattr(trainer.model, "get_decoder") else model.get_decoder()
    hook = backbone.register_forward_hook(lambda *args: forward_calls.__setitem__(0, forward_calls[0] + 1))

    step_times: list[float] = []
    step_cpu_times: list[float] = []
    step_forwards: list[int] = []

    window: list[float] = []  # clock at the end of the warm-up and of the last step (CUDA: synchronized)

    class StepTimer(TrainerCallback):
        """Wall time between consecutive optimizer-step ends, and backbone forwards per step.

        On CUDA the device is synchronized only at the ends of the timed window: a sync at every step would let the
        GPU idle while the next batch is prepared and hide any sync the trainer itself adds. Per-step figures there
        are host-side; the window's mean is the step time.
        """

        def __init__(self) -> None:
            self.last = self.last_cpu = 0.0
            self.last_forwards = 0

        def on_train_begin(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            self.last, self.last_cpu = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in (spec.warmup, total_steps):
                if cuda:
                    torch.cuda.synchronize()
                window.append(time.perf_counter())
            now, cpu_now = time.perf_counter(), time.process_time()
            step_times.append(now - self.last)
            # CPU time of this process (all threads): less sensitive than wall time to other jobs on a shared CPU
            step_cpu_times.append(cpu_now - self.last_cpu)
            step_forwards.append(forward_calls[0] - self.last_forwards)
            self.last, self.last_cpu, self.last_forwards = now, cpu_now, forward_calls[0]

    trainer.add_callback(StepTimer())
    load_before = os.getloadavg()
    # The RSS sampler thread only on CPU: on CUDA memory comes from the allocator, and the thread would add jitter
    with _Sampler() if not cuda else contextlib.nullcontext() as sampler:
        trainer.train()
    load_after = os.getloadavg()
    hook.remove()

    timed = step_times[spec.warmup :]
    timed_tokens = batch_tokens[spec.warmup * spec.grad_accum : total_steps * spec.grad_accum]
    result: dict[str, Any] = {
        "spec": asdict(spec),
        "key": spec.key,
        "num_parameters": num_parameters,
        "step_times": step_times,
        "timed_step_times": timed,
        "median_step_time": statistics.median(timed),
        # The figure compared: CPU, the median step (robust to other jobs' bursts); CUDA, the synchronized window mean
        "window_step_time": (window[1] - window[0]) / spec.steps,
        "step_time": (window[1] - window[0]) / spec.steps if cuda else statistics.median(timed),
        "step_time_kind": "window mean" if cuda else "median",
        "step_cpu_times": step_cpu_times,
        "median_step_cpu_time": statistics.median(step_cpu_times[spec.warmup :]),
        "tokens_per_step": statistics.mean(timed_tokens) * 1.0 if timed_tokens else None,
        "tokens_per_second": sum(timed_tokens) / (window[1] - window[0]) if timed_tokens else None,
        "backbone_forwards_per_step": step_forwards,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_train_mb": sampler.peak / 2**20 if sampler is not None else None,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "torch_threads": torch.get_num_threads(),
        "final_loss": next((h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h), None),
    }
    if ours:
        result["presafety_capture_forward_calls"] = trainer._presafety_capture.forward_calls
    if cuda:
        result["allocated_before_mb"] = allocated_before / 2**20  # left over by earlier in-process runs
        result["peak_allocated_mb"] = (torch.cuda.max_memory_allocated() - allocated_before) / 2**20
        result["peak_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
    # Free everything before the next in-process run (its peak is measured net of what is left)
    trainer.accelerator.free_memory()
    del trainer, model, ref_model, dataset
    shutil.rmtree(output_dir, ignore_errors=True)
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


def run_in_subprocess(spec: RunSpec, timeout: float | None) -> dict[str, Any]:
    """`run_once` in a fresh interpreter, so that its peak RSS is its own and no run warms another's caches."""
    cmd = [sys.executable, "-m", "benchmarks.timed_run", json.dumps(asdict(spec))]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_DIR), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(WORKER_PREFIX):
            return json.loads(line[len(WORKER_PREFIX) :])
    raise RuntimeError(
        f"The benchmark worker for {spec.key} ({spec.impl}) exited with code {proc.returncode} without a result.\n"
        f"stderr (end):\n{proc.stderr[-4000:]}"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """The worker: runs the spec given as JSON and prints its result on one line after `WORKER_PREFIX`."""
    (spec,) = argv if argv is not None else sys.argv[1:]
    result = run_once(RunSpec(**json.loads(spec)))
    print(WORKER_PREFIX + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
