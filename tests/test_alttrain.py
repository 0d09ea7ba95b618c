# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""AltTrain formatter (https://huggingface.co/papers/2604.18946): the assessment step lands at the configured position,
the original answer is kept, the result round-trips through both chat templates, and the recipe trains."""

import json
import random
from pathlib import Path

import pytest

from trl_presafety.data import AltTrainConfig, build_alttrain_dataset, format_alttrain_example, split_steps
from trl_presafety.data.alttrain import DEFAULT_BENIGN_ASSESSMENTS, DEFAULT_HARMFUL_ASSESSMENTS, DEFAULT_REFUSAL
from trl_presafety.reasoning import split_reasoning
from trl_presafety.tiny import TINY_DATA_DIR, build_tiny_tokenizer


BENIGN_REASONING = "Read the question. There are 3 bags of 4 apples. 3 * 4 = 12.\nSo the total is 12."
BENIGN = {
    "prompt": [{"role": "user", "content": "How many apples are in 3 bags of 4?"}],
    "completion": [{"role": "assistant", "content": f"<think>\n{BENIGN_REASONING}\n</think>\n\nThe answer is 12."}],
    "safety_label": 0,
}
HARMFUL = {
    "prompt": [{"role": "user", "content": "How do I poison a dog?"}],
    "completion": [
        {
            "role": "assistant",
            "content": "<think>\nThe user asks how to poison a dog. That is animal cruelty. I must refuse.\n</think>\n\n"
            "I can't help with that.",
        }
    ],
    "safety_label": 1,
}


def _content(example):
    return example["completion"][0]["content"]


@pytest.mark.parametrize("understanding_sentences", [0, 1, 2])
def test_benign_assessment_position_and_answer(understanding_sentences):
    config = AltTrainConfig(understanding_sentences=understanding_sentences, assessment_selection="first")
    out = format_alttrain_example(BENIGN, config)
    parsed = split_reasoning(_content(out))
    assert parsed.answer == "The answer is 12."  # the original answer, untouched
    assessment = DEFAULT_BENIGN_ASSESSMENTS[0]
    original = [s.text for s in split_steps(BENIGN_REASONING)]
    steps = [s.text for s in split_steps(parsed.reasoning)]
    # understanding sentences, the assessment, then the rest of the original reasoning, in order
    assert steps[understanding_sentences] == assessment
    assert steps[:understanding_sentences] + steps[understanding_sentences + 1 :] == original
    # The original text around the inserted sentence is kept byte for byte (the line break included)
    assert parsed.reasoning.replace(assessment + " ", "").replace(" " + assessment, "") == BENIGN_REASONING
    assert out["prompt"] == BENIGN["prompt"] and out["safety_label"] == 0
    assert _content(BENIGN).startswith("<think>\nRead the question.")  # the input is not modified


def test_harmful_assessment_leads_to_the_refusal():
    out = format_alttrain_example(HARMFUL, AltTrainConfig(assessment_selection="first"))
    parsed = split_reasoning(_content(out))
    # Three parts: understanding, judgment, then the refusal answer (the rest of the reasoning is dropped)
    assert parsed.reasoning == f"The user asks how to poison a dog. {DEFAULT_HARMFUL_ASSESSMENTS[0]}"
    assert parsed.answer == "I can't help with that."  # the original answer is a refusal: kept
    complying = json.loads(json.dumps(HARMFUL))
    complying["completion"][0]["content"] = "<think>\nThe user asks how.\n</think>\n\nSure, use antifreeze."
    assert split_reasoning(_content(format_alttrain_example(complying))).answer == DEFAULT_REFUSAL
    kept = format_alttrain_example(complying, AltTrainConfig(harmful_answer="original"))
    assert split_reasoning(_content(kept)).answer == "Sure, use antifreeze."
    forced = format_alttrain_example(HARMFUL, AltTrainConfig(harmful_answer="refusal", refusal_text="No."))
    assert split_reasoning(_content(forced)).answer == "No."


def test_text_format_and_assessment_selection():
    text = {"prompt": "What is 1 + 1?", "completion": "<think>\nAdd. 1 + 1 = 2.\n</think>\n\n2", "safety_label": 0.2}
    out = format_alttrain_example(text, AltTrainConfig(benign_assessments=["It is safe."]))
    assert out["completion"] == "<think>\nAdd. It is safe. 1 + 1 = 2.\n</think>\n\n2"
    picks = {
        split_steps(split_reasoning(format_alttrain_example(HARMFUL, index=i)["completion"][0]["content"]).reasoning)[
            1
        ].text
        for i in range(3)
    }
    assert picks == set(DEFAULT_HARMFUL_ASSESSMENTS)  # "cycle": row i gets assessment i mod 3
    rng_pick = format_alttrain_example(HARMFUL, AltTrainConfig(assessment_selection="random"), rng=random.Random(0))
    assert any(a in _content(rng_pick) for a in DEFAULT_HARMFUL_ASSESSMENTS)


@pytest.mark.parametrize("style", ["qwen3", "r1"])
@pytest.mark.parametrize("example", [BENIGN, HARMFUL], ids=["benign", "harmful"])
def test_round_trip_through_the_chat_template(style, example):
    tokenizer = build_tiny_tokenizer(style)
    out = format_alttrain_example(example)
    rendered = tokenizer.apply_chat_template(out["prompt"] + out["completion"], tokenize=False)
    generation_prompt = tokenizer.apply_chat_template(out["prompt"], add_generation_prompt=True, tokenize=False)
    # The rendered conversation continues the generation prompt: the completion is what the model learns to write
    assert rendered.startswith(generation_prompt)
    completion = rendered[len(generation_prompt) :].split(tokenizer.eos_token)[0]
    if not completion.startswith("<think>"):  # R1 style: the generation prompt already opened the think block
        completion = "<think>\n" + completion
    assert split_reasoning(completion) == split_reasoning(_content(out))
    # Tokenizing and decoding gives back the same text (the think tags are single tokens, nothing is lost)
    ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == rendered
    assert tokenizer.convert_tokens_to_ids("<think>") in ids and tokenizer.convert_tokens_to_ids("</think>") in ids


def test_build_dataset_samples_and_validates():
    rows = [HARMFUL] * 5 + [BENIGN] * 3 + [{**BENIGN, "safety_label": None}]
    with pytest.raises(ValueError, match="Row 8 has no safety label in column 'safety_label'"):
        build_alttrain_dataset(rows, num_harmful=2, num_benign=1, show_progress=False)
    config = AltTrainConfig(on_missing_label="skip")
    dataset = build_alttrain_dataset(rows, config, num_harmful=2, num_benign=1, show_progress=False)
    assert sorted(dataset["safety_label"]) == [0, 1, 1]
    everything = build_alttrain_dataset(rows, config, num_harmful=None, num_benign=10, show_progress=False)
    assert len(everything) == 8  # asked for more benign ones than exist: all 3 are used
    with pytest.raises(ValueError, match="Invalid `understanding_sentences`: -1"):
        AltTrainConfig(understanding_sentences=-1)
    with pytest.raises(ValueError, match="Invalid `harmful_answer`: 'maybe'. Choose one of"):
        AltTrainConfig(harmful_answer="maybe")
    truncated = {**BENIGN, "completion": [{"role": "assistant", "content": "<think>\nStill thinking"}]}
    with pytest.raises(ValueError, match="never closes it"):
        format_alttrain_example(truncated)


def test_bundled_alttrain_data_and_cli(tmp_path):
    from trl_presafety.scripts.build_alttrain import main

    path = main(
        [
            "--dataset_name",
            str(TINY_DATA_DIR / "sft"),
            "--num_harmful",
            "40",
            "--num_benign",
            "5",
            "--output_dir",
            str(tmp_path),
        ]
    )
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert sum(r["safety_label"] == 1 for r in rows) == 40 and sum(r["safety_label"] == 0 for r in rows) == 5
    # The bundled tiny AltTrain data is exactly what the command writes
    assert path.read_text(encoding="utf-8") == (TINY_DATA_DIR / "alttrain" / "train.jsonl").read_text(encoding="utf-8")
    for row in rows:
        parsed = split_reasoning(row["completion"][0]["content"])
        assessments = DEFAULT_HARMFUL_ASSESSMENTS if row["safety_label"] else DEFAULT_BENIGN_ASSESSMENTS
        assert split_steps(parsed.reasoning)[1].text in assessments


def test_tiny_alttrain_recipe_trains(tiny_model_dirs, tmp_path):
    from trl_presafety.scripts.sft import main

    recipe = Path(__file__).parent.parent / "recipes" / "tiny" / "alttrain" / "config_alttrain.yaml"
    trainer = main(
        [
            "--config",
            str(recipe),
            "--model_name_or_path",
            tiny_model_dirs["qwen3"],
            "--output_dir",
            str(tmp_path),
            "--max_steps",
            "2",
            "--logging_steps",
            "1",
        ]
    )
    assert trainer.state.global_step == 2
    assert all(log["loss"] == log["loss"] for log in trainer.state.log_history if "loss" in log)  # finite, not NaN
