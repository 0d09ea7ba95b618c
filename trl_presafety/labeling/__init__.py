# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Safety decision signals: the safe model's answers (thinking disabled), a BERT-family refusal classifier, and the
`safety_label` columns the PreSafety trainers read."""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports


# Imported on first use: the classifier pulls transformers' Trainer (and, through PEFT, bitsandbytes), which the
# commands that only check a label folder (`eval --help`, `eval`) do not need
_EXPORTS = {
    "classifier": [
        "SafetyDecisionClassifier",
        "answer_text",
        "classification_metrics",
        "default_encoder_path",
        "measure_throughput",
        "prompt_text",
    ],
    "data": ["load_refusal_dataset", "normalize_classifier_dataset"],
    "pipeline": [
        "LABEL_COLUMN",
        "PROB_COLUMN",
        "RESPONSE_COLUMN",
        "compare_labels",
        "label_dataset",
        "load_labeled_dataset",
        "load_prompt_dataset",
    ],
    "state": ["IncompleteLabelsError", "check_label_folder", "find_label_folder", "label_folder_status"],
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "IncompleteLabelsError",
    "LABEL_COLUMN",
    "PROB_COLUMN",
    "RESPONSE_COLUMN",
    "SafetyDecisionClassifier",
    "answer_text",
    "check_label_folder",
    "classification_metrics",
    "compare_labels",
    "default_encoder_path",
    "find_label_folder",
    "label_dataset",
    "label_folder_status",
    "load_labeled_dataset",
    "load_prompt_dataset",
    "load_refusal_dataset",
    "measure_throughput",
    "normalize_classifier_dataset",
    "prompt_text",
]

if TYPE_CHECKING:  # static analyzers, IDEs and the API reference see the real names
    from .classifier import (
        SafetyDecisionClassifier,
        answer_text,
        classification_metrics,
        default_encoder_path,
        measure_throughput,
        prompt_text,
    )
    from .data import load_refusal_dataset, normalize_classifier_dataset
    from .pipeline import (
        LABEL_COLUMN,
        PROB_COLUMN,
        RESPONSE_COLUMN,
        compare_labels,
        label_dataset,
        load_labeled_dataset,
        load_prompt_dataset,
    )
    from .state import IncompleteLabelsError, check_label_folder, find_label_folder, label_folder_status
