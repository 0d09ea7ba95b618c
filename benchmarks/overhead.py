# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The cost of the pre-CoT safety loss against plain TRL, measured side by side (issue 7).

Runs plain `SFTTrainer` / `DPOTrainer` and `PreSafetySFTTrainer` / `PreSafetyDPOTrainer` on the same random-init model
(same seed, data, order and settings), alternating the two within each repeat (ABBA order across repeats, so a drift in
machine load hits both), and reports per pair: the step time ratio (ours / plain of each run's median step time), the
peak memory ratio (CPU: peak RSS of a fresh subprocess per run; CUDA: `torch.cuda.max_memory_allocated`), tokens per
second and backbone forward calls per step, each with min/median/max over repeats. Warm-up steps are not timed. A step
is timed from the end of the previous optimizer step to the end of this one, so it includes loading and collating the
batch, forward, backward, the optimizer and the previous step's logging: everything the plugin could slow down.

    python benchmarks/overhead.py --sizes tiny,small --repeats 3 --steps 5   # CPU: results/overhead_cpu.json
    python benchmarks/overhead.py --device cuda --sizes 0.6b,1.7b --tag h100  # GPU (bf16): overhead_h100.json

Each call merges its figures into `benchmarks/results/overhead_<tag>.json` (a configuration measured again replaces
its old entry), then regenerates the tables of `benchmarks/RESULTS.md` (between its GENERATED markers) and the plot
`benchmarks/overhead.png` from every `overhead_*.json` in `benchmarks/results/`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import os
import platform
import random
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
RESULTS_MD = BENCH_DIR / "RESULTS.md"
PLOT_FILE = BENCH_DIR / "overhead.png"
BEGIN_MARK = "<!-- BEGIN GENERATED: benchmarks/overhead.py -->"
END_MARK = "<!-- END GENERATED: benchmarks/overhead.py -->"
WORKER_PREFIX = "OVERHEAD_RESULT "

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
IMPLS = ("plain", "presafety")


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


# --- data ----------------------------------------------------------------------------------------------------------
def _tiny_rows(kind: str) -> list[dict[str, Any]]:
    from trl_presafety.tiny import TINY_DATA_DIR

    return [json.loads(line) for line in (TINY_DATA_DIR / kind / "train.jsonl").read_text().splitlines()]


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
    base = _tiny_rows(trainer)
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


# --- one run (the worker) ------------------------------------------------------------------------------------------
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
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(asdict(spec))]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_DIR), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(WORKER_PREFIX):
            return json.loads(line[len(WORKER_PREFIX) :])
    raise RuntimeError(
        f"The benchmark worker for {spec.key} ({spec.impl}) exited with code {proc.returncode} without a result.\n"
        f"stderr (end):\n{proc.stderr[-4000:]}"
    )


# --- statistics and reports ----------------------------------------------------------------------------------------
def _mmm(values: Iterable[float | None]) -> dict[str, float] | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def summarize(runs: list[dict[str, Any]], exclude_repeats: Iterable[int] = ()) -> dict[str, Any]:
    """Figures of one pair from its runs: per-repeat ratios ours/plain, each as min/median/max over repeats.

    `exclude_repeats` leaves repeats out (e.g. one that paid a one-time cost); the runs themselves stay recorded.
    """
    by_repeat: dict[int, dict[str, dict[str, Any]]] = {}
    for run in runs:
        if run["repeat"] not in set(exclude_repeats):
            by_repeat.setdefault(run["repeat"], {})[run["spec"]["impl"]] = run
    for pair in by_repeat.values():
        for run in pair.values():
            run.setdefault("step_time", run["median_step_time"])  # results written before `step_time` existed
    pairs = [r for r in by_repeat.values() if set(r) == set(IMPLS)]
    memory_key = "peak_allocated_mb" if "peak_allocated_mb" in runs[0] else "peak_rss_mb"

    def ratio(field_name: str) -> list[float]:
        return [p["presafety"][field_name] / p["plain"][field_name] for p in pairs]

    def paired_ratio(steps_key: str, fallback: str) -> list[float]:
        """Per repeat, the median over step indices of ours/plain: the same step sees the same batch in both runs, so
        batch lengths that vary from step to step cancel, and a burst of another job spoils one step, not the figure.
        CUDA runs (host-side per-step times) and older results without per-step times use `fallback`'s ratio."""
        out = []
        for pair in pairs:
            plain, ours = pair["plain"], pair["presafety"]
            warmup = plain["spec"]["warmup"]
            p_steps, o_steps = plain.get(steps_key, [])[warmup:], ours.get(steps_key, [])[warmup:]
            if plain.get("step_time_kind", "median") == "median" and p_steps and len(p_steps) == len(o_steps):
                out.append(statistics.median(o / p for o, p in zip(o_steps, p_steps)))
            else:
                out.append(ours[fallback] / plain[fallback])
        return out

    forwards = {impl: sorted({f for p in pairs for f in p[impl]["backbone_forwards_per_step"]}) for impl in IMPLS}
    return {
        "repeats": len(pairs),
        "num_parameters": runs[0]["num_parameters"],
        "memory_metric": memory_key,
        "step_time_ratio": _mmm(paired_ratio("step_times", "step_time")),
        "step_cpu_time_ratio": _mmm(paired_ratio("step_cpu_times", "median_step_cpu_time")),
        "memory_ratio": _mmm(ratio(memory_key)),
        "step_time_s": {impl: _mmm(p[impl]["step_time"] for p in pairs) for impl in IMPLS},
        "memory_mb": {impl: _mmm(p[impl][memory_key] for p in pairs) for impl in IMPLS},
        "tokens_per_second": {impl: _mmm(p[impl]["tokens_per_second"] for p in pairs) for impl in IMPLS},
        "tokens_per_step": runs[0]["tokens_per_step"],
        "backbone_forwards_per_step": forwards,
        "same_forward_count": forwards["plain"] == forwards["presafety"],
        "loadavg": _mmm(v for r in runs for v in (r["loadavg_before"][0], r["loadavg_after"][0])),
    }


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


def describe_machine(info: dict[str, Any], training: bool = True) -> str:
    """One line for a table's heading; `training` adds the dtype the overhead runs use there."""
    if info.get("gpu"):
        dtype = " (bf16)" if training else ""
        return f"{info['gpu']}{dtype}, torch {info['torch']}, transformers {info['transformers']}, trl {info['trl']}"
    dtype = " (fp32)" if training else ""
    return (
        f"{info['cpu']}, {info['cpu_count']} cores shared, {info['memory_gb']} GB{dtype}, torch {info['torch']}, "
        f"transformers {info['transformers']}, trl {info['trl']}"
    )


def _fmt(stats: dict[str, float] | None, digits: int = 3) -> str:
    if stats is None:
        return "-"
    return f"**{stats['median']:.{digits}f}** ({stats['min']:.{digits}f}-{stats['max']:.{digits}f})"


def _fmt_plain(stats: dict[str, float] | None, digits: int = 3) -> str:
    return "-" if stats is None else f"{stats['median']:.{digits}f}"


def _human(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def _display_command(command: str) -> str:
    """The command without where it wrote its files (a machine-specific path), for the tables."""
    words = shlex.split(command)
    keep, skip = [], False
    for word in words:
        if skip:
            skip = False
            continue
        if word in ("--results-dir", "--no-report") or word.startswith("--results-dir="):
            skip = word == "--results-dir"
            continue
        keep.append(Path(word).name if word.endswith(".py") and "/" in word and "benchmarks/" not in word else word)
    return shlex.join(keep)


def _layout(spec: dict[str, Any]) -> str:
    return spec["layout"] + (f" + patch `{Path(spec['patch']).stem}`" if spec.get("patch") else "")


def render_tables(entries: list[dict[str, Any]]) -> str:
    """Markdown tables of every recorded pair, grouped by machine, with the command and date of each figure."""
    lines = []
    groups: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        groups.setdefault(entry["tag"], []).append(entry)
    for tag in sorted(groups):
        items = sorted(
            groups[tag],
            key=lambda e: (e["spec"]["trainer"], e["summary"]["num_parameters"], e["spec"]["layout"], e["key"]),
        )
        lines.append(f"### `{tag}`: {describe_machine(items[0]['machine'])}")
        lines.append("")
        lines.append(
            "| trainer | size (params) | layout | GC | batch x len | step time ratio | peak memory ratio | "
            "CPU-time ratio | plain s/step | ours s/step | plain tok/s | ours tok/s | fwd/step plain=ours | repeats | "
            "load | date | cmd |"
        )
        lines.append("|" + "---|" * 17)
        commands = []
        gpu = bool(items[0]["machine"].get("gpu"))
        for e in items:
            s, spec = e["summary"], e["spec"]
            if e["command"] not in commands:
                commands.append(e["command"])
            fwd = s["backbone_forwards_per_step"]
            same = "yes" if s["same_forward_count"] else "**NO**"
            lines.append(
                f"| {spec['trainer'].upper()} | {spec['size']} ({_human(s['num_parameters'])}) | {_layout(spec)} | "
                f"{'on' if spec['gradient_checkpointing'] else 'off'} | {spec['batch_size']}x{spec['seq_len']} | "
                f"{_fmt(s['step_time_ratio'])} | {_fmt(s['memory_ratio'])} | "
                f"{'-' if gpu else _fmt(s.get('step_cpu_time_ratio'))} | "
                f"{_fmt_plain(s['step_time_s']['plain'])} | {_fmt_plain(s['step_time_s']['presafety'])} | "
                f"{_fmt_plain(s['tokens_per_second']['plain'], 0)} | "
                f"{_fmt_plain(s['tokens_per_second']['presafety'], 0)} | {fwd['plain']} {same} | {s['repeats']} | "
                f"{_fmt_plain(s['loadavg'], 1)} | {e['date'][:10]} | [{commands.index(e['command']) + 1}] |"
            )
        lines.append("")
        if gpu:
            memory = "`torch.cuda.max_memory_allocated` over training, net of memory held before the run"
        else:
            memory = (
                "peak RSS of a fresh process per run. CPU-time ratio: the same ratio on the process's CPU time per "
                "step, less sensitive than wall time to other jobs on a shared CPU"
            )
        per_repeat = (
            "the ratio of its two runs' mean step time over the synchronized timed window"
            if gpu
            else "the median over timed steps of ours/plain for the same step (the same batch in both runs)"
        )
        lines.append(
            f"Ratios are PreSafety / plain TRL, **median** (min-max) over repeats; a repeat's ratio is {per_repeat}. "
            f"s/step: median over repeats of each run's {'mean' if gpu else 'median'} step. Memory: {memory}. "
            "Load: median 1-minute load average during the runs."
        )
        lines.append("")
        for i, command in enumerate(commands, 1):
            lines.append(f"[{i}] `{_display_command(command)}`")
            lines.append("")
        notes: dict[str, list[str]] = {}
        for e in items:
            if e.get("note"):
                gc_tag = "on" if e["spec"]["gradient_checkpointing"] else "off"
                row = f"{e['spec']['trainer'].upper()} {e['spec']['size']} {_layout(e['spec'])} GC {gc_tag}"
                notes.setdefault(e["note"], []).append(row)
        for note, rows in notes.items():
            lines.append(f"Note ({'; '.join(rows)}): {note}")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_generated_section(body: str, begin: str = BEGIN_MARK, end: str = END_MARK, path: Path = RESULTS_MD) -> None:
    """Replaces the part of RESULTS.md between `begin` and `end`, keeping the hand-written notes around it."""
    generated = f"{begin}\n{body}{end}"
    if path.exists():
        text = path.read_text(encoding="utf-8")
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            tail = rest.split(end, 1)[1]
            path.write_text(head + generated + tail, encoding="utf-8")
            return
        path.write_text(text.rstrip() + "\n\n" + generated + "\n", encoding="utf-8")
        return
    path.write_text(f"# Benchmarks\n\n{generated}\n", encoding="utf-8")


def plot(entries: list[dict[str, Any]], path: Path = PLOT_FILE) -> None:
    """Step time and peak memory ratio against model size, one line per machine/trainer/layout/GC setting.

    The y axes are clipped to the range where the targets are read; a bar that leaves it is cut at the edge.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 6.5))
    series: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        spec = e["spec"]
        gc_tag = "on" if spec["gradient_checkpointing"] else "off"
        label = f"{e['tag']} {spec['trainer'].upper()} {_layout(spec).replace('`', '')} GC {gc_tag}"
        series.setdefault(label, []).append(e)
    colors = plt.get_cmap("tab20").colors
    limits = {"step_time_ratio": (0.8, 1.3), "memory_ratio": (0.97, 1.07)}
    for i, (label, items) in enumerate(sorted(series.items())):
        items = sorted(items, key=lambda e: e["summary"]["num_parameters"])
        gpu = bool(items[0]["machine"].get("gpu"))
        # A small horizontal shift per series keeps the points of one size apart
        shift = 1.0 + 0.04 * (i - len(series) / 2) / max(len(series), 1)
        x = [e["summary"]["num_parameters"] * shift for e in items]
        for ax, name in zip(axes, ("step_time_ratio", "memory_ratio")):
            stats = [e["summary"][name] for e in items]
            med = [s["median"] for s in stats]
            err = [[m - s["min"] for m, s in zip(med, stats)], [s["max"] - m for m, s in zip(med, stats)]]
            ax.errorbar(
                x,
                med,
                yerr=err,
                marker="o" if items[0]["spec"]["trainer"] == "sft" else "s",
                color=colors[i % len(colors)],
                capsize=3,
                label=label,
                ls="-" if gpu else "--",
            )
    targets = {
        "step_time_ratio": [(1.03, "CPU target 1.03"), (1.01, "GPU target 1.01")],
        "memory_ratio": [(1.02, "target 1.02")],
    }
    titles = {"step_time_ratio": "Step time ratio (PreSafety / plain TRL)", "memory_ratio": "Peak memory ratio"}
    for ax, name in zip(axes, ("step_time_ratio", "memory_ratio")):
        ax.set_xscale("log")
        ax.set_ylim(*limits[name])
        ax.axhline(1.0, color="black", lw=0.6)
        for value, text in targets[name]:
            ax.axhline(value, color="grey", ls=":", lw=1)
            ax.text(0.01, value, " " + text, transform=ax.get_yaxis_transform(), va="bottom", fontsize=8)
        ax.set_xlabel("model parameters")
        ax.set_title(titles[name])
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle(
        "Cost of the pre-CoT safety loss: median over repeats, bars min-max; dashed CPU (fp32), solid GPU (bf16); "
        "circles SFT, squares DPO",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.14, 1, 0.97))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_entries(results_dir: Path = RESULTS_DIR) -> list[dict[str, Any]]:
    entries = []
    for path in sorted(results_dir.glob("overhead_*.json")):
        entries.extend(json.loads(path.read_text(encoding="utf-8"))["entries"])
    return entries


def merge_into(path: Path, new_entries: list[dict[str, Any]]) -> None:
    """Adds `new_entries` to the JSON at `path`; a pair measured again replaces its older entry."""
    old = json.loads(path.read_text(encoding="utf-8"))["entries"] if path.exists() else []
    keys = {e["key"] for e in new_entries}
    merged = [e for e in old if e["key"] not in keys] + new_entries
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written aside then renamed: a run killed by a time limit leaves the previous file whole
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"entries": merged}, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --- driver --------------------------------------------------------------------------------------------------------
def _csv(kind: Callable[[str], Any], choices: Iterable[Any] | None = None) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        values = [kind(v.strip()) for v in text.split(",") if v.strip()]
        bad = [v for v in values if choices is not None and v not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"{bad} not in {sorted(choices)}")
        return values

    return parse


def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected 'on' or 'off', got {text!r}")
    return text == "on"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Step time, peak memory and tokens/s of the PreSafety trainers against plain TRL, side by side.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--sizes", type=_csv(str, SIZES), default="tiny", help=f"Model shapes, comma-separated: {list(SIZES)}."
    )
    parser.add_argument("--trainers", type=_csv(str, TRAINERS), default="sft,dpo", help="sft and/or dpo.")
    parser.add_argument(
        "--layouts", type=_csv(str, LAYOUTS), default="padded", help="SFT batches: padded and/or packed (BFD)."
    )
    parser.add_argument(
        "--gradient-checkpointing", type=_csv(_on_off), default="off", help="Gradient checkpointing: on and/or off."
    )
    parser.add_argument("--repeats", type=int, default=3, help="Pairs of runs (plain and ours) per configuration.")
    parser.add_argument("--steps", type=int, default=5, help="Timed optimizer steps per run.")
    parser.add_argument(
        "--warmup", type=int, default=2, help="Untimed optimizer steps at the start of each run (>= 2)."
    )
    parser.add_argument("--batch-size", type=int, default=4, help="Per-device batch size (pairs for DPO).")
    parser.add_argument("--seq-len", type=int, default=256, help="max_length; examples span [seq_len/2, seq_len].")
    parser.add_argument("--grad-accum", type=int, default=1, help="Gradient accumulation steps.")
    parser.add_argument("--logging-steps", type=int, default=10, help="Trainer logging interval (TRL's default).")
    parser.add_argument(
        "--presafety-loss-weight", type=float, default=1.0, help="presafety_loss_weight of the PreSafety runs."
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (bf16 on cuda, fp32 on cpu).")
    parser.add_argument(
        "--isolation",
        choices=["subprocess", "inprocess"],
        default=None,
        help="Fresh process per run (needed for CPU peak RSS; the default on cpu) or all runs in this process "
        "(the default on cuda, where memory is measured per run by the allocator).",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's).")
    parser.add_argument(
        "--warm-run",
        type=_on_off,
        default=None,
        help="on/off: one unrecorded run per configuration first (default: on with --isolation inprocess).",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--patch",
        default=None,
        help="Python file run before each run's trainer is built, e.g. a monkeypatch of a proposed trainer change: "
        "measures it against plain TRL without editing the package. Its name is added to the results key.",
    )
    parser.add_argument(
        "--tag", default=None, help="Results file: results/overhead_<tag>.json (default: the device type)."
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="Where the raw JSON goes.")
    parser.add_argument("--no-report", action="store_true", help="Do not regenerate RESULTS.md and the plot.")
    parser.add_argument(
        "--report-only", action="store_true", help="Only regenerate RESULTS.md and the plot from the JSON results."
    )
    parser.add_argument("--timeout", type=float, default=None, help="Seconds per subprocess run.")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser


def configurations(args: argparse.Namespace) -> list[RunSpec]:
    """The pairs to measure, smallest model first (a run cut short by a time limit keeps the cheap figures)."""
    specs = []
    for size in sorted(args.sizes, key=list(SIZES).index):
        for trainer in args.trainers:
            for layout in args.layouts:
                if trainer == "dpo" and layout != "padded":
                    continue  # TRL 1.16's DPO has no packing and disables padding-free
                for gc_on in args.gradient_checkpointing:
                    specs.append(
                        RunSpec(
                            trainer=trainer,
                            impl="plain",
                            size=size,
                            gradient_checkpointing=gc_on,
                            layout=layout,
                            batch_size=args.batch_size,
                            seq_len=args.seq_len,
                            steps=args.steps,
                            warmup=args.warmup,
                            device=args.device,
                            seed=args.seed,
                            grad_accum=args.grad_accum,
                            logging_steps=args.logging_steps,
                            presafety_loss_weight=args.presafety_loss_weight,
                            threads=args.threads,
                            patch=str(Path(args.patch).resolve()) if args.patch else None,
                        )
                    )
    return specs


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    # Set here, not at import: `labeling.py` imports this module and must keep the tokenizers' own threading
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # silences the fork warning of the worker subprocesses
    args = build_parser().parse_args(argv)
    if args.worker is not None:
        result = run_once(RunSpec(**json.loads(args.worker)))
        print(WORKER_PREFIX + json.dumps(result), flush=True)
        return [result]
    if args.report_only:
        report(args.results_dir)
        return []
    if args.steps < 1 or args.warmup < 2:
        # Step 1 logs (`logging_first_step`) and its log, with its lazy imports, is timed in step 2: both warm up
        raise ValueError(f"Need --steps >= 1 and --warmup >= 2, got --steps {args.steps} --warmup {args.warmup}.")
    isolation = args.isolation or ("inprocess" if args.device.startswith("cuda") else "subprocess")
    tag = args.tag or args.device.split(":")[0]
    command = "python benchmarks/overhead.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    machine = machine_info(args.device)
    entries = []
    warm_run = args.warm_run if args.warm_run is not None else isolation == "inprocess"
    for base in configurations(args):
        runs = []
        if warm_run:
            # In one process, the first run to meet a batch shape pays one-time costs (Triton autotuning of TRL's
            # chunked log-prob kernel, allocator growth): an unrecorded run takes them for both
            run_once(RunSpec(**{**asdict(base), "impl": "plain"}))
        for repeat in range(args.repeats):
            # ABBA: the order alternates between repeats, so a trend in the machine's load cancels in the median
            order = IMPLS if repeat % 2 == 0 else IMPLS[::-1]
            for impl in order:
                spec = RunSpec(**{**asdict(base), "impl": impl})
                try:
                    if isolation == "subprocess":
                        result = run_in_subprocess(spec, args.timeout)
                    else:
                        result = run_once(spec)
                except Exception as error:  # one failed configuration must not lose the others' figures
                    print(f"[overhead] FAILED {spec.key} {impl}: {error}", file=sys.stderr, flush=True)
                    runs = []
                    break
                result["repeat"] = repeat
                runs.append(result)
                print(
                    f"[overhead] {spec.key} {impl:9s} repeat {repeat}: step {result['step_time']:.4f}s "
                    f"peak {result.get('peak_allocated_mb', result['peak_rss_mb']):.0f} MB "
                    f"fwd/step {sorted(set(result['backbone_forwards_per_step']))} "
                    f"load {result['loadavg_after'][0]:.1f}",
                    flush=True,
                )
            if not runs:
                break
        if not runs:
            continue
        summary = summarize(runs)
        entry = {
            "key": base.key,
            "tag": tag,
            "spec": {k: v for k, v in asdict(base).items() if k != "impl"},
            "summary": summary,
            "machine": machine,
            "command": command,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "isolation": isolation,
            "runs": runs,
        }
        entries.append(entry)
        t, m = summary["step_time_ratio"], summary["memory_ratio"]
        print(
            f"[overhead] == {base.key}: step time ratio {t['median']:.4f} ({t['min']:.4f}-{t['max']:.4f}), "
            f"memory ratio {m['median']:.4f} ({m['min']:.4f}-{m['max']:.4f}), same forwards: "
            f"{summary['same_forward_count']}",
            flush=True,
        )
        # Written after each configuration: a run cut short keeps what it measured
        merge_into(args.results_dir / f"overhead_{tag}.json", [entry])
    if not args.no_report and entries:
        report(args.results_dir)
    return entries


def report(results_dir: Path = RESULTS_DIR) -> None:
    """Regenerates the tables of RESULTS.md and the plot from every `overhead_*.json`."""
    all_entries = load_entries(results_dir)
    for entry in all_entries:  # from the recorded runs, so that every figure follows the current definitions
        entry["summary"] = summarize(entry["runs"], entry.get("excluded_repeats", ()))
    write_generated_section(render_tables(all_entries))
    plot(all_entries)


if __name__ == "__main__":
    main()
