# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""AltTrain formatter (https://huggingface.co/papers/2604.18946): the assessment step lands at the configured position,
the original answer is kept, harmful or benign is read from `harmful` (never from the decision `safety_label`), the
result round-trips through both chat templates, and the recipe trains."""

import json
import math
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from trl_presafety.data import AltTrainConfig, build_alttrain_dataset, format_alttrain_example
from trl_presafety.data.alttrain import DEFAULT_BENIGN_ASSESSMENTS, DEFAULT_HARMFUL_ASSESSMENTS, DEFAULT_REFUSAL
from trl_presafety.judges import split_steps
from trl_presafety.reasoning import split_reasoning
from trl_presafety.tiny import TINY_DATA_DIR, build_tiny_tokenizer


BENIGN_REASONING = "Read the question. There are 3 bags of 4 apples. 3 * 4 = 12.\nSo the total is 12."
BENIGN = {
    "prompt": [{"role": "user", "content": "How many apples are in 3 bags of 4?"}],
    "completion": [{"role": "assistant", "content": f"<think>\n{BENIGN_REASONING}\n</think>\n\nThe answer is 12."}],
    "harmful": 0,
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
    "harmful": 1,
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
    assert out["prompt"] == BENIGN["prompt"] and out["harmful"] == 0 and out["safety_label"] == 0
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
    text = {"prompt": "What is 1 + 1?", "completion": "<think>\nAdd. 1 + 1 = 2.\n</think>\n\n2", "harmful": False}
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


def test_harmfulness_not_the_decision_picks_the_judgment():
    """The rows where the safe model was wrong: a harmful prompt it answered (harmful 1, safety_label 0) still gets the
    harmful judgment and a refusal; a benign prompt it refused (harmful 0, safety_label 1) gets cleared and answered.
    Reading `safety_label` would write "harmless, so I can help" for the first."""
    config = AltTrainConfig(assessment_selection="first")
    complying = json.loads(json.dumps(HARMFUL))
    complying["completion"][0]["content"] = "<think>\nThe user asks how.\n</think>\n\nSure, use antifreeze."
    answered = format_alttrain_example({**complying, "safety_label": 0}, config)
    parsed = split_reasoning(_content(answered))
    assert parsed.reasoning == f"The user asks how. {DEFAULT_HARMFUL_ASSESSMENTS[0]}"
    assert parsed.answer == DEFAULT_REFUSAL and DEFAULT_BENIGN_ASSESSMENTS[0] not in _content(answered)
    assert answered["safety_label"] == 0 and answered["harmful"] == 1  # the decision is kept, for the head
    refused = format_alttrain_example({**BENIGN, "safety_label": 1}, config)
    parsed = split_reasoning(_content(refused))
    assert parsed.answer == "The answer is 12." and DEFAULT_BENIGN_ASSESSMENTS[0] in parsed.reasoning
    rows = [{**HARMFUL, "safety_label": 0}] * 3 + [{**BENIGN, "safety_label": 1}] * 2
    dataset = build_alttrain_dataset(rows, config, num_harmful=3, num_benign=2, show_progress=False)
    assert sorted(dataset["harmful"]) == [0, 0, 1, 1, 1]
    assert sum(DEFAULT_HARMFUL_ASSESSMENTS[0] in _content(row) for row in dataset) == 3


def test_decision_only_data_fails_naming_the_column():
    decision_only = [{k: v for k, v in row.items() if k != "harmful"} for row in (HARMFUL, BENIGN)]
    message = r"AltTrain needs the harmfulness of each prompt in column 'harmful'.*'safety_label' column is the safe "
    message += r"model's refusal decision.*not harmfulness.*trl-presafety label --harmful 1"
    with pytest.raises(ValueError, match=message):
        format_alttrain_example(decision_only[0])
    # Skipping rows without a value does not skip data without the column: that would leave no AltTrain data
    with pytest.raises(ValueError, match=message):
        build_alttrain_dataset(decision_only, AltTrainConfig(on_missing_harmful="skip"), show_progress=False)
    with pytest.raises(ValueError, match=r"Invalid `harmful_column`: 'safety_label'. That column is the safe model's"):
        AltTrainConfig(harmful_column="safety_label")
    with pytest.raises(ValueError, match=r"Row 0: column 'harmful' holds 0.8; harmfulness is 1 .* or 0"):
        format_alttrain_example({**BENIGN, "harmful": 0.8})


def test_build_dataset_samples_and_validates():
    rows = [HARMFUL] * 5 + [BENIGN] * 3 + [{**BENIGN, "harmful": None}]
    with pytest.raises(ValueError, match="Row 8 has no harmfulness in column 'harmful'"):
        build_alttrain_dataset(rows, num_harmful=2, num_benign=1, show_progress=False)
    config = AltTrainConfig(on_missing_harmful="skip")
    dataset = build_alttrain_dataset(rows, config, num_harmful=2, num_benign=1, show_progress=False)
    assert sorted(dataset["harmful"]) == [0, 1, 1]
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
    assert sum(r["harmful"] == 1 for r in rows) == 40 and sum(r["harmful"] == 0 for r in rows) == 5
    # The bundled tiny AltTrain data is exactly what the command writes
    assert path.read_text(encoding="utf-8") == (TINY_DATA_DIR / "alttrain" / "train.jsonl").read_text(encoding="utf-8")
    # Harmful prompts the imagined safe model answered: the decision (kept for the head) differs from harmfulness
    assert sum(r["harmful"] == 1 and r["safety_label"] == 0 for r in rows) == 2
    for row in rows:
        parsed = split_reasoning(row["completion"][0]["content"])
        assessments = DEFAULT_HARMFUL_ASSESSMENTS if row["harmful"] else DEFAULT_BENIGN_ASSESSMENTS
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
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 2 and all(math.isfinite(loss) and loss > 0 for loss in losses)  # inf and NaN fail
    # The SFT step trained the LM: every weight matrix of the first layer moved away from the saved model
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["qwen3"]).state_dict()
    trained = {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}
    layer = [k for k in initial if "layers.0." in k and k.endswith("proj.weight")]
    assert layer and all(not torch.equal(initial[k], trained[k]) for k in layer)
