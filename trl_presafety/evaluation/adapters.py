# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The public evaluation sets, as data: each [`DatasetAdapter`] says where its set lives and how `load_dataset` reads it
(keyword fields, one generic loader), which columns a row must have, and how a row maps to the internal format (a pure
`map_row`, tested offline on rows shaped like the public ones)."""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..judges.math_grading import gsm8k_final_answer


# The official StrongREJECT files (https://github.com/alexandrasouly/strongreject): `category,source,forbidden_prompt`
STRONGREJECT_URL = (
    "https://raw.githubusercontent.com/alexandrasouly/strongreject/main/strongreject_dataset/strongreject_dataset.csv"
)
STRONGREJECT_SMALL_URL = (
    "https://raw.githubusercontent.com/alexandrasouly/strongreject/main/strongreject_dataset/"
    "strongreject_small_dataset.csv"
)


class DatasetFormatError(ValueError):
    """A dataset (a file or a public set) does not have the columns or values its adapter expects."""


@dataclass(frozen=True)
class DatasetAdapter:
    """A public evaluation set: where it lives, how `datasets.load_dataset` reads it, and how one of its rows maps to
    the internal format.

    Args:
        name (`str`): Name used in `EvalConfig.datasets`.
        description (`str`): One line for `--help` and the docs.
        map_row (`Callable[[dict, int], dict | None]`): Public row (and its index) -> internal example fields
            (`category`, `prompt`, optional `answer`, `meta`, `row_id`); `None` skips the row.
        path (`str`): First argument of `load_dataset`: a Hub dataset id, or a builder (`"csv"`) that reads
            `data_files`.
        configs (`tuple[str, ...]`, *optional*): Dataset configs to load; several are loaded and concatenated.
        split (`str`, *optional*, defaults to `"train"`): Split to load.
        data_files (`str`, *optional*): File (or URL) a builder `path` reads.
        load_kwargs (`dict`, *optional*): Further `load_dataset` arguments.
        required_columns (`tuple[str, ...]`, *optional*): Columns `map_row` reads; a row without them fails with
            their names.
        any_of_columns (`tuple[tuple[str, ...], ...]`, *optional*): Groups of columns of which a row needs one.
        loader (`Callable[[], Iterable[dict]]`, *optional*): Replaces `load_dataset` for a set it cannot read.
    """

    name: str
    description: str
    map_row: Callable[[dict[str, Any], int], dict[str, Any] | None]
    path: str
    configs: tuple[str, ...] = ()
    split: str = "train"
    data_files: str | None = None
    load_kwargs: dict[str, Any] = field(default_factory=dict)
    required_columns: tuple[str, ...] = ()
    any_of_columns: tuple[tuple[str, ...], ...] = ()
    loader: Callable[[], Iterable[dict[str, Any]]] | None = None

    @property
    def hub_id(self) -> str:
        """Where the set is published, for messages: the file's URL, or the Hub id with its configs and split."""
        if self.data_files is not None:
            return self.data_files
        configs = " + ".join(self.configs) + ", " if self.configs else ""
        return f"{self.path} ({configs}{self.split})"

    def load(self) -> Iterable[dict[str, Any]]:
        """The public rows (needs the Hub or the internet)."""
        return self.loader() if self.loader is not None else load_public_rows(self)


def load_public_rows(adapter: DatasetAdapter) -> Iterable[dict[str, Any]]:
    """The one `load_dataset` call of every adapter, from its fields."""
    from datasets import concatenate_datasets, load_dataset

    kwargs = {"split": adapter.split, **adapter.load_kwargs}
    if adapter.data_files is not None:
        kwargs["data_files"] = adapter.data_files
    if not adapter.configs:
        return load_dataset(adapter.path, **kwargs)
    parts = [load_dataset(adapter.path, config, **kwargs) for config in adapter.configs]
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


# --- mapping functions: public row -> internal fields (pure, tested offline) ------------------------------------


def _meta(row: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {key: row[key] for key in keys if key in row and row[key] not in (None, "")}


def map_strongreject(row: dict[str, Any], index: int) -> dict[str, Any]:
    # The official CSV names the prompt `forbidden_prompt`; mirrors such as walledai/StrongREJECT name it `prompt`
    prompt = row.get("forbidden_prompt") or row.get("prompt")
    return {"category": "harmful", "prompt": prompt, "row_id": str(index), "meta": _meta(row, ["category", "source"])}


def map_wildjailbreak(row: dict[str, Any], index: int) -> dict[str, Any]:
    # The eval config has 2,000 `adversarial_harmful` and 210 `adversarial_benign` rows; `label` is 1 for harmful
    data_type = str(row.get("data_type") or "")
    if "harmful" in data_type:
        category = "harmful"
    elif "benign" in data_type:
        category = "benign_edgy"
    elif "label" in row and str(row["label"]) in {"0", "1"}:
        category = "harmful" if str(row["label"]) == "1" else "benign_edgy"
    else:
        raise DatasetFormatError(
            f"WildJailbreak row {index} has neither a `data_type` containing 'harmful'/'benign' nor a 0/1 `label` "
            f"(got data_type={row.get('data_type')!r}, label={row.get('label')!r})."
        )
    prompt = row.get("adversarial") or row.get("vanilla")
    meta = _meta(row, ["data_type", "tactics"])
    if row.get("adversarial") and row.get("vanilla"):
        meta["vanilla"] = row["vanilla"]
    return {"category": category, "prompt": prompt, "row_id": str(index), "meta": meta}


def map_harmbench(row: dict[str, Any], index: int) -> dict[str, Any]:
    # The contextual subset carries a `context` the behavior refers to; HarmBench puts it before the request
    prompt = row["prompt"]
    if row.get("context"):
        prompt = f"{row['context']}\n\n---\n\n{prompt}"
    return {"category": "harmful", "prompt": prompt, "row_id": str(index), "meta": _meta(row, ["category"])}


def map_jailbreakbench(row: dict[str, Any], index: int, category: str = "harmful") -> dict[str, Any]:
    row_id = str(row.get("Index", index))
    return {
        "category": category,
        "prompt": row["Goal"],
        "row_id": row_id,
        "meta": _meta(row, ["Behavior", "Category", "Source"]),
    }


def map_jailbreakbench_benign(row: dict[str, Any], index: int) -> dict[str, Any]:
    return map_jailbreakbench(row, index, category="benign_edgy")


def map_xstest(row: dict[str, Any], index: int) -> dict[str, Any]:
    # 250 safe prompts (over-refusal) and 200 unsafe contrast prompts (which must be refused)
    label = str(row["label"]).strip().lower()
    if label not in {"safe", "unsafe"}:
        raise DatasetFormatError(f"XSTest row {index} has label {row['label']!r}; expected 'safe' or 'unsafe'.")
    return {
        "category": "benign_edgy" if label == "safe" else "harmful",
        "prompt": row["prompt"],
        "row_id": str(row.get("id", index)),
        "meta": _meta(row, ["type", "focus", "note", "label"]),
    }


def map_or_bench(row: dict[str, Any], index: int, category: str = "benign_edgy") -> dict[str, Any]:
    # OR-Bench (bench-llm/or-bench): `prompt` and `category` (its rejection category) in every config; the hard set
    # is prompts that look harmful and are not (over-refusal), the toxic set the harmful control
    return {"category": category, "prompt": row["prompt"], "row_id": str(index), "meta": _meta(row, ["category"])}


def map_or_bench_toxic(row: dict[str, Any], index: int) -> dict[str, Any]:
    return map_or_bench(row, index, category="harmful")


def map_falsereject(row: dict[str, Any], index: int) -> dict[str, Any]:
    # FalseReject (AmazonScience/FalseReject) test split: 1,187 human-annotated prompts that look risky and are
    # benign. The card names `prompt`, `category` (int) and `category_text`; only `prompt` is required, since the
    # test split's own column list could not be read
    return {
        "category": "benign_edgy",
        "prompt": row["prompt"],
        "row_id": str(index),
        "meta": _meta(row, ["category", "category_text"]),
    }


def gsm8k_gold(solution: str) -> str:
    """The final answer of a GSM8K solution: the text after `####`, without thousands separators."""
    answer = gsm8k_final_answer(solution)
    if answer is None:
        raise DatasetFormatError(f"GSM8K answer without '####': {solution[-80:]!r}.")
    return answer


def map_gsm8k(row: dict[str, Any], index: int) -> dict[str, Any]:
    return {"category": "math", "prompt": row["question"], "answer": gsm8k_gold(row["answer"]), "row_id": str(index)}


def map_math500(row: dict[str, Any], index: int) -> dict[str, Any]:
    return {
        "category": "math",
        "prompt": row["problem"],
        "answer": str(row["answer"]),
        "row_id": str(row.get("unique_id", index)),
        "meta": _meta(row, ["subject", "level"]),
    }


def map_aime(row: dict[str, Any], index: int) -> dict[str, Any]:
    # AIME 2024 (HuggingFaceH4) names the problem `problem`; AIME 2025 (opencompass) names it `question`
    prompt = row.get("problem") or row.get("question")
    answer = str(row["answer"]).strip()
    if answer.isdigit():  # some copies write "070"; the AIME answer is the integer 70
        answer = str(int(answer))
    return {
        "category": "math",
        "prompt": prompt,
        "answer": answer,
        "row_id": str(row.get("id", index)),
        "meta": _meta(row, ["year", "url"]),
    }


# --- the sets ----------------------------------------------------------------------------------------------------

_STRONGREJECT_COLUMNS = (("forbidden_prompt", "prompt"),)
_AIME_COLUMNS = (("problem", "question"),)

DATASET_ADAPTERS: dict[str, DatasetAdapter] = {
    adapter.name: adapter
    for adapter in [
        DatasetAdapter(
            name="strongreject",
            description="StrongREJECT: 313 forbidden prompts in 6 harm categories (harmful).",
            map_row=map_strongreject,
            path="csv",
            data_files=STRONGREJECT_URL,
            any_of_columns=_STRONGREJECT_COLUMNS,
        ),
        DatasetAdapter(
            name="strongreject_small",
            description="StrongREJECT small: its 50-prompt subset (harmful).",
            map_row=map_strongreject,
            path="csv",
            data_files=STRONGREJECT_SMALL_URL,
            any_of_columns=_STRONGREJECT_COLUMNS,
        ),
        DatasetAdapter(
            name="wildjailbreak",
            description="WildJailbreak eval: 2,000 adversarial harmful (harmful) and 210 adversarial benign "
            "(benign_edgy) prompts.",
            map_row=map_wildjailbreak,
            path="allenai/wildjailbreak",
            configs=("eval",),
            # The files are TSV; without keep_default_na an empty `vanilla`/`adversarial` cell becomes NaN
            load_kwargs={"delimiter": "\t", "keep_default_na": False},
            any_of_columns=(("adversarial", "vanilla"),),
        ),
        DatasetAdapter(
            name="harmbench",
            description="HarmBench standard behaviors (harmful).",
            map_row=map_harmbench,
            path="walledai/HarmBench",
            configs=("standard",),
            required_columns=("prompt",),
        ),
        DatasetAdapter(
            name="harmbench_contextual",
            description="HarmBench contextual behaviors, context before the request (harmful).",
            map_row=map_harmbench,
            path="walledai/HarmBench",
            configs=("contextual",),
            required_columns=("prompt", "context"),
        ),
        DatasetAdapter(
            name="jailbreakbench",
            description="JailbreakBench: 100 misuse behaviors (harmful).",
            map_row=map_jailbreakbench,
            path="JailbreakBench/JBB-Behaviors",
            configs=("behaviors",),
            split="harmful",
            required_columns=("Goal",),
        ),
        DatasetAdapter(
            name="jailbreakbench_benign",
            description="JailbreakBench: 100 benign behaviors on the same topics (benign_edgy).",
            map_row=map_jailbreakbench_benign,
            path="JailbreakBench/JBB-Behaviors",
            configs=("behaviors",),
            split="benign",
            required_columns=("Goal",),
        ),
        DatasetAdapter(
            name="xstest",
            description="XSTest: 250 safe prompts that look unsafe (benign_edgy) and 200 unsafe contrasts (harmful).",
            map_row=map_xstest,
            path="walledai/XSTest",
            split="test",
            required_columns=("prompt", "label"),
        ),
        DatasetAdapter(
            name="or_bench_hard",
            description="OR-Bench-Hard-1K: 1,319 prompts that look harmful and are not, in 10 rejection categories "
            "(benign_edgy).",
            map_row=map_or_bench,
            path="bench-llm/or-bench",
            configs=("or-bench-hard-1k",),
            required_columns=("prompt",),
        ),
        DatasetAdapter(
            name="or_bench_toxic",
            description="OR-Bench-Toxic: 655 toxic prompts, OR-Bench's harmful control (harmful).",
            map_row=map_or_bench_toxic,
            path="bench-llm/or-bench",
            configs=("or-bench-toxic",),
            required_columns=("prompt",),
        ),
        DatasetAdapter(
            name="falsereject",
            description="FalseReject test: 1,187 human-annotated benign prompts that look risky, 44 categories "
            "(benign_edgy). Licence CC BY-NC 4.0.",
            map_row=map_falsereject,
            path="AmazonScience/FalseReject",
            split="test",
            required_columns=("prompt",),
        ),
        DatasetAdapter(
            name="gsm8k",
            description="GSM8K test: 1,319 grade-school word problems (math).",
            map_row=map_gsm8k,
            path="openai/gsm8k",
            configs=("main",),
            split="test",
            required_columns=("question", "answer"),
        ),
        DatasetAdapter(
            name="math500",
            description="MATH-500: 500 competition problems with LaTeX answers (math).",
            map_row=map_math500,
            path="HuggingFaceH4/MATH-500",
            split="test",
            required_columns=("problem", "answer"),
        ),
        DatasetAdapter(
            name="aime24",
            description="AIME 2024: 30 problems, integer answers (math).",
            map_row=map_aime,
            path="HuggingFaceH4/aime_2024",
            required_columns=("answer",),
            any_of_columns=_AIME_COLUMNS,
        ),
        DatasetAdapter(
            name="aime25",
            description="AIME 2025: 30 problems, integer answers (math).",
            map_row=map_aime,
            path="opencompass/AIME2025",
            configs=("AIME2025-I", "AIME2025-II"),
            split="test",
            required_columns=("answer",),
            any_of_columns=_AIME_COLUMNS,
        ),
    ]
}
