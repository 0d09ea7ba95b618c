# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Training prompts from the public sources of safety-reasoning work, for `trl-presafety build-sft`.

Each [`PromptSource`] says where a source is published, how `datasets.load_dataset` reads it, which columns its rows
have, and how a row maps to one prompt of the builder:

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
published format, or a folder downloaded from the hub, read by the same `load_dataset` call and the same mapping), or a
plain file (`harmful=PATH`, `benign=PATH`, or a bare `PATH` whose rows carry `harmful`); each with an optional `@N`
that keeps N rows drawn with `data_seed`.

```python
from trl_presafety.data.sources import load_prompt_sources

prompts = load_prompt_sources(["wildjailbreak_vanilla_harmful@5000", "wildjailbreak_vanilla_benign@3000"])
```
"""

import logging
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..harmfulness import parse_harmful
from ..judges.math_grading import gsm8k_final_answer


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
# The four prompt types of WildJailbreak's `data_type` (and SafeChain's `label`, which carries it)
WILDJAILBREAK_DATA_TYPES = ("vanilla_harmful", "vanilla_benign", "adversarial_harmful", "adversarial_benign")
# Local files: suffix -> (`load_dataset` builder, extra arguments)
FILE_BUILDERS = {
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t"}),
    ".txt": ("text", {}),
}


class PromptSourceError(ValueError):
    """A source's rows do not have the columns or values its adapter expects, or a spec names no known source."""


@dataclass(frozen=True)
class PromptSource:
    """A public source of training prompts: where it lives, how `load_dataset` reads it, how a row maps to a prompt.

    Args:
        name (`str`): Name in `build-sft --prompts`.
        description (`str`): One line for `--help` and the docs.
        map_row (`Callable[[dict, int], dict | None]`): Published row (and its index) -> prompt fields (see the module
            docstring); `None` skips the row.
        hub_id (`str`, *optional*): The dataset on the hub; `None` for plain files.
        config (`str`, *optional*): Its configuration.
        split (`str`, *optional*, defaults to `"train"`): Its split.
        load_kwargs (`dict`, *optional*): Further `load_dataset` arguments, for the hub and for a local copy alike.
        required_columns (`tuple[str, ...]`, *optional*): Columns `map_row` reads; a file without them fails naming
            them.
        reference (`str`, *optional*): The paper or card that publishes the source.
    """

    name: str
    description: str
    map_row: Callable[[dict[str, Any], int], dict[str, Any] | None]
    hub_id: str | None = None
    config: str | None = None
    split: str = "train"
    load_kwargs: dict[str, Any] = field(default_factory=dict)
    required_columns: tuple[str, ...] = ()
    reference: str = ""

    def where(self) -> str:
        if self.hub_id is None:
            return "a local file"
        return f"{self.hub_id}" + (f" ({self.config}, {self.split})" if self.config else f" ({self.split})")


# --- mapping functions: published row -> prompt fields (pure) --------------------------------------------------------


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _harmful_from_data_type(value: Any, index: int, column: str, source: str) -> int:
    data_type = _text(value).strip()
    if data_type.endswith("_harmful"):
        return 1
    if data_type.endswith("_benign"):
        return 0
    raise PromptSourceError(
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
        "category": "harmful",
        "source_id": _text(row.get("id") or index),
        "source_category": "; ".join(str(c) for c in categories) or None,
        "reference_completion": row.get("response") or None,
    }


def map_star_benign(row: dict[str, Any], index: int) -> dict[str, Any]:
    # STAR-benign-915: STAR-1's requests rewritten into harmless ones with a similar wording (over-refusal probes)
    return {
        "prompt": _text(row["question"]),
        "harmful": 0,
        "category": "benign",
        "source_id": _text(row.get("id") or index),
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
        "category": "harmful" if harmful else "benign",
        "source_id": str(index),
        "source_category": _text(row["label"]).strip(),
        "reference_completion": response or None,
    }


def map_wildjailbreak(row: dict[str, Any], index: int, data_types: Sequence[str] = WILDJAILBREAK_DATA_TYPES) -> Any:
    # WildJailbreak (https://huggingface.co/papers/2406.18510), `train` config: adversarial rows carry the jailbreak in
    # `adversarial` (and the plain request in `vanilla`); vanilla rows leave `adversarial` empty. Its `completion` has no
    # reasoning trace, so it is no reference completion
    data_type = _text(row["data_type"]).strip()
    harmful = _harmful_from_data_type(data_type, index, "data_type", "WildJailbreak")
    if data_type not in data_types:
        return None
    adversarial = _text(row.get("adversarial")).strip()
    prompt = adversarial if data_type.startswith("adversarial") and adversarial else _text(row.get("vanilla"))
    return {
        "prompt": prompt.strip(),
        "harmful": harmful,
        "category": "harmful" if harmful else "benign",
        "source_id": str(index),
        "source_category": data_type,
    }


def map_gsm8k(row: dict[str, Any], index: int) -> dict[str, Any]:
    # GSM8K (https://huggingface.co/papers/2110.14168): grade-school word problems; `answer` is the worked solution
    # ending in `#### <number>`, the gold answer build-sft checks a benign trace against with math-verify
    answer = gsm8k_final_answer(_text(row["answer"]))
    if answer is None:
        raise PromptSourceError(
            f"GSM8K row {index}: column `answer` has no `####` final answer ({_text(row['answer'])[-80:]!r}); the "
            "published rows all end in `#### <number>`. Fix the row or drop it."
        )
    return {
        "prompt": _text(row["question"]),
        "harmful": 0,
        "category": "math",
        "source_id": _text(index),
        "answer": answer,
    }


def _plain_prompt(value: Any, index: int) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict) and value[0].get("role") == "user":
        return _text(value[0].get("content"))
    raise PromptSourceError(
        f"Row {index}: `prompt` must be a string or a list holding one user message, got {value!r}. The builder adds "
        "its own system prompt and opening of the reasoning: give the request alone."
    )


def map_plain(row: dict[str, Any], index: int, harmful: int | None = None) -> dict[str, Any] | None:
    """A row of a plain file: a `.txt` line (`text`), or a row with `prompt` and optionally `harmful`, `category`,
    `answer`, `reference_completion`, `reference_rejected`, `id`."""
    if "prompt" not in row and "text" not in row:
        raise PromptSourceError(
            f"Row {index} has no `prompt` column (its columns: {sorted(row)}). A plain file is a .txt file with one "
            "prompt per line, or rows with a `prompt` column."
        )
    prompt = _plain_prompt(row["prompt"], index) if "prompt" in row else _text(row.get("text"))
    if not prompt.strip():
        return None  # a blank line
    given = parse_harmful(row.get("harmful"), "harmful", index) if "harmful" in row else None
    if harmful is not None and given is not None and given != harmful:
        raise PromptSourceError(
            f"Row {index}: its `harmful` column says {given} but the file was given as "
            f"`{'harmful' if harmful else 'benign'}=PATH`. Drop the prefix to use the column, or fix the row."
        )
    harmful = given if given is not None else harmful
    if harmful is None:
        raise PromptSourceError(
            f"Row {index} has no harmfulness: a plain file needs a `harmful` column (1 harmful, 0 benign), or name "
            "it `harmful=PATH` (every prompt harmful) or `benign=PATH` (every prompt benign) in `--prompts`."
        )
    answer = row.get("answer")
    answer = None if answer is None or str(answer).strip() == "" else str(answer)
    category = _text(row.get("category")).strip() or ("harmful" if harmful else "math" if answer else "benign")
    if (category == "harmful") != bool(harmful):
        raise PromptSourceError(
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


def _wildjailbreak(name: str, data_types: Sequence[str], description: str) -> PromptSource:
    return PromptSource(
        name=name,
        description=description,
        map_row=lambda row, index: map_wildjailbreak(row, index, data_types),
        hub_id="allenai/wildjailbreak",
        config="train",
        # TSV files; without keep_default_na the empty `adversarial` cells of vanilla rows would become NaN
        load_kwargs={"delimiter": "\t", "keep_default_na": False},
        required_columns=("vanilla", "adversarial", "data_type"),
        reference="https://huggingface.co/papers/2406.18510",
    )


PROMPT_SOURCES: dict[str, PromptSource] = {
    source.name: source
    for source in (
        PromptSource(
            name="star1",
            description="STAR-1: 1k harmful requests with policy-grounded DeepSeek-R1 traces (harmful)",
            map_row=map_star1,
            hub_id="UCSC-VLAA/STAR-1",
            required_columns=("question",),
            reference="https://huggingface.co/papers/2504.01903",
        ),
        PromptSource(
            name="star_benign_915",
            description="STAR-benign-915: STAR-1's requests rewritten to be harmless (benign, over-refusal probes)",
            map_row=map_star_benign,
            hub_id="UCSC-VLAA/STAR-benign-915",
            required_columns=("question",),
            reference="https://huggingface.co/papers/2504.01903",
        ),
        PromptSource(
            name="safechain",
            description="SafeChain: 40k WildJailbreak instructions with safe R1 traces (`label`: harmful or benign)",
            map_row=map_safechain,
            hub_id="UWNSL/SafeChain",
            required_columns=("instruction", "label"),
            reference="https://huggingface.co/papers/2502.12025",
        ),
        PromptSource(
            name="gsm8k",
            description="GSM8K train: 7.5k grade-school math problems with gold answers (benign, math)",
            map_row=map_gsm8k,
            hub_id="openai/gsm8k",
            config="main",
            required_columns=("question", "answer"),
            reference="https://huggingface.co/papers/2110.14168",
        ),
        _wildjailbreak("wildjailbreak", WILDJAILBREAK_DATA_TYPES, "WildJailbreak train: all four prompt types"),
        *(
            _wildjailbreak(f"wildjailbreak_{data_type}", (data_type,), f"WildJailbreak train: `{data_type}` prompts")
            for data_type in WILDJAILBREAK_DATA_TYPES
        ),
        PromptSource(
            name="harmful",
            description="A plain file of harmful prompts (`harmful=PATH`: .txt one per line, or rows with `prompt`)",
            map_row=lambda row, index: map_plain(row, index, harmful=1),
        ),
        PromptSource(
            name="benign",
            description="A plain file of benign prompts (`benign=PATH`: .txt one per line, or rows with `prompt`)",
            map_row=lambda row, index: map_plain(row, index, harmful=0),
        ),
        PromptSource(
            name="file",
            description="A plain file whose rows carry `prompt` and `harmful` (`file=PATH`, or the bare PATH)",
            map_row=map_plain,
        ),
        PromptSource(
            name="tiny",
            description="The bundled 140 tiny prompts (40 harmful, 20 benign-edgy, 80 math) with reference traces",
            map_row=map_plain,
            required_columns=("prompt", "harmful"),
        ),
    )
}
# Plain sources read a file; the others have a hub id, and `name=PATH` reads a local copy
PLAIN_SOURCES = ("harmful", "benign", "file", "tiny")
_LIMIT = re.compile(r"^(?P<spec>.+)@(?P<limit>\d+)$")


@dataclass(frozen=True)
class SourceSpec:
    """A parsed `--prompts` entry: the source, a local path (or `None`: the hub), and a row limit."""

    source: PromptSource
    path: str | None
    limit: int | None
    text: str


def parse_source_spec(spec: str) -> SourceSpec:
    """`"name"`, `"name=PATH"`, `"PATH"`, each with an optional `"@N"` -> [`SourceSpec`]."""
    text = spec.strip()
    match = _LIMIT.match(text)
    body, limit = (match["spec"], int(match["limit"])) if match else (text, None)
    if limit is not None and limit < 1:
        raise PromptSourceError(f"Invalid prompt source {spec!r}: `@{limit}` keeps no row. Use `@N` with N >= 1.")
    name, sep, path = body.partition("=")
    if not sep:
        if body in PROMPT_SOURCES:
            name, path = body, None
        elif Path(body).suffix.lower() in FILE_BUILDERS or Path(body).exists():
            name, path = "file", body
        else:
            raise PromptSourceError(
                f"Unknown prompt source {spec!r}. Use one of {sorted(PROMPT_SOURCES)} (`name`, or `name=PATH` for a "
                f"local copy), or the path of a file ({', '.join(sorted(FILE_BUILDERS))}) whose rows carry `prompt` "
                "and `harmful`."
            )
    if name not in PROMPT_SOURCES:
        raise PromptSourceError(
            f"Unknown prompt source {name!r} in {spec!r}. Use one of {sorted(PROMPT_SOURCES)} as `name=PATH`."
        )
    if name == "tiny" and not path:
        path = str(TINY_PROMPTS)
    if name in PLAIN_SOURCES and not path:
        raise PromptSourceError(f"Prompt source {spec!r} reads a file: write it as `{name}=PATH`.")
    return SourceSpec(PROMPT_SOURCES[name], path or None, limit, text)


def load_source_rows(spec: SourceSpec) -> Iterable[dict[str, Any]]:
    """The published rows of a source: `load_dataset` on the hub id, or on the local copy with the builder of its
    suffix (a folder is read as a dataset repository); the source's `load_kwargs` apply either way."""
    from datasets import load_dataset

    source = spec.source
    if spec.path is None:
        return load_dataset(source.hub_id, source.config, split=source.split, **source.load_kwargs)
    path = Path(spec.path)
    if path.is_dir():
        return load_dataset(str(path), source.config, split=source.split, **source.load_kwargs)
    if not path.is_file():
        raise PromptSourceError(f"Prompt source {spec.text!r}: {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix not in FILE_BUILDERS:
        raise PromptSourceError(
            f"Prompt source {spec.text!r}: cannot read {path.name}; use a {', '.join(sorted(FILE_BUILDERS))} file or a "
            "dataset folder."
        )
    builder, kwargs = FILE_BUILDERS[suffix]
    rows = load_dataset(builder, data_files=str(path), split="train", **{**kwargs, **source.load_kwargs})
    if builder == "text":
        return ({"text": row["text"]} for row in rows)
    return rows


def _check_columns(spec: SourceSpec, columns: Sequence[str]) -> None:
    missing = [c for c in spec.source.required_columns if c not in columns]
    if missing:
        raise PromptSourceError(
            f"Prompt source {spec.text!r} ({spec.path or spec.source.where()}) has no column(s) {missing}; its columns "
            f"are {sorted(columns)}. `{spec.source.name}` reads {list(spec.source.required_columns)} as published "
            f"({spec.source.reference or 'see its card'}): point it at a copy in the published format."
        )


def adapt_source(spec: SourceSpec, rows: Iterable[dict[str, Any]], data_seed: int = 0) -> list[dict[str, Any]]:
    """Maps the published rows of `spec` to prompt rows (every column of [`COLUMNS`]) and keeps `@N` of them."""
    column_names = getattr(rows, "column_names", None)
    if column_names is not None:
        _check_columns(spec, column_names)
    prompts = []
    for index, row in enumerate(rows):
        if column_names is None and index == 0:
            _check_columns(spec, list(row))
        mapped = spec.source.map_row(dict(row), index)
        if mapped is None or not mapped["prompt"].strip():
            continue
        prompts.append({**dict.fromkeys(COLUMNS), **mapped, "source": spec.source.name})
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
        raise PromptSourceError("No prompt sources: pass at least one, e.g. `--prompts star1 star_benign_915`.")
    rows, seen, duplicates = [], set(), 0
    for text in specs:
        spec = parse_source_spec(text)
        adapted = adapt_source(spec, load_source_rows(spec), data_seed)
        if not adapted:
            raise PromptSourceError(f"Prompt source {text!r} gave no prompt. Check the file or the `@N` limit.")
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
