# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""`evaluate(config)`, the flow of an evaluation: data, model, the pre-CoT probe, generation with CoT on and off,
judging, figures and the report. Each step lives in its own module (`prompts`, `models`, `loop`, `records`,
`metrics`, `probe`, `report`).

The run is resumable: every generation and every judgment is appended to a JSON-lines cache in `output_dir/cache`
as soon as its chunk is done, keyed by what determines it (model, prompt text, decoding setting, ...). A rerun with
the same config reads them back and only computes what is missing; chunks are cut at the same boundaries and seeded
by their index, so the resumed report equals an uninterrupted one. An exception in one example is recorded in its
record and in `errors` (and retried by the next run), never fatal.
"""

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..generation import resolve_backend
from ..overlap import training_overlap
from .cache import JsonlCache, stable_hash
from .config import JUDGE_VIEWS, EvalConfig
from .data import load_eval_datasets
from .loop import error_text, generate_all, judge_all
from .metrics import compute_figures, summarize
from .models import (
    build_judge,
    default_run_name,
    evaluated_fingerprints,
    find_safety_head,
    free_memory,
    load_model,
    load_tokenizer,
    merged_model_dir,
    model_fingerprint,
)
from .probe import run_probe
from .prompts import build_work_items, check_eval_prompt_lengths
from .records import finish_records, make_records
from .report import write_report
from .route import make_router, precompute_probabilities, prepare_route, routing_section


# 2: every rate has `<rate>_n` and a 95% Wilson interval `<rate>_ci`; the probe has bootstrap intervals and the
# status "untrained" for a head trained with weight 0. 3: the "answer + reasoning" judge view
# (`answer_reasoning_harmful_rate`, `answer_reasoning_verdict`), unparsed guard outputs and clipped traces counted
REPORT_FORMAT_VERSION = 3
# Keys of a report that legitimately differ between two runs of the same evaluation (wall-clock, cache use)
VOLATILE_REPORT_KEYS = ("runtime",)


def _error(record: dict[str, Any], stage: str, error: str) -> dict[str, Any]:
    return {
        "id": record["id"],
        "thinking": record["thinking"],
        "decoding": record["decoding"],
        "stage": stage,
        "error": error,
    }


def collect_errors(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every failure of the run, for the report: the generation errors, then the judge's (a crash, or guard output it
    could not parse), per view (answer, answer + reasoning, reasoning)."""
    errors = [_error(r, "generation", r["error"]) for r in records if r["error"]]
    for record in records:
        for kind in JUDGE_VIEWS:
            verdict = record.get(f"{kind}_verdict")
            if verdict and verdict.get("error"):
                errors.append(_error(record, f"judge_{kind}", verdict["error"]))
    return errors


def check_eval_inputs(config: EvalConfig, model_given: bool = False) -> None:
    """Stops before anything loads (or tries the network) when a local input of `config` is missing: the model folder
    (unless a model object is given), the adapter, head and chat template files, the judge's classifier or model."""
    from ..inputs import MODEL_FIX, check_classifier_input, check_local_input, check_model_input

    if not model_given:
        check_model_input(config.model_name_or_path)
    check_local_input(
        config.adapter_path,
        "adapter_path",
        "a PEFT adapter folder",
        MODEL_FIX,
        required_files=("adapter_config.json",),
    )
    check_local_input(
        config.safety_head_path,
        "safety_head_path",
        "a folder with the safety head (safety_head_config.json)",
        "Point it at the output folder of `trl-presafety sft` / `dpo`, or leave it unset to read the model's own head.",
    )
    check_local_input(
        config.chat_template_path, "chat_template_path", "a chat template file", "Correct the path, or leave it unset."
    )
    if config.judge == "classifier":
        check_classifier_input(config.judge_model_name_or_path, "judge_model_name_or_path")
    elif config.judge_model_name_or_path:
        check_model_input(config.judge_model_name_or_path, "judge_model_name_or_path")


def evaluate(config: EvalConfig, model: Any = None, tokenizer: Any = None) -> dict[str, Any]:
    """Runs the evaluation of `config` and writes `report.json`, `report.md` and `report.png` to `output_dir`.

    Args:
        config (`EvalConfig`): What to evaluate and how.
        model (`PreTrainedModel`, *optional*): An already loaded model (with its head, if any), instead of loading
            `config.model_name_or_path`; generated with transformers.
        tokenizer (`PreTrainedTokenizerBase`, *optional*): Its tokenizer (with a chat template).

    Returns:
        The report (a JSON-serializable dict; see `report.py`).

    Example:
    ```python
    >>> from trl_presafety.evaluation import EvalConfig, evaluate
    >>> report = evaluate(EvalConfig(model_name_or_path="runs/presafety-sft", datasets=["strongreject", "xstest"]))
    >>> report["summary"]["modes"]["on"]["harmful_rate"]
    0.02
    ```
    """
    started = time.time()
    # The data first: a bad dataset (e.g. an unfinished label folder) stops the run before anything is written
    examples = load_eval_datasets(
        config.datasets, config.max_examples, config.data_seed, allow_incomplete_labels=config.allow_incomplete_labels
    )
    check_eval_inputs(config, model_given=model is not None)
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if model is not None and config.backend == "vllm":
        raise ValueError(
            "Invalid `backend`: 'vllm' with a model object. vLLM loads the weights itself: pass no model (it loads "
            "`model_name_or_path`), or use backend='transformers'."
        )
    backend = resolve_backend(config.backend, model if model is not None else config.model_name_or_path)
    head_path = find_safety_head(config)
    if tokenizer is None:
        tokenizer = load_tokenizer(config)
    check_eval_prompt_lengths(examples, tokenizer, model, config)
    from ..fingerprints import provenance

    # before any model is loaded or memory allocated
    if model is None and (backend == "transformers" or config.route or (config.probe and head_path is not None)):
        model = load_model(config)

    probe, probe_records = {"status": "skipped", "reason": "probe=False"}, []
    if config.probe:
        try:
            probe, probe_records = run_probe(model, tokenizer, head_path, examples, config)
        except Exception as error:  # the probe is one figure among many: record, go on
            probe = {"status": "error", "error": error_text(error)}
    # Routing: the head that routes goes on the model (after the probe, which reads the model's own head)
    route = prepare_route(config, model, head_path)
    router = make_router(route, model, tokenizer, config) if route is not None else None
    fingerprint = model_fingerprint(config, model if backend == "transformers" else None)
    items = build_work_items(examples, tokenizer, config, fingerprint, route.key if route is not None else None)
    generations = JsonlCache(output_dir / "cache" / "generations.jsonl", resume=config.resume)
    if router is not None and backend == "vllm":
        # vLLM gives no prefill state to a head: the gate runs now, on the model in memory, before vLLM loads
        needed = {
            (item.example["dataset"], item.example["id"]): item.example
            for item in items
            if item.thinking == "on" and item.key not in generations
        }
        precompute_probabilities(route, router, list(needed.values()), config)
        router.close()
        router = None
    generation_model: Any = model
    if backend == "vllm":
        generation_model = merged_model_dir(config, model, tokenizer)
        model = None  # vLLM loads its own copy: free this one before it does
        free_memory()

    from_cache = sum(item.key in generations for item in items)
    try:
        generation_errors, generated = generate_all(
            items, generations, generation_model, tokenizer, config, backend, route, router
        )
    finally:
        if router is not None:
            router.close()
    generation_model = model = router = None  # free the policy before the judge (possibly another model) loads
    free_memory()

    judge = build_judge(config)
    records, tasks = make_records(items, generations, generation_errors, config, stable_hash(judge.describe()), judge)
    judgments = JsonlCache(output_dir / "cache" / "judgments.jsonl", resume=config.resume)
    finish_records(records, judgments, judge_all(judge, tasks, judgments, config.judge_batch_size))

    figures = compute_figures(records, config)
    errors = collect_errors(records)
    report = {
        "format_version": REPORT_FORMAT_VERSION,
        "run_name": config.run_name or default_run_name(config),
        "model": {
            "model_name_or_path": config.model_name_or_path,
            "adapter_path": config.adapter_path,
            "safety_head_path": head_path,
            "route_gate": route.gate if route is not None else None,
            "backend": backend,
            # What was evaluated, by content: a report names the weights, not only where they were
            "fingerprints": evaluated_fingerprints(config, model if backend == "transformers" else None),
        },
        # The examples and the settings by content, and the local models the settings name (judges' classifier...).
        # Where the report is written and whether it resumed do not change what it says: left out, so that a resumed
        # or relocated run has the provenance of an uninterrupted one
        "provenance": provenance(
            {}, examples, {k: v for k, v in asdict(config).items() if k not in ("output_dir", "resume")}
        ),
        "judge": judge.describe(),
        "config": asdict(config),
        "training_overlap": training_overlap([config.adapter_path, config.model_name_or_path], examples),
        "datasets": sorted({e["dataset"] for e in examples}),
        "summary": summarize(figures, probe, config),
        "figures": figures,
        "probe": probe,
        "routing": routing_section(records, route, config),
        "errors": errors,
        "examples": records,
        "probe_examples": probe_records,
        "runtime": {
            "seconds": round(time.time() - started, 2),
            "generations_total": len(items),
            "generations_from_cache": from_cache,
            "generations_new": generated,
        },
    }
    write_report(report, output_dir, plot=config.plot)
    return report
