# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The bundled refusal-vs-compliance set for training and testing the safety decision classifier, and the loading of
labeled sets from the hub or local files."""

import json
from pathlib import Path

from datasets import Dataset, DatasetDict


REFUSAL_DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "refusal_classifier"
# String labels of public sets (WildGuardMix's `response_refusal_label`) and their classifier ids
STRING_LABELS = {"refusal": 1, "compliance": 0}


def load_refusal_dataset(split: str | None = None) -> DatasetDict | Dataset:
    """The hand-written set of answers labeled refusal (1) or compliance (0), written for this repository.

    Rows: {"prompt", "answer", "label", "type"}, `type` being one of `refusal`, `partial_refusal` (declines the core
    request, offers a safe alternative), `over_refusal` (refuses a benign request), `compliance`,
    `safety_caveat_compliance` (complies while mentioning safety) and `harmful_compliance`. Splits: `train` and
    `test`, with no prompt in both.
    """
    splits = {}
    for name in ("train", "test"):
        lines = (REFUSAL_DATA_DIR / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        splits[name] = Dataset.from_list([json.loads(line) for line in lines if line.strip()])
    data = DatasetDict(splits)
    if split is None:
        return data
    if split not in data:
        raise ValueError(f"Unknown split {split!r} of the bundled refusal set. Choose one of {list(data)}.")
    return data[split]


def normalize_classifier_dataset(
    dataset: Dataset,
    prompt_column: str = "prompt",
    answer_column: str = "answer",
    label_column: str = "label",
) -> Dataset:
    """Renames the columns to `prompt` / `answer` / `label`, maps string labels ('refusal' -> 1, 'compliance' -> 0,
    bools -> int) and drops rows without an answer or a label (e.g. WildGuardMix's prompt-only rows)."""
    columns = {prompt_column: "prompt", answer_column: "answer", label_column: "label"}
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"The dataset lacks the column(s) {missing}; it has {dataset.column_names}. Set `prompt_column`, "
            "`answer_column` and `label_column` to its column names."
        )
    dataset = dataset.select_columns(list(columns)).rename_columns({k: v for k, v in columns.items() if k != v})
    dataset = dataset.filter(lambda row: row["answer"] is not None and row["label"] is not None, desc="Dropping")

    def to_int(row: dict) -> dict:
        label = row["label"]
        if isinstance(label, str):
            if label.strip().lower() not in STRING_LABELS:
                raise ValueError(
                    f"Label {label!r} is not one of {list(STRING_LABELS)}; map the dataset's labels to 1 (refusal) / "
                    "0 (compliance) first."
                )
            label = STRING_LABELS[label.strip().lower()]
        return {"label": int(label)}

    return dataset.map(to_int, desc="Mapping labels")
