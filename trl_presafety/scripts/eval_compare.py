# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""
`trl-presafety eval-compare`: two (or more) evaluation reports side by side, e.g. before and after PreSafety training:
a Markdown table with each figure and its change from the first report, and one plot with both runs (arrows from
before to after).

```bash
trl-presafety eval-compare runs/base/eval/report.json runs/presafety-sft/eval/report.json --output_dir runs/compare
```
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from .arguments import make_script_parser, parse_args_strict


@dataclass
class EvalCompareArguments:
    """
    reports (`list[str]`):
        Two or more `report.json` files (or the folders holding them) of `trl-presafety eval`; the first is the
        baseline ("before").
    run_names (`list[str]`, *optional*):
        Names shown for the runs, in the same order; defaults to each report's `run_name`.
    output_dir (`str`, *optional*, defaults to `"eval_compare"`):
        Where `compare.md`, `compare.json` and `compare.png` go.
    """

    reports: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Two or more report.json files (or their folders); the first is the baseline. Given as "
            "positional arguments (`eval-compare a.json b.json`) or as `--reports a.json b.json`."
        },
    )
    run_names: list[str] | None = field(default=None, metadata={"help": "Names of the runs, in the same order."})
    output_dir: str = field(default="eval_compare", metadata={"help": "Where compare.md/.json/.png go."})

    def __post_init__(self):
        if isinstance(self.reports, str):
            self.reports = [self.reports]
        if len(self.reports) < 2:
            raise ValueError(
                f"Invalid `reports`: {self.reports!r}. Pass at least two report.json files, e.g. "
                "`trl-presafety eval-compare before/report.json after/report.json`."
            )
        if self.run_names is not None and len(self.run_names) != len(self.reports):
            raise ValueError(
                f"Invalid `run_names`: {self.run_names!r} has {len(self.run_names)} names for {len(self.reports)} "
                "reports. Give one name per report, or leave it unset."
            )


def make_parser():
    usage = "%(prog)s [--config RECIPE.yaml] REPORT.json REPORT.json [...] [--<field> VALUE ...]"
    return make_script_parser("eval-compare", (EvalCompareArguments,), usage=usage)


def _positional_to_reports(argv: list[str]) -> list[str]:
    # `eval-compare a.json b.json` reads as `--reports a.json b.json`
    leading = []
    while len(leading) < len(argv) and not argv[len(leading)].startswith("-"):
        leading.append(argv[len(leading)])
    return ["--reports", *leading, *argv[len(leading) :]] if leading else argv


def main(argv: list[str] | None = None) -> dict:
    """Entry point of `trl-presafety eval-compare`; returns the comparison (also written to `output_dir`)."""
    import sys

    from ..evaluation.compare import compare_reports, render_comparison
    from ..evaluation.plots import plot_reports
    from ..evaluation.report import load_report

    argv = list(sys.argv[1:] if argv is None else argv)
    (args,) = parse_args_strict(make_parser(), _positional_to_reports(argv))
    reports = [load_report(path) for path in args.reports]
    if args.run_names:
        for report, name in zip(reports, args.run_names):
            report["run_name"] = name
    comparison = compare_reports(reports)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    markdown = render_comparison(comparison)
    (output_dir / "compare.md").write_text(markdown, encoding="utf-8")
    (output_dir / "compare.json").write_text(json.dumps(comparison, indent=2) + "\n", encoding="utf-8")
    plot_reports(reports, output_dir / "compare.png")
    print(markdown)
    print(f"Written: {output_dir}/compare.md, compare.json, compare.png")
    return comparison


if __name__ == "__main__":
    main()
