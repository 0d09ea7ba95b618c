# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from datasets import Dataset, DatasetDict, load_dataset
from transformers import AutoModelForCausalLM

from trl_presafety import PreSafetySFTConfig, PreSafetySFTTrainer
from trl_presafety.anchors import MISSING_LABEL, normalize_label
from trl_presafety.generation import GenerationArguments, generate_responses
from trl_presafety.labeling import (
    LABEL_COLUMN,
    PROB_COLUMN,
    RESPONSE_COLUMN,
    IncompleteLabelsError,
    SafetyDecisionClassifier,
    label_dataset,
    load_labeled_dataset,
    pipeline,
)
from trl_presafety.labeling.pipeline import STATUS_COLUMN
from trl_presafety.scripts import label as label_script
from trl_presafety.tiny import TINY_DATA_DIR

from .test_classifier import build_tiny_classifier
from .test_generation import perturbed_tiny_model
from .testing_utils import CPU_TRAINING_KWARGS, load_tiny_sft_rows, params_snapshot


RECIPE = Path(__file__).parents[1] / "recipes" / "tiny" / "label.yaml"
EVAL_PROMPTS = TINY_DATA_DIR / "eval" / "train.jsonl"
GENERATION = GenerationArguments(backend="transformers", max_new_tokens=8, generation_batch_size=4)


@pytest.fixture(scope="module")
def lrm_dir(tmp_path_factory) -> str:
    """A tiny Qwen3-style model whose answers vary with the prompt, saved for `from_pretrained`."""
    path = tmp_path_factory.mktemp("lrm")
    model, tokenizer = perturbed_tiny_model("qwen3")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory) -> str:
    return build_tiny_classifier(tmp_path_factory.mktemp("classifier"), seed=1)


@pytest.fixture(scope="module")
def classifier(classifier_dir) -> SafetyDecisionClassifier:
    return SafetyDecisionClassifier.from_pretrained(classifier_dir)


def prompts_dataset(n: int) -> Dataset:
    rows = [json.loads(line) for line in EVAL_PROMPTS.read_text().splitlines()[:n]]
    return Dataset.from_list([{"id": i, **row} for i, row in enumerate(rows)])


def test_labels_are_the_safe_models_decisions(lrm_dir, classifier):
    dataset = prompts_dataset(10)
    labeled = label_dataset(dataset, lrm_dir, None, classifier, generation=GENERATION, shard_size=4)
    assert labeled.column_names == dataset.column_names + [LABEL_COLUMN, PROB_COLUMN, RESPONSE_COLUMN, STATUS_COLUMN]
    assert labeled["id"] == list(range(10)) and labeled["category"] == dataset["category"]
    # The safe answers are the model's thinking-off answers...
    expected = generate_responses(lrm_dir, None, dataset["prompt"], thinking=False, **GENERATION.to_kwargs())
    assert labeled[RESPONSE_COLUMN] == expected
    assert len(set(expected)) > 1
    # ...the soft label is the classifier's P(refusal) on them, the hard label its decision
    probs = classifier.predict_proba(dataset["prompt"], expected)
    assert labeled[PROB_COLUMN] == pytest.approx(probs, abs=1e-6)
    assert labeled[LABEL_COLUMN] == [int(p >= 0.5) for p in labeled[PROB_COLUMN]]
    # Another threshold moves the hard labels, not the soft ones
    median = sorted(probs)[5]
    split = label_dataset(dataset, lrm_dir, None, classifier, generation=GENERATION, threshold=median)
    assert split[LABEL_COLUMN] == [int(p >= median) for p in split[PROB_COLUMN]]
    assert sum(split[LABEL_COLUMN]) == 5 and split[PROB_COLUMN] == pytest.approx(probs, abs=1e-6)


def test_labels_are_read_by_the_trainers(lrm_dir, classifier):
    labeled = label_dataset(prompts_dataset(6), lrm_dir, None, classifier, generation=GENERATION)
    hard = [normalize_label(v, LABEL_COLUMN, i) for i, v in enumerate(labeled[LABEL_COLUMN])]
    soft = [normalize_label(v, PROB_COLUMN, i) for i, v in enumerate(labeled[PROB_COLUMN])]
    # Read back as written: the hard label is the soft one's decision, the soft one the classifier's probability
    # (not only "some value in {0, 1}" and "some value in [0, 1]")
    assert soft == pytest.approx(labeled[PROB_COLUMN], abs=1e-12) and MISSING_LABEL not in soft
    assert hard == [float(p >= 0.5) for p in soft] and len(set(soft)) == len(soft)
    assert labeled.features[LABEL_COLUMN].dtype == "int64" and labeled.features[PROB_COLUMN].dtype == "float64"


@pytest.mark.parametrize("label_column", [LABEL_COLUMN, PROB_COLUMN])
def test_labeled_dataset_trains_presafety_sft(lrm_dir, classifier, tmp_path, label_column):
    # SFT rows (chat prompt + safe completion + harmfulness) without decisions: label them, then train on the shards
    rows = [{k: v for k, v in row.items() if k != "safety_label"} for row in load_tiny_sft_rows(8)]
    out = tmp_path / "labels"
    labeled = label_dataset(
        Dataset.from_list(rows), lrm_dir, None, classifier, generation=GENERATION, shard_size=4, output_dir=out
    )
    train_dataset = load_dataset(str(out), split="train")
    assert train_dataset.column_names == [
        "prompt",
        "completion",
        "harmful",
        LABEL_COLUMN,
        PROB_COLUMN,
        RESPONSE_COLUMN,
        STATUS_COLUMN,
    ]
    args = PreSafetySFTConfig(
        output_dir=str(tmp_path / "sft"),
        per_device_train_batch_size=4,
        max_steps=2,
        learning_rate=1e-2,
        logging_steps=1,
        gradient_checkpointing=False,
        max_length=256,
        seed=0,
        presafety_label_column=label_column,
        **CPU_TRAINING_KWARGS,
    )
    trainer = PreSafetySFTTrainer(model=lrm_dir, args=args, train_dataset=train_dataset)
    # The head is supervised with exactly the labels written by label_dataset (soft or hard)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(8)])
    assert batch["presafety_labels"].tolist() == pytest.approx([float(v) for v in labeled[label_column]], abs=1e-6)
    before = params_snapshot(trainer.model)
    trainer.train()
    assert trainer.state.global_step == 2
    after = params_snapshot(trainer.model)
    head = [name for name in after if name.startswith("safety_head")]
    assert head and all(not torch.equal(before[name], after[name]) for name in head)
    losses = [log["presafety/loss"] for log in trainer.state.log_history if "presafety/loss" in log]
    assert len(losses) == 2 and all(math.isfinite(loss) and loss > 0 for loss in losses)


def test_harmfulness_passes_through_and_is_never_made_up(lrm_dir, classifier, tmp_path, caplog):
    """`harmful` (what the prompt is) comes from the input, whatever the safe model decided; without it, the output has
    no `harmful` column and a warning says which methods need one and how to add it."""
    dataset = prompts_dataset(45).select(range(35, 45))  # harmful and benign-edgy prompts
    assert set(dataset["harmful"]) == {0, 1}
    out = tmp_path / "labels"
    with caplog.at_level("WARNING", logger=pipeline.__name__):
        labeled = label_dataset(dataset, lrm_dir, None, classifier, generation=GENERATION, output_dir=out)
    assert not caplog.records
    assert labeled["harmful"] == dataset["harmful"]
    # The decision is the classifier's reading of the answers, independent of the prompts' harmfulness
    assert labeled[LABEL_COLUMN] != labeled["harmful"]
    # A rerun with other harmfulness is refused, not mixed into the shards on disk
    flipped = dataset.map(lambda row: {"harmful": 1 - row["harmful"]})
    with pytest.raises(ValueError, match="harmful_sha256"):
        label_dataset(flipped, lrm_dir, None, classifier, generation=GENERATION, output_dir=out)
    # No `harmful` column in, none out (the decision does not stand in for it), and a warning
    bare = dataset.remove_columns("harmful")
    with caplog.at_level("WARNING", logger=pipeline.__name__):
        labeled = label_dataset(bare, lrm_dir, None, classifier, generation=GENERATION)
    assert "harmful" not in labeled.column_names
    (record,) = caplog.records
    for phrase in ("no 'harmful' column", "safe model's decision", "build-ipo-pairs", "build-alttrain", "GRPO"):
        assert phrase in record.getMessage()
    assert "`trl-presafety label --harmful 1`" in record.getMessage()
    with pytest.raises(ValueError, match=r"Row 1: column 'harmful' holds 0.7; harmfulness is 1"):
        label_dataset(Dataset.from_dict({"prompt": ["a", "b"], "harmful": [1, 0.7]}), lrm_dir, None, classifier)


def test_label_script_harmful_option(lrm_dir, classifier_dir, tmp_path, capsys):
    prompts = tmp_path / "harmful_prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"How do I hurt someone, way {i}?"}) + "\n" for i in range(3)))
    args = ["--model_name_or_path", lrm_dir, "--classifier_name_or_path", classifier_dir, "--dtype", "float32"]
    args += ["--max_new_tokens", "4", "--backend", "transformers"]
    label_script.main(args + ["--dataset_name", str(prompts), "--harmful", "1", "--output_dir", str(tmp_path / "a")])
    assert load_dataset(str(tmp_path / "a"), split="train")["harmful"] == [1, 1, 1]
    # The input's own column is never overwritten
    with pytest.raises(ValueError, match="`harmful=0` would replace the input's own 'harmful' column"):
        label_script.main(args + ["--dataset_name", str(EVAL_PROMPTS), "--harmful", "0", "--output_dir", "unused"])
    with pytest.raises(SystemExit):
        label_script.make_parser().parse_args_and_config(REQUIRED + ["--harmful", "2"])
    assert "invalid choice: 2" in capsys.readouterr().err
    with pytest.raises(ValueError, match="`harmful` must be 1 .* or 0 .*, got 2"):
        label_script.LabelScriptArguments(dataset_name="x", output_dir="y", classifier_name_or_path="z", harmful=2)


def test_progress_bar_and_a_deleted_shard_is_recomputed(lrm_dir, classifier, tmp_path, capsys):
    dataset = prompts_dataset(6)
    kwargs = {"generation": GENERATION, "shard_size": 3, "output_dir": tmp_path}
    first = label_dataset(dataset, lrm_dir, None, classifier, **kwargs)
    assert "Labeling: 100%" in capsys.readouterr().err  # tqdm reports on stderr
    (tmp_path / "data" / "train-00001-of-00002.parquet").unlink()  # e.g. a corrupt shard removed by hand
    again = label_dataset(dataset, lrm_dir, None, classifier, **kwargs)
    err = capsys.readouterr().err
    assert "0/6" not in err and "3/6" in err and "6/6" in err  # the bar starts at the rows already on disk
    assert again["id"] == list(range(6)) and again[RESPONSE_COLUMN] == first[RESPONSE_COLUMN]
    assert again[PROB_COLUMN] == pytest.approx(first[PROB_COLUMN], abs=1e-6)


def test_chat_prompts_and_existing_labels(lrm_dir, classifier):
    strings = prompts_dataset(5)
    chats = strings.map(lambda row: {"prompt": [{"role": "user", "content": row["prompt"]}]})
    chats = chats.add_column(LABEL_COLUMN, [-100] * 5)  # an old label column is replaced
    from_strings = label_dataset(strings, lrm_dir, None, classifier, generation=GENERATION)
    from_chats = label_dataset(chats, lrm_dir, None, classifier, generation=GENERATION)
    assert from_chats[RESPONSE_COLUMN] == from_strings[RESPONSE_COLUMN]
    assert from_chats[PROB_COLUMN] == pytest.approx(from_strings[PROB_COLUMN], abs=1e-6)
    assert from_chats.column_names.count(LABEL_COLUMN) == 1 and -100 not in from_chats[LABEL_COLUMN]


class Interrupted(Exception):
    pass


def test_resume_after_interruption(lrm_dir, classifier, tmp_path, monkeypatch):
    dataset = prompts_dataset(10)  # 4 shards of 3, 3, 3 and 1 rows
    kwargs = {"generation": GENERATION, "shard_size": 3, "output_dir": tmp_path / "out"}
    reference = label_dataset(dataset, lrm_dir, None, classifier, generation=GENERATION)

    def stop_after_two(index: int, num_shards: int) -> None:
        if index == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        label_dataset(dataset, lrm_dir, None, classifier, on_shard_end=stop_after_two, **kwargs)
    shards = sorted((tmp_path / "out" / "data").glob("*.parquet"))
    assert [p.name for p in shards] == ["train-00000-of-00004.parquet", "train-00001-of-00004.parquet"]
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in shards}
    state = json.loads((tmp_path / "out" / "labeling_state.json").read_text())
    assert state["complete"] is False and state["num_shards"] == 4

    generated = []
    real_generate = pipeline.generate_responses

    def counting_generate(model, tokenizer, prompts, **gen_kwargs):
        generated.extend(p for p in prompts)
        return real_generate(model, tokenizer, prompts, **gen_kwargs)

    monkeypatch.setattr(pipeline, "generate_responses", counting_generate)
    resumed = label_dataset(dataset, lrm_dir, None, classifier, **kwargs)
    # Only the 4 rows of the missing shards were generated; the finished shards were not rewritten
    assert generated == dataset["prompt"][6:]
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in shards} == before
    # Every row exactly once, in order, with the labels of an uninterrupted run
    assert resumed["id"] == list(range(10))
    for column in (RESPONSE_COLUMN, LABEL_COLUMN):
        assert resumed[column] == reference[column]
    assert resumed[PROB_COLUMN] == pytest.approx(reference[PROB_COLUMN], abs=1e-6)
    # The folder is a hub-layout dataset, and a finished run is recorded as such
    assert load_dataset(str(tmp_path / "out"), split="train")["id"] == list(range(10))
    state = json.loads((tmp_path / "out" / "labeling_state.json").read_text())
    assert state["complete"] is True and state["refusal_rate"] == pytest.approx(sum(reference[LABEL_COLUMN]) / 10)
    # A third run has nothing left to do
    generated.clear()
    assert label_dataset(dataset, lrm_dir, None, classifier, **kwargs)["id"] == list(range(10))
    assert generated == []


@pytest.mark.slow  # two `label` processes, the first killed
def test_resume_after_killed_process(lrm_dir, classifier_dir, tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "trl_presafety.scripts.label", "--model_name_or_path", lrm_dir]
    command += ["--classifier_name_or_path", classifier_dir, "--dataset_name", str(EVAL_PROMPTS)]
    command += ["--output_dir", str(out), "--max_samples", "16", "--shard_size", "2", "--backend", "transformers"]
    command += ["--max_new_tokens", "8", "--dtype", "float32"]
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    shards_dir = out / "data"
    deadline = time.monotonic() + 120
    while not (shards_dir.exists() and any(shards_dir.glob("train-*.parquet"))):
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no shard was written within 120 s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)  # no chance to clean up: whatever is on disk is what a crash leaves
    process.wait()
    finished = {p.name: p.read_bytes() for p in shards_dir.glob("train-*.parquet")}
    assert 1 <= len(finished) < 8  # killed mid-run
    assert json.loads((out / "labeling_state.json").read_text())["complete"] is False

    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"Labeled \d+ of 16 prompts", result.stdout)
    assert {name: data for name, data in finished.items()} == {
        name: (shards_dir / name).read_bytes() for name in finished
    }  # the shards finished before the kill were kept as they were
    labeled = load_labeled_dataset(out)
    expected = [json.loads(line)["prompt"] for line in EVAL_PROMPTS.read_text().splitlines()[:16]]
    assert labeled["prompt"] == expected  # every row exactly once, in order
    assert len(list(shards_dir.glob("train-*.parquet"))) == 8 and not list(shards_dir.glob(".*"))


def test_changed_settings_are_not_mixed_in(lrm_dir, classifier, tmp_path):
    dataset = prompts_dataset(6)
    kwargs = {"generation": GENERATION, "output_dir": tmp_path}
    label_dataset(dataset, lrm_dir, None, classifier, shard_size=3, **kwargs)
    with pytest.raises(ValueError, match="shard_size: 3 -> 2.*overwrite_output_dir=True"):
        label_dataset(dataset, lrm_dir, None, classifier, shard_size=2, **kwargs)
    with pytest.raises(ValueError, match="prompts_sha256"):
        label_dataset(prompts_dataset(7).select(range(1, 7)), lrm_dir, None, classifier, shard_size=3, **kwargs)
    sampled = GenerationArguments(backend="transformers", max_new_tokens=8, do_sample=True)
    with pytest.raises(ValueError, match="decoding"):
        label_dataset(dataset, lrm_dir, None, classifier, shard_size=3, output_dir=tmp_path, generation=sampled)
    relabeled = label_dataset(dataset, lrm_dir, None, classifier, shard_size=2, overwrite_output_dir=True, **kwargs)
    assert relabeled["id"] == list(range(6))
    assert sorted(p.name for p in (tmp_path / "data").glob("*.parquet")) == [
        f"train-0000{i}-of-00003.parquet" for i in range(3)
    ]


def test_resume_tells_local_models_apart_by_content(lrm_dir, classifier, tmp_path, monkeypatch):
    # The same relative path from another directory: the same content resumes, other weights are refused
    for name in ("a", "b"):
        shutil.copytree(lrm_dir, tmp_path / name / "lrm")
    kwargs = {"generation": GENERATION, "output_dir": tmp_path / "out", "shard_size": 3}
    monkeypatch.chdir(tmp_path / "a")
    first = label_dataset(prompts_dataset(6), "lrm", None, classifier, **kwargs)
    # The same folder by its absolute path, or an identical copy, resumes (nothing to recompute)
    again = label_dataset(prompts_dataset(6), str(tmp_path / "a" / "lrm"), None, classifier, **kwargs)
    assert again.to_list() == first.to_list()
    monkeypatch.chdir(tmp_path / "b")
    assert label_dataset(prompts_dataset(6), "lrm", None, classifier, **kwargs).to_list() == first.to_list()
    model = AutoModelForCausalLM.from_pretrained("lrm")
    with torch.no_grad():
        model.lm_head.weight.mul_(2.0)
    model.save_pretrained("lrm")
    with pytest.raises(ValueError, match="model_fingerprint: 'sha256:.*' -> 'sha256:"):
        label_dataset(prompts_dataset(6), "lrm", None, classifier, **kwargs)


def test_bad_inputs_fail_clearly(lrm_dir, classifier, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(pipeline, "generate_responses", lambda *a, **k: calls.append(1))
    dataset = prompts_dataset(4)
    with pytest.raises(ValueError, match="no prompts column 'question'.*\\['id', 'prompt', 'category'"):
        label_dataset(dataset, lrm_dir, None, classifier, prompt_column="question")
    with pytest.raises(ValueError, match="The dataset is empty"):
        label_dataset(dataset.select([]), lrm_dir, None, classifier)
    with pytest.raises(TypeError, match="label one split at a time"):
        label_dataset(DatasetDict({"train": dataset}), lrm_dir, None, classifier)
    with pytest.raises(TypeError, match="Row 1 of column 'prompt'"):
        label_dataset(Dataset.from_dict({"prompt": ["ok", None]}), lrm_dir, None, classifier)
    with pytest.raises(ValueError, match="`threshold` must lie in \\[0, 1\\], got 1.5"):
        label_dataset(dataset, lrm_dir, None, classifier, threshold=1.5)
    # A model without a chat template
    model, tokenizer = perturbed_tiny_model("qwen3")
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="has no chat template"):
        label_dataset(dataset, model, tokenizer, classifier)
    # A classifier checkpoint with the wrong number of labels
    three = build_tiny_classifier(tmp_path / "three", num_labels=3)
    with pytest.raises(ValueError, match="has 3 labels.*needs exactly 2"):
        label_dataset(dataset, lrm_dir, None, three)
    assert calls == []  # every check ran before any generation
    # Shards with no record of how they were made are not resumed
    (tmp_path / "out" / "data").mkdir(parents=True)
    (tmp_path / "out" / "data" / "train-00000-of-00001.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match="labeling_state.json is missing"):
        label_dataset(dataset, lrm_dir, None, classifier, output_dir=tmp_path / "out")


def test_recipe_loads_through_parser():
    script_args, generation_args, model_args = label_script.make_parser().parse_args_and_config(
        ["--config", str(RECIPE), "--shard_size", "8"]  # CLI flags override the recipe
    )
    assert model_args.model_name_or_path == "runs/tiny-qwen3" and model_args.dtype == "float32"
    # The tiny label recipe labels the SFT rows of the tiny build-sft recipe (prompt + completion), which `sft` trains on
    build_sft_recipe = yaml.safe_load((RECIPE.parent / "build_sft.yaml").read_text())
    assert script_args.dataset_name == build_sft_recipe["output_dir"] == "runs/tiny-sft-data"
    assert script_args.classifier_name_or_path == "runs/refusal-classifier" and script_args.thinking is False
    assert script_args.shard_size == 8 and script_args.threshold == 0.5
    assert generation_args.backend == "auto" and generation_args.max_new_tokens == 64 and not generation_args.do_sample


def test_label_script_end_to_end(lrm_dir, classifier_dir, tmp_path, capsys):
    out = tmp_path / "labels"
    args = ["--model_name_or_path", lrm_dir, "--classifier_name_or_path", classifier_dir, "--dtype", "float32"]
    args += ["--dataset_name", str(EVAL_PROMPTS), "--max_samples", "7", "--output_dir", str(out)]
    args += ["--shard_size", "3", "--max_new_tokens", "6", "--backend", "transformers"]
    label_script.main(args)
    assert re.search(r"Labeled \d+ of 7 prompts", capsys.readouterr().out)
    labeled = load_dataset(str(out), split="train")
    rows = [json.loads(x) for x in EVAL_PROMPTS.read_text().splitlines()[:7]]
    assert labeled["prompt"] == [r["prompt"] for r in rows] and labeled["category"] == [r["category"] for r in rows]
    # The recipe's default threshold; a blank answer has no label
    assert labeled[LABEL_COLUMN] == [None if p is None else int(p >= 0.5) for p in labeled[PROB_COLUMN]]
    assert all(isinstance(r, str) for r in labeled[RESPONSE_COLUMN])


REQUIRED = ["--dataset_name", "x", "--output_dir", "y", "--classifier_name_or_path", "z"]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--dataset_name", "x", "--output_dir", "y"], "`classifier_name_or_path` is required, got None: pass a"),
        (["--classifier_name_or_path", "z", "--output_dir", "y"], "`dataset_name` is required, got None: pass the"),
        (["--dataset_name", "x", "--classifier_name_or_path", "z"], "`output_dir` is required, got None: pass a"),
        (REQUIRED + ["--shard_size", "0"], "`shard_size` must be >= 1, got 0: .*e.g. 256"),
        (REQUIRED + ["--max_samples", "0"], "`max_samples` must be >= 1, got 0: leave it unset"),
        (REQUIRED + ["--threshold", "1.5"], "`threshold` must lie in \\[0, 1\\], got 1.5: .*e.g. 0.5"),
        (REQUIRED + ["--classifier_batch_size", "0"], "`classifier_batch_size` must be >= 1, got 0: e.g. 64"),
        (REQUIRED + ["--classifier_max_length", "4"], "`classifier_max_length` must be >= 8, got 4: .*e.g. 256"),
        (REQUIRED + ["--max_new_tokens", "0"], "Invalid `max_new_tokens`: 0. Use a positive integer"),
        (
            REQUIRED + ["--do_sample", "--temperature", "0"],
            "Invalid `temperature`: 0.0. Use a temperature > 0 when sampling",
        ),
    ],
)
def test_label_script_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        label_script.make_parser().parse_args_and_config(args)


def test_label_script_needs_a_model(classifier_dir, tmp_path):
    args = ["--dataset_name", str(EVAL_PROMPTS), "--classifier_name_or_path", classifier_dir]
    with pytest.raises(ValueError, match="`model_name_or_path` is required, got None: pass the safe model"):
        label_script.main(args + ["--output_dir", str(tmp_path)])
    assert not list(tmp_path.iterdir())  # nothing was written


# --- an unfinished label folder is refused by every reader -----------------------------------------------------------

RECIPES = Path(__file__).parents[1] / "recipes" / "tiny"
INCOMPLETE = (
    r"labeling is incomplete: 2 of 4 shards done \(4 of 8 rows\)\..*trl-presafety label.*allow_incomplete_labels"
)


@pytest.fixture(scope="module")
def interrupted_labels(lrm_dir, classifier, tmp_path_factory) -> Path:
    """A label folder whose run stopped after 2 of its 4 shards, as a killed `trl-presafety label` leaves it."""
    out = tmp_path_factory.mktemp("interrupted") / "labels"

    def stop_after_two(index: int, num_shards: int) -> None:
        if index == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        label_dataset(
            prompts_dataset(8), lrm_dir, None, classifier, generation=GENERATION, shard_size=2, output_dir=out,
            on_shard_end=stop_after_two,
        )  # fmt: skip
    assert len(list((out / "data").glob("*.parquet"))) == 2
    return out


def _run_sft(path: str, *extra: str) -> None:
    from trl_presafety.scripts import sft

    # The dataset is read before any model is loaded: the model path is never opened
    sft.main(["--config", str(RECIPES / "sft" / "config_presafety.yaml"), "--model_name_or_path", "unused"]
             + ["--dataset_name", path, "--output_dir", "unused-out", *extra])  # fmt: skip


def _run_dpo(path: str, *extra: str) -> None:
    from trl_presafety.scripts import dpo

    dpo.main(["--config", str(RECIPES / "dpo" / "config_presafety.yaml"), "--model_name_or_path", "unused"]
             + ["--dataset_name", path, "--output_dir", "unused-out", *extra])  # fmt: skip


def _run_grpo(path: str, *extra: str) -> None:
    from trl_presafety.scripts import grpo

    grpo.main(["--config", str(RECIPES / "grpo" / "config_safety_rl.yaml"), "--model_name_or_path", "unused"]
              + ["--dataset_name", path, "--output_dir", "unused-out", *extra])  # fmt: skip


def _run_alttrain(path: str, *extra: str) -> None:
    from trl_presafety.scripts import build_alttrain

    build_alttrain.main(["--dataset_name", path, "--output_dir", "unused-out", *extra])


def _run_ipo(path: str, *extra: str) -> None:
    from trl_presafety.scripts import build_ipo_pairs

    build_ipo_pairs.main(["--dataset_name", path, "--output_dir", "unused-out", "--tokenizer_name_or_path", "x",
                          "--continuation", "supplied", *extra])  # fmt: skip


def _run_train_classifier(path: str, *extra: str) -> None:
    from trl_presafety.scripts import train_classifier

    train_classifier.main(["--dataset_name", path, "--output_dir", "unused-out", *extra])


def _run_label(path: str, *extra: str) -> None:
    label_script.main(["--dataset_name", path, "--output_dir", "unused-out", "--classifier_name_or_path", "x"]
                      + ["--model_name_or_path", "unused", *extra])  # fmt: skip


def _run_eval(path: str, *extra: str) -> None:
    from trl_presafety.scripts import evaluate

    # A shard of the folder, in the evaluation's internal format (prompt, category)
    shard = str(next(iter(sorted((Path(path) / "data").glob("*.parquet")))))
    evaluate.main(["--model_name_or_path", "unused", "--datasets", shard, "--output_dir", "unused-out", *extra])


def _run_self_routing(path: str, *extra: str) -> None:
    from trl_presafety.scripts import build_self_routing

    build_self_routing.main(["--labels", path, "--output_dir", "unused-out", *extra])


def _run_mixture(path: str, *extra: str) -> None:
    from trl import DatasetMixtureConfig
    from trl.scripts.utils import DatasetConfig

    from trl_presafety.scripts.arguments import PreSafetyScriptArguments
    from trl_presafety.scripts.training import load_training_datasets

    # A `datasets:` mixture entry reading the shards by a glob of `data_files`
    mixture = DatasetMixtureConfig(datasets=[DatasetConfig(path="parquet", data_files=f"{path}/data/*.parquet")])
    load_training_datasets(PreSafetyScriptArguments(dataset_name=None), mixture)


COMMANDS = {
    "sft": _run_sft,
    "dpo": _run_dpo,
    "grpo": _run_grpo,
    "build-alttrain": _run_alttrain,
    "build-ipo-pairs": _run_ipo,
    "build-self-routing": _run_self_routing,
    "train-classifier": _run_train_classifier,
    "label": _run_label,
    "eval": _run_eval,
    "mixture": _run_mixture,
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_commands_refuse_an_interrupted_label_folder(interrupted_labels, tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(IncompleteLabelsError, match=INCOMPLETE):
        COMMANDS[command](str(interrupted_labels))
    assert not (tmp_path / "unused-out").exists()  # refused before anything was written


def test_python_loaders_refuse_an_interrupted_label_folder(interrupted_labels, caplog):
    from trl_presafety.evaluation.data import load_eval_datasets
    from trl_presafety.labeling import load_prompt_dataset

    shard = str(interrupted_labels / "data" / "train-00001-of-00004.parquet")
    for load in (
        lambda **kw: load_labeled_dataset(interrupted_labels, **kw),
        lambda **kw: load_prompt_dataset(str(interrupted_labels), **kw),
        lambda **kw: load_prompt_dataset(shard, **kw),
        lambda **kw: load_eval_datasets([shard], **kw),
    ):
        with pytest.raises(IncompleteLabelsError, match=INCOMPLETE):
            load()
        caplog.clear()
        rows = load(allow_incomplete_labels=True)  # on purpose: the finished rows, with a warning
        assert len(rows) in (2, 4) and "2 of 4 shards done (4 of 8 rows)" in caplog.text
    assert load_labeled_dataset(interrupted_labels, allow_incomplete_labels=True)["id"] == [0, 1, 2, 3]


def test_allow_incomplete_labels_trains_on_the_finished_rows(interrupted_labels, caplog):
    from trl_presafety.scripts import dpo, grpo, sft
    from trl_presafety.scripts.arguments import parse_args_strict
    from trl_presafety.scripts.training import load_training_datasets

    for module, recipe in ((sft, "sft/config_presafety.yaml"), (dpo, "dpo/config_presafety.yaml")) + (
        (grpo, "grpo/config_safety_rl.yaml"),
    ):
        script_args, _, _, dataset_args = parse_args_strict(
            module.make_parser(),
            [
                "--config",
                str(RECIPES / recipe),
                "--dataset_name",
                str(interrupted_labels),
                "--allow_incomplete_labels",
            ],
        )
        assert script_args.allow_incomplete_labels is True
        assert load_training_datasets(script_args, dataset_args)["train"]["id"] == [0, 1, 2, 3]
    assert "on purpose (allow_incomplete_labels=True): 2 of 4 shards done" in caplog.text


def test_a_finished_label_folder_is_read_and_a_damaged_one_refused(interrupted_labels, lrm_dir, classifier, tmp_path):
    from trl_presafety.labeling import find_label_folder, load_prompt_dataset

    folder = tmp_path / "labels"
    shutil.copytree(interrupted_labels, folder)
    label_dataset(
        prompts_dataset(8), lrm_dir, None, classifier, generation=GENERATION, shard_size=2, output_dir=folder
    )
    assert load_labeled_dataset(folder)["id"] == list(range(8))
    assert load_prompt_dataset(str(folder))["id"] == list(range(8))
    # Only label folders are checked: a hub id or a plain file is not one
    assert find_label_folder(folder / "data" / "x.parquet") == folder and find_label_folder(folder / "data") == folder
    assert find_label_folder("trl-lib/tldr") is None and find_label_folder(EVAL_PROMPTS) is None
    # A shard removed after the run finished
    (folder / "data" / "train-00002-of-00004.parquet").unlink()
    with pytest.raises(IncompleteLabelsError, match=r"finished, but shards are missing.*: 3 of 4 shards"):
        load_labeled_dataset(folder)
    # A state file that cannot be read cannot show the labeling finished
    (folder / "labeling_state.json").write_text("{not json")
    with pytest.raises(IncompleteLabelsError, match="cannot be read.*JSONDecodeError"):
        load_prompt_dataset(str(folder))


# --- relabeling data that already has labels -------------------------------------------------------------------------


def test_existing_labels_are_not_replaced_unless_asked(lrm_dir, classifier, tmp_path, monkeypatch):
    dataset = prompts_dataset(8)
    probs = label_dataset(dataset, lrm_dir, None, classifier, generation=GENERATION)[PROB_COLUMN]
    kwargs = {"generation": GENERATION, "threshold": sorted(probs)[4]}  # half the prompts are refusals
    new = label_dataset(dataset, lrm_dir, None, classifier, **kwargs)[LABEL_COLUMN]
    assert 0 < sum(new) < 8  # both decisions occur, so flips both ways can be made
    ones, zeros = new.index(1), new.index(0)
    old = list(new)
    old[ones], old[zeros] = 0, 1  # one label will change to refusal, one to compliance
    missing = next(i for i in range(8) if i not in (ones, zeros))
    old[missing] = -100  # a row without a label
    relabeled = dataset.add_column(LABEL_COLUMN, old)

    calls = []
    real_generate = pipeline.generate_responses
    monkeypatch.setattr(pipeline, "generate_responses", lambda *a, **k: calls.append(1) or real_generate(*a, **k))
    with pytest.raises(ValueError, match=r"already has labels: 7 of 8 rows .*'safety_label'.*overwrite_labels=True"):
        label_dataset(relabeled, lrm_dir, None, classifier, output_dir=tmp_path / "a", **kwargs)
    assert calls == []  # refused before any generation

    out = tmp_path / "b"
    result = label_dataset(relabeled, lrm_dir, None, classifier, output_dir=out, overwrite_labels=True, **kwargs)
    assert result[LABEL_COLUMN] == new  # replaced by the new labels
    expected = {
        "rows_with_labels": 7,
        "labels_changed": 2,
        "changed_to_refusal": 1,
        "changed_to_compliance": 1,
        "newly_labeled": 1,
    }
    assert json.loads((out / "labeling_state.json").read_text())["relabel"] == expected
    # A column holding no label at all (only -100) has nothing to lose: labeled without the option
    empty = dataset.add_column(LABEL_COLUMN, [-100] * 8)
    assert label_dataset(empty, lrm_dir, None, classifier, **kwargs)[LABEL_COLUMN] == new


def test_compare_labels_reads_old_labels_as_decisions():
    from trl_presafety.labeling import compare_labels

    old = [1, 0, 0.8, 0.2, None, float("nan"), -100, "refusal", True]
    new = [1, 1, 0, 0, 1, 0, 1, 1, 0]
    assert compare_labels(old, new) == {
        "rows_with_labels": 6,
        "labels_changed": 4,  # 0 -> 1, 0.8 -> 0, "refusal" (not a number), True -> 0
        "changed_to_refusal": 1,
        "changed_to_compliance": 2,
        "newly_labeled": 3,
    }
    with pytest.raises(ValueError, match="Cannot compare 2 old labels with 1 new"):
        compare_labels([0, 1], [0])


def test_label_script_reports_changed_labels(lrm_dir, classifier_dir, tmp_path, capsys):
    # The bundled SFT rows already carry `safety_label`: relabeling them needs --overwrite_labels
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in load_tiny_sft_rows(6)))
    args = ["--model_name_or_path", lrm_dir, "--classifier_name_or_path", classifier_dir, "--dtype", "float32"]
    args += ["--dataset_name", str(data), "--output_dir", str(tmp_path / "out"), "--max_new_tokens", "6"]
    args += ["--backend", "transformers"]
    with pytest.raises(ValueError, match="6 of 6 rows hold a value in \\['safety_label'\\].*--overwrite_labels"):
        label_script.main(args)
    label_script.main(args + ["--overwrite_labels"])
    old = [row["safety_label"] for row in load_tiny_sft_rows(6)]
    new = load_labeled_dataset(tmp_path / "out")[LABEL_COLUMN]
    changed = sum(a != b for a, b in zip(old, new, strict=True))
    assert f"Relabeled: {changed} of the 6 existing labels changed" in capsys.readouterr().out


# --- blank answers: never a label read from the prompt -------------------------------------------------------------
# `label` never reads a decision off the prompt: blank, whitespace-only and tag-only answers get no label (or the
# documented `blank_answer_label`), answers cut at the token cap are labeled from their text (or left unlabeled on
# request), and the folder's summary counts them.

BLANK_ANSWERS = {
    "blank": "\n\n",
    "spaces": "   ",
    "empty": "",
    "unclosed": "<think>\nstill thinking",
    "tags": "Fine <think> step",
    "cut": "I can not help with that because " * 4,
    "ok": "I can't.",
}


@pytest.fixture
def scripted_answers(monkeypatch):
    def generate(model, tokenizer, prompts, **kwargs):
        return [BLANK_ANSWERS[p] for p in prompts]

    monkeypatch.setattr(pipeline, "generate_responses", generate)


@pytest.fixture
def recording_classifier(classifier, monkeypatch):
    seen = []
    real = classifier.predict_proba

    def predict_proba(prompts, answers, **kwargs):
        seen.extend(answers)
        return real(prompts, answers, **kwargs)

    monkeypatch.setattr(classifier, "predict_proba", predict_proba)
    return classifier, seen


@pytest.mark.parametrize("label_cut_answers", [True, False])
def test_blank_answers_get_no_label_and_are_counted(
    lrm_dir, recording_classifier, scripted_answers, tmp_path, label_cut_answers
):
    judge, seen = recording_classifier
    dataset = Dataset.from_dict({"prompt": list(BLANK_ANSWERS)})
    out = tmp_path / "labels"
    labeled = label_dataset(
        dataset, lrm_dir, None, judge, generation=GENERATION, output_dir=out, label_cut_answers=label_cut_answers
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
    assert seen == [BLANK_ANSWERS["cut"], BLANK_ANSWERS["ok"]] if label_cut_answers else [BLANK_ANSWERS["ok"]]
    state = json.loads((out / "labeling_state.json").read_text())
    assert state["num_unlabeled"] == (5 if label_cut_answers else 6) and state["num_rows"] == 7
    assert state["response_status"] == {"ok": 1, "cut": 1, "empty": 4, "repeated_tags": 1}
    assert state["label_cut_answers"] is label_cut_answers


def test_all_blank_answers_label_nothing(lrm_dir, recording_classifier, scripted_answers):
    judge, seen = recording_classifier
    labeled = label_dataset(Dataset.from_dict({"prompt": ["blank", "empty"]}), lrm_dir, None, judge)
    assert labeled[LABEL_COLUMN] == [None, None] and seen == []


def test_blank_answer_label_is_the_documented_label_not_the_classifiers(
    lrm_dir, recording_classifier, scripted_answers
):
    judge, seen = recording_classifier
    dataset = Dataset.from_dict({"prompt": ["blank", "tags", "ok"]})
    labeled = label_dataset(dataset, lrm_dir, None, judge, blank_answer_label=0)
    assert labeled[LABEL_COLUMN][:2] == [0, 0] and labeled[PROB_COLUMN][:2] == [0.0, 0.0]
    assert seen == [BLANK_ANSWERS["ok"]]
    with pytest.raises(ValueError, match="`blank_answer_label` must be None"):
        label_dataset(dataset, lrm_dir, None, judge, blank_answer_label=2)
