# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""
`trl-presafety eval`: safety with CoT on and off, over-refusal, reasoning accuracy and the pre-CoT probe of one model
(full, or base + adapter), in one report: `report.json` (every figure, every example), `report.md`, `report.png`.
Generations and judgments are cached in `output_dir/cache`: rerun the same command to resume an interrupted run.

# A 7B reasoning model on one GPU (vLLM), Llama-Guard-3-8B as judge
```bash
trl-presafety eval --config recipes/DeepSeek-R1-Distill-Qwen-7B/eval.yaml \
    --model_name_or_path runs/r1-7b-presafety-sft --output_dir runs/r1-7b-presafety-sft/eval
```

# The tiny offline smoke run on CPU (about a minute)
```bash
python -m trl_presafety.tiny --output_dir runs/tiny-qwen3 --style qwen3
python -m trl_presafety.scripts.evaluate --config recipes/tiny/eval.yaml
```

# Before/after
```bash
trl-presafety eval-compare runs/base/eval/report.json runs/presafety-sft/eval/report.json --output_dir runs/compare
```
"""

from ..evaluation import EvalConfig, evaluate
from ..evaluation.formatting import fmt_interval, fmt_rate, small_samples
from ..evaluation.report import auroc_interval_note
from ..evaluation.stats import SMALL_N
from ..overlap import overlap_warning
from .arguments import make_script_parser, parse_args_strict


def make_parser():
    """A `TrlParser` over [`EvalConfig`]: `--config eval.yaml` plus command-line overrides."""
    return make_script_parser("eval", (EvalConfig,))


def main(argv: list[str] | None = None) -> dict:
    """Entry point of `trl-presafety eval` and `python -m trl_presafety.scripts.evaluate`; returns the report."""
    (config,) = parse_args_strict(make_parser(), argv)
    report = evaluate(config)
    summary = report["summary"]
    print(f"Evaluation of {report['run_name']} ({summary['primary_decoding']} decoding; rate [95% interval] n):")
    for mode, figures in summary["modes"].items():
        shown = ", ".join(
            f"{key}={fmt_rate(figures, key)}"
            for key in (
                "harmful_rate",
                "refusal_rate",
                "answer_harmful_rate",
                "answer_reasoning_harmful_rate",
                "reasoning_harmful_rate",
                "benign_compliance_rate",
                "math_accuracy",
            )
        )
        print(f"  thinking {mode}: {shown}")
    routing = report.get("routing") or {}
    if routing.get("enabled"):
        on = summary["modes"].get("on", {})
        shares = ", ".join(
            f"{key}={fmt_rate(on, key)}"
            for key in (
                "harmful_routed_rate",
                "benign_routed_rate",
                "math_routed_rate",
                "routed_benign_compliance_rate",
            )
        )
        print(
            f"  routed ({routing['policy']}, P(refuse) >= {routing['threshold']:.4g}, {routing['threshold_source']}): "
            + shares
        )
    probe = report["probe"]
    if probe.get("status") == "ok" and probe.get("auroc") is not None:
        print(
            f"  pre-CoT probe AUROC: {probe['auroc']:.3f} {fmt_interval(probe.get('auroc_ci'))} "
            f"(n={probe.get('n_harmful')}+{probe.get('n_benign')})"
        )
        note = auroc_interval_note(probe)
        if note:
            print(f"  warning: {note.removeprefix('⚠ ')}")
    elif probe.get("status") == "untrained":
        print("  pre-CoT probe: untrained head (presafety_loss_weight=0), no AUROC")
    small = small_samples(report)
    if small:
        print(f"  warning: n < {SMALL_N} for {len(small)} figure(s) (smallest n = {min(n for *_, n in small)})")
    overlap = overlap_warning(report.get("training_overlap"))
    if overlap:
        print(f"  warning: {overlap.removeprefix('⚠ ')}")
    elif (report.get("training_overlap") or {}).get("status") == "unknown":
        print("  note: the model records no training prompts: overlap with the evaluation prompts not checked")
    for line in summary.get("output_warnings") or []:
        print(f"  warning: {line}")
    if report["errors"]:
        print(f"  {len(report['errors'])} example(s) failed; see `errors` in the report")
    print(f"Report: {config.output_dir}/report.json, report.md" + (", report.png" if config.plot else ""))
    return report


if __name__ == "__main__":
    main()
