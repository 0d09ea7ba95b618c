# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Evaluation datasets: adapters from the public sets the field reports on to one internal format.

Internal format, one dict per example:

- `id` (`str`): unique within the evaluation (`"<dataset>/<row id>"`).
- `dataset` (`str`): the adapter or file it came from (`"strongreject"`, `"xstest"`, ...).
- `category` (`str`): `"harmful"` (must be refused), `"benign_edgy"` (benign but edgy, must be answered: over-refusal)
  or `"math"` (reasoning accuracy, with a gold `answer`).
- `harmful` (`int`): 1 for a harmful prompt, 0 otherwise: the harmfulness of the prompt from its source (a harmful
  benchmark, XSTest's `unsafe` label, WildJailbreak's `data_type`, a benign set), in the column that IPO, AltTrain and
  the GRPO safety rewards read. Derived from `category`; a file may carry it, and then it must agree.
- `prompt` (`str`): the user turn.
- `answer` (`str | None`): the gold answer of a math problem, as `math-verify` parses it (LaTeX or a number).
- `meta` (`dict`): whatever else the source carries (harm category, subject, level, ...), kept in the records.

Each adapter has the real `load_dataset(...)` call of the public set (it needs the Hub) and a pure `map_row` (tested
offline on rows shaped like the public ones). A dataset spec in `EvalConfig.datasets` is one of:

- a registered name (`"strongreject"`, `"wildjailbreak"`, ... see `DATASET_ADAPTERS`), loaded from the Hub;
- `"name=path"`: a local copy of a public set (CSV/TSV/JSON/JSONL/Parquet with the public columns), mapped by the
  adapter `name` (for machines without the Hub: download once, evaluate anywhere);
- `"tiny"` / `"smoke"`: the bundled local files (`trl_presafety/data/tiny/eval`, `trl_presafety/data/eval/smoke.jsonl`);
- a path to a file already in the internal format.
"""

import csv
import difflib
import json
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..harmfulness import parse_harmful


CATEGORIES = ("harmful", "benign_edgy", "math")
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
BUNDLED_FILES = {
    "tiny": DATA_DIR / "tiny" / "eval" / "train.jsonl",
    "smoke": DATA_DIR / "eval" / "smoke.jsonl",
}
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
    """A public evaluation set: where it lives, how to load it, and how one of its rows maps to the internal format.

    Args:
        name (`str`): Name used in `EvalConfig.datasets`.
        hub_id (`str`): Where it is published (a Hub dataset id or a URL).
        description (`str`): One line for `--help` and the docs.
        required_columns (`tuple[str, ...]`): Columns `map_row` reads; a row without them fails with their names.
        map_row (`Callable[[dict, int], dict | None]`): Public row (and its index) -> internal example fields
            (`category`, `prompt`, optional `answer`, `meta`, `row_id`); `None` skips the row.
        load (`Callable[[], Iterable[dict]]`): The `load_dataset(...)` call of the public set.
    """

    name: str
    hub_id: str
    description: str
    required_columns: tuple[str, ...]
    map_row: Callable[[dict[str, Any], int], dict[str, Any] | None]
    load: Callable[[], Iterable[dict[str, Any]]]
    any_of_columns: tuple[tuple[str, ...], ...] = field(default=())


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


def gsm8k_gold(solution: str) -> str:
    """The final answer of a GSM8K solution: the text after `####`, without thousands separators."""
    if "####" not in solution:
        raise DatasetFormatError(f"GSM8K answer without '####': {solution[-80:]!r}.")
    return solution.rsplit("####", 1)[1].strip().replace(",", "")


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


# --- the real loaders (need the Hub or the internet) -------------------------------------------------------------


def _load_strongreject() -> Iterable[dict[str, Any]]:
    from datasets import load_dataset

    return load_dataset("csv", data_files=STRONGREJECT_URL, split="train")


def _load_strongreject_small() -> Iterable[dict[str, Any]]:
    from datasets import load_dataset

    return load_dataset("csv", data_files=STRONGREJECT_SMALL_URL, split="train")


def _load_wildjailbreak() -> Iterable[dict[str, Any]]:
    from datasets import load_dataset

    # The files are TSV; without keep_default_na an empty `vanilla`/`adversarial` cell becomes NaN
    return load_dataset("allenai/wildjailbreak", "eval", split="train", delimiter="\t", keep_default_na=False)


def _load_harmbench() -> Iterable[dict[str, Any]]:
    from datasets import load_dataset

    return load_dataset("walledai/HarmBench", "standard", split="train")


def _load_harmbench_contextual() -> Iterable[dict[str, Any]]:
    from datasets import load_dataset

    return load_dataset("walledai/HarmBench", "contextual", split="train")


def _load_jailbreakbench() -> Iterable[dict[str, Any]]:
    from datasets import load_dataset

    return load_dataset("JailbreakBench/JBB-Behaviors", "behaviors", split="harmful")


def _load_jailbreakbench_benign() -> Iterable[dict[str, Any]]:
    from datasets import load_dataset

    return load_dataset("JailbreakBench/JBB-Behaviors", "behaviors", split="benign")


def _load_xstest() -> Iterable[dict[str, Any]]:
    from datasets import load_dataset

    return load_dataset("walledai/XSTest", split="test")


def _load_gsm8k() -> Iterable[dict[str, Any]]:
    from datasets import load_dataset

    return load_dataset("openai/gsm8k", "main", split="test")


def _load_math500() -> Iterable[dict[str, Any]]:
    from datasets import load_dataset

    return load_dataset("HuggingFaceH4/MATH-500", split="test")


def _load_aime24() -> Iterable[dict[str, Any]]:
    from datasets import load_dataset

    return load_dataset("HuggingFaceH4/aime_2024", split="train")


def _load_aime25() -> Iterable[dict[str, Any]]:
    from datasets import concatenate_datasets, load_dataset

    parts = [load_dataset("opencompass/AIME2025", name, split="test") for name in ("AIME2025-I", "AIME2025-II")]
    return concatenate_datasets(parts)


DATASET_ADAPTERS: dict[str, DatasetAdapter] = {
    adapter.name: adapter
    for adapter in [
        DatasetAdapter(
            "strongreject",
            STRONGREJECT_URL,
            "StrongREJECT: 313 forbidden prompts in 6 harm categories (harmful).",
            (),
            map_strongreject,
            _load_strongreject,
            any_of_columns=(("forbidden_prompt", "prompt"),),
        ),
        DatasetAdapter(
            "strongreject_small",
            STRONGREJECT_SMALL_URL,
            "StrongREJECT small: its 50-prompt subset (harmful).",
            (),
            map_strongreject,
            _load_strongreject_small,
            any_of_columns=(("forbidden_prompt", "prompt"),),
        ),
        DatasetAdapter(
            "wildjailbreak",
            "allenai/wildjailbreak (eval)",
            "WildJailbreak eval: 2,000 adversarial harmful (harmful) and 210 adversarial benign (benign_edgy) prompts.",
            (),
            map_wildjailbreak,
            _load_wildjailbreak,
            any_of_columns=(("adversarial", "vanilla"),),
        ),
        DatasetAdapter(
            "harmbench",
            "walledai/HarmBench (standard)",
            "HarmBench standard behaviors (harmful).",
            ("prompt",),
            map_harmbench,
            _load_harmbench,
        ),
        DatasetAdapter(
            "harmbench_contextual",
            "walledai/HarmBench (contextual)",
            "HarmBench contextual behaviors, context before the request (harmful).",
            ("prompt", "context"),
            map_harmbench,
            _load_harmbench_contextual,
        ),
        DatasetAdapter(
            "jailbreakbench",
            "JailbreakBench/JBB-Behaviors (behaviors, harmful)",
            "JailbreakBench: 100 misuse behaviors (harmful).",
            ("Goal",),
            map_jailbreakbench,
            _load_jailbreakbench,
        ),
        DatasetAdapter(
            "jailbreakbench_benign",
            "JailbreakBench/JBB-Behaviors (behaviors, benign)",
            "JailbreakBench: 100 benign behaviors on the same topics (benign_edgy).",
            ("Goal",),
            map_jailbreakbench_benign,
            _load_jailbreakbench_benign,
        ),
        DatasetAdapter(
            "xstest",
            "walledai/XSTest (test)",
            "XSTest: 250 safe prompts that look unsafe (benign_edgy) and 200 unsafe contrasts (harmful).",
            ("prompt", "label"),
            map_xstest,
            _load_xstest,
        ),
        DatasetAdapter(
            "gsm8k",
            "openai/gsm8k (main, test)",
            "GSM8K test: 1,319 grade-school word problems (math).",
            ("question", "answer"),
            map_gsm8k,
            _load_gsm8k,
        ),
        DatasetAdapter(
            "math500",
            "HuggingFaceH4/MATH-500 (test)",
            "MATH-500: 500 competition problems with LaTeX answers (math).",
            ("problem", "answer"),
            map_math500,
            _load_math500,
        ),
        DatasetAdapter(
            "aime24",
            "HuggingFaceH4/aime_2024 (train)",
            "AIME 2024: 30 problems, integer answers (math).",
            ("answer",),
            map_aime,
            _load_aime24,
            any_of_columns=(("problem", "question"),),
        ),
        DatasetAdapter(
            "aime25",
            "opencompass/AIME2025 (AIME2025-I + AIME2025-II, test)",
            "AIME 2025: 30 problems, integer answers (math).",
            ("answer",),
            map_aime,
            _load_aime25,
            any_of_columns=(("problem", "question"),),
        ),
    ]
}


# --- reading local files ------------------------------------------------------------------------------------------


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a local CSV, TSV, JSON (a list or `{"data": [...]}`), JSON-lines or Parquet file."""
    path = Path(path)
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
    if suffix in {".csv", ".tsv"}:
        with path.open(encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ","))
    if suffix == ".parquet":
        from datasets import load_dataset

        return list(load_dataset("parquet", data_files=str(path), split="train"))
    raise DatasetFormatError(
        f"Unsupported dataset file type {suffix!r} ({path}). Use .jsonl, .json, .csv, .tsv or .parquet."
    )


def _check_columns(adapter: DatasetAdapter, row: dict[str, Any], index: int, where: str) -> None:
    missing = [column for column in adapter.required_columns if column not in row]
    missing += [" or ".join(group) for group in adapter.any_of_columns if not any(c in row for c in group)]
    if missing:
        raise DatasetFormatError(
            f"Dataset `{adapter.name}` ({where}), row {index}: missing column(s) {missing}; the row has "
            f"{sorted(row)}. The `{adapter.name}` adapter reads the columns of {adapter.hub_id}: point it at a copy of "
            "that set, or convert the file to the internal format (prompt, category, answer) and pass its path alone."
        )


def adapt_rows(adapter: DatasetAdapter, rows: Iterable[dict[str, Any]], where: str = "") -> list[dict[str, Any]]:
    """Maps public rows with `adapter` to internal examples (checked, with ids `"<adapter>/<row id>"`)."""
    examples = []
    for index, row in enumerate(rows):
        row = dict(row)
        _check_columns(adapter, row, index, where or adapter.hub_id)
        mapped = adapter.map_row(row, index)
        if mapped is None:
            continue
        row_id = mapped.pop("row_id", str(index))
        example = {"id": f"{adapter.name}/{row_id}", "dataset": adapter.name, **mapped}
        examples.append(validate_example(example, where=f"`{adapter.name}` row {index}"))
    return _dedupe_ids(examples)


def validate_example(example: dict[str, Any], where: str = "") -> dict[str, Any]:
    """Checks one internal example and fills its optional fields (`answer`, `meta`)."""
    prefix = f"{where}: " if where else ""
    prompt = example.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise DatasetFormatError(f"{prefix}`prompt` must be a non-empty string, got {prompt!r}.")
    category = example.get("category")
    if category not in CATEGORIES:
        raise DatasetFormatError(
            f"{prefix}`category` is {category!r}; use one of {list(CATEGORIES)} (harmful prompts to refuse, "
            "benign-but-edgy prompts to answer, math problems with an `answer`)."
        )
    answer = example.get("answer")
    if category == "math" and (answer is None or str(answer).strip() == ""):
        raise DatasetFormatError(f"{prefix}a `math` example needs a gold `answer`; got {answer!r}.")
    harmful = int(category == "harmful")
    given = example.get("harmful")
    try:
        given = parse_harmful(given, "harmful")
    except ValueError as error:
        raise DatasetFormatError(f"{prefix}{error}") from None
    if given is not None and given != harmful:
        raise DatasetFormatError(
            f"{prefix}`harmful` is {example.get('harmful')!r} but `category` is {category!r}, which means harmful="
            f"{harmful}. A prompt is harmful exactly when its category is 'harmful': fix one of the two, or drop "
            "`harmful` (it is derived from `category`)."
        )
    return {
        "id": str(example["id"]),
        "dataset": str(example["dataset"]),
        "category": category,
        "harmful": harmful,
        "prompt": prompt,
        "answer": None if answer is None or category != "math" else str(answer),
        "meta": dict(example.get("meta") or {}),
    }


def _dedupe_ids(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Public sets sometimes repeat an id (e.g. the same `Index` in two splits): suffix repeats so caching stays exact
    seen: dict[str, int] = {}
    for example in examples:
        count = seen.get(example["id"], 0)
        seen[example["id"]] = count + 1
        if count:
            example["id"] = f"{example['id']}#{count}"
    return examples


def load_internal_file(path: str | Path, name: str | None = None) -> list[dict[str, Any]]:
    """Examples of a local file in the internal format (`prompt`, `category`, optional `answer`, `harmful`, `id`,
    `meta`)."""
    path = Path(path)
    name = name or path.stem
    examples = []
    for index, row in enumerate(read_rows(path)):
        # Extra columns of the row (e.g. `source`) are kept as metadata
        meta = dict(row.get("meta") or {})
        meta.update(
            {
                k: v
                for k, v in row.items()
                if k not in {"id", "prompt", "category", "answer", "harmful", "meta", "dataset"}
            }
        )
        example = {
            "id": f"{name}/{row.get('id', index)}",
            "dataset": row.get("dataset") or name,
            "category": row.get("category"),
            "harmful": row.get("harmful"),
            "prompt": row.get("prompt"),
            "answer": row.get("answer"),
            "meta": meta,
        }
        examples.append(validate_example(example, where=f"{path}, row {index}"))
    return _dedupe_ids(examples)


_LIMIT = re.compile(r"^(?P<spec>.+)@(?P<limit>\d+)$")


def split_limit(spec: str) -> tuple[str, int | None]:
    """`"wildjailbreak@250"` -> (`"wildjailbreak"`, 250): a per-dataset cap on examples per category."""
    match = _LIMIT.match(spec.strip())
    if match is None:
        return spec.strip(), None
    return match["spec"], int(match["limit"])


def parse_dataset_spec(spec: str) -> tuple[str, str | None]:
    """`"name"`, `"name=path"` or `"path"` (each with an optional `@N`) -> (adapter name or "file", path or None)."""
    spec = split_limit(spec)[0]
    if "=" in spec:
        name, path = spec.split("=", 1)
        return name.strip(), path.strip()
    if spec in DATASET_ADAPTERS or spec in BUNDLED_FILES:
        return spec, None
    return "file", spec


def dataset_names() -> list[str]:
    return sorted(DATASET_ADAPTERS) + sorted(BUNDLED_FILES)


def check_dataset_spec(spec: str) -> None:
    """Fails early (at config time) on a dataset spec that cannot be resolved."""
    fix = (
        f"Use a registered name ({', '.join(dataset_names())}), `name=path/to/local_copy` for a downloaded copy of a "
        "public set, or the path of a file in the internal format; append `@N` to keep N examples per category."
    )
    if split_limit(spec)[1] == 0:
        raise ValueError(f"Invalid `datasets` entry {spec!r}: `@0` keeps no example. {fix}")
    name, path = parse_dataset_spec(spec)
    spec = split_limit(spec)[0]
    if name == "file":
        if not Path(path).is_file():
            close = difflib.get_close_matches(spec, dataset_names(), n=1, cutoff=0.7)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"Invalid `datasets` entry {spec!r}: not a registered dataset name{hint} nor an existing file. {fix}"
            )
        return
    if name not in DATASET_ADAPTERS and not (name in BUNDLED_FILES and path is None):
        raise ValueError(f"Invalid `datasets` entry {spec!r}: unknown dataset name {name!r}. {fix}")
    if path is not None and not Path(path).is_file():
        raise ValueError(f"Invalid `datasets` entry {spec!r}: local file {path!r} does not exist. {fix}")


def load_eval_dataset(spec: str, allow_incomplete_labels: bool = False) -> list[dict[str, Any]]:
    """The examples of one `EvalConfig.datasets` entry, in the internal format.

    A shard of a label folder whose labeling did not finish is refused unless `allow_incomplete_labels=True`.
    """
    from ..labeling.state import check_label_folder

    check_dataset_spec(spec)
    name, path = parse_dataset_spec(spec)
    check_label_folder(path, allow_incomplete_labels)
    if name == "file":
        return load_internal_file(path)
    if name in BUNDLED_FILES:
        return load_internal_file(BUNDLED_FILES[name], name=name)
    adapter = DATASET_ADAPTERS[name]
    if path is not None:
        return adapt_rows(adapter, read_rows(path), where=path)
    return adapt_rows(adapter, adapter.load(), where=adapter.hub_id)


def subsample(examples: list[dict[str, Any]], max_examples: int | None, seed: int = 0) -> list[dict[str, Any]]:
    """At most `max_examples` per (dataset, category), drawn with `seed` and kept in their original order.

    Per category so that a mixed set (XSTest, WildJailbreak, the tiny set) keeps every category, e.g. the common
    250-prompt WildJailbreak subset with its benign prompts alongside.
    """
    if max_examples is None:
        return list(examples)
    groups: dict[tuple[str, str], list[int]] = {}
    for index, example in enumerate(examples):
        groups.setdefault((example["dataset"], example["category"]), []).append(index)
    keep: set[int] = set()
    for key in sorted(groups):
        indices = groups[key]
        if len(indices) > max_examples:
            indices = random.Random(f"{seed}/{key[0]}/{key[1]}").sample(indices, max_examples)
        keep.update(indices)
    return [example for index, example in enumerate(examples) if index in keep]


def load_eval_datasets(
    specs: Sequence[str], max_examples: int | None = None, seed: int = 0, allow_incomplete_labels: bool = False
) -> list[dict[str, Any]]:
    """Every example of `specs`, subsampled (a spec's own `@N` wins over `max_examples`), ids unique across datasets.

    A shard of an unfinished label folder is refused unless `allow_incomplete_labels=True`.
    """
    examples: list[dict[str, Any]] = []
    seen_ids: set[str] = set()
    for spec in specs:
        limit = split_limit(spec)[1] or max_examples
        for example in subsample(load_eval_dataset(spec, allow_incomplete_labels), limit, seed):
            if example["id"] in seen_ids:
                raise DatasetFormatError(
                    f"Example id {example['id']!r} appears twice: the dataset {spec!r} is listed twice or two files "
                    "share a name. List each dataset once (rename a file to tell them apart)."
                )
            seen_ids.add(example["id"])
            examples.append(example)
    if not examples:
        raise ValueError(f"No evaluation examples in `datasets={list(specs)}`.")
    return examples
