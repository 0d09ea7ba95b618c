# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The machinery of the dataset registry (`registry.py`): the adapter type of a published dataset and where each of
its uses lives, the `name@N` spec, the one column check, the one reader of local files and the one error class. The
prompt sources of `build-sft` (`sources.py`) and the evaluation sets of `eval` (`evaluation/data.py`) read through it.
"""

import csv
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


# The uses of a set: `train` (prompt sources of build-sft), `test` (evaluation sets)
USES = ("train", "test")
# Local files the reader knows
LOCAL_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".txt")


class DatasetFormatError(ValueError):
    """A dataset (a local file or a published set) does not have the columns or values its adapter expects, or a spec
    names no known dataset."""


@dataclass(frozen=True)
class DatasetSplit:
    """Where one use of a published set lives.

    Args:
        split (`str`, *optional*, defaults to `"train"`): Split to load.
        configs (`tuple[str, ...]`, *optional*): Dataset configs to load; several are loaded and concatenated.
        data_files (`str`, *optional*): File (or URL) that a builder `path` (e.g. `"csv"`) reads.
    """

    split: str = "train"
    configs: tuple[str, ...] = ()
    data_files: str | None = None


@dataclass(frozen=True)
class DatasetAdapter:
    """A published dataset: where it lives, how `datasets.load_dataset` reads it, and how one of its rows maps to the
    fields that both uses read (see `registry.py`).

    Args:
        name (`str`): Name in `build-sft --prompts` and `EvalConfig.datasets`.
        description (`str`): One line for `--help` and the docs.
        map_row (`Callable[[dict, int], dict | None]`): Published row (and its index) -> mapped fields; `None` skips
            the row.
        path (`str`): First argument of `load_dataset`: a Hub dataset id, or a builder (`"csv"`) that reads the
            split's `data_files`.
        train ([`DatasetSplit`], *optional*): Where its training prompts are (a prompt source of `build-sft`).
        test ([`DatasetSplit`], *optional*): Where its evaluation set is (a dataset of `eval`).
        load_kwargs (`dict`, *optional*): Further `load_dataset` arguments, for the Hub and a local copy alike.
        required_columns (`tuple[str, ...]`, *optional*): Columns `map_row` reads; a row without them fails naming
            them.
        any_of_columns (`tuple[tuple[str, ...], ...]`, *optional*): Groups of columns of which a row needs one.
        loader (`Callable[[], Iterable[dict]]`, *optional*): Replaces `load_dataset` for a set it cannot read.
        reference (`str`, *optional*): The paper or card that publishes the set.
    """

    name: str
    description: str
    map_row: Callable[[dict[str, Any], int], dict[str, Any] | None]
    path: str
    train: DatasetSplit | None = None
    test: DatasetSplit | None = None
    load_kwargs: dict[str, Any] = field(default_factory=dict)
    required_columns: tuple[str, ...] = ()
    any_of_columns: tuple[tuple[str, ...], ...] = ()
    loader: Callable[[], Iterable[dict[str, Any]]] | None = None
    reference: str = ""

    def split_for(self, use: str) -> DatasetSplit:
        split = getattr(self, use)
        if split is None:
            other = "an evaluation set (`eval --datasets`)" if use == "train" else "a prompt source (`build-sft`)"
            raise DatasetFormatError(f"Dataset {self.name!r} has no {use} split: it is {other}.")
        return split

    def where(self, use: str) -> str:
        """Where the set of `use` is published, for messages: the file's URL, or the Hub id with configs and split."""
        split = self.split_for(use)
        if split.data_files is not None:
            return split.data_files
        configs = " + ".join(split.configs) + ", " if split.configs else ""
        return f"{self.path} ({configs}{split.split})"

    def load(self, use: str) -> Iterable[dict[str, Any]]:
        """The published rows of `use` (needs the Hub or the internet): the one `load_dataset` call of every adapter."""
        if self.loader is not None:
            return self.loader()
        from datasets import concatenate_datasets, load_dataset

        split = self.split_for(use)
        kwargs = {"split": split.split, **self.load_kwargs}
        if split.data_files is not None:
            kwargs["data_files"] = split.data_files
        if not split.configs:
            return load_dataset(self.path, **kwargs)
        parts = [load_dataset(self.path, config, **kwargs) for config in split.configs]
        return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


# --- dataset specs, columns and local files -------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset spec: `name` (the path itself for a bare path), a local `path` (`None`: the published set or
    a bare path), a row limit, the spec without its limit (`body`) and as written (`text`)."""

    name: str
    path: str | None
    limit: int | None
    text: str
    body: str


_LIMIT = re.compile(r"^(?P<spec>.+)@(?P<limit>\d+)$")


def parse_dataset_spec(spec: str, field_name: str = "dataset") -> DatasetSpec:
    """`"name"`, `"name=PATH"` or `"PATH"`, each with an optional `"@N"` -> [`DatasetSpec`]; a name alone that is
    not a registered name but looks like a file (or exists) is a path."""
    text = spec.strip()
    match = _LIMIT.match(text)
    body, limit = (match["spec"], int(match["limit"])) if match else (text, None)
    if limit is not None and limit < 1:
        raise DatasetFormatError(f"Invalid {field_name} {spec!r}: `@{limit}` keeps no row. Use `@N` with N >= 1.")
    name, sep, path = body.partition("=")
    if sep:
        return DatasetSpec(name.strip(), path.strip(), limit, text, body)
    return DatasetSpec(body, None, limit, text, body)


def looks_like_file(value: str) -> bool:
    return Path(value).suffix.lower() in LOCAL_SUFFIXES or Path(value).exists()


def check_columns(
    adapter: DatasetAdapter, columns: Iterable[str], where: str, use: str, row: int | None = None, fix: str = ""
) -> None:
    """Fails naming the columns `adapter.map_row` reads that `columns` (of a row, or of a whole file) lacks."""
    columns = list(columns)
    missing = [column for column in adapter.required_columns if column not in columns]
    missing += [" or ".join(group) for group in adapter.any_of_columns if not any(c in columns for c in group)]
    if missing:
        at = f", row {row}" if row is not None else ""
        raise DatasetFormatError(
            f"Dataset `{adapter.name}` ({where}){at}: missing column(s) {missing}; it has {sorted(columns)}. "
            f"`{adapter.name}` reads the columns of {adapter.where(use)} as published "
            f"({adapter.reference or 'see its card'}): point it at a copy of that set{fix}."
        )


def read_rows(path: str | Path, adapter: DatasetAdapter | None = None, use: str = "train") -> list[dict[str, Any]]:
    """The rows of a local file (JSON lines, JSON: a list or `{"data": [...]}`, CSV, TSV, Parquet, or text: one
    `text` per line) or of a dataset folder downloaded from the Hub (read with `adapter`'s config and split). The
    adapter's `load_kwargs` apply to CSV/TSV files and folders, as to its published copy."""
    path = Path(path)
    load_kwargs = adapter.load_kwargs if adapter is not None else {}
    if path.is_dir():
        from datasets import load_dataset

        split = adapter.split_for(use) if adapter is not None else DatasetSplit()
        config = split.configs[0] if split.configs else None
        return list(load_dataset(str(path), config, split=split.split, **load_kwargs))
    if not path.is_file():
        raise FileNotFoundError(f"Dataset file {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise DatasetFormatError(f"{path}, line {number}: not valid JSON ({error}).") from error
        return rows
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            data = data.get("data") or data.get("rows") or data.get("examples")
        if not isinstance(data, list):
            raise DatasetFormatError(f"{path}: expected a JSON list of rows (or {{'data': [...]}}).")
        return data
    if suffix == ".txt":
        return [{"text": line} for line in path.read_text(encoding="utf-8").splitlines()]
    if suffix in {".csv", ".tsv"} and not load_kwargs:
        with path.open(encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ","))
    if suffix in {".csv", ".tsv", ".parquet"}:
        from datasets import load_dataset

        if suffix == ".parquet":
            return list(load_dataset("parquet", data_files=str(path), split="train"))
        kwargs = {"delimiter": "\t" if suffix == ".tsv" else ",", **load_kwargs}
        return list(load_dataset("csv", data_files=str(path), split="train", **kwargs))
    raise DatasetFormatError(
        f"Unsupported dataset file type {suffix!r} ({path}). Use one of {', '.join(LOCAL_SUFFIXES)}, or a dataset "
        "folder."
    )
