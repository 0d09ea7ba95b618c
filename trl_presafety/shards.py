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

Many workers, no coordinator: any number of processes (on one node or many, over a shared file system) may run the
same job on the same folder at once. Before computing a shard, a worker claims it by creating
`<folder>/.claims/<split>-NNNNN.claim` with `O_CREAT | O_EXCL` (one creator wins), holding its owner (host, pid, a
random token); a background thread touches the file every `claim_timeout / 10` seconds while the shard is computed.
A claim is taken over when its owner is dead: a pid that no longer exists on this host, a file not touched for
`claim_timeout` seconds (another host), or any claim with `take_over_claims=True` (a rerun after the workers are
known dead). With `num_workers=N, worker_index=i` (a Slurm array: `$SLURM_ARRAY_TASK_COUNT`,
`$SLURM_ARRAY_TASK_ID`) worker `i` only takes shards `i, i + N, i + 2N, ...`; without, workers share every shard and
may join or leave at any time. Rows are never lost or duplicated whatever happens to a worker: a shard has one fixed
file name and is renamed into place whole. The worker that finds every shard on disk at its end (the last one) records
the job complete; a worker that ends while others still hold shards leaves the folder incomplete for them.
"""

import json
import logging
import math
import os
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .validation import check_range


logger = logging.getLogger(__name__)


# A folder's layout: the state file beside `data/`, the hub's folder of parquet shards
STATE_FILE = "labeling_state.json"
SHARDS_DIR = "data"
# Hidden, so that `datasets.load_dataset(<folder>)` never reads it
CLAIMS_DIR = ".claims"
DEFAULT_CLAIM_TIMEOUT = 600.0


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


@dataclass
class ShardWorkerArguments:
    r"""
    How one process takes part in a sharded job (`label`, `build-sft`) that several processes may run at once over a
    shared folder (see `trl_presafety.shards`).

    > Workers

    num_workers (`int`, *optional*, defaults to `1`):
        Split the shards between this many workers: worker `i` takes shards `i, i + N, i + 2N, ...` only. With `1`
        (default) a worker takes any shard no other live worker holds, so several copies of one command share the job
        and may join or leave at any time.
    worker_index (`int`, *optional*, defaults to `0`):
        This worker's index in `[0, num_workers)` (a Slurm array: `$SLURM_ARRAY_TASK_ID`).
    claim_timeout (`float`, *optional*, defaults to `600.0`):
        Seconds after which a claim whose owner stopped touching it counts as dead and is taken over (owners touch
        their claim every `claim_timeout / 10` seconds; a claim of a dead process on the same host is taken over at
        once).
    take_over_claims (`bool`, *optional*, defaults to `False`):
        Take over every claim, live-looking or not: for a rerun once the other workers are known to be gone (a
        cancelled batch job), without waiting `claim_timeout`.
    """

    num_workers: int = field(
        default=1,
        metadata={"help": "Split the shards between this many workers (worker i takes shards i, i+N, ...); 1: any "
                  "worker takes any unclaimed shard, so copies of one command share the job."},
    )  # fmt: skip
    worker_index: int = field(
        default=0, metadata={"help": "This worker's index in [0, num_workers) (e.g. $SLURM_ARRAY_TASK_ID)."}
    )
    claim_timeout: float = field(
        default=DEFAULT_CLAIM_TIMEOUT,
        metadata={"help": "Seconds without a heartbeat after which another worker's shard claim is taken over."},
    )
    take_over_claims: bool = field(
        default=False,
        metadata={"help": "Take over every other worker's shard claim now (they are known to be dead)."},
    )

    def __post_init__(self) -> None:
        check_worker_fields(self.num_workers, self.worker_index, self.claim_timeout)

    def worker_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of [`ShardedJob`] (and `label_dataset`)."""
        return {
            "num_workers": self.num_workers,
            "worker_index": self.worker_index,
            "claim_timeout": self.claim_timeout,
            "take_over_claims": self.take_over_claims,
        }


def check_worker_fields(num_workers: int, worker_index: int, claim_timeout: float) -> None:
    check_range("num_workers", num_workers, 1, fix="Use the number of workers sharing the job, >= 1.")
    check_range(
        "worker_index",
        worker_index,
        0,
        num_workers,
        high_inclusive=False,
        fix=f"Use an index in [0, {num_workers}) with `num_workers: {num_workers}` (a Slurm array: "
        "`--array=0-<N-1>` and `--worker_index $SLURM_ARRAY_TASK_ID`).",
    )
    check_range("claim_timeout", claim_timeout, 0, None, False, fix="Use a number of seconds > 0, e.g. 600.")


# --- claims: one live worker per shard --------------------------------------------------------------------------------
_HOST = socket.gethostname()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # exists, owned by someone else (or not a pid we can judge)
    return True


def _read_claim(path: Path) -> tuple[dict[str, Any] | None, float] | None:
    """The claim's content (`None` while its owner is still writing it) and mtime; `None` if there is no claim."""
    try:
        mtime = path.stat().st_mtime
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        content = json.loads(text)
    except ValueError:
        content = None
    return (content if isinstance(content, dict) else None), mtime


class ShardClaim:
    """A claim on one shard: the file exists while its owner computes the shard; [`release`] removes it."""

    def __init__(self, path: Path, owner: str, heartbeat: float):
        self.path, self.owner = path, owner
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat,), daemon=True)
        self._thread.start()

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                os.utime(self.path)
            except OSError:
                pass  # taken over (or the folder was removed): `held` tells the owner before it writes

    def held(self) -> bool:
        """Whether the claim file is still this owner's (another worker may have taken it over as dead)."""
        claim = _read_claim(self.path)
        return claim is not None and claim[0] is not None and claim[0].get("owner") == self.owner

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        if self.held():
            self.path.unlink(missing_ok=True)


def claim_shard(
    path: str | Path, *, claim_timeout: float = DEFAULT_CLAIM_TIMEOUT, take_over: bool = False, **info: Any
) -> ShardClaim | None:
    """Claims the shard whose claim file is `path`: a [`ShardClaim`], or `None` when a live worker holds it.

    The file is created with `O_CREAT | O_EXCL`, so of several workers racing for a free shard exactly one wins. A
    claim whose owner is dead (see `trl_presafety.shards`) is renamed away under a unique name first (one rename of a
    file succeeds, so one of several workers taking it over wins), then claimed afresh the same way. `info` is written
    into the claim for people reading it (worker index, command)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = f"{_HOST}:{os.getpid()}:{secrets.token_hex(8)}"
    for _ in range(2):  # a free shard; or a dead owner's claim moved away, then a free shard
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not _take_over(path, claim_timeout, take_over):
                return None
            continue
        content = {"owner": owner, "host": _HOST, "pid": os.getpid(), "claimed_at": time.time(), **info}
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(content, sort_keys=True))
        return ShardClaim(path, owner, heartbeat=max(claim_timeout / 10, 0.05))
    return None


def _claim_is_dead(content: dict[str, Any] | None, mtime: float, claim_timeout: float) -> bool:
    if content is not None and content.get("host") == _HOST:
        pid = content.get("pid")
        if isinstance(pid, int) and not _pid_alive(pid):
            return True
    return time.time() - mtime > claim_timeout


def _take_over(path: Path, claim_timeout: float, force: bool) -> bool:
    """Moves a dead owner's claim out of the way; `False` when the claim is live (or another worker took it over)."""
    claim = _read_claim(path)
    if claim is None:
        return True  # released in the meantime: try again
    content, mtime = claim
    if not force and not _claim_is_dead(content, mtime, claim_timeout):
        return False
    moved = path.with_name(f"{path.name}.dead-{secrets.token_hex(6)}")
    try:
        os.rename(path, moved)
    except FileNotFoundError:
        return False  # another worker moved it first, and will claim the shard
    again = _read_claim(moved)
    if again is not None and again[0] != content:
        # A fresh claim replaced the dead one between reading and moving: put it back (unless yet another exists)
        try:
            os.link(moved, path)
        except FileExistsError:
            pass
        moved.unlink(missing_ok=True)
        return False
    logger.warning(
        f"Taking over the claim {path} of {content.get('owner') if content else 'an unknown owner'} "
        f"({'take_over_claims' if force else 'its owner is dead'}): the shard is computed again here."
    )
    moved.unlink(missing_ok=True)
    return True


def live_claims(output_dir: str | Path, claim_timeout: float = DEFAULT_CLAIM_TIMEOUT) -> list[dict[str, Any]]:
    """The claims in `output_dir` whose owners look alive (other workers computing shards now)."""
    claims = []
    for path in sorted((Path(output_dir) / CLAIMS_DIR).glob("*.claim")):
        claim = _read_claim(path)
        if claim is not None and not _claim_is_dead(claim[0], claim[1], claim_timeout):
            claims.append({"claim": str(path), **(claim[0] or {})})
    return claims


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
        others = live_claims(output_dir)
        if others:
            raise ValueError(
                f"`overwrite_output_dir` would delete the shards of {output_dir} while {len(others)} other worker(s) "
                f"compute shards there (claims: {[c['claim'] for c in others]}). Stop them first, or clear the "
                "folder once before starting the workers and run them without `overwrite_output_dir`."
            )
        shutil.rmtree(shards_dir, ignore_errors=True)
        shutil.rmtree(output_dir / CLAIMS_DIR, ignore_errors=True)
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
    if kept.get("complete") is True and all(kept.get(k) == state.get(k) for k in resume_keys):
        # Finished with these settings: left as it is, so that a worker joining late does not mark the folder
        # incomplete under the readers' feet (it finds every shard done and records the job complete again)
        return
    write_json_atomic(output_dir / STATE_FILE, {**kept, **state, "complete": False})


class ShardedJob:
    """A job over `num_rows` input rows, cut into shards of `shard_size`, writing one parquet shard per folder.

    Args:
        folders (`Mapping[str, Path]`): Output folder per output name; the first one is the main folder (its shard
            is written last, so that a shard present there means every folder has it; the claims live there too).
        state (`Mapping[str, Any]`): What the shards are computed from; written to every folder's state file.
        resume_keys (`Sequence[str]`): The keys of `state` a resumed run must match.
        num_rows, shard_size (`int`): Input rows and rows per shard.
        split (`str`): Split name in the shard file names.
        overwrite (`bool`): Delete existing shards and start over instead of resuming.
        what (`str`): What the folders hold, for messages ("labels", "SFT rows").
        num_workers, worker_index (`int`): This worker takes shards `worker_index, worker_index + num_workers, ...`
            only (see [`ShardWorkerArguments`]).
        claim_timeout (`float`): Seconds without a heartbeat after which another worker's claim is taken over.
        take_over_claims (`bool`): Take over every other worker's claim (they are known to be dead).
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
        num_workers: int = 1,
        worker_index: int = 0,
        claim_timeout: float = DEFAULT_CLAIM_TIMEOUT,
        take_over_claims: bool = False,
    ):
        if shard_size < 1:
            raise ValueError(f"`shard_size` must be >= 1, got {shard_size}.")
        check_worker_fields(num_workers, worker_index, claim_timeout)
        if overwrite and num_workers > 1:
            raise ValueError(
                f"`overwrite_output_dir` with `num_workers: {num_workers}`: each worker would delete the shards the "
                "others wrote. Clear the folder once (or run one worker with `overwrite_output_dir` to the end), then "
                "start the workers without it."
            )
        self.folders = {name: Path(folder) for name, folder in folders.items()}
        self.main = next(iter(self.folders))
        self.num_rows, self.shard_size, self.split = num_rows, shard_size, split
        self.num_shards = math.ceil(num_rows / shard_size)
        self.num_workers, self.worker_index = num_workers, worker_index
        self.claim_timeout, self.take_over_claims = claim_timeout, take_over_claims
        # What this worker did in `run`: shards written, and shards left to live workers holding them
        self.written: list[int] = []
        self.held_by_others: list[int] = []
        self.state = {**state, "num_rows": num_rows, "shard_size": shard_size, "num_shards": self.num_shards}
        self.state["split"] = split
        for name, folder in self.folders.items():
            prepare_output_dir(folder, {**self.state, "output": name}, overwrite, resume_keys, what)

    def path(self, name: str, index: int) -> Path:
        return shard_path(self.folders[name], self.split, index, self.num_shards)

    def claim_path(self, index: int) -> Path:
        return self.folders[self.main] / CLAIMS_DIR / f"{self.split}-{index:05d}.claim"

    def done(self, index: int) -> bool:
        return all(self.path(name, index).exists() for name in self.folders)

    def all_done(self) -> bool:
        """Whether every shard of the job (this worker's and the others') is on disk."""
        return all(self.done(i) for i in range(self.num_shards))

    def shards(self) -> list[int]:
        """The shards this worker may take."""
        return list(range(self.worker_index, self.num_shards, self.num_workers))

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
        """Processes every shard of this worker that is neither done nor held by a live worker: claims it, calls
        `process(index, rows) -> (outputs, extras)`, writes it, releases the claim."""
        self.written, self.held_by_others = [], []
        command = self.state.get("command")
        for index in self.shards():
            if self.done(index):
                continue
            claim = claim_shard(
                self.claim_path(index),
                claim_timeout=self.claim_timeout,
                take_over=self.take_over_claims,
                command=command,
                worker_index=self.worker_index,
                num_workers=self.num_workers,
            )
            if claim is None:
                self.held_by_others.append(index)
                continue
            try:
                if self.done(index):  # written by a worker that released its claim just before ours
                    continue
                outputs, extras = process(index, self.rows(index))
                if not claim.held():
                    # Taken over as dead (no heartbeat for `claim_timeout`): the new owner writes the same rows
                    logger.warning(f"The claim on shard {index} was taken over by another worker; not writing it.")
                    self.held_by_others.append(index)
                    continue
                self.write(index, outputs, extras)
                self.written.append(index)
            finally:
                claim.release()
            if progress is not None:
                progress.update(len(self.rows(index)))
            if on_shard_end is not None:
                on_shard_end(index, self.num_shards)

    def pending_message(self) -> str:
        """What is left when this worker ends before the job is complete: for the log and the command's output."""
        done = sum(self.done(i) for i in range(self.num_shards))
        held = f" ({len(self.held_by_others)} held by other live workers)" if self.held_by_others else ""
        return (
            f"Worker {self.worker_index} of {self.num_workers} finished its part ({len(self.written)} shard(s) "
            f"written); {done} of {self.num_shards} shards of {self.folders[self.main]} are done{held}. The folder "
            "becomes complete when the last worker ends; if a worker died, rerun its command (or the same command "
            "with `--num_workers 1` to take every missing shard)."
        )

    def finish(self, summary: Mapping[str, Any] | None = None) -> None:
        """Records the job complete (with `summary`) in every folder's state file, and drops the claims folder."""
        for name, folder in self.folders.items():
            write_json_atomic(folder / STATE_FILE, {**self.state, "output": name, "complete": True, **(summary or {})})
            shutil.rmtree(folder / CLAIMS_DIR, ignore_errors=True)
