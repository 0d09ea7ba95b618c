# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""
`trl-presafety build-self-routing`: self-routing SFT data from a label folder.

For each prompt the safe model refused (`safety_label` 1), the training target becomes the safe model's own
thinking-off answer (`safe_response`, written by `trl-presafety label`) after an immediately closed think block
(`<think>\\n</think>\\n\\n`); every other row keeps its reasoning trace. Trained on it (best with
`presafety_head: tied`), the model decides at its first reasoning token: `</think>` (answer at once, as the safe model
does) or reasoning. See `trl_presafety.data.self_routing` and docs/self_routing.md.

Input: a complete label folder of SFT rows (`trl-presafety label` run on `build-sft` output, thinking off); an
interrupted one is refused. Output: `<output_dir>/data/train-00000-of-00001.parquet` (every input column, plus
`self_routed`), `labeling_state.json` (complete, with the fingerprint of the labels it was built from, as the package's
other sharded outputs) and `self_routing.json` (the source, its labeling settings and the counts), which the SFT
recipes read as `dataset_name: <output_dir>`.

```bash
trl-presafety build-self-routing --labels runs/tiny-labels --output_dir runs/tiny-self-routing-data
trl-presafety sft --config recipes/tiny/sft/config_self_routing.yaml
```
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..labeling.state import ALLOW_INCOMPLETE_LABELS_HELP


logger = logging.getLogger(__name__)

RECORD_FILE = "self_routing.json"
STATE_VERSION = 1
# What the rows are computed from: a rerun into the same folder must match them
RESUME_KEYS = ("version", "command", "labels_sha256", "label_column", "num_rows", "split")


@dataclass
class BuildSelfRoutingArguments:
    r"""
    Arguments of `trl-presafety build-self-routing`.

    labels (`str`): Label folder (`trl-presafety label` output on SFT rows, thinking off), or a data file / folder with
        `completion`, `safety_label` and `safe_response` columns.
    output_dir (`str`): Folder written with `data/train-00000-of-00001.parquet` and `self_routing.json`.
    split (`str`, *optional*, defaults to `"train"`): Split of the label folder to read.
    label_column (`str`, *optional*, defaults to `"safety_label"`): The safe model's decision (1 refuse, 0 comply; a
        soft label refuses from 0.5 up).
    overwrite_output_dir (`bool`, *optional*, defaults to `False`): Replace an output folder written from other
        labels (a rerun on the same labels reuses it).
    allow_incomplete_labels (`bool`, *optional*, defaults to `False`): Read a label folder whose labeling did not
        finish (only its finished shards); refused by default.
    """

    labels: str | None = field(
        default=None, metadata={"help": "Label folder of SFT rows (`trl-presafety label` output, thinking off)."}
    )
    output_dir: str | None = field(default=None, metadata={"help": "Folder of the self-routing SFT rows."})
    split: str = field(default="train", metadata={"help": "Split of the label folder to read."})
    label_column: str = field(default="safety_label", metadata={"help": "Column of the safe model's decision."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace an existing output folder."})
    allow_incomplete_labels: bool = field(default=False, metadata={"help": ALLOW_INCOMPLETE_LABELS_HELP})

    def __post_init__(self) -> None:
        if not self.labels:
            raise ValueError(
                f"Invalid `labels`: {self.labels!r}. Give the label folder of your SFT rows (`trl-presafety label` "
                "output), e.g. `--labels runs/tiny-labels`."
            )
        if not self.output_dir:
            raise ValueError(f"Invalid `output_dir`: {self.output_dir!r}. Set the folder of the self-routing rows.")
        if Path(self.output_dir).resolve() == Path(self.labels).resolve():
            raise ValueError(
                f"Invalid `output_dir`: {self.output_dir!r} is the label folder. Write the self-routing rows to a "
                "folder of their own: the label folder stays the record of the labels."
            )


def make_parser() -> Any:
    from .arguments import make_script_parser

    return make_script_parser("build-self-routing", (BuildSelfRoutingArguments,))


def check_thinking_off(folder: Path, state: dict[str, Any]) -> None:
    """Refuses a label folder whose `safe_response` is not a thinking-off answer (or not written by `label`)."""
    command = state.get("command", "label")
    if command != "label":
        raise ValueError(
            f"{folder} was written by `trl-presafety {command}`, not `trl-presafety label`: it has no safe model "
            "decisions and thinking-off answers. Label its rows first (`trl-presafety label --dataset_name "
            f"{folder} ...`) and pass the label folder."
        )
    if state.get("thinking") is not False:
        raise ValueError(
            f"{folder} was labeled with `thinking: {state.get('thinking')!r}`: its `safe_response` answers are not the "
            "safe model's thinking-off answers that self-routing trains on. Relabel with `thinking: false` (the "
            "method's safe model)."
        )


def build_self_routing(args: BuildSelfRoutingArguments) -> dict[str, Any]:
    """Writes the self-routing rows of `args.labels` to `args.output_dir`; returns the record (also written)."""
    from ..data.build_checks import warn_if_inside_package
    from ..data.self_routing import self_routing_dataset
    from ..fingerprints import fingerprint_dataset
    from ..labeling.pipeline import load_prompt_dataset
    from ..labeling.state import check_label_folder, label_folder_status
    from ..shards import ShardedJob, write_json_atomic

    warn_if_inside_package(args.output_dir, "build-self-routing")
    folder = check_label_folder(args.labels, args.allow_incomplete_labels)
    source: dict[str, Any] = {"path": str(Path(args.labels).resolve())}
    if folder is not None:
        state = label_folder_status(folder).get("state", {})
        check_thinking_off(folder, state)
        keys = ("model", "classifier", "threshold", "thinking", "decoding", "prompts_sha256", "model_fingerprint")
        source.update({k: state.get(k) for k in keys if k in state})
        dataset = load_prompt_dataset(
            str(folder), split=args.split, allow_incomplete_labels=args.allow_incomplete_labels
        )
    else:
        logger.warning(
            f"{args.labels} is not a label folder (no labeling_state.json): that its '{args.label_column}' and "
            "'safe_response' come from the safe model with thinking off cannot be checked."
        )
        dataset = load_prompt_dataset(args.labels, split=args.split)
    rows, counts = self_routing_dataset(dataset, args.label_column)
    if not counts.get("self_routed"):
        logger.warning(
            f"No row of {args.labels} was self-routed (counts: {counts}): the safe model refused none of its prompts "
            "with a usable answer, so the output equals the input."
        )
    # One shard with the state file of the package's sharded outputs: readers check it is complete, and a rerun on
    # other labels (their content, not their path) is refused instead of mixed in
    state = {
        "version": STATE_VERSION,
        "command": "build-self-routing",
        "labels_sha256": fingerprint_dataset(dataset),
        "label_column": args.label_column,
    }
    job = ShardedJob(
        {"self_routing": Path(args.output_dir)},
        state,
        RESUME_KEYS,
        num_rows=len(rows),
        shard_size=max(len(rows), 1),
        split=args.split,
        overwrite=args.overwrite_output_dir,
        what="self-routing rows",
    )
    if not job.done(0):
        job.write(0, {"self_routing": rows})
    record = {"source": source, "label_column": args.label_column, "num_rows": len(rows), "counts": counts}
    write_json_atomic(Path(args.output_dir) / RECORD_FILE, record)
    job.finish({"counts": counts})
    print(
        f"Self-routing rows: {len(rows)} in {args.output_dir} ({counts.get('self_routed', 0)} self-routed: closed "
        f"think block + the safe model's thinking-off answer; the others keep their traces). Outcomes: "
        f"{json.dumps(counts)}."
    )
    return record


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point of `trl-presafety build-self-routing`."""
    from .arguments import parse_args_strict

    (args,) = parse_args_strict(make_parser(), argv)
    return build_self_routing(args)


if __name__ == "__main__":
    main()
