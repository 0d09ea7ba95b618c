# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The published datasets the package reads, in one registry: the training prompt sources of `build-sft`
(`data/sources.py`) and the evaluation sets of `eval` (`evaluation/data.py`) are the same [`DatasetAdapter`]s.

An adapter says where its set is published (`path`, and per use the `train` / `test` [`DatasetSplit`]: configs, split,
or a file), how `datasets.load_dataset` reads it (`load_kwargs`), which columns a row must have, and how a row maps to
the fields both uses read (a pure `map_row`, tested offline on rows shaped like the published ones; the adapter type,
the spec parser, the column check and the local-file reader are in `adapters.py`):

| field | meaning |
|---|---|
| `prompt` | the user request |
| `harmful` | 1 harmful, 0 benign: from the source (the set, or its own label), never guessed |
| `answer` | the gold answer of a math problem, checked with `math-verify` (absent otherwise) |
| `row_id` | the row's id in the source (its own id, else its index) |
| `meta` | what else the row carries (harm category, subject, level, ...) |
| `source_category` | the source's own label of the row (STAR-1's categories, WildJailbreak's `data_type`) |
| `reference_completion` | the source's own safe trace (STAR-1, SafeChain): `<think>` reasoning, then the answer |

A dataset is named `name`, `name=PATH` (a local copy of the published set: a file in its published format, or a folder
downloaded from the Hub, mapped the same way) or a bare `PATH`, each with an optional `@N`
([`~trl_presafety.data.adapters.parse_dataset_spec`]).
"""

from collections.abc import Sequence
from typing import Any

from ..judges.math_grading import gsm8k_final_answer
from .adapters import DatasetAdapter, DatasetFormatError, DatasetSplit


# The official StrongREJECT files (https://github.com/alexandrasouly/strongreject): `category,source,forbidden_prompt`
STRONGREJECT_URL = (
    "https://raw.githubusercontent.com/alexandrasouly/strongreject/main/strongreject_dataset/strongreject_dataset.csv"
)
STRONGREJECT_SMALL_URL = (
    "https://raw.githubusercontent.com/alexandrasouly/strongreject/main/strongreject_dataset/"
    "strongreject_small_dataset.csv"
)
# The four prompt types of WildJailbreak's `data_type` (and SafeChain's `label`, which carries it)
WILDJAILBREAK_DATA_TYPES = ("vanilla_harmful", "vanilla_benign", "adversarial_harmful", "adversarial_benign")


# --- mapping functions: published row -> mapped fields (pure, tested offline) ---------------------------------------


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _harmful_from_data_type(value: Any, index: int, column: str, source: str) -> int:
    data_type = _text(value).strip()
    if data_type.endswith("_harmful"):
        return 1
    if data_type.endswith("_benign"):
        return 0
    raise DatasetFormatError(
        f"{source} row {index}: column `{column}` holds {value!r}; expected one of {list(WILDJAILBREAK_DATA_TYPES)} "
        "(WildJailbreak's prompt types), from which harmfulness is read. Fix the row or drop it."
    )


def map_star1(row: dict[str, Any], index: int) -> dict[str, Any]:
    # STAR-1 (https://huggingface.co/papers/2504.01903): 1k harmful or borderline requests, each with a DeepSeek-R1 trace
    # that deliberates over the safety policies; `category` is a list of its 8 policy categories
    categories = row.get("category") or []
    if isinstance(categories, str):
        categories = [categories]
    return {
        "prompt": _text(row["question"]),
        "harmful": 1,
        "row_id": _text(row.get("id") or index),
        "source_category": "; ".join(str(c) for c in categories) or None,
        "reference_completion": row.get("response") or None,
    }


def map_star_benign(row: dict[str, Any], index: int) -> dict[str, Any]:
    # STAR-benign-915: STAR-1's requests rewritten into harmless ones with a similar wording (over-refusal probes)
    return {
        "prompt": _text(row["question"]),
        "harmful": 0,
        "row_id": _text(row.get("id") or index),
        "source_category": _text(row.get("source")) or None,
        "reference_completion": row.get("response") or None,
    }


def map_safechain(row: dict[str, Any], index: int) -> dict[str, Any]:
    # SafeChain (https://huggingface.co/papers/2502.12025): WildJailbreak instructions with safe DeepSeek-R1 traces;
    # `label` is the instruction's WildJailbreak `data_type`. The card says `response` lacks the opening `<think>`
    # (the trace runs up to `</think>`, then the answer): it is added back, as the card asks
    harmful = _harmful_from_data_type(row["label"], index, "label", "SafeChain")
    response = _text(row.get("response"))
    if response and not response.lstrip().startswith("<think>"):
        response = "<think>\n" + response
    return {
        "prompt": _text(row["instruction"]),
        "harmful": harmful,
        "row_id": str(index),
        "source_category": _text(row["label"]).strip(),
        "reference_completion": response or None,
    }


def map_wildjailbreak(
    row: dict[str, Any], index: int, data_types: Sequence[str] = WILDJAILBREAK_DATA_TYPES
) -> dict[str, Any] | None:
    # WildJailbreak (https://huggingface.co/papers/2406.18510): adversarial rows carry the jailbreak in `adversarial`
    # (and the plain request in `vanilla`), vanilla rows leave `adversarial` empty. `data_type` gives harmfulness; a
    # copy without it may carry the eval config's `label` (1 harmful). The train config's `completion` has no
    # reasoning trace, so it is no reference completion
    data_type = _text(row.get("data_type")).strip()
    if data_type:
        harmful = _harmful_from_data_type(data_type, index, "data_type", "WildJailbreak")
        if data_type not in data_types:
            return None
    elif _text(row.get("label")).strip() in {"0", "1"}:
        harmful = int(_text(row["label"]).strip())
    else:
        raise DatasetFormatError(
            f"WildJailbreak row {index} has neither a `data_type` (one of {list(WILDJAILBREAK_DATA_TYPES)}) nor a 0/1 "
            f"`label` (got data_type={row.get('data_type')!r}, label={row.get('label')!r}). Fix the row or drop it."
        )
    adversarial = _text(row.get("adversarial")).strip()
    use_adversarial = bool(adversarial) and not data_type.startswith("vanilla")
    meta = {key: row[key] for key in ("data_type", "tactics") if row.get(key) not in (None, "")}
    if use_adversarial and row.get("vanilla"):
        meta["vanilla"] = row["vanilla"]
    return {
        "prompt": (adversarial if use_adversarial else _text(row.get("vanilla"))).strip(),
        "harmful": harmful,
        "row_id": str(index),
        "source_category": data_type or None,
        "meta": meta,
    }


def map_gsm8k(row: dict[str, Any], index: int) -> dict[str, Any]:
    # GSM8K (https://huggingface.co/papers/2110.14168): grade-school word problems; `answer` is the worked solution
    # ending in `#### <number>`, the gold answer a trace is checked against with math-verify
    answer = gsm8k_final_answer(_text(row["answer"]))
    if answer is None:
        raise DatasetFormatError(
            f"GSM8K row {index}: column `answer` has no `####` final answer ({_text(row['answer'])[-80:]!r}); the "
            "published rows all end in `#### <number>`. Fix the row or drop it."
        )
    return {"prompt": _text(row["question"]), "harmful": 0, "answer": answer, "row_id": str(index)}


def _meta(row: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {key: row[key] for key in keys if key in row and row[key] not in (None, "")}


def map_strongreject(row: dict[str, Any], index: int) -> dict[str, Any]:
    # The official CSV names the prompt `forbidden_prompt`; mirrors such as walledai/StrongREJECT name it `prompt`
    prompt = row.get("forbidden_prompt") or row.get("prompt")
    return {"prompt": prompt, "harmful": 1, "row_id": str(index), "meta": _meta(row, ["category", "source"])}


def map_harmbench(row: dict[str, Any], index: int) -> dict[str, Any]:
    # The contextual subset carries a `context` the behavior refers to; HarmBench puts it before the request
    prompt = row["prompt"]
    if row.get("context"):
        prompt = f"{row['context']}\n\n---\n\n{prompt}"
    return {"prompt": prompt, "harmful": 1, "row_id": str(index), "meta": _meta(row, ["category"])}


def map_jailbreakbench(row: dict[str, Any], index: int, harmful: int = 1) -> dict[str, Any]:
    row_id = str(row.get("Index", index))
    return {
        "harmful": harmful,
        "prompt": row["Goal"],
        "row_id": row_id,
        "meta": _meta(row, ["Behavior", "Category", "Source"]),
    }


def map_jailbreakbench_benign(row: dict[str, Any], index: int) -> dict[str, Any]:
    return map_jailbreakbench(row, index, harmful=0)


def map_xstest(row: dict[str, Any], index: int) -> dict[str, Any]:
    # 250 safe prompts (over-refusal) and 200 unsafe contrast prompts (which must be refused)
    label = str(row["label"]).strip().lower()
    if label not in {"safe", "unsafe"}:
        raise DatasetFormatError(f"XSTest row {index} has label {row['label']!r}; expected 'safe' or 'unsafe'.")
    return {
        "harmful": int(label == "unsafe"),
        "prompt": row["prompt"],
        "row_id": str(row.get("id", index)),
        "meta": _meta(row, ["type", "focus", "note", "label"]),
    }


def map_or_bench(row: dict[str, Any], index: int, harmful: int = 0) -> dict[str, Any]:
    # OR-Bench (bench-llm/or-bench): `prompt` and `category` (its rejection category) in every config; the hard set
    # is prompts that look harmful and are not (over-refusal), the toxic set the harmful control
    return {"prompt": row["prompt"], "harmful": harmful, "row_id": str(index), "meta": _meta(row, ["category"])}


def map_or_bench_toxic(row: dict[str, Any], index: int) -> dict[str, Any]:
    return map_or_bench(row, index, harmful=1)


def map_falsereject(row: dict[str, Any], index: int) -> dict[str, Any]:
    # FalseReject (AmazonScience/FalseReject) test split: 1,187 human-annotated prompts that look risky and are
    # benign. The card names `prompt`, `category` (int) and `category_text`; only `prompt` is required, since the
    # test split's own column list could not be read
    return {
        "harmful": 0,
        "prompt": row["prompt"],
        "row_id": str(index),
        "meta": _meta(row, ["category", "category_text"]),
    }


def map_math500(row: dict[str, Any], index: int) -> dict[str, Any]:
    return {
        "harmful": 0,
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
        "harmful": 0,
        "prompt": prompt,
        "answer": answer,
        "row_id": str(row.get("id", index)),
        "meta": _meta(row, ["year", "url"]),
    }


# --- the sets ------------------------------------------------------------------------------------------------------

_STRONGREJECT_COLUMNS = (("forbidden_prompt", "prompt"),)
_AIME_COLUMNS = (("problem", "question"),)
# WildJailbreak is TSV; without keep_default_na an empty `vanilla` / `adversarial` cell would become NaN
_WILDJAILBREAK_LOAD_KWARGS = {"delimiter": "\t", "keep_default_na": False}


def _wildjailbreak_type(data_type: str) -> DatasetAdapter:
    return DatasetAdapter(
        name=f"wildjailbreak_{data_type}",
        description=f"WildJailbreak train: `{data_type}` prompts.",
        map_row=lambda row, index: map_wildjailbreak(row, index, (data_type,)),
        path="allenai/wildjailbreak",
        train=DatasetSplit(configs=("train",)),
        load_kwargs=_WILDJAILBREAK_LOAD_KWARGS,
        required_columns=("vanilla", "adversarial", "data_type"),
        reference="https://huggingface.co/papers/2406.18510",
    )


# name -> adapter: every published dataset, for training prompts (`train`), evaluation (`test`) or both
DATASET_REGISTRY: dict[str, DatasetAdapter] = {
    adapter.name: adapter
    for adapter in [
        DatasetAdapter(
            name="star1",
            description="STAR-1: 1k harmful requests with policy-grounded DeepSeek-R1 traces (harmful).",
            map_row=map_star1,
            path="UCSC-VLAA/STAR-1",
            train=DatasetSplit(),
            required_columns=("question",),
            reference="https://huggingface.co/papers/2504.01903",
        ),
        DatasetAdapter(
            name="star_benign_915",
            description="STAR-benign-915: STAR-1's requests rewritten to be harmless (benign, over-refusal probes).",
            map_row=map_star_benign,
            path="UCSC-VLAA/STAR-benign-915",
            train=DatasetSplit(),
            required_columns=("question",),
            reference="https://huggingface.co/papers/2504.01903",
        ),
        DatasetAdapter(
            name="safechain",
            description="SafeChain: 40k WildJailbreak instructions with safe R1 traces (`label`: harmful or benign).",
            map_row=map_safechain,
            path="UWNSL/SafeChain",
            train=DatasetSplit(),
            required_columns=("instruction", "label"),
            reference="https://huggingface.co/papers/2502.12025",
        ),
        DatasetAdapter(
            name="wildjailbreak",
            description="WildJailbreak: train, all four prompt types; eval, 2,000 adversarial harmful (harmful) and "
            "210 adversarial benign (benign_edgy) prompts.",
            map_row=map_wildjailbreak,
            path="allenai/wildjailbreak",
            train=DatasetSplit(configs=("train",)),
            test=DatasetSplit(configs=("eval",)),
            load_kwargs=_WILDJAILBREAK_LOAD_KWARGS,
            any_of_columns=(("adversarial", "vanilla"),),
            reference="https://huggingface.co/papers/2406.18510",
        ),
        *(_wildjailbreak_type(data_type) for data_type in WILDJAILBREAK_DATA_TYPES),
        DatasetAdapter(
            name="strongreject",
            description="StrongREJECT: 313 forbidden prompts in 6 harm categories (harmful).",
            map_row=map_strongreject,
            path="csv",
            test=DatasetSplit(data_files=STRONGREJECT_URL),
            any_of_columns=_STRONGREJECT_COLUMNS,
            reference="https://huggingface.co/papers/2402.10260",
        ),
        DatasetAdapter(
            name="strongreject_small",
            description="StrongREJECT small: its 50-prompt subset (harmful).",
            map_row=map_strongreject,
            path="csv",
            test=DatasetSplit(data_files=STRONGREJECT_SMALL_URL),
            any_of_columns=_STRONGREJECT_COLUMNS,
            reference="https://huggingface.co/papers/2402.10260",
        ),
        DatasetAdapter(
            name="harmbench",
            description="HarmBench standard behaviors (harmful).",
            map_row=map_harmbench,
            path="walledai/HarmBench",
            test=DatasetSplit(configs=("standard",)),
            required_columns=("prompt",),
        ),
        DatasetAdapter(
            name="harmbench_contextual",
            description="HarmBench contextual behaviors, context before the request (harmful).",
            map_row=map_harmbench,
            path="walledai/HarmBench",
            test=DatasetSplit(configs=("contextual",)),
            required_columns=("prompt", "context"),
        ),
        DatasetAdapter(
            name="jailbreakbench",
            description="JailbreakBench: 100 misuse behaviors (harmful).",
            map_row=map_jailbreakbench,
            path="JailbreakBench/JBB-Behaviors",
            test=DatasetSplit(split="harmful", configs=("behaviors",)),
            required_columns=("Goal",),
        ),
        DatasetAdapter(
            name="jailbreakbench_benign",
            description="JailbreakBench: 100 benign behaviors on the same topics (benign_edgy).",
            map_row=map_jailbreakbench_benign,
            path="JailbreakBench/JBB-Behaviors",
            test=DatasetSplit(split="benign", configs=("behaviors",)),
            required_columns=("Goal",),
        ),
        DatasetAdapter(
            name="xstest",
            description="XSTest: 250 safe prompts that look unsafe (benign_edgy) and 200 unsafe contrasts (harmful).",
            map_row=map_xstest,
            path="walledai/XSTest",
            test=DatasetSplit(split="test"),
            required_columns=("prompt", "label"),
        ),
        DatasetAdapter(
            name="or_bench_hard",
            description="OR-Bench-Hard-1K: 1,319 prompts that look harmful and are not, in 10 rejection categories "
            "(benign_edgy).",
            map_row=map_or_bench,
            path="bench-llm/or-bench",
            test=DatasetSplit(configs=("or-bench-hard-1k",)),
            required_columns=("prompt",),
        ),
        DatasetAdapter(
            name="or_bench_toxic",
            description="OR-Bench-Toxic: 655 toxic prompts, OR-Bench's harmful control (harmful).",
            map_row=map_or_bench_toxic,
            path="bench-llm/or-bench",
            test=DatasetSplit(configs=("or-bench-toxic",)),
            required_columns=("prompt",),
        ),
        DatasetAdapter(
            name="falsereject",
            description="FalseReject test: 1,187 human-annotated benign prompts that look risky, 44 categories "
            "(benign_edgy). Licence CC BY-NC 4.0.",
            map_row=map_falsereject,
            path="AmazonScience/FalseReject",
            test=DatasetSplit(split="test"),
            required_columns=("prompt",),
        ),
        DatasetAdapter(
            name="gsm8k",
            description="GSM8K: grade-school word problems with gold answers (math): train 7.5k, test 1,319.",
            map_row=map_gsm8k,
            path="openai/gsm8k",
            train=DatasetSplit(configs=("main",)),
            test=DatasetSplit(split="test", configs=("main",)),
            required_columns=("question", "answer"),
            reference="https://huggingface.co/papers/2110.14168",
        ),
        DatasetAdapter(
            name="math500",
            description="MATH-500: 500 competition problems with LaTeX answers (math).",
            map_row=map_math500,
            path="HuggingFaceH4/MATH-500",
            test=DatasetSplit(split="test"),
            required_columns=("problem", "answer"),
        ),
        DatasetAdapter(
            name="aime24",
            description="AIME 2024: 30 problems, integer answers (math).",
            map_row=map_aime,
            path="HuggingFaceH4/aime_2024",
            test=DatasetSplit(),
            required_columns=("answer",),
            any_of_columns=_AIME_COLUMNS,
        ),
        DatasetAdapter(
            name="aime25",
            description="AIME 2025: 30 problems, integer answers (math).",
            map_row=map_aime,
            path="opencompass/AIME2025",
            test=DatasetSplit(split="test", configs=("AIME2025-I", "AIME2025-II")),
            required_columns=("answer",),
            any_of_columns=_AIME_COLUMNS,
        ),
    ]
}


def dataset_names(use: str) -> list[str]:
    """The registered datasets that have a `use` (`"train"` or `"test"`) split."""
    return [name for name, adapter in DATASET_REGISTRY.items() if getattr(adapter, use) is not None]
