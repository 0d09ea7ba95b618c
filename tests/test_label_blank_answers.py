# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""`label` never reads a decision off the prompt: blank, whitespace-only and tag-only answers get no label, answers
cut at the token cap are labeled from their text (or left unlabeled on request), and the folder's summary counts
them."""

import json

import pytest
from datasets import Dataset

from trl_presafety.generation import GenerationArguments
from trl_presafety.labeling import pipeline as labeling_pipeline
from trl_presafety.labeling.pipeline import LABEL_COLUMN, PROB_COLUMN, STATUS_COLUMN, label_dataset

from .test_labeling import classifier, classifier_dir, lrm_dir  # noqa: F401 (fixtures)


GENERATION = GenerationArguments(backend="transformers", max_new_tokens=8, generation_batch_size=4)
ANSWERS = {
    "blank": "\n\n",
    "spaces": "   ",
    "empty": "",
    "unclosed": "<think>\nstill thinking",
    "tags": "Fine <think> step",
    "cut": "I can not help with that because " * 4,
    "ok": "I can't.",
}


@pytest.fixture
def scripted(monkeypatch):
    def generate(model, tokenizer, prompts, **kwargs):
        return [ANSWERS[p] for p in prompts]

    monkeypatch.setattr(labeling_pipeline, "generate_responses", generate)


@pytest.fixture
def recording(classifier, monkeypatch):  # noqa: F811
    seen = []
    real = classifier.predict_proba

    def predict_proba(prompts, answers, **kwargs):
        seen.extend(answers)
        return real(prompts, answers, **kwargs)

    monkeypatch.setattr(classifier, "predict_proba", predict_proba)
    return classifier, seen


@pytest.mark.parametrize("label_cut_answers", [True, False])
def test_blank_answers_get_no_label_and_are_counted(lrm_dir, recording, scripted, tmp_path, label_cut_answers):  # noqa: F811
    classifier, seen = recording
    dataset = Dataset.from_dict({"prompt": list(ANSWERS)})
    out = tmp_path / "labels"
    labeled = label_dataset(
        dataset, lrm_dir, None, classifier, generation=GENERATION, output_dir=out, label_cut_answers=label_cut_answers
    )
    statuses = dict(zip(labeled["prompt"], labeled[STATUS_COLUMN]))
    assert statuses == {
        "blank": "empty", "spaces": "empty", "empty": "empty", "unclosed": "empty", "tags": "repeated_tags",
        "cut": "cut", "ok": "ok",
    }  # fmt: skip
    labels = dict(zip(labeled["prompt"], labeled[LABEL_COLUMN]))
    probs = dict(zip(labeled["prompt"], labeled[PROB_COLUMN]))
    for name in ("blank", "spaces", "empty", "unclosed", "tags"):
        assert labels[name] is None and probs[name] is None, name
    assert labels["ok"] in (0, 1)
    assert (labels["cut"] is None) is (not label_cut_answers)
    # The classifier was never shown a blank answer (it would have read the prompt)
    assert seen == [ANSWERS["cut"], ANSWERS["ok"]] if label_cut_answers else [ANSWERS["ok"]]
    state = json.loads((out / "labeling_state.json").read_text())
    assert state["num_unlabeled"] == (5 if label_cut_answers else 6) and state["num_rows"] == 7
    assert state["response_status"] == {"ok": 1, "cut": 1, "empty": 4, "repeated_tags": 1}
    assert state["label_cut_answers"] is label_cut_answers


def test_all_blank_answers_label_nothing(lrm_dir, recording, scripted):  # noqa: F811
    classifier, seen = recording
    labeled = label_dataset(Dataset.from_dict({"prompt": ["blank", "empty"]}), lrm_dir, None, classifier)
    assert labeled[LABEL_COLUMN] == [None, None] and seen == []


def test_blank_answer_label_is_the_documented_label_not_the_classifiers(lrm_dir, recording, scripted):  # noqa: F811
    classifier, seen = recording
    dataset = Dataset.from_dict({"prompt": ["blank", "tags", "ok"]})
    labeled = label_dataset(dataset, lrm_dir, None, classifier, blank_answer_label=0)
    assert labeled[LABEL_COLUMN][:2] == [0, 0] and labeled[PROB_COLUMN][:2] == [0.0, 0.0]
    assert seen == [ANSWERS["ok"]]
    with pytest.raises(ValueError, match="`blank_answer_label` must be None"):
        label_dataset(dataset, lrm_dir, None, classifier, blank_answer_label=2)
