# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The former home of the evaluation's flow, now split by job (`evaluator`, `prompts`, `models`, `loop`, `records`,
`metrics`, `probe`); this module keeps the old import paths."""

from .evaluator import REPORT_FORMAT_VERSION, VOLATILE_REPORT_KEYS, collect_errors, evaluate
from .loop import JudgeTask, error_text, generate_all, judge_all
from .metrics import (
    COMMON_OUTCOMES,
    RATE_OUTCOMES,
    SUMMARY_SOURCES,
    compute_figures,
    find_figure,
    group_figures,
    summarize,
)
from .models import (
    build_judge,
    default_run_name,
    find_safety_head,
    load_model,
    load_tokenizer,
    merged_model_dir,
    model_fingerprint,
)
from .probe import recorded_loss_weight, run_probe
from .prompts import (
    WorkItem,
    build_eval_prompt,
    build_work_items,
    eval_messages,
    prompt_opens_think_block,
    split_generated,
)
from .records import finish_records, judge_key, make_records


__all__ = [
    "COMMON_OUTCOMES",
    "RATE_OUTCOMES",
    "REPORT_FORMAT_VERSION",
    "SUMMARY_SOURCES",
    "VOLATILE_REPORT_KEYS",
    "JudgeTask",
    "WorkItem",
    "build_eval_prompt",
    "build_judge",
    "build_work_items",
    "collect_errors",
    "compute_figures",
    "default_run_name",
    "error_text",
    "eval_messages",
    "evaluate",
    "find_figure",
    "find_safety_head",
    "finish_records",
    "generate_all",
    "group_figures",
    "judge_all",
    "judge_key",
    "load_model",
    "load_tokenizer",
    "make_records",
    "merged_model_dir",
    "model_fingerprint",
    "prompt_opens_think_block",
    "recorded_loss_weight",
    "run_probe",
    "split_generated",
    "summarize",
]
