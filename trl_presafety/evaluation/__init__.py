# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Evaluation of a PreSafety run: safety with CoT on and off, over-refusal, reasoning accuracy, the pre-CoT probe, and
one report (JSON, Markdown, PNG) that two runs can be compared in.

```python
from trl_presafety.evaluation import EvalConfig, evaluate

report = evaluate(EvalConfig(model_name_or_path="runs/presafety-sft", datasets=["strongreject", "xstest", "math500"]))
print(report["summary"])
```
"""

from .compare import compare_reports, render_comparison
from .config import DecodingSetting, EvalConfig, parse_decoding_setting
from .data import (
    CATEGORIES,
    adapt_rows,
    load_eval_dataset,
    load_eval_datasets,
)
from .evaluator import evaluate
from .plots import plot_reports
from .prompts import build_eval_prompt, split_generated
from .report import load_report, render_markdown, write_report


__all__ = [
    "CATEGORIES",
    "DecodingSetting",
    "EvalConfig",
    "adapt_rows",
    "build_eval_prompt",
    "compare_reports",
    "evaluate",
    "load_eval_dataset",
    "load_eval_datasets",
    "load_report",
    "parse_decoding_setting",
    "plot_reports",
    "render_comparison",
    "render_markdown",
    "split_generated",
    "write_report",
]
