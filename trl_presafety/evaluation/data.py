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

The public sets are the `test` splits of the dataset registry (`trl_presafety.data.registry`, shared with the prompt
sources of `build-sft`): each adapter says how `load_dataset(...)` reads the set (it needs the Hub) and maps a row with
a pure `map_row` (tested offline on rows shaped like the public ones). A dataset spec in `EvalConfig.datasets` is one
of:

- a registered name (`"strongreject"`, `"wildjailbreak"`, ... see `DATASET_REGISTRY`), loaded from the Hub;
- `"name=path"`: a local copy of a public set (CSV/TSV/JSON/JSONL/Parquet with the public columns), mapped by the
  adapter `name` (for machines without the Hub: download once, evaluate anywhere);
- `"tiny"` / `"smoke"`: the bundled local files (`trl_presafety/data/tiny/eval`, `trl_presafety/data/eval/smoke.jsonl`);
- a path to a file already in the internal format.
"""

import difflib
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..data.adapters import DatasetAdapter, DatasetFormatError, check_columns, parse_dataset_spec, read_rows
from ..data.registry import DATASET_REGISTRY
from ..data.registry import dataset_names as registered_names
from ..harmfulness import parse_harmful


CATEGORIES = ("harmful", "benign_edgy", "math")
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
BUNDLED_FILES = {
    "tiny": DATA_DIR / "tiny" / "eval" / "train.jsonl",
    "smoke": DATA_DIR / "eval" / "smoke.jsonl",
}


_CONVERT_HINT = ", or convert the file to the internal format (prompt, category, answer) and pass its path alone"


def adapt_rows(adapter: DatasetAdapter, rows: Iterable[dict[str, Any]], where: str = "") -> list[dict[str, Any]]:
    """Maps public rows with `adapter` to internal examples (checked, with ids `"<adapter>/<row id>"`)."""
    examples = []
    for index, row in enumerate(rows):
        row = dict(row)
        check_columns(adapter, row, where or adapter.where("test"), "test", index, _CONVERT_HINT)
        mapped = adapter.map_row(row, index)
        if mapped is None:
            continue
        # The evaluation's categories: a benign prompt of a safety set is benign-but-edgy (over-refusal)
        category = "harmful" if mapped["harmful"] else "math" if mapped.get("answer") is not None else "benign_edgy"
        example = {
            "id": f"{adapter.name}/{mapped.get('row_id', index)}",
            "dataset": adapter.name,
            "category": category,
            **{key: mapped[key] for key in ("harmful", "prompt", "answer", "meta") if key in mapped},
        }
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


def resolve_dataset_spec(spec: str) -> tuple[str, str | None]:
    """`"name"`, `"name=path"` or `"path"` (each with an optional `@N`) -> (dataset name or "file", path or None)."""
    parsed = parse_dataset_spec(spec, "`datasets` entry")
    if parsed.path is not None:
        return parsed.name, parsed.path
    if parsed.name in registered_names("test") or parsed.name in BUNDLED_FILES:
        return parsed.name, None
    return "file", parsed.name


def dataset_names() -> list[str]:
    """The names `EvalConfig.datasets` accepts: the registry's datasets with a `test` split, and the bundled files."""
    return sorted(registered_names("test")) + sorted(BUNDLED_FILES)


def check_dataset_spec(spec: str) -> None:
    """Fails early (at config time) on a dataset spec that cannot be resolved."""
    fix = (
        f"Use a registered name ({', '.join(dataset_names())}), `name=path/to/local_copy` for a downloaded copy of a "
        "public set, or the path of a file in the internal format; append `@N` to keep N examples per category."
    )
    name, path = resolve_dataset_spec(spec)
    spec = parse_dataset_spec(spec, "`datasets` entry").body
    if name == "file":
        if not Path(path).is_file():
            close = difflib.get_close_matches(spec, dataset_names(), n=1, cutoff=0.7)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"Invalid `datasets` entry {spec!r}: not a registered dataset name{hint} nor an existing file. {fix}"
            )
        return
    if name not in registered_names("test") and not (name in BUNDLED_FILES and path is None):
        raise ValueError(f"Invalid `datasets` entry {spec!r}: unknown dataset name {name!r}. {fix}")
    if path is not None and not Path(path).is_file():
        raise ValueError(f"Invalid `datasets` entry {spec!r}: local file {path!r} does not exist. {fix}")


def load_eval_dataset(spec: str, allow_incomplete_labels: bool = False) -> list[dict[str, Any]]:
    """The examples of one `EvalConfig.datasets` entry, in the internal format.

    A shard of a label folder whose labeling did not finish is refused unless `allow_incomplete_labels=True`.
    """
    from ..labeling.state import check_label_folder

    check_dataset_spec(spec)
    name, path = resolve_dataset_spec(spec)
    check_label_folder(path, allow_incomplete_labels)
    if name == "file":
        return load_internal_file(path)
    if name in BUNDLED_FILES:
        return load_internal_file(BUNDLED_FILES[name], name=name)
    adapter = DATASET_REGISTRY[name]
    if path is not None:
        return adapt_rows(adapter, read_rows(path, adapter, "test"), where=path)
    return adapt_rows(adapter, adapter.load("test"), where=adapter.where("test"))


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
        limit = parse_dataset_spec(spec, "`datasets` entry").limit or max_examples
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
