# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Is a label folder finished? One check for every command and loader that reads a dataset path.

`trl-presafety label` (and `build-sft`, through `trl_presafety.shards`) writes
`<output_dir>/data/<split>-NNNNN-of-MMMMM.parquet` shards one at a time, next to `labeling_state.json`. The folder is in the hub layout, so `datasets.load_dataset(<output_dir>)` reads whatever shards
exist: an interrupted run (killed, out of time) would silently give a training set with only its first rows, e.g. 64
of 140. [`check_label_folder`] stops that: a path inside a label folder whose state does not show every shard done
raises [`IncompleteLabelsError`] saying how many shards are done and how to resume, unless the caller passes
`allow_incomplete_labels=True` (then it warns).
"""

import json
import logging
import re
from pathlib import Path
from typing import Any

from ..shards import SHARDS_DIR, STATE_FILE


logger = logging.getLogger(__name__)

OPTION = "allow_incomplete_labels"
# One help text for the field of every command that reads a dataset path
ALLOW_INCOMPLETE_LABELS_HELP = (
    "Use a label folder (`trl-presafety label` output) whose labeling_state.json says the labeling did not finish: "
    "only its finished shards are read, with a warning. Default: such a folder is refused."
)
_SHARD_NAME = re.compile(r"^(?P<split>.+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.parquet$")


class IncompleteLabelsError(ValueError):
    """A label folder whose labeling has not finished (or whose state cannot tell) was about to be read."""


def find_label_folder(path: str | Path) -> Path | None:
    """The label folder `path` belongs to, or `None`: the folder itself, its `data/` folder, a shard in it or a glob
    of its shards (as `data_files`). A folder of our shards (`data/<split>-NNNNN-of-MMMMM.parquet` holding a label
    column) without its state file is one too: it was copied without `labeling_state.json` and cannot be told
    complete. A hub id or any other path is not a label folder."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    for folder in (path.parent, path.parent.parent):
        if (folder / STATE_FILE).is_file() and (path == folder / SHARDS_DIR or path.parent == folder / SHARDS_DIR):
            return folder
    for folder in (path, path.parent, path.parent.parent):
        if (path == folder or path == folder / SHARDS_DIR or path.parent == folder / SHARDS_DIR) and _stateless_shards(
            folder
        ):
            return folder
    return None


# Columns only the package's sharded commands write: a hub-layout folder holding them came from `label` / `build-sft`
_OUR_COLUMNS = ("safety_label", "safe_response")


def _stateless_shards(folder: Path) -> dict[str, Any] | None:
    """For a folder without a state file whose `data/` holds shards in our naming: what is there (`missing` shard
    indices of the first split seen, and whether the shards hold our label columns); `None` otherwise. A complete
    hub-layout dataset of someone else's (every shard present, none of our columns) is not ours and gives `None`."""
    if (folder / STATE_FILE).is_file() or not (folder / SHARDS_DIR).is_dir():
        return None
    splits: dict[tuple[str, int], set[int]] = {}
    first = None
    for shard in sorted((folder / SHARDS_DIR).glob("*.parquet")):
        match = _SHARD_NAME.match(shard.name)
        if match:
            splits.setdefault((match["split"], int(match["total"])), set()).add(int(match["index"]))
            first = first or shard
    if not splits:
        return None
    missing = {
        f"{split} ({total} shards)": sorted(set(range(total)) - done) for (split, total), done in splits.items()
    }
    missing = {k: v for k, v in missing.items() if v}
    try:
        import pyarrow.parquet as pq

        ours = any(c in pq.read_schema(first).names for c in _OUR_COLUMNS)
    except Exception:  # an unreadable shard: not a folder anyone can use as is
        ours = True
    if not missing and not ours:
        return None
    found = sum(len(done) for done in splits.values())
    return {"missing": missing, "ours": ours, "found": found}


def label_folder_status(folder: str | Path) -> dict[str, Any]:
    """What the state file and the shards on disk say: `complete`, `num_shards`, `shards_done`, `num_rows`,
    `rows_done`, `split`, and `problem` (why the folder does not count as complete, or `None`)."""
    folder = Path(folder)
    if not (folder / STATE_FILE).is_file() and (stateless := _stateless_shards(folder)) is not None:
        missing = "; ".join(f"{split}: {len(idx)} missing" for split, idx in stateless["missing"].items())
        return {
            "complete": False,
            "problem": f"{folder / SHARDS_DIR} holds {stateless['found']} parquet shards but {folder / STATE_FILE} is "
            f"missing ({missing or 'every shard named is present, but what they were computed from is unknown'}): "
            "a label folder copied or kept without its state file cannot be told complete or checked against its "
            "model and data",
        }
    try:
        state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
        num_shards, shard_size, num_rows = int(state["num_shards"]), int(state["shard_size"]), int(state["num_rows"])
        split = str(state["split"])
    except (OSError, ValueError, TypeError, KeyError) as error:
        return {
            "complete": False,
            "problem": f"{folder / STATE_FILE} cannot be read ({type(error).__name__}: {error})",
        }
    done = set()
    for shard in (folder / SHARDS_DIR).glob("*.parquet"):
        match = _SHARD_NAME.match(shard.name)
        if match and match["split"] == split and int(match["total"]) == num_shards:
            done.add(int(match["index"]))
    rows_done = sum(min(shard_size, num_rows - i * shard_size) for i in done if i < num_shards)
    status = {
        "num_shards": num_shards,
        "shards_done": len(done),
        "num_rows": num_rows,
        "rows_done": rows_done,
        "split": split,
        "state": state,
    }
    if state.get("complete") is not True:
        problem = f"{folder / STATE_FILE} says the labeling is incomplete"
    elif len(done) != num_shards:
        # Finished once, then a shard was removed (by hand, or a partial copy of the folder)
        problem = (
            f"{folder / STATE_FILE} says the labeling finished, but shards are missing from {folder / SHARDS_DIR}"
        )
    else:
        problem = None
    return {**status, "complete": problem is None, "problem": problem}


def check_label_folder(path: str | Path | None, allow_incomplete_labels: bool = False) -> Path | None:
    """Raises [`IncompleteLabelsError`] if `path` is in a label folder whose labeling did not finish.

    Args:
        path: a dataset path as given to a command (`dataset_name`, a mixture's `path` / `data_files`, an evaluation
            file). Hub ids and paths outside a label folder pass.
        allow_incomplete_labels: read an incomplete folder on purpose: warn instead of raising.

    Returns:
        The label folder, or `None` when `path` is not in one.
    """
    if path is None:
        return None
    folder = find_label_folder(path)
    if folder is None:
        return None
    status = label_folder_status(folder)
    if status["complete"]:
        return folder
    if "num_shards" in status:
        state = status["state"]
        done = (
            f"{status['shards_done']} of {status['num_shards']} shards done ({status['rows_done']} of "
            f"{status['num_rows']} rows)"
        )
        command = state.get("command", "label")
        if command == "label":
            resume = (
                f"Resume with the same `trl-presafety label` command (e.g. `trl-presafety label --config <your label "
                f"recipe>`) or `label_dataset(...)` call: same prompts, model {state.get('model')!r}, classifier "
                f"{state.get('classifier')!r}, shard_size {state.get('shard_size')} and `output_dir={str(folder)!r}`; "
                "finished shards are kept and only the missing ones are computed."
            )
        else:  # another sharded job (`build-sft`) keeps the same state file
            resume = (
                f"Resume with the same `trl-presafety {command}` command (e.g. `trl-presafety {command} --config "
                f"<your {command} recipe>`): same inputs, model {state.get('model')!r}, shard_size "
                f"{state.get('shard_size')} and output folder {str(folder)!r}; finished shards are kept and only the "
                "missing ones are computed."
            )
    else:
        done = "the shards done cannot be counted"
        resume = (
            f"Relabel into a new folder with `trl-presafety label --config <your label recipe>`, or copy the whole "
            f"folder again with its {STATE_FILE}."
        )
    if allow_incomplete_labels:
        logger.warning(f"Reading the incomplete label folder {folder} on purpose ({OPTION}=True): {done}.")
        return folder
    raise IncompleteLabelsError(
        f"{status['problem']}: {done}. Reading {path} would use only the finished rows. {resume} To use the finished "
        f"rows on purpose, set `{OPTION}: true` in the recipe (`--{OPTION}` on the command line, "
        f"`{OPTION}=True` in Python)."
    )
