# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Writing safety labels: prompts in, the same rows out with the safe model's decision.

For each prompt, the safe model (the LRM with thinking disabled, as in https://huggingface.co/papers/2603.17368)
answers; the [`SafetyDecisionClassifier`] reads (prompt, answer) and gives P(refusal). Added columns:

- `safety_label` (int): 1 if the safe model refused (the request must be refused), else 0. The hard label that
  `PreSafetySFTTrainer` / `PreSafetyDPOTrainer` read by default.
- `safety_label_prob` (float): P(refusal), the soft label (`presafety_label_column="safety_label_prob"`).
- `safe_response` (str): the safe model's answer.
- `safe_response_status` (str): `"ok"`, or why the answer was not read as a decision: `"empty"` (empty or
  whitespace only, also a think block that never closed), `"repeated_tags"` (think tags inside the answer). Such rows
  get no label (`safety_label` and `safety_label_prob` are `None`: the trainers skip their auxiliary loss), since a
  classifier shown a blank answer reads the prompt instead; `blank_answer_label=0` (or 1) gives them that documented
  label instead, never one read from the prompt. `"cut"`: the answer stopped at `max_new_tokens`; it is
  labeled from its text (the decision shows in its first sentences) unless `label_cut_answers=False`, which leaves it
  unlabeled too. The counts are in `labeling_state.json`'s summary.

Every input column is kept. `safety_label` is the decision, not the harmfulness of the prompt: a `harmful` column
(what IPO, AltTrain and the GRPO safety rewards read) passes through from the input and is never derived from the
decision; without one, a warning says how to add it.

With `output_dir`, rows are processed in fixed contiguous shards, each written atomically as
`<output_dir>/data/<split>-NNNNN-of-MMMMM.parquet` (the hub layout, so `load_dataset(output_dir)` reads the result),
next to `labeling_state.json`, which records what the shards were computed from. A rerun skips the shards already
on disk, so an interrupted run resumes without redoing finished shards and without losing or duplicating rows;
a rerun with other data or settings is refused rather than mixed in. Until the state records the run complete, the
package's loaders and commands refuse the folder (see [`check_label_folder`]); `datasets.load_dataset(output_dir)`
itself does no such check. Data that already holds labels is relabeled only with `overwrite_labels=True`.

```python
from datasets import load_dataset
from trl_presafety.labeling import label_dataset

prompts = load_dataset("json", data_files="trl_presafety/data/tiny/eval/train.jsonl", split="train")
labeled = label_dataset(prompts, "Qwen/Qwen3-8B", None, "runs/refusal-classifier", output_dir="runs/labels")
```
"""

import hashlib
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, concatenate_datasets, load_dataset, load_from_disk
from tqdm.auto import tqdm
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ..conversations import check_prompt
from ..fingerprints import fingerprint_model, fingerprint_weights
from ..generation import (
    GenerationArguments,
    check_prompt_lengths,
    context_length,
    generate_responses,
    load_causal_lm,
    resolve_backend,
)
from ..harmfulness import HARMFUL_COLUMN, HOW_TO_ADD_HARMFUL, parse_harmful
from ..reasoning import build_prompt
from ..shards import (  # noqa: F401 (shard_path: importable from here too)
    DEFAULT_CLAIM_TIMEOUT,
    ShardedJob,
    read_shards,
    shard_path,
)
from .classifier import SafetyDecisionClassifier
from .state import check_label_folder


logger = logging.getLogger(__name__)

LABEL_COLUMN = "safety_label"
PROB_COLUMN = "safety_label_prob"
RESPONSE_COLUMN = "safe_response"
STATUS_COLUMN = "safe_response_status"
OUTPUT_COLUMNS = (LABEL_COLUMN, PROB_COLUMN, RESPONSE_COLUMN, STATUS_COLUMN)
# `safe_response_status` values: read as a decision ("ok", "cut" when cut answers are labeled) or left unlabeled
RESPONSE_STATUSES = ("ok", "cut", "empty", "repeated_tags")
STATE_VERSION = 1
# Settings that change the labels: a resumed run must match them (the backend and batch sizes may differ)
_RESUME_KEYS = (
    "version",
    "num_rows",
    "shard_size",
    "split",
    "prompt_column",
    "prompts_sha256",
    # What was at the model's and the classifier's paths, not the paths: a retrained model at the same path relabels
    "model_fingerprint",
    "classifier_fingerprint",
    "thinking",
    "threshold",
    "decoding",
    "harmful_sha256",
    "label_cut_answers",
    "blank_answer_label",
)


def _prompts_sha256(prompts: list[Any]) -> str:
    digest = hashlib.sha256()
    for prompt in prompts:
        digest.update(json.dumps(prompt, sort_keys=True, ensure_ascii=False).encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


def _check_dataset(dataset: Any, prompt_column: str) -> None:
    if isinstance(dataset, DatasetDict):
        raise TypeError(
            f"Got a DatasetDict with splits {list(dataset)}; label one split at a time, e.g. `dataset['train']`."
        )
    if not isinstance(dataset, Dataset):
        raise TypeError(f"Expected a `datasets.Dataset`, got {type(dataset).__name__}.")
    if prompt_column not in dataset.column_names:
        raise ValueError(
            f"The dataset has no prompts column {prompt_column!r}; its columns are {dataset.column_names}. Set "
            "`prompt_column` to the column holding the requests (strings or chat message lists)."
        )
    if len(dataset) == 0:
        raise ValueError("The dataset is empty: there are no prompts to label.")


def _harmful_sha256(dataset: Dataset) -> str | None:
    """Checks the `harmful` column passed through (1/0, a bool, or empty) and fingerprints it, so a resumed run does
    not mix shards written with other harmfulness; without the column, warns that the methods reading it will stop."""
    if HARMFUL_COLUMN not in dataset.column_names:
        logger.warning(
            f"The prompts have no '{HARMFUL_COLUMN}' column. `{LABEL_COLUMN}` is the safe model's decision, not the "
            "harmfulness of the prompt, and is never used in its place: IPO (`build-ipo-pairs`), AltTrain "
            "(`build-alttrain`) and the GRPO safety rewards read harmfulness and will stop on this output. "
            f"{HOW_TO_ADD_HARMFUL}."
        )
        return None
    values = [parse_harmful(v, HARMFUL_COLUMN, i) for i, v in enumerate(dataset[HARMFUL_COLUMN])]
    return _prompts_sha256(values)


def _has_value(value: Any) -> bool:
    """Whether a cell of a label column holds a label (None, NaN and -100 mean "no label", as for the trainers)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return not (isinstance(value, (int, float)) and not isinstance(value, bool) and value == -100)


def _rows_with_labels(dataset: Dataset) -> tuple[list[str], int]:
    """The label columns `dataset` already has, and how many rows hold a value in at least one of them."""
    present = [c for c in OUTPUT_COLUMNS if c in dataset.column_names]
    values = [dataset[c] for c in present]
    return present, sum(any(_has_value(v) for v in row) for row in zip(*values, strict=True)) if present else 0


def compare_labels(old: list[Any], new: list[int]) -> dict[str, int]:
    """How the new hard labels differ from the old ones, row by row.

    An old label is read as a decision: 1 (refusal) from 0.5 up, so a soft label compares with the new hard one; a
    missing one (None, NaN, -100) counts as `newly_labeled`; a value that is not a number counts as changed.
    """
    if len(old) != len(new):
        raise ValueError(f"Cannot compare {len(old)} old labels with {len(new)} new ones: the rows must match.")
    stats = {"rows_with_labels": 0, "labels_changed": 0, "changed_to_refusal": 0, "changed_to_compliance": 0}
    stats["newly_labeled"] = 0
    for before, after in zip(old, new, strict=True):
        if not _has_value(before):
            stats["newly_labeled"] += 1
            continue
        stats["rows_with_labels"] += 1
        try:
            decision = int(float(before) >= 0.5)
        except (TypeError, ValueError):
            decision = None
        if after is None:  # the new answer was blank: no new decision
            stats["now_unlabeled"] = stats.get("now_unlabeled", 0) + 1
            continue
        if decision != after:
            stats["labels_changed"] += 1
            if decision is not None:
                stats["changed_to_refusal" if after == 1 else "changed_to_compliance"] += 1
    return stats


def _source(name_or_path: str) -> str:
    """A local folder as an absolute path (a rerun from another directory must not match another folder), else as is."""
    path = Path(name_or_path)
    return str(path.resolve()) if path.exists() else str(name_or_path)


def label_dataset(
    dataset: Dataset,
    model: PreTrainedModel | str,
    tokenizer: PreTrainedTokenizerBase | None,
    classifier: SafetyDecisionClassifier | str,
    *,
    prompt_column: str = "prompt",
    output_dir: str | Path | None = None,
    shard_size: int = 256,
    split: str = "train",
    threshold: float = 0.5,
    thinking: bool = False,
    generation: GenerationArguments | None = None,
    chat_template_kwargs: dict[str, Any] | None = None,
    classifier_batch_size: int = 64,
    classifier_max_length: int = 256,
    overwrite_output_dir: bool = False,
    overwrite_labels: bool = False,
    show_progress: bool = True,
    model_init_kwargs: dict[str, Any] | None = None,
    vllm_kwargs: dict[str, Any] | None = None,
    on_shard_end: Callable[[int, int], None] | None = None,
    num_workers: int = 1,
    worker_index: int = 0,
    claim_timeout: float = DEFAULT_CLAIM_TIMEOUT,
    take_over_claims: bool = False,
    label_cut_answers: bool = True,
    blank_answer_label: int | None = None,
) -> Dataset | None:
    """Labels every prompt with the safe model's decision and returns the dataset with `safety_label`,
    `safety_label_prob` and `safe_response` added.

    A dataset that already holds labels in columns of those names is refused unless `overwrite_labels=True`; then the
    new labels replace them, and how many changed is logged and, with `output_dir`, recorded under `relabel` in
    `labeling_state.json` (see [`compare_labels`]).

    Args:
        dataset: the prompts, one per row, in `prompt_column` (strings or chat message lists). Other columns are
            kept.
        model: the safe model: a `PreTrainedModel`, or a path / hub id (needed for vLLM).
        tokenizer: its tokenizer, with a chat template; `None` loads it from the model's path.
        classifier: a [`SafetyDecisionClassifier`] or the path of a saved one.
        output_dir: where shards and `labeling_state.json` go; `None` labels in memory (no resume).
        shard_size: rows per shard, the unit of resumption.
        split: the split name in the shard file names.
        threshold: P(refusal) at or above which `safety_label` is 1.
        thinking: generate the safe answers with thinking on. The method's safe model has it off (`False`).
        generation: decoding settings (backend, max_new_tokens, sampling...); defaults to greedy. Shard `i` samples
            with seed `generation_seed + i`, so a resumed run gives the same labels as an uninterrupted one.
        overwrite_output_dir: delete existing shards and start over instead of resuming.
        overwrite_labels: replace the labels the dataset already has in `safety_label` / `safety_label_prob` /
            `safe_response` (rows with None or -100 hold none). Without it, such a dataset is refused.
        model_init_kwargs: `from_pretrained` kwargs when `model` is a path and the transformers backend loads it.
        vllm_kwargs: extra `vllm.LLM` kwargs (e.g. `dtype`), merged over the ones from `generation`.
        on_shard_end: called as `on_shard_end(shard_index, num_shards)` after each shard is written.
        label_cut_answers: label answers cut at `max_new_tokens` from their text (`safe_response_status="cut"`);
            `False` leaves them unlabeled, like empty answers.
        blank_answer_label: the label of empty, whitespace-only and tag-only answers: `None` (no label, the default),
            or `0` / `1` to read every such answer as compliance / refusal (a random tiny model answers only blank
            lines). Never the classifier's reading of the prompt.
        num_workers: with `output_dir`, label only shards `worker_index, worker_index + num_workers, ...`, as one of
            several workers sharing the folder (see [`trl_presafety.shards.ShardWorkerArguments`]). Every worker
            claims a shard before computing it, so copies of one call on one folder share the shards with no
            coordinator.
        worker_index: this worker's index in `[0, num_workers)`.
        claim_timeout: seconds without a heartbeat after which another worker's shard claim is taken over.
        take_over_claims: take over every other worker's claim at once (they are known to be dead).

    Returns:
        The labeled dataset, rows in input order; `None` when this worker ends while other workers still hold or owe
        shards (the folder is completed by the last of them, see `labeling_state.json`).
    """
    _check_dataset(dataset, prompt_column)
    present, num_labeled = _rows_with_labels(dataset)
    if num_labeled and not overwrite_labels:
        raise ValueError(
            f"The dataset already has labels: {num_labeled} of {len(dataset)} rows hold a value in {present}. "
            "Labeling would replace them. Set `overwrite_labels=True` (`--overwrite_labels` on the command line) to "
            "replace them (how many change is reported), or remove those columns first."
        )
    # The old decisions, compared with the new ones at the end (a soft label alone is read as a decision too)
    old_column = next((c for c in (LABEL_COLUMN, PROB_COLUMN) if c in present), None)
    old_labels = dataset[old_column] if old_column is not None else None
    if blank_answer_label not in (None, 0, 1):
        raise ValueError(
            f"`blank_answer_label` must be None (no label), 0 (compliance) or 1 (refusal), got {blank_answer_label!r}."
        )
    if shard_size < 1:
        raise ValueError(f"`shard_size` must be >= 1, got {shard_size}.")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"`threshold` must lie in [0, 1], got {threshold}. It is the P(refusal) cut-off, e.g. 0.5.")
    generation = generation or GenerationArguments()
    prompts = dataset[prompt_column]
    # Fail before any model is loaded, naming the bad row; ShareGPT messages (`from`/`value`) are converted
    prompts = [
        check_prompt(prompt, f"Row {index} of column {prompt_column!r}") for index, prompt in enumerate(prompts)
    ]
    harmful_sha256 = _harmful_sha256(dataset)

    if tokenizer is None:
        model_id = model if isinstance(model, str) else model.name_or_path
        tokenizer = AutoTokenizer.from_pretrained(model_id)
    build_prompt(tokenizer, prompts[0], thinking, chat_template_kwargs)  # raises clearly without a chat template
    # Every prompt the model cannot read whole is refused before the first shard (and before any model is loaded)
    texts = [build_prompt(tokenizer, p, thinking, chat_template_kwargs) for p in prompts]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    max_model_len = (vllm_kwargs or {}).get("max_model_len", generation.vllm_kwargs().get("max_model_len"))
    check_prompt_lengths(lengths, context_length(model, max_model_len), [f"row {i}" for i in range(len(prompts))])
    if isinstance(classifier, (str, Path)):
        classifier = SafetyDecisionClassifier.from_pretrained(classifier)

    kwargs = generation.to_kwargs()
    kwargs["vllm_kwargs"] = {**kwargs["vllm_kwargs"], **(vllm_kwargs or {})}
    decoding = {k: kwargs[k] for k in ("max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "seed")}
    state = {
        "version": STATE_VERSION,
        "command": "label",
        "prompt_column": prompt_column,
        "prompts_sha256": _prompts_sha256(prompts),
        "model": _source(model if isinstance(model, str) else model.name_or_path),
        "model_fingerprint": fingerprint_model(model),
        "classifier": _source(classifier.name_or_path),
        "classifier_fingerprint": fingerprint_weights(classifier.model),
        "thinking": thinking,
        "threshold": threshold,
        "decoding": decoding,
        "harmful_sha256": harmful_sha256,
        "label_cut_answers": label_cut_answers,
        "blank_answer_label": blank_answer_label,
    }
    base = dataset.remove_columns([c for c in OUTPUT_COLUMNS if c in dataset.column_names])

    def label_rows(index: int, rows: range) -> tuple[dict[str, Dataset], None]:
        shard = base.select(rows)
        shard_prompts = [prompts[i] for i in rows]  # checked (ShareGPT messages converted)
        responses = generate_responses(
            model,
            tokenizer,
            shard_prompts,
            thinking=thinking,
            chat_template_kwargs=chat_template_kwargs,
            show_progress=False,
            model_init_kwargs=model_init_kwargs,
            **{**kwargs, "seed": kwargs["seed"] + index},
        )
        statuses = [response_status(tokenizer, r, kwargs["max_new_tokens"]) for r in responses]
        # A blank or tag-only answer is no decision: the classifier would read the prompt instead. Not shown to it
        read = [i for i, s in enumerate(statuses) if s == "ok" or (s == "cut" and label_cut_answers)]
        read_probs = classifier.predict_proba(
            [shard_prompts[i] for i in read],
            [responses[i] for i in read],
            batch_size=classifier_batch_size,
            max_length=classifier_max_length,
        ) if read else []  # fmt: skip
        probs: list[float | None] = [None] * len(responses)
        for i, p in zip(read, read_probs, strict=True):
            probs[i] = float(p)
        if blank_answer_label is not None:  # the documented label of a blank answer, not the classifier's
            for i, status in enumerate(statuses):
                if status in ("empty", "repeated_tags"):
                    probs[i] = float(blank_answer_label)
        shard = shard.add_column(LABEL_COLUMN, [None if p is None else int(p >= threshold) for p in probs])
        shard = shard.add_column(PROB_COLUMN, probs)
        shard = shard.add_column(RESPONSE_COLUMN, responses)
        return {"labels": shard.add_column(STATUS_COLUMN, statuses)}, None

    job = None
    if output_dir is not None:
        output_dir = Path(output_dir)
        job = ShardedJob(
            {"labels": output_dir},
            state,
            _RESUME_KEYS,
            num_rows=len(dataset),
            shard_size=shard_size,
            split=split,
            overwrite=overwrite_output_dir,
            what="labels",
            num_workers=num_workers,
            worker_index=worker_index,
            claim_timeout=claim_timeout,
            take_over_claims=take_over_claims,
        )
    elif num_workers != 1:
        raise ValueError(
            f"`num_workers={num_workers}` needs `output_dir`: workers share the shards of one folder. Set "
            "`output_dir`, or leave `num_workers` at 1 to label in memory."
        )
    # Load the model once for all shards (vLLM caches its own engine)
    all_done = job is not None and all(job.done(i) for i in job.shards())
    if not all_done and isinstance(model, str) and resolve_backend(kwargs["backend"], model) == "transformers":
        model = load_causal_lm(model, model_init_kwargs)
    initial = job.rows_done() if job is not None else 0
    progress = tqdm(total=len(dataset), initial=initial, desc="Labeling", unit="prompt", disable=not show_progress)
    if job is None:  # in memory: the same shards and seeds, nothing written, no resume
        shards = []
        for index, start in enumerate(range(0, len(dataset), shard_size)):
            shards.append(label_rows(index, range(start, min(start + shard_size, len(dataset))))[0]["labels"])
            progress.update(len(shards[-1]))
            if on_shard_end is not None:
                on_shard_end(index, math.ceil(len(dataset) / shard_size))
        progress.close()
        labeled = concatenate_datasets(shards)
        _report_relabel(old_labels, labeled)
        return labeled
    job.run(label_rows, progress=progress, on_shard_end=on_shard_end)
    progress.close()
    if not job.all_done():
        logger.warning(job.pending_message())
        return None

    labeled = read_shards(output_dir, split)
    if len(labeled) != len(dataset):  # every row exactly once, or something outside this run touched the shards
        raise RuntimeError(
            f"{output_dir} holds {len(labeled)} labeled rows for {len(dataset)} prompts. Rerun with "
            "`overwrite_output_dir=True`."
        )
    summary = _summary(labeled)
    relabel = _report_relabel(old_labels, labeled)
    if relabel is not None:
        summary["relabel"] = relabel
    job.finish(summary)
    return labeled


def _report_relabel(old_labels: list[Any] | None, labeled: Dataset) -> dict[str, int] | None:
    if old_labels is None:
        return None
    stats = compare_labels(old_labels, labeled[LABEL_COLUMN])
    logger.warning(
        f"Replaced the labels of {stats['rows_with_labels']} rows: {stats['labels_changed']} changed "
        f"({stats['changed_to_refusal']} to refusal, {stats['changed_to_compliance']} to compliance); "
        f"{stats['newly_labeled']} rows had no label."
    )
    return stats


def response_status(tokenizer: Any, response: str, max_new_tokens: int) -> str:
    """`safe_response_status` of one answer: `"empty"` / `"repeated_tags"` (no decision to read), `"cut"` (stopped
    at `max_new_tokens`, counted by re-tokenizing the text as the evaluation does) or `"ok"`."""
    from ..degenerate import degenerate_text
    from ..reasoning import split_reasoning

    split = split_reasoning(response)
    reason = degenerate_text(split.answer if split.closed else "", "answer")
    if reason is not None:
        return reason
    if len(tokenizer(response, add_special_tokens=False)["input_ids"]) >= max_new_tokens:
        return "cut"
    return "ok"


def _summary(labeled: Dataset) -> dict[str, Any]:
    """The label folder's summary: rates over the labeled rows, and how many rows got no label and why."""
    labels = [label for label in labeled[LABEL_COLUMN] if label is not None]
    probs = [p for p in labeled[PROB_COLUMN] if p is not None]
    statuses = labeled[STATUS_COLUMN] if STATUS_COLUMN in labeled.column_names else ["ok"] * len(labeled)
    counts = {status: statuses.count(status) for status in RESPONSE_STATUSES}
    return {
        "refusal_rate": sum(labels) / len(labels) if labels else None,
        "mean_safety_label_prob": sum(probs) / len(probs) if probs else None,
        "num_rows": len(labeled),
        "num_labeled": len(labels),
        "num_unlabeled": len(labeled) - len(labels),
        "response_status": counts,
    }


def load_labeled_dataset(
    output_dir: str | Path, split: str = "train", *, allow_incomplete_labels: bool = False
) -> Dataset:
    """The labeled rows written by [`label_dataset`] to `output_dir`, in input order.

    Raises [`IncompleteLabelsError`] if `labeling_state.json` does not show every shard done (an interrupted run),
    unless `allow_incomplete_labels=True` (then the finished shards are read, with a warning).
    """
    check_label_folder(output_dir, allow_incomplete_labels)
    return read_shards(output_dir, split)


def load_prompt_dataset(
    name: str, config: str | None = None, split: str = "train", *, allow_incomplete_labels: bool = False
) -> Dataset:
    """Loads prompts from a hub id, a local data file (`.json`, `.jsonl`, `.parquet`, `.csv`; one split), a folder
    saved with `save_to_disk`, or a local folder of data files.

    A label folder (or a shard of one) whose labeling did not finish raises [`IncompleteLabelsError`] unless
    `allow_incomplete_labels=True`.
    """
    check_label_folder(name, allow_incomplete_labels)
    path = Path(name)
    if path.is_file():
        builder = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}.get(path.suffix)
        if builder is None:
            raise ValueError(f"Cannot read {name}: use a .json, .jsonl, .parquet or .csv file, or a dataset folder.")
        return load_dataset(builder, data_files=str(path), split="train")
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        data = load_from_disk(str(path))
        if isinstance(data, DatasetDict):
            if split not in data:
                raise ValueError(f"{name} has splits {list(data)}, not {split!r}. Set `dataset_split`.")
            return data[split]
        return data
    return load_dataset(name, config, split=split)
