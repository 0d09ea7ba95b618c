# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Sharded, resumable jobs over the rows of a dataset: the machinery of `trl-presafety label` and `build-sft`.

The input rows are cut into fixed contiguous shards. Each shard is processed once and written atomically as
`<folder>/data/<split>-NNNNN-of-MMMMM.parquet` (the hub layout, so `datasets.load_dataset(<folder>)` reads the result)
next to `labeling_state.json`, which records what the shards were computed from (the job's `state`). A job may write
several folders per shard (`build-sft` writes its SFT rows and its preference pairs): each gets the same state file,
and a shard counts as done only when every folder holds it.

A rerun skips the shards already on disk, so an interrupted job resumes without redoing finished shards and without
losing or duplicating rows; a rerun whose settings differ in one of `resume_keys` is refused rather than mixed in.
Until the state records the job complete, every command and loader of the package refuses the folder
([`trl_presafety.labeling.check_label_folder`]), whichever command wrote it (the state's `command`).
"""

import json
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


# A folder's layout: the state file beside `data/`, the hub's folder of parquet shards
STATE_FILE = "labeling_state.json"
SHARDS_DIR = "data"


def shard_path(output_dir: str | Path, split: str, index: int, num_shards: int) -> Path:
    """Where shard `index` lives: the hub's `data/<split>-NNNNN-of-MMMMM.parquet` naming."""
    return Path(output_dir) / SHARDS_DIR / f"{split}-{index:05d}-of-{num_shards:05d}.parquet"


def read_state(output_dir: str | Path) -> dict[str, Any] | None:
    path = Path(output_dir) / STATE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def write_json_atomic(path: str | Path, content: Any) -> None:
    """Writes `content` as JSON to a hidden temporary file, then renames it: a reader sees the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(content, indent=2, sort_keys=True, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def write_parquet_atomic(dataset: Any, path: str | Path) -> None:
    """Writes a `datasets.Dataset` as parquet, atomically (hidden temporary file, not matching the shard pattern)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    dataset.to_parquet(str(tmp))
    os.replace(tmp, path)


def read_shards(output_dir: str | Path, split: str) -> Any:
    """Every shard of `split` under `output_dir/data`, in order, as one `datasets.Dataset`."""
    from datasets import Dataset

    files = sorted((Path(output_dir) / SHARDS_DIR).glob(f"{split}-[0-9]*-of-[0-9]*.parquet"))
    if not files:
        raise FileNotFoundError(f"No shards for split {split!r} under {Path(output_dir) / SHARDS_DIR}.")
    return Dataset.from_parquet([str(f) for f in files], keep_in_memory=True)


def prepare_output_dir(
    output_dir: str | Path,
    state: Mapping[str, Any],
    overwrite: bool,
    resume_keys: Sequence[str],
    what: str = "labels",
) -> None:
    """Checks that the finished shards in `output_dir` come from the same data and settings (`resume_keys` of the
    state), or clears them with `overwrite`; then records `state` (not complete) in the state file."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    previous = read_state(output_dir)
    shards_dir = output_dir / SHARDS_DIR
    has_shards = shards_dir.exists() and any(shards_dir.glob("*.parquet"))
    if overwrite:
        shutil.rmtree(shards_dir, ignore_errors=True)
        (output_dir / STATE_FILE).unlink(missing_ok=True)
    elif previous is not None:
        changed = [k for k in resume_keys if previous.get(k) != state.get(k)]
        if changed:
            details = "; ".join(f"{k}: {previous.get(k)!r} -> {state.get(k)!r}" for k in changed)
            # Fingerprints are of content: the same path holding other weights or data (a model retrained in place)
            moved = [k for k in changed if k.endswith(("_fingerprint", "_fingerprints", "_sha256"))]
            cause = (
                f" The content behind {moved} changed since (e.g. a model retrained at the same path)."
                if moved
                else ""
            )
            raise ValueError(
                f"{output_dir} holds {what} computed with other data or settings ({details}).{cause} Resuming or "
                "reusing them would mix them. Use a new `output_dir`, restore the original inputs and settings, or "
                "pass `overwrite_output_dir=True` (`--overwrite_output_dir` on the command line) to start over."
            )
    elif has_shards:
        raise ValueError(
            f"{shards_dir} holds parquet shards but {output_dir / STATE_FILE} is missing, so they cannot be checked "
            "against this run. Use a new `output_dir` or pass `overwrite_output_dir=True`."
        )
    shards_dir.mkdir(parents=True, exist_ok=True)
    kept = previous if not overwrite and previous else {}
    write_json_atomic(output_dir / STATE_FILE, {**kept, **state, "complete": False})


class ShardedJob:
    """A job over `num_rows` input rows, cut into shards of `shard_size`, writing one parquet shard per folder.

    Args:
        folders (`Mapping[str, Path]`): Output folder per output name; the first one is the main folder (its shard
            is written last, so that a shard present there means every folder has it).
        state (`Mapping[str, Any]`): What the shards are computed from; written to every folder's state file.
        resume_keys (`Sequence[str]`): The keys of `state` a resumed run must match.
        num_rows, shard_size (`int`): Input rows and rows per shard.
        split (`str`): Split name in the shard file names.
        overwrite (`bool`): Delete existing shards and start over instead of resuming.
        what (`str`): What the folders hold, for messages ("labels", "SFT rows").
    """

    def __init__(
        self,
        folders: Mapping[str, str | Path],
        state: Mapping[str, Any],
        resume_keys: Sequence[str],
        *,
        num_rows: int,
        shard_size: int,
        split: str = "train",
        overwrite: bool = False,
        what: str = "labels",
    ):
        if shard_size < 1:
            raise ValueError(f"`shard_size` must be >= 1, got {shard_size}.")
        self.folders = {name: Path(folder) for name, folder in folders.items()}
        self.main = next(iter(self.folders))
        self.num_rows, self.shard_size, self.split = num_rows, shard_size, split
        self.num_shards = math.ceil(num_rows / shard_size)
        self.state = {**state, "num_rows": num_rows, "shard_size": shard_size, "num_shards": self.num_shards}
        self.state["split"] = split
        for name, folder in self.folders.items():
            prepare_output_dir(folder, {**self.state, "output": name}, overwrite, resume_keys, what)

    def path(self, name: str, index: int) -> Path:
        return shard_path(self.folders[name], self.split, index, self.num_shards)

    def done(self, index: int) -> bool:
        return all(self.path(name, index).exists() for name in self.folders)

    def rows(self, index: int) -> range:
        """The input rows of shard `index`."""
        return range(index * self.shard_size, min((index + 1) * self.shard_size, self.num_rows))

    def rows_done(self) -> int:
        return sum(len(self.rows(i)) for i in range(self.num_shards) if self.done(i))

    def write(self, index: int, outputs: Mapping[str, Any], extras: Mapping[str, Any] | None = None) -> None:
        """Writes shard `index`: `extras` (JSON files, relative to the main folder) first, then each folder's rows,
        the main folder's last. A run killed midway leaves no shard in the main folder, so the shard is redone."""
        for relative, content in (extras or {}).items():
            target = self.folders[self.main] / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(target, content)
        for name in [n for n in self.folders if n != self.main] + [self.main]:
            write_parquet_atomic(outputs[name], self.path(name, index))

    def run(
        self,
        process: Callable[[int, range], tuple[Mapping[str, Any], Mapping[str, Any] | None]],
        *,
        progress: Any = None,
        on_shard_end: Callable[[int, int], None] | None = None,
    ) -> None:
        """Processes every shard not yet done: `process(index, rows) -> (outputs, extras)`, then writes it."""
        for index in range(self.num_shards):
            if self.done(index):
                continue
            outputs, extras = process(index, self.rows(index))
            self.write(index, outputs, extras)
            if progress is not None:
                progress.update(len(self.rows(index)))
            if on_shard_end is not None:
                on_shard_end(index, self.num_shards)

    def finish(self, summary: Mapping[str, Any] | None = None) -> None:
        """Records the job complete (with `summary`) in every folder's state file."""
        for name, folder in self.folders.items():
            write_json_atomic(folder / STATE_FILE, {**self.state, "output": name, "complete": True, **(summary or {})})
