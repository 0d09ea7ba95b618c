# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""
`trl-presafety pipeline`: the whole method for one model, from prompt lists to an `eval-compare` report, as the
stages of one YAML file (see `trl_presafety.pipeline`): build-sft -> label -> PreSafety SFT and plain SFT
(`presafety_loss_weight: 0`) -> eval of both -> eval-compare, and the same for DPO on the generated pairs.

Stages whose output is complete are skipped, so after a crash or a preemption the same command resumes. Every
stage's arguments are checked with its command's strict parser before the first one runs, and each stage's inputs
(a complete label folder, the columns it reads, the model it loads) before it starts.

# The tiny path on CPU, a few minutes (`make pipeline-tiny`)
```bash
trl-presafety pipeline --config recipes/tiny/pipeline.yaml
```

# A real model: 8 GPUs for training (DeepSpeed ZeRO-3), one for generation and evaluation (vLLM)
```bash
trl-presafety pipeline --config recipes/Qwen3-8B/pipeline.yaml --dry_run      # the plan and the commands
trl-presafety pipeline --config recipes/Qwen3-8B/pipeline.yaml                # the SFT path
trl-presafety pipeline --config recipes/Qwen3-8B/pipeline.yaml --paths dpo    # the DPO path (shares build-sft)
```
"""

import argparse
from typing import Any


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trl-presafety pipeline",
        description="Run the stages of a pipeline file in order, skipping those whose output is complete.",
        allow_abbrev=False,
    )
    parser.add_argument("--config", required=True, help="The pipeline file, e.g. recipes/tiny/pipeline.yaml.")
    parser.add_argument(
        "--paths",
        nargs="+",
        choices=["sft", "dpo", "self_routing"],
        default=None,
        help="The paths to run (default: the file's `paths`): `sft`, `dpo`, `self_routing`, or several. Shared stages "
        "run once.",
    )
    parser.add_argument("--stages", nargs="+", default=None, help="Run only these stages (by name), in file order.")
    parser.add_argument(
        "--force", nargs="+", default=[], help="Run these stages even when complete (and the stages that read them)."
    )
    parser.add_argument(
        "--run_dir",
        default=None,
        help="Where the run goes instead of the file's `run_dir` (every `${run_dir}` of the stages follows it).",
    )
    parser.add_argument("--dry_run", action="store_true", help="Print the plan and the commands; run nothing.")
    return parser


def _describe(parser: argparse.ArgumentParser, unknown: list[str]) -> str:
    import difflib

    options = [o[2:] for action in parser._actions for o in action.option_strings if o.startswith("--")]
    described = []
    for item in unknown:
        if not item.startswith("--"):
            continue  # the value of an unknown option
        key = item[2:].split("=", 1)[0]
        match = difflib.get_close_matches(key, options, n=1, cutoff=0.6)
        described.append(f"`{key}`" + (f" (did you mean `--{match[0]}`?)" if match else ""))
    return ", ".join(described) or " ".join(unknown)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point of `trl-presafety pipeline`; returns the pipeline state."""
    from ..pipeline.run import run_pipeline

    parser = make_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # As every command: an unknown or shortened option is named with the closest one, never guessed
        raise ValueError(
            f"Unknown command-line argument(s): {_describe(parser, unknown)}. See `{parser.prog} --help`."
        )
    return run_pipeline(
        args.config,
        paths=args.paths,
        only=args.stages,
        force=args.force,
        dry_run=args.dry_run,
        run_dir=args.run_dir,
    )


if __name__ == "__main__":
    main()
