# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""
Build AltTrain-style SFT data (https://huggingface.co/papers/2604.18946): rewrite SFT examples so the reasoning opens
with an explicit safety assessment (understanding sentence, one-sentence harmfulness judgment, then a refusal for
harmful prompts or the rest of the original reasoning for benign ones), sampling ~900 harmful + ~100 benign examples.
The output trains with plain SFT: `trl-presafety sft --config recipes/<model>/alttrain/config_alttrain.yaml`.

Input rows: `prompt`, `completion` (reasoning in a think block + answer) and `harmful` (the prompt's harmfulness from
its source: 1 harmful, 0 benign; not `safety_label`, the safe model's decision, which is kept for the pre-CoT head).
Output: `<output_dir>/train.jsonl` (same columns and format).

# The bundled tiny SFT data (all its 40 harmful prompts and 5 benign ones; what `trl_presafety/data/tiny/alttrain` holds)
```bash
trl-presafety build-alttrain --dataset_name trl_presafety/data/tiny/sft --num_harmful 40 --num_benign 5 \
    --output_dir trl_presafety/data/tiny/alttrain
```

# The paper's scale, from a safety SFT set with reasoning traces
```bash
trl-presafety build-alttrain --dataset_name data/safe-cot-sft.jsonl --num_harmful 900 --num_benign 100 \
    --understanding_sentences 1 --output_dir data/alttrain
```
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..labeling.state import ALLOW_INCOMPLETE_LABELS_HELP


@dataclass
class BuildAltTrainArguments:
    r"""
    Input, output and sample sizes of `trl-presafety build-alttrain` (the restructuring is in `AltTrainConfig`).

    dataset_name (`str`): Hub id, data file or folder of SFT examples with a `harmful` column.
    dataset_config (`str`, *optional*), dataset_split (`str`, *optional*, defaults to `"train"`): Which data.
    output_dir (`str`): Folder written with `train.jsonl`.
    num_harmful (`int`, *optional*, defaults to `900`), num_benign (`int`, *optional*, defaults to `100`): Examples
        sampled per kind (AltTrain uses ~900 + ~100); `-1` takes all.
    allow_incomplete_labels (`bool`, *optional*, defaults to `False`): Read a label folder whose labeling did not
        finish (only its finished shards); refused by default.
    """

    dataset_name: str | None = field(
        default=None, metadata={"help": "Hub id, data file or folder of SFT data (required)."}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset config."})
    dataset_split: str = field(default="train", metadata={"help": "Split to read."})
    output_dir: str | None = field(default=None, metadata={"help": "Folder for train.jsonl (required)."})
    num_harmful: int = field(default=900, metadata={"help": "Harmful examples to sample; -1 takes all."})
    num_benign: int = field(default=100, metadata={"help": "Benign examples to sample; -1 takes all."})
    allow_incomplete_labels: bool = field(default=False, metadata={"help": ALLOW_INCOMPLETE_LABELS_HELP})

    def __post_init__(self):
        if not self.dataset_name:
            raise ValueError("Invalid `dataset_name`: None. Set it to the hub id, file or folder of the SFT data.")
        if not self.output_dir:
            raise ValueError("Invalid `output_dir`: None. Set the folder the AltTrain data is written to.")
        for name in ("num_harmful", "num_benign"):
            if getattr(self, name) < -1:
                raise ValueError(f"Invalid `{name}`: {getattr(self, name)}. Use a count >= 0, or -1 for all.")


def make_parser():
    from ..data.alttrain import AltTrainConfig
    from .utils import make_script_parser

    return make_script_parser("build-alttrain", (BuildAltTrainArguments, AltTrainConfig), usage=None)


def build(args: BuildAltTrainArguments, config) -> Path:
    """Builds and writes the AltTrain data; returns the path of `train.jsonl`."""
    from ..data.alttrain import build_alttrain_dataset
    from ..labeling.pipeline import load_prompt_dataset

    dataset = load_prompt_dataset(
        args.dataset_name,
        args.dataset_config,
        args.dataset_split,
        allow_incomplete_labels=args.allow_incomplete_labels,
    )
    formatted = build_alttrain_dataset(
        dataset,
        config,
        num_harmful=None if args.num_harmful == -1 else args.num_harmful,
        num_benign=None if args.num_benign == -1 else args.num_benign,
    )
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "train.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in formatted)
    print(f"Wrote {len(formatted)} AltTrain examples to {path}")
    return path


def main(argv: list[str] | None = None) -> Path:
    """Entry point of `trl-presafety build-alttrain`; returns the path of the written data."""
    from .utils import parse_args_strict

    args, config = parse_args_strict(make_parser(), argv)
    return build(args, config)


if __name__ == "__main__":
    main()
