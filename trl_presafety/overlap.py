# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Evaluation prompts that a model was trained on: found, counted and reported, never silently reused.

A training run of `trl-presafety sft` / `dpo` / `grpo` records the prompts it trained on next to the model
(`training_prompts.json`: the SHA-256 of each normalized prompt, not the text), and `eval` compares its prompts with
them. A model trained in Python records them with [`record_training_prompts`]; without the file, the local datasets
its model card names are read instead. Prompts are compared after normalization (case, whitespace, surrounding
punctuation), so a prompt re-typed with another capitalization or spacing still counts.
"""

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


TRAINING_PROMPTS_FILE = "training_prompts.json"
_SPACE = re.compile(r"\s+")


def normalize_prompt(text: str) -> str:
    """Lowercase, single spaces, no surrounding punctuation or quotes: what two copies of one request share."""
    return _SPACE.sub(" ", text.lower()).strip().strip(" \"'`.,;:!?")


def prompt_hash(text: str) -> str:
    return hashlib.sha256(normalize_prompt(text).encode("utf-8")).hexdigest()


def prompt_text(row: dict[str, Any]) -> str | None:
    """The user's request of a row: `prompt` (a string or chat messages) or the last user turn of `messages`."""
    value = row.get("prompt", row.get("messages"))
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence):
        users = [m.get("content") for m in value if isinstance(m, dict) and m.get("role") == "user"]
        users = [u for u in users if isinstance(u, str)]
        return users[-1] if users else None
    return None


def record_training_prompts(
    rows: Iterable[dict[str, Any]], output_dir: str | Path, sources: Sequence[str] = ()
) -> Path:
    """Writes `training_prompts.json` to `output_dir`: the hashes of the normalized prompts of `rows` (the training
    data) and the names of their sources, for `eval` to find evaluation prompts the model was trained on."""
    hashes = sorted({prompt_hash(text) for row in rows if (text := prompt_text(row))})
    path = Path(output_dir) / TRAINING_PROMPTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"sources": list(sources), "normalization": "lowercase, collapsed whitespace, stripped punctuation"}
    path.write_text(json.dumps({**record, "num_prompts": len(hashes), "sha256": hashes}, indent=1) + "\n")
    return path


def _card_datasets(folder: Path) -> list[str]:
    """Local dataset paths a model card (`README.md`) names as training data (written as `` `path` (local) ``)."""
    card = folder / "README.md"
    if not card.is_file():
        return []
    return re.findall(r"`([^`]+)` \(local\)", card.read_text(encoding="utf-8"))


def _load_rows(path: str) -> list[dict[str, Any]]:
    from datasets import load_dataset

    local = Path(path)
    if local.is_file():
        builder = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(local.suffix)
        return list(load_dataset(builder, data_files=str(local), split="train")) if builder else []
    dataset = load_dataset(str(local))
    return [row for split in dataset.values() for row in split]


def training_prompt_hashes(folders: Sequence[str | None]) -> tuple[set[str], str] | None:
    """The hashes of the training prompts recorded for a model (its folder, then an adapter's), and where they were
    read; `None` when nothing is recorded."""
    for folder in folders:
        if not folder or not Path(folder).is_dir():
            continue
        path = Path(folder) / TRAINING_PROMPTS_FILE
        if path.is_file():
            return set(json.loads(path.read_text(encoding="utf-8"))["sha256"]), str(path)
        names = [n for n in _card_datasets(Path(folder)) if Path(n).exists()]
        if names:
            rows = [row for name in names for row in _load_rows(name)]
            return {
                prompt_hash(t) for row in rows if (t := prompt_text(row))
            }, f"{Path(folder) / 'README.md'}: {names}"
    return None


def training_overlap(folders: Sequence[str | None], examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How many evaluation `examples` (`prompt`, `dataset`, `id`) are prompts the model was trained on.

    Returns `{"status": "checked", "source", "n_overlap", "n_examples", "by_dataset", "ids"}`, or
    `{"status": "unknown", "reason"}` when the model records no training data.
    """
    found = training_prompt_hashes(folders)
    if found is None:
        return {
            "status": "unknown",
            "reason": f"no {TRAINING_PROMPTS_FILE} and no local training data named in the model card",
        }
    hashes, source = found
    hits = [e for e in examples if isinstance(e.get("prompt"), str) and prompt_hash(e["prompt"]) in hashes]
    by_dataset: dict[str, dict[str, int]] = {}
    for example in examples:
        entry = by_dataset.setdefault(example["dataset"], {"n": 0, "n_overlap": 0})
        entry["n"] += 1
    for example in hits:
        by_dataset[example["dataset"]]["n_overlap"] += 1
    return {
        "status": "checked",
        "source": source,
        "n_overlap": len(hits),
        "n_examples": len(examples),
        "by_dataset": by_dataset,
        "ids": [str(e["id"]) for e in hits],
    }


def overlap_warning(overlap: dict[str, Any] | None) -> str | None:
    """The warning line for a report whose evaluation prompts include training prompts, else `None`."""
    if not overlap or overlap.get("status") != "checked" or not overlap.get("n_overlap"):
        return None
    parts = ", ".join(
        f"{name}: {entry['n_overlap']} of {entry['n']}"
        for name, entry in sorted(overlap["by_dataset"].items())
        if entry["n_overlap"]
    )
    return (
        f"⚠ {overlap['n_overlap']} of the {overlap['n_examples']} evaluation prompts were in the model's training data "
        f"({parts}; recorded in {overlap['source']}): figures on them, the probe's AUROC included, are not held out."
    )
