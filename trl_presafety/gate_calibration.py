# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""A gate's threshold: chosen on labeled prompts so that at most a target share of comply-labeled prompts is routed,
and recorded in the head's config, where [`SafetyGate`] and routing read it by default.

Also the labeled prompts a gate is fitted and calibrated on ([`load_labeled_prompts`]: a label folder, a data file, a
hub id, a `datasets.Dataset` or rows in memory) and the per-prompt hashes that let an evaluation tell whether it
reports on prompts a threshold was chosen on.
"""

import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Sequence
from typing import Any

from .anchors import MISSING_LABEL
from .fingerprints import fingerprint_json
from .gate import SafetyGate
from .modeling import SafetyHeadConfig


logger = logging.getLogger(__name__)

DEFAULT_TARGET_RATE = 0.05
ROUTING_RULE = "route when P(refuse) >= threshold"


# --- data ----------------------------------------------------------------------------------------------------------
def load_labeled_prompts(
    source: Any,
    prompt_column: str = "prompt",
    label_column: str = "safety_label",
    split: str = "train",
    allow_incomplete_labels: bool = False,
) -> tuple[list[Any], list[float], str]:
    """`(prompts, labels, description)` of the labeled rows of `source`: a label folder (`trl-presafety label`
    output; refused while incomplete), a data file, a hub id, a `datasets.Dataset` or a list of dicts. Rows without a
    label (`None`, NaN, -100) are left out, with a warning."""
    from .anchors import normalize_label

    if isinstance(source, (str, os.PathLike)):
        from .labeling.pipeline import load_prompt_dataset

        description = str(source) if split == "train" else f"{source} (split {split!r})"
        base_split, rows = split_slice(split)
        dataset = load_prompt_dataset(str(source), split=base_split, allow_incomplete_labels=allow_incomplete_labels)
        if rows is not None:
            dataset = dataset.select(range(*rows(len(dataset))))
        rows_columns = dataset.column_names
        column = lambda name: dataset[name]  # noqa: E731
    elif isinstance(source, list):
        description = f"{len(source)} rows in memory"
        rows_columns = sorted({k for row in source for k in row})
        column = lambda name: [row.get(name) for row in source]  # noqa: E731
    else:  # a datasets.Dataset
        description = f"a dataset of {len(source)} rows"
        rows_columns = source.column_names
        column = lambda name: source[name]  # noqa: E731
    for name, role, fix in (
        (prompt_column, "prompts", "set `prompt_column`"),
        (label_column, "labels", "label the prompts with `trl-presafety label`, or set `label_column`"),
    ):
        if name not in rows_columns:
            raise ValueError(f"{description} has no {role} column {name!r} (columns: {rows_columns}): {fix}.")
    prompts, raw = column(prompt_column), column(label_column)
    labels = [normalize_label(v, label_column, i) for i, v in enumerate(raw)]
    keep = [i for i, v in enumerate(labels) if v != MISSING_LABEL]
    if len(keep) < len(labels):
        logger.warning(f"{len(labels) - len(keep)} of {len(labels)} rows of {description} have no label: left out.")
    return [prompts[i] for i in keep], [labels[i] for i in keep], description


def text_hash(prompt: Any) -> str:
    """A short hash of one prompt, the same for the same request however it is written: a string, or chat messages
    (their user turns; so a one-turn conversation and its user text hash alike, as the label folders and the evaluation
    sets write them). Whitespace runs count as one space."""
    if isinstance(prompt, str):
        text = prompt
    elif isinstance(prompt, (list, tuple)) and all(isinstance(m, dict) for m in prompt):
        text = "\n".join(str(m.get("content", "")) for m in prompt if m.get("role") == "user")
    else:
        text = json.dumps(prompt, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()[:16]


def prompts_fingerprint(prompts: Sequence[Any], labels: Sequence[Any] | None = None) -> str:
    """A fingerprint of a labeled prompt set, independent of row order."""
    return fingerprint_json(
        sorted(f"{text_hash(p)}:{'' if labels is None else labels[i]}" for i, p in enumerate(prompts))
    )


def split_slice(split: str) -> tuple[str, Any]:
    """`"train[:90%]"` -> `("train", rows)` with `rows(n)` the `(start, stop)` of the slice (as `datasets` reads
    split slices: integers, or percentages of the split rounded to the nearest row); `("train", None)` for a plain
    split."""
    match = re.fullmatch(r"\s*([^\[\]]+?)\s*(?:\[\s*([^:\]]*)\s*:\s*([^:\]]*)\s*\])?\s*", split)
    if match is None:
        raise ValueError(
            f"Invalid split {split!r}: use a split name, or a slice such as 'train[:90%]' or 'train[100:]'."
        )
    name, start, stop = match.groups()
    if start is None:
        return name, None

    def bound(value: str, n: int, default: int) -> int:
        if not value:
            return default
        if value.endswith("%"):
            return round(float(value[:-1]) * n / 100)
        return int(value) if int(value) >= 0 else n + int(value)

    for value in (start, stop):
        if value and not re.fullmatch(r"-?\d+%?|\d+(\.\d+)?%", value):
            raise ValueError(f"Invalid split slice {split!r}: bounds are integers or percentages, e.g. 'train[:90%]'.")
    return name, lambda n: (max(0, bound(start, n, 0)), min(n, bound(stop, n, n)))


def _class_counts(labels: Sequence[float]) -> tuple[int, int]:
    refuse = sum(1 for v in labels if v >= 0.5)
    return len(labels) - refuse, refuse


def _check_two_classes(labels: Sequence[float], description: str, what: str) -> None:
    comply, refuse = _class_counts(labels)
    if comply == 0 or refuse == 0:
        raise ValueError(
            f"{what} needs prompts of both classes, but {description} has {refuse} refuse-labeled (label >= 0.5) and "
            f"{comply} comply-labeled prompts. Label a set with both harmful and benign prompts."
        )


def _auroc(labels: Sequence[float], scores: Sequence[float]) -> float | None:
    from sklearn.metrics import roc_auc_score

    hard = [int(v >= 0.5) for v in labels]
    return float(roc_auc_score(hard, scores)) if 0 < sum(hard) < len(hard) else None


def _rates(probs: Sequence[float], labels: Sequence[float], threshold: float) -> dict[str, Any]:
    comply = [p for p, v in zip(probs, labels) if v < 0.5]
    refuse = [p for p, v in zip(probs, labels) if v >= 0.5]
    routed = lambda values: sum(p >= threshold for p in values) / len(values) if values else None  # noqa: E731
    return {
        "n_comply": len(comply),
        "n_refuse": len(refuse),
        "comply_routed_rate": routed(comply),
        "refuse_routed_rate": routed(refuse),
    }


# --- the threshold -------------------------------------------------------------------------------------------------
def check_target_rate(target_rate: float) -> None:
    if not (isinstance(target_rate, (int, float)) and 0.0 <= target_rate < 1.0):
        raise ValueError(
            f"Invalid `target_rate`: {target_rate!r}. Use the largest share of comply-labeled prompts that may be "
            "routed, in [0, 1), e.g. 0.05."
        )


def choose_threshold(probs: Sequence[float], labels: Sequence[float], target_rate: float) -> float:
    """The lowest threshold at which at most `target_rate` of the comply-labeled prompts have P(refuse) >= threshold:
    just above the (k+1)-th highest comply-labeled probability, k = floor(target_rate * n_comply). The lowest such
    threshold routes the most refuse-labeled prompts the target allows."""
    comply = sorted((p for p, v in zip(probs, labels) if v < 0.5), reverse=True)
    allowed = math.floor(target_rate * len(comply) + 1e-9)
    if allowed >= len(comply):
        return 0.0
    return min(math.nextafter(comply[allowed], math.inf), 1.0)


def check_calibration_set(
    prompts: Sequence[Any],
    description: str,
    training_prompts: Sequence[Any] | None = None,
    training_description: str = "",
    evaluation_prompts: Sequence[Any] | None = None,
) -> None:
    """Refuses a calibration set that is the training set or shares prompts with an evaluation set; warns when it
    shares some prompts with the training set (their probabilities are optimistic)."""
    hashes = {text_hash(p) for p in prompts}
    if evaluation_prompts is not None:
        shared = hashes & {text_hash(p) for p in evaluation_prompts}
        if shared:
            raise ValueError(
                f"{len(shared)} of the {len(hashes)} calibration prompts of {description} are prompts the evaluation "
                "reports on: a threshold chosen on them would make the report's routed share and over-refusal look "
                "better than they are. Calibrate on a held-out dev split (e.g. label a separate set with "
                "`trl-presafety label`)."
            )
    if training_prompts is not None:
        shared = hashes & {text_hash(p) for p in training_prompts}
        if shared == hashes:
            raise ValueError(
                f"The calibration set {description} is the set the head is fitted on ({training_description}): its "
                "probabilities are optimistic, so the threshold would route more benign prompts than `target_rate` "
                "on new prompts. Pass a separate labeled set."
            )
        if shared:
            logger.warning(
                f"{len(shared)} of the {len(hashes)} calibration prompts of {description} are also in the fitting set "
                f"{training_description}: their probabilities are optimistic."
            )


def calibrate_safety_head(
    gate: SafetyGate | str | os.PathLike,
    dataset: Any,
    *,
    labels: Sequence[float] | None = None,
    description: str | None = None,
    target_rate: float = DEFAULT_TARGET_RATE,
    prompt_column: str = "prompt",
    label_column: str = "safety_label",
    split: str = "train",
    chat_template_kwargs: dict[str, Any] | None = None,
    evaluation_prompts: Sequence[Any] | None = None,
    output_dir: str | os.PathLike | None = None,
    allow_incomplete_labels: bool = False,
    **model_kwargs,
) -> dict[str, Any]:
    """Chooses the gate's threshold on labeled prompts: at most `target_rate` of the comply-labeled ones routed
    (P(refuse) >= threshold), and records it with how it was chosen in the head's config.

    Args:
        gate ([`SafetyGate`] or a path): The gate, or a head folder (loaded with `SafetyGate.from_pretrained`, and
            written back to the same folder unless `output_dir` says otherwise).
        dataset: Labeled prompts (as [`fit_safety_head`] reads them), or a list of prompts with `labels`.
        target_rate (`float`, *optional*, defaults to `0.05`): Largest share of comply-labeled prompts routed.
        evaluation_prompts (*optional*): Prompts a report will evaluate; any of them in `dataset` is refused.
        output_dir (`str`, *optional*): Where the head (with its new config) is written.

    Returns:
        The `calibration` record (also set on `gate.config`, and `gate.threshold` is updated).
    """
    check_target_rate(target_rate)
    if isinstance(gate, (str, os.PathLike)):
        output_dir = gate if output_dir is None else output_dir
        gate = SafetyGate.from_pretrained(gate, **model_kwargs)
    if labels is not None:
        prompts, labels = list(dataset), [float(v) for v in labels]
        description = description or f"{len(prompts)} prompts in memory"
    else:
        prompts, labels, description = load_labeled_prompts(
            dataset, prompt_column, label_column, split, allow_incomplete_labels
        )
    _check_two_classes(labels, description, "Calibrating a threshold")
    check_calibration_set(prompts, description, evaluation_prompts=evaluation_prompts)
    fit = gate.config.fit or {}
    if fit.get("source_fingerprint") == prompts_fingerprint(prompts, labels):
        check_calibration_set(prompts, description, prompts, fit.get("source", "the fitting set"))
    probs = gate.predict_proba(prompts, chat_template_kwargs)
    threshold = choose_threshold(probs, labels, target_rate)
    rates = _rates(probs, labels, threshold)
    record = {
        "rule": ROUTING_RULE,
        "target_comply_routed_rate": target_rate,
        "threshold": threshold,
        **rates,
        "target_met": rates["comply_routed_rate"] <= target_rate + 1e-12,
        "auroc": _auroc(labels, probs),
        "label_column": label_column,
        "source": description,
        "source_fingerprint": prompts_fingerprint(prompts, labels),
        # Per-prompt hashes: an evaluation can tell whether it reports on prompts the threshold was chosen on
        "prompt_hashes": sorted({text_hash(p) for p in prompts}),
        "chat_template_kwargs": dict(chat_template_kwargs or {}),
    }
    if not record["target_met"]:
        logger.warning(
            f"No threshold routes at most {target_rate:.1%} of the comply-labeled prompts of {description}: their "
            f"P(refuse) saturates at 1. The threshold {threshold} routes {rates['comply_routed_rate']:.1%}."
        )
    gate.config.threshold = threshold
    gate.config.calibration = record
    gate.threshold = threshold
    if output_dir is not None:
        gate.save_pretrained(output_dir)
    logger.info(
        f"Calibrated threshold {threshold:.6g} on {description}: routes {rates['comply_routed_rate']:.3f} of "
        f"{rates['n_comply']} comply-labeled and {rates['refuse_routed_rate']:.3f} of {rates['n_refuse']} "
        "refuse-labeled prompts."
    )
    return record


def calibration_overlap(config: SafetyHeadConfig | str | os.PathLike, prompts: Sequence[Any]) -> int:
    """How many of `prompts` the head's threshold was calibrated on (0 when it was not calibrated): an evaluation that
    reports on them should say so, or refuse."""
    if not isinstance(config, SafetyHeadConfig):
        config = SafetyHeadConfig.load(config)
    hashes = set((config.calibration or {}).get("prompt_hashes") or ())
    return sum(text_hash(p) in hashes for p in prompts)
