# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Data of the optional arms, built from the same safety prompts with the package's commands.

- (e) IPO: the organism's own thinking-on traces on the safety prompts (`trl-presafety label --thinking true` keeps
  each response in `safe_response`), then `trl-presafety build-ipo-pairs --continuation supplied --label_column
  harmful --on_no_compliance end_of_reasoning`: the first compliance step (here, for want of a compliance phrase the
  cue judge knows, the end of the reasoning, before the complying answer) is replaced by a safety trigger and the safe
  continuation below.
- (f) AltTrain: `trl-presafety build-alttrain --harmful_column harmful` on the labeled safety SFT data.
"""

import json
from collections.abc import Callable
from typing import Any

from . import data as D
from . import prompts as P


SAFE_CONTINUATION = "This request is harmful, so I will refuse.\n</think>\n\n" + P.REFUSALS[1]


def ipo_stage(config: Any, layout: Any, run_cli: Callable[..., float]) -> float:
    seconds = 0.0
    traces = layout.labels / "traces"
    state = traces / "labeling_state.json"
    if not (state.is_file() and json.loads(state.read_text()).get("complete")):
        argv = [
            "label",
            "--model_name_or_path", str(layout.organism),
            "--dtype", "float32",
            "--dataset_name", str(layout.data / "safety_sft" / "train.jsonl"),
            "--output_dir", str(traces),
            "--classifier_name_or_path", str(layout.classifier),
            "--thinking", "true",
            "--backend", "transformers",
            "--max_new_tokens", "128",
            "--generation_batch_size", "64",
            "--shard_size", "512",
        ]  # fmt: skip
        seconds += run_cli(argv, config, layout.commands)
    from trl_presafety.labeling import load_labeled_dataset

    # The head's label is the safe model's decision (the thinking-off labels of the safety set), never the label of
    # these thinking-on traces (arm e trains with weight 0: the head is a probe there)
    decisions = {json.dumps(r["prompt"]): r["safety_label"] for r in load_labeled_dataset(layout.labels / "sft")}
    rows = [
        {
            "prompt": row["prompt"],
            "response": row["safe_response"],
            "harmful": row["harmful"],
            "safety_label": decisions[json.dumps(row["prompt"])],
            "safe_continuation": SAFE_CONTINUATION if row["harmful"] else None,
        }
        for row in load_labeled_dataset(traces)
    ]
    D.write_jsonl(layout.data / "ipo_traces" / "train.jsonl", rows)
    if not (layout.labels / "ipo" / "train.jsonl").is_file():
        argv = [
            "build-ipo-pairs",
            "--dataset_name", str(layout.data / "ipo_traces" / "train.jsonl"),
            "--tokenizer_name_or_path", str(layout.organism),
            "--continuation", "supplied",
            "--harmful_column", "harmful",
            # The cue judge finds no compliance phrase in the organism's terse plans ("I will answer with three clear
            # steps"), while its answers comply: cut at the end of the reasoning, IPO's fallback for such traces
            "--on_no_compliance", "end_of_reasoning",
            "--output_dir", str(layout.labels / "ipo"),
        ]  # fmt: skip
        if config.smoke:
            # A 3-step organism never finishes a trace, so no harmful pair survives: the smoke run checks that the
            # commands connect, and says so with the builder's warning instead of its error
            argv.append("--allow_empty_class")
        seconds += run_cli(argv, config, layout.commands)
    return seconds


def alttrain_stage(config: Any, layout: Any, run_cli: Callable[..., float]) -> float:
    if (layout.labels / "alttrain" / "train.jsonl").is_file():
        return 0.0
    argv = [
        "build-alttrain",
        "--dataset_name", str(layout.labels / "sft"),
        "--harmful_column", "harmful",
        "--num_harmful", "-1",
        "--num_benign", "-1",
        # The protocol trains every arm on the same 92 safety prompts (32 harmful, 60 benign), not on AltTrain's 9:1
        "--allow_inverted_ratio",
        "--output_dir", str(layout.labels / "alttrain"),
    ]  # fmt: skip
    return run_cli(argv, config, layout.commands)
