# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""
Build AltTrain-style SFT data (https://huggingface.co/papers/2604.18946): rewrite SFT examples so the reasoning opens
with an explicit safety assessment (understanding sentence, one-sentence harmfulness judgment, then a refusal for
harmful prompts or the rest of the original reasoning for benign ones), sampling ~900 harmful + ~100 benign examples.
The output trains with plain SFT: `trl-presafety sft --config recipes/<model>/alttrain/config_alttrain.yaml`.

Input rows: `prompt`, `completion` (reasoning in a think block + answer) and `harmful` (the prompt's harmfulness from
its source: 1 harmful, 0 benign; not `safety_label`, the safe model's decision, which is kept for the pre-CoT head).
Output: `<output_dir>/train.jsonl` (same columns and format; `output_dir` defaults to `runs/alttrain`). The sample keeps
the requested harmful:benign ratio: when the data has too few examples of a class and taking all of them would invert
it, or a class asked for is missing, the command stops and gives the counts that keep it (`--allow_inverted_ratio` /
`--allow_empty_class` write the sample anyway).

# The bundled tiny SFT data (all its 40 harmful prompts and 5 benign ones; what `trl_presafety/data/tiny/alttrain`
# holds). Without the counts, the defaults (900 + 100) would take all 40 harmful and 100 benign rows: the command stops.
```bash
trl-presafety build-alttrain --dataset_name trl_presafety/data/tiny/sft --num_harmful 40 --num_benign 5 \
    --output_dir runs/tiny-alttrain-data
```

# The paper's scale, from a safety SFT set with reasoning traces
```bash
trl-presafety build-alttrain --dataset_name data/safe-cot-sft.jsonl --num_harmful 900 --num_benign 100 \
    --understanding_sentences 1 --output_dir runs/alttrain
```
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..data.build_checks import ALLOW_EMPTY_CLASS_HELP, ALLOW_INVERTED_RATIO_HELP
from ..labeling.state import ALLOW_INCOMPLETE_LABELS_HELP


@dataclass
class BuildAltTrainArguments:
    r"""
    Input, output and sample sizes of `trl-presafety build-alttrain` (the restructuring is in `AltTrainConfig`).

    dataset_name (`str`): Hub id, data file or folder of SFT examples with a `harmful` column.
    dataset_config (`str`, *optional*): Configuration of the dataset.
    dataset_split (`str`, *optional*, defaults to `"train"`): Split to read.
    output_dir (`str`, *optional*, defaults to `"runs/alttrain"`): Folder written with `train.jsonl`.
    num_harmful (`int`, *optional*, defaults to `900`): Harmful examples sampled (AltTrain uses ~900); `-1` takes
        all.
    num_benign (`int`, *optional*, defaults to `100`): Benign examples sampled (AltTrain uses ~100); `-1` takes all.
    allow_incomplete_labels (`bool`, *optional*, defaults to `False`): Read a label folder whose labeling did not
        finish (only its finished shards); refused by default.
    allow_empty_class (`bool`, *optional*, defaults to `False`): Write the sample even when a class asked for (a
        count > 0 or `-1`) is missing from the data; refused by default.
    allow_inverted_ratio (`bool`, *optional*, defaults to `False`): Write the sample even when its harmful:benign
        ratio inverts the requested one (AltTrain's 9:1 when a count is `-1`); refused by default.
    """

    dataset_name: str | None = field(
        default=None, metadata={"help": "Hub id, data file or folder of SFT data (required)."}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset config."})
    dataset_split: str = field(default="train", metadata={"help": "Split to read."})
    output_dir: str = field(default="runs/alttrain", metadata={"help": "Folder for train.jsonl."})
    num_harmful: int = field(default=900, metadata={"help": "Harmful examples to sample; -1 takes all."})
    num_benign: int = field(default=100, metadata={"help": "Benign examples to sample; -1 takes all."})
    allow_incomplete_labels: bool = field(default=False, metadata={"help": ALLOW_INCOMPLETE_LABELS_HELP})
    allow_empty_class: bool = field(default=False, metadata={"help": ALLOW_EMPTY_CLASS_HELP})
    allow_inverted_ratio: bool = field(default=False, metadata={"help": ALLOW_INVERTED_RATIO_HELP})

    def __post_init__(self):
        if not self.dataset_name:
            raise ValueError("Invalid `dataset_name`: None. Set it to the hub id, file or folder of the SFT data.")
        if not self.output_dir:
            raise ValueError(
                f"Invalid `output_dir`: {self.output_dir!r}. Set the folder the AltTrain data is written to (default "
                "`runs/alttrain`)."
            )
        for name in ("num_harmful", "num_benign"):
            if getattr(self, name) < -1:
                raise ValueError(f"Invalid `{name}`: {getattr(self, name)}. Use a count >= 0, or -1 for all.")


def make_parser():
    from ..data.alttrain import AltTrainConfig
    from .arguments import make_script_parser

    return make_script_parser("build-alttrain", (BuildAltTrainArguments, AltTrainConfig))


def build(args: BuildAltTrainArguments, config) -> Path:
    """Builds and writes the AltTrain data; returns the path of `train.jsonl`."""
    from ..data.alttrain import build_alttrain_dataset
    from ..data.build_checks import warn_if_inside_package
    from ..inputs import check_data_input
    from ..labeling.pipeline import load_prompt_dataset

    check_data_input(args.dataset_name)
    warn_if_inside_package(args.output_dir, "build-alttrain")
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
        allow_empty_class=args.allow_empty_class,
        allow_inverted_ratio=args.allow_inverted_ratio,
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
    from .arguments import parse_args_strict

    args, config = parse_args_strict(make_parser(), argv)
    return build(args, config)


if __name__ == "__main__":
    main()
