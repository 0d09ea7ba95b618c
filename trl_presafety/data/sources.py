# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Training prompts for `trl-presafety build-sft`: the `train` splits of the published datasets of the registry
(`data/registry.py`: STAR-1, STAR-benign-915, SafeChain, WildJailbreak, GSM8K), plain files, and the bundled tiny
prompts. Every prompt row has the columns:

| field | type | meaning |
|---|---|---|
| `prompt` | str | the user request |
| `harmful` | int | 1 harmful, 0 benign: from the source (the set it belongs to, or its own label), never guessed |
| `category` | str | `harmful`, `benign` or `math` (benign with a gold answer); a plain file may name its own |
| `source` | str | the source's name (`star1`, `wildjailbreak_vanilla_harmful`, ...) |
| `source_id` | str | the row's id in the source (its `id`, else its index) |
| `source_category` | str or None | the source's own label (STAR-1's categories, WildJailbreak's and SafeChain's `data_type`) |
| `answer` | str or None | gold answer of a math problem, checked with `math-verify` |
| `reference_completion` | str or None | the source's own safe trace (STAR-1, SafeChain), `<think>` reasoning then answer |
| `reference_rejected` | str or None | an unsafe trace for the prompt, where a file supplies one |

A source is named in `build-sft --prompts` as `name`, `name=PATH` (a local copy of a published set: a file in its
published format, or a folder downloaded from the hub, read with the same `load_dataset` arguments and the same mapping),
or a plain file (`harmful=PATH`, `benign=PATH`, or a bare `PATH` whose rows carry `harmful`); each with an optional `@N`
that keeps N rows drawn with `data_seed`.

```python
from trl_presafety.data.sources import load_prompt_sources

prompts = load_prompt_sources(["wildjailbreak_vanilla_harmful@5000", "wildjailbreak_vanilla_benign@3000"])
```
"""

import logging
import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ..harmfulness import parse_harmful
from .adapters import (
    LOCAL_SUFFIXES,
    DatasetFormatError,
    DatasetSpec,
    check_columns,
    looks_like_file,
    parse_dataset_spec,
    read_rows,
)
from .registry import DATASET_REGISTRY, dataset_names


logger = logging.getLogger(__name__)

TINY_PROMPTS = Path(__file__).resolve().parent / "tiny" / "prompts" / "train.jsonl"
COLUMNS = (
    "prompt",
    "harmful",
    "category",
    "source",
    "source_id",
    "source_category",
    "answer",
    "reference_completion",
    "reference_rejected",
)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _plain_prompt(value: Any, index: int) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict) and value[0].get("role") == "user":
        return _text(value[0].get("content"))
    raise DatasetFormatError(
        f"Row {index}: `prompt` must be a string or a list holding one user message, got {value!r}. The builder adds "
        "its own system prompt and opening of the reasoning: give the request alone."
    )


def map_plain(row: dict[str, Any], index: int, harmful: int | None = None) -> dict[str, Any] | None:
    """A row of a plain file: a `.txt` line (`text`), or a row with `prompt` and optionally `harmful`, `category`,
    `answer`, `reference_completion`, `reference_rejected`, `id`."""
    if "prompt" not in row and "text" not in row:
        raise DatasetFormatError(
            f"Row {index} has no `prompt` column (its columns: {sorted(row)}). A plain file is a .txt file with one "
            "prompt per line, or rows with a `prompt` column."
        )
    prompt = _plain_prompt(row["prompt"], index) if "prompt" in row else _text(row.get("text"))
    if not prompt.strip():
        return None  # a blank line
    given = parse_harmful(row.get("harmful"), "harmful", index) if "harmful" in row else None
    if harmful is not None and given is not None and given != harmful:
        raise DatasetFormatError(
            f"Row {index}: its `harmful` column says {given} but the file was given as "
            f"`{'harmful' if harmful else 'benign'}=PATH`. Drop the prefix to use the column, or fix the row."
        )
    harmful = given if given is not None else harmful
    if harmful is None:
        raise DatasetFormatError(
            f"Row {index} has no harmfulness: a plain file needs a `harmful` column (1 harmful, 0 benign), or name "
            "it `harmful=PATH` (every prompt harmful) or `benign=PATH` (every prompt benign) in `--prompts`."
        )
    answer = row.get("answer")
    answer = None if answer is None or str(answer).strip() == "" else str(answer)
    category = _text(row.get("category")).strip() or ("harmful" if harmful else "math" if answer else "benign")
    if (category == "harmful") != bool(harmful):
        raise DatasetFormatError(
            f"Row {index}: `category` is {category!r} but `harmful` is {harmful}; a `harmful` category needs harmful "
            "1 and any other category harmful 0. Fix the row."
        )
    return {
        "prompt": prompt.strip(),
        "harmful": harmful,
        "category": category,
        "source_id": _text(row.get("id") or index),
        "source_category": _text(row.get("source")) or None,
        "answer": answer,
        "reference_completion": row.get("reference_completion") or None,
        "reference_rejected": row.get("reference_rejected") or None,
    }


# Sources that read a plain file (`name=PATH`; `tiny` is the bundled one), by name: the row mapping of each
PLAIN_SOURCE_REGISTRY: dict[str, Callable[[dict[str, Any], int], dict[str, Any] | None]] = {
    "harmful": lambda row, index: map_plain(row, index, harmful=1),
    "benign": lambda row, index: map_plain(row, index, harmful=0),
    "file": map_plain,
    "tiny": map_plain,
}


def prompt_source_names() -> list[str]:
    """The names `build-sft --prompts` accepts: the registry's datasets with a `train` split, and the plain sources."""
    return dataset_names("train") + list(PLAIN_SOURCE_REGISTRY)


def parse_source_spec(spec: str) -> DatasetSpec:
    """`"name"`, `"name=PATH"`, `"PATH"`, each with an optional `"@N"` -> the spec with its source's name."""
    parsed = parse_dataset_spec(spec, "prompt source")
    names = prompt_source_names()
    name, path = parsed.name, parsed.path
    if path is None and name not in names:
        if not looks_like_file(name):
            raise DatasetFormatError(
                f"Unknown prompt source {spec!r}. Use one of {sorted(names)} (`name`, or `name=PATH` for a local "
                f"copy), or the path of a file ({', '.join(LOCAL_SUFFIXES)}) whose rows carry `prompt` and `harmful`."
            )
        name, path = "file", name
    if name not in names:
        raise DatasetFormatError(
            f"Unknown prompt source {name!r} in {spec!r}. Use one of {sorted(names)} as `name=PATH`."
        )
    if name == "tiny" and not path:
        path = str(TINY_PROMPTS)
    if name in PLAIN_SOURCE_REGISTRY and not path:
        raise DatasetFormatError(f"Prompt source {spec!r} reads a file: write it as `{name}=PATH`.")
    return DatasetSpec(name, path, parsed.limit, parsed.text, parsed.body)


def load_source_rows(spec: DatasetSpec) -> Iterable[dict[str, Any]]:
    """The published rows of a source: its `train` split from the hub, or the local copy (a file, or a folder read
    with the source's config and split); the source's `load_kwargs` apply either way."""
    adapter = DATASET_REGISTRY.get(spec.name)
    if spec.path is None:
        return adapter.load("train")
    try:
        return read_rows(spec.path, adapter, "train")
    except FileNotFoundError:
        raise DatasetFormatError(f"Prompt source {spec.text!r}: {spec.path} does not exist.") from None


def _source_row(name: str, mapped: dict[str, Any], index: int) -> dict[str, Any]:
    """A mapped row of the registry as a prompt row: the category follows harmfulness and the gold answer."""
    category = "harmful" if mapped["harmful"] else "math" if mapped.get("answer") else "benign"
    return {
        **dict.fromkeys(COLUMNS),
        "prompt": mapped["prompt"],
        "harmful": mapped["harmful"],
        "category": category,
        "source_id": _text(mapped.get("row_id", index)),
        "source_category": mapped.get("source_category"),
        "answer": mapped.get("answer"),
        "reference_completion": mapped.get("reference_completion"),
        "source": name,
    }


def adapt_source(spec: DatasetSpec, rows: Iterable[dict[str, Any]], data_seed: int = 0) -> list[dict[str, Any]]:
    """Maps the published rows of `spec` to prompt rows (every column of [`COLUMNS`]) and keeps `@N` of them."""
    adapter = DATASET_REGISTRY.get(spec.name) if spec.name not in PLAIN_SOURCE_REGISTRY else None
    prompts = []
    for index, row in enumerate(rows):
        row = dict(row)
        if adapter is None:
            mapped = PLAIN_SOURCE_REGISTRY[spec.name](row, index)
            if mapped is not None:
                mapped = {**dict.fromkeys(COLUMNS), **mapped, "source": spec.name}
        else:
            if index == 0:
                check_columns(adapter, row, spec.path or adapter.where("train"), "train")
            mapped = adapter.map_row(row, index)
            if mapped is not None:
                mapped = _source_row(spec.name, mapped, index)
        if mapped is None or not mapped["prompt"].strip():
            continue
        prompts.append(mapped)
    if spec.limit is not None and spec.limit < len(prompts):
        keep = sorted(random.Random(data_seed).sample(range(len(prompts)), spec.limit))
        prompts = [prompts[i] for i in keep]
    return prompts


def load_prompt_sources(specs: Sequence[str], data_seed: int = 0) -> Any:
    """The prompts of every source in `specs`, in order, as a `datasets.Dataset` with the columns of [`COLUMNS`].

    A prompt that an earlier source already gave (the same text) is dropped, with a warning that counts them (SafeChain
    is built from WildJailbreak's instructions, for one).
    """
    from datasets import Dataset, Features, Value

    if not specs:
        raise DatasetFormatError("No prompt sources: pass at least one, e.g. `--prompts star1 star_benign_915`.")
    rows, seen, duplicates = [], set(), 0
    for text in specs:
        spec = parse_source_spec(text)
        adapted = adapt_source(spec, load_source_rows(spec), data_seed)
        if not adapted:
            raise DatasetFormatError(f"Prompt source {text!r} gave no prompt. Check the file or the `@N` limit.")
        for row in adapted:
            if row["prompt"] in seen:
                duplicates += 1
                continue
            seen.add(row["prompt"])
            rows.append(row)
    if duplicates:
        logger.warning(f"Dropped {duplicates} prompt(s) that an earlier source already gave (same text).")
    features = Features({c: Value("int64") if c == "harmful" else Value("string") for c in COLUMNS})
    return Dataset.from_list(rows, features=features)
