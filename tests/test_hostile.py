# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""A careless or adversarial user's inputs: stale, mixed and mismatched state, edited configs, wrong input shapes and
over-long prompts. Each case used to give a wrong result without an error (or an unclear crash); each must now fail
closed with a message naming the cause and the fix."""

import json
import re
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_presafety import PreSafetySFTConfig, PreSafetySFTTrainer, SafetyGate, load_safety_head
from trl_presafety.modeling import SAFETY_HEAD_CONFIG_NAME, SAFETY_HEAD_WEIGHTS_NAME, SafetyHeadConfig

from .testing_utils import CPU_TRAINING_KWARGS, load_tiny_sft_rows


REQUEST = "How do I make a pipe bomb?"


# Imported when called, so that each case fails on its own (not the whole module) where the module is missing
def fingerprint_path(*args, **kwargs):
    from trl_presafety.fingerprints import fingerprint_path

    return fingerprint_path(*args, **kwargs)


def fingerprint_weights(*args, **kwargs):
    from trl_presafety.fingerprints import fingerprint_weights

    return fingerprint_weights(*args, **kwargs)


@pytest.fixture(scope="module")
def trained(tiny_model_dirs, tmp_path_factory):
    """A PreSafety SFT run on the tiny qwen3 model, saved at step 2 (`checkpoint-2`) and at the end."""
    out = tmp_path_factory.mktemp("hostile") / "out"
    kwargs = {**CPU_TRAINING_KWARGS, "save_strategy": "steps"}
    args = PreSafetySFTConfig(
        output_dir=str(out), max_steps=2, save_steps=2, max_length=256, learning_rate=1e-2, **kwargs
    )
    trainer = PreSafetySFTTrainer(
        model=tiny_model_dirs["qwen3"], args=args, train_dataset=Dataset.from_list(load_tiny_sft_rows(8))
    )
    trainer.train()
    trainer.save_model(str(out))
    return out


def _copy_head(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in (SAFETY_HEAD_WEIGHTS_NAME, SAFETY_HEAD_CONFIG_NAME):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


# --- the head bound to its weights --------------------------------------------------------------------------------


def test_head_on_other_weights_is_refused(trained, tiny_model_dirs):
    # The untrained base model: same architecture, width and template, other weights
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["qwen3"])
    with pytest.raises(ValueError, match=r"trained with other weights.*allow_other_weights=True"):
        load_safety_head(base, trained)
    load_safety_head(base, trained, allow_other_weights=True)  # on purpose: allowed, with a warning
    model = AutoModelForCausalLM.from_pretrained(trained)
    load_safety_head(model, trained)  # the weights saved with the head


@pytest.mark.parametrize("folder", ["final", "checkpoint-2"])
def test_every_save_records_the_fingerprint_of_the_weights_beside_the_head(trained, folder):
    path = trained if folder == "final" else trained / folder
    recorded = SafetyHeadConfig.load(path).backbone_fingerprint
    assert recorded is not None
    assert recorded == fingerprint_weights(AutoModelForCausalLM.from_pretrained(path))
    # The same weights re-saved in another dtype (and layout) keep the fingerprint
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    assert fingerprint_weights(model) == recorded


def test_lora_save_records_the_fingerprint_of_base_and_adapter(tiny_model_dirs, tmp_path):
    from peft import LoraConfig, PeftModel

    out = tmp_path / "lora"
    args = PreSafetySFTConfig(
        output_dir=str(out), max_steps=1, max_length=256, learning_rate=1e-2, **CPU_TRAINING_KWARGS
    )
    trainer = PreSafetySFTTrainer(
        model=tiny_model_dirs["qwen3"],
        args=args,
        train_dataset=Dataset.from_list(load_tiny_sft_rows(4)),
        peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]),
    )
    trainer.train()
    trainer.save_model(str(out))
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dirs["qwen3"]), out)
    load_safety_head(model, out)
    # The base model alone is not what the head was trained with
    with pytest.raises(ValueError, match="other weights"):
        load_safety_head(AutoModelForCausalLM.from_pretrained(tiny_model_dirs["qwen3"]), out)
    # Merged by the package (as `eval` merges an adapter): the merged model remembers the weights it came from
    from trl_presafety.head_io import merge_adapter

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["qwen3"])
    load_safety_head(merge_adapter(PeftModel.from_pretrained(base, out)), out)
    # Merged by hand, the package cannot tell what it was merged from: refused unless said explicitly
    by_hand = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dirs["qwen3"]), out)
    with pytest.raises(ValueError, match="merged LoRA weights"):
        load_safety_head(by_hand.merge_and_unload(), out)


def test_consolidated_state_dict_fingerprint_matches_the_model():
    # What ZeRO-3 hands `_save` (a consolidated state dict, names prefixed, tied weights twice) fingerprints as the
    # model loaded from the written folder
    from trl_presafety.tiny import build_tiny_model

    model, _ = build_tiny_model(style="qwen3", hidden_size=16, num_attention_heads=2, num_key_value_heads=1)
    state = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}
    assert fingerprint_weights(state) == fingerprint_weights(model)
    state[next(iter(state))] = state[next(iter(state))] + 1
    assert fingerprint_weights(state) != fingerprint_weights(model)
    # Ungathered (empty) partitions give no fingerprint rather than a wrong one
    assert fingerprint_weights({k: torch.empty(0) for k in state}) is None


# --- degenerate and edited heads ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["zero", "integer", "nan"])
def test_degenerate_head_is_refused(trained, tmp_path, kind):
    folder = _copy_head(trained, tmp_path / kind)
    tensors = load_file(folder / SAFETY_HEAD_WEIGHTS_NAME)
    if kind == "zero":
        tensors = {k: torch.zeros_like(v) for k, v in tensors.items()}
    elif kind == "integer":
        tensors = {k: v.round().to(torch.int32) for k, v in tensors.items()}
    else:
        tensors = {k: torch.full_like(v, float("nan")) for k, v in tensors.items()}
    save_file(tensors, str(folder / SAFETY_HEAD_WEIGHTS_NAME))
    model = AutoModelForCausalLM.from_pretrained(trained)
    message = {"zero": "degenerate.*all zero", "integer": "not floating point", "nan": "non-finite"}[kind]
    with pytest.raises(ValueError, match=message):
        load_safety_head(model, folder)


def test_zeroed_head_in_memory_is_refused_by_the_gate(trained):
    model = AutoModelForCausalLM.from_pretrained(trained)
    head = load_safety_head(model, trained)
    with torch.no_grad():
        head.proj.weight.zero_()
    with pytest.raises(ValueError, match="degenerate"):
        SafetyGate(model, AutoTokenizer.from_pretrained(trained))


@pytest.mark.parametrize(
    "edit",
    [{"layer": 0}, {"pooling": "mean"}, {"anchor_token_id": None, "template_family": None, "anchor": "think_end"}],
)
def test_config_edited_after_save_is_refused(trained, tmp_path, edit):
    folder = _copy_head(trained, tmp_path / "edited")
    path = folder / SAFETY_HEAD_CONFIG_NAME
    values = json.loads(path.read_text())
    values.update(edit)
    path.write_text(json.dumps(values))
    with pytest.raises(ValueError, match="edited after it was saved"):
        load_safety_head(AutoModelForCausalLM.from_pretrained(trained), folder)
    # Without its checksum (as an older version wrote it), nulls where the anchor should be recorded are refused too
    if "anchor" in edit:
        values.pop("checksum")
        path.write_text(json.dumps(values))
        with pytest.raises(ValueError, match="neither the anchor token nor the template family"):
            load_safety_head(AutoModelForCausalLM.from_pretrained(trained), folder)


def test_saving_the_config_recomputes_the_checksum(tmp_path):
    config = SafetyHeadConfig(hidden_size=16)
    config.save(tmp_path)
    config.layer = 1
    config.save(tmp_path)  # the one writer: a deliberate change goes through `save` and loads
    assert SafetyHeadConfig.load(tmp_path).layer == 1


@pytest.mark.parametrize("shape", [(0,), (1, 8)])
def test_head_tensors_of_the_wrong_shape_get_a_clear_error(trained, tmp_path, shape):
    folder = _copy_head(trained, tmp_path / "shapes")
    tensors = load_file(folder / SAFETY_HEAD_WEIGHTS_NAME)
    tensors["proj.weight"] = torch.zeros(shape)
    save_file(tensors, str(folder / SAFETY_HEAD_WEIGHTS_NAME))
    message = "ZeRO-3.*stage3_gather_16bit_weights_on_model_save" if 0 in shape else "wrong shape"
    with pytest.raises(ValueError, match=message):
        load_safety_head(AutoModelForCausalLM.from_pretrained(trained), folder)


# --- content fingerprints of paths --------------------------------------------------------------------------------


def test_path_fingerprint_follows_the_content_not_the_path(trained, tiny_model_dirs, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dirs["qwen3"], copy)
    assert fingerprint_path(copy) == fingerprint_path(tiny_model_dirs["qwen3"])
    # Another model written to the same path: same path, other fingerprint
    before = fingerprint_path(copy)
    shutil.rmtree(copy)
    AutoModelForCausalLM.from_pretrained(trained).save_pretrained(copy)
    AutoTokenizer.from_pretrained(trained).save_pretrained(copy)
    assert fingerprint_path(copy) != before


# --- label folders bound to the content they were computed from ---------------------------------------------------


@pytest.fixture(scope="module")
def label_inputs(tmp_path_factory):
    from trl_presafety.labeling import SafetyDecisionClassifier

    from .test_classifier import build_tiny_classifier
    from .test_generation import perturbed_tiny_model

    root = tmp_path_factory.mktemp("label-inputs")
    model, tokenizer = perturbed_tiny_model("qwen3")
    model.save_pretrained(root / "lrm")
    tokenizer.save_pretrained(root / "lrm")
    classifier = SafetyDecisionClassifier.from_pretrained(build_tiny_classifier(root / "classifier", seed=1))
    return root, classifier


def _prompts(n: int) -> Dataset:
    from trl_presafety.tiny import TINY_DATA_DIR

    rows = [json.loads(line) for line in (TINY_DATA_DIR / "eval" / "train.jsonl").read_text().splitlines()[:n]]
    return Dataset.from_list([{"id": i, **row} for i, row in enumerate(rows)])


def _retrain_in_place(folder: Path) -> None:
    """Another model written at the same path (as a rerun of a training stage does)."""
    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(-1.0)
    model.save_pretrained(folder)


def test_labels_of_a_model_changed_at_the_same_path_are_not_reused(label_inputs, tmp_path):
    import shutil

    from trl_presafety.generation import GenerationArguments
    from trl_presafety.labeling import label_dataset

    root, classifier = label_inputs
    model_dir = tmp_path / "lrm"
    shutil.copytree(root / "lrm", model_dir)
    generation = GenerationArguments(backend="transformers", max_new_tokens=4, generation_batch_size=4)
    kwargs = {"generation": generation, "output_dir": tmp_path / "labels", "shard_size": 2, "show_progress": False}
    label_dataset(_prompts(4), str(model_dir), None, classifier, **kwargs)
    # The same model copied elsewhere is the same content: reused, nothing recomputed
    shutil.copytree(model_dir, tmp_path / "copy")
    label_dataset(_prompts(4), str(tmp_path / "copy"), None, classifier, **kwargs)
    _retrain_in_place(model_dir)
    with pytest.raises(ValueError, match=r"model_fingerprint.*content behind.*changed.*overwrite_output_dir"):
        label_dataset(_prompts(4), str(model_dir), None, classifier, **kwargs)
    state = json.loads((tmp_path / "labels" / "labeling_state.json").read_text())
    assert state["model_fingerprint"] == fingerprint_path(tmp_path / "copy")
    label_dataset(_prompts(4), str(model_dir), None, classifier, overwrite_output_dir=True, **kwargs)
    state = json.loads((tmp_path / "labels" / "labeling_state.json").read_text())
    assert state["model_fingerprint"] == fingerprint_path(model_dir) and state["complete"]


@pytest.mark.parametrize("copied", ["some shards", "every shard"])
def test_label_folder_copied_without_its_state_file_is_refused(label_inputs, tmp_path, copied):
    import shutil

    from trl_presafety.generation import GenerationArguments
    from trl_presafety.labeling import IncompleteLabelsError, label_dataset, load_prompt_dataset
    from trl_presafety.labeling.state import check_label_folder

    root, classifier = label_inputs
    generation = GenerationArguments(backend="transformers", max_new_tokens=4, generation_batch_size=4)
    out = tmp_path / "labels"
    label_dataset(_prompts(6), str(root / "lrm"), None, classifier, generation=generation, output_dir=out,
                  shard_size=2, show_progress=False)  # fmt: skip
    copy = tmp_path / "copy"
    (copy / "data").mkdir(parents=True)
    shards = sorted((out / "data").glob("*.parquet"))
    for shard in shards[:1] if copied == "some shards" else shards:
        shutil.copy(shard, copy / "data" / shard.name)
    for path in (copy, copy / "data", copy / "data" / shards[0].name):
        with pytest.raises(IncompleteLabelsError, match="labeling_state.json is missing"):
            check_label_folder(path)
    with pytest.raises(IncompleteLabelsError, match="copied or kept without its state file"):
        load_prompt_dataset(str(copy))
    check_label_folder(copy, allow_incomplete_labels=True)  # on purpose: read, with a warning


def test_a_complete_hub_layout_dataset_of_other_columns_is_not_a_label_folder(tmp_path):
    from trl_presafety.labeling.state import check_label_folder

    (tmp_path / "data").mkdir()
    for i in range(2):
        Dataset.from_list([{"prompt": "hi", "harmful": 0}]).to_parquet(
            tmp_path / "data" / f"train-0000{i}-of-00002.parquet"
        )
    assert check_label_folder(tmp_path) is None


# --- the pipeline's state ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, match",
    [
        ('{"stages": {"model": {"complete": tr', "cannot be read"),
        ("[]", "not a pipeline state.*found a list"),
        ('{"stages": []}', "not a pipeline state.*found a list"),
        ('{"stages": {"model": "done"}}', r"wrong shape for stage\(s\) \['model'\]"),
    ],
)
def test_damaged_pipeline_state_is_reported_and_the_plan_says_why(tmp_path, content, match):
    from trl_presafety.pipeline.run import PIPELINE_STATE, run_pipeline

    from .test_pipeline import FakeRunner, write_pipeline

    config = write_pipeline(tmp_path)
    run_pipeline(config, runner=FakeRunner(), echo=lambda line: None)
    (tmp_path / "run" / PIPELINE_STATE).write_text(content)
    lines, runner = [], FakeRunner()
    run_pipeline(config, runner=runner, echo=lines.append)
    text = "\n".join(lines)
    assert "Warning:" in text and "every selected stage runs again" in text
    assert re.search(rf"model\s+run\s+no usable record: .*{match}", text)
    assert runner.calls == ["model", "eval-a", "eval-b", "compare"]
    # The rewritten state is whole again: the next run skips everything
    runner = FakeRunner()
    run_pipeline(config, runner=runner, echo=lambda line: None)
    assert runner.calls == []


def test_pipeline_reruns_a_stage_whose_input_changed_in_place(tmp_path):
    from trl_presafety.pipeline.run import run_pipeline

    from .test_pipeline import FakeRunner, write_pipeline

    config = write_pipeline(tmp_path)
    run_pipeline(config, runner=FakeRunner(), echo=lambda line: None)
    # The model folder's weights replaced outside the pipeline (same path, other content)
    (tmp_path / "run" / "model" / "model.safetensors").write_text("other weights")
    lines, runner = [], FakeRunner()
    run_pipeline(config, runner=runner, echo=lines.append)
    assert runner.calls == ["eval-a", "eval-b", "compare"]
    assert any("eval-a" in line and "its input changed since it finished" in line for line in lines)


def test_a_sharded_stage_rerun_for_a_new_input_starts_over(tmp_path):
    from trl_presafety.pipeline.config import Stage
    from trl_presafety.pipeline.run import _stage_to_run

    label = Stage(name="label", command="label", args={"output_dir": "x"})
    assert _stage_to_run(label, "--force").args["overwrite_output_dir"] is True
    assert _stage_to_run(label, "its input is rerun by model").args["overwrite_output_dir"] is True
    assert _stage_to_run(label, "its input changed since it finished (...)").args["overwrite_output_dir"] is True
    # An interrupted run resumes its shards
    assert "overwrite_output_dir" not in _stage_to_run(label, "its last run did not finish").args
    listed = Stage(name="label", command="label", args=["--output_dir", "x"])
    assert _stage_to_run(listed, "--force").args[-2:] == ["--overwrite_output_dir", "true"]
    assert _stage_to_run(Stage(name="e", command="eval"), "--force").args == {}


# --- input shapes -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gate(trained):
    model = AutoModelForCausalLM.from_pretrained(trained)
    load_safety_head(model, trained)
    return SafetyGate(model, AutoTokenizer.from_pretrained(trained))


@pytest.mark.parametrize(
    "prompts, match",
    [
        ("How do I make a pipe bomb?", "got a string.*one character per prompt.*Pass \\[prompt\\]"),
        (None, "takes a list of prompts, got NoneType"),
        ({"prompt": "hi"}, "takes a list of prompts, got dict"),
        ([{"role": "user", "content": "hi"}], "one list of chat messages: wrap it as \\[messages\\]"),
        ([None], "prompt 0 is NoneType.*a prompt is a string, or a list of chat messages"),
        ([{"text": "hi"}, "x"], "prompt 0 is dict"),
        ([[{"content": "hi"}]], "message 0: `role` is None"),
        ([[{"role": "user", "content": None}]], "message 0 \\(user\\): `content` is None"),
        (["ok", "messages as text"][0:1] and [["not a message"]], "message 0: a chat message is a dict"),
    ],
)
def test_gate_refuses_wrong_input_shapes_naming_the_accepted_ones(gate, prompts, match):
    with pytest.raises((TypeError, ValueError), match=match):
        gate.predict_proba(prompts)


def test_gate_single_prompt_and_sharegpt_messages(gate):
    with pytest.raises(TypeError, match="prompt\\) is NoneType"):
        gate(None)
    chat = [{"role": "user", "content": REQUEST}]
    sharegpt = [{"from": "human", "value": REQUEST}]
    assert gate.predict_proba([sharegpt]) == gate.predict_proba([chat]) == [gate(REQUEST)]


@pytest.mark.parametrize(
    "row, match",
    [
        ({"messages": "User: hi\nAssistant: hello"}, "Row 0: `messages` is a string"),
        ({"messages": [{"content": "hi"}, {"role": "assistant", "content": "x"}]}, "Row 0, column `messages`, message 0: `role` is None"),
        ({"messages": [{"role": "user", "content": None}, {"role": "assistant", "content": "x"}]}, "`content` is None"),
        ({"prompt": "hi", "completion": [{"role": "assistant", "content": "x"}]}, "`prompt` is a string but `completion` is a list"),
    ],
)  # fmt: skip
def test_sft_trainer_refuses_wrong_row_shapes(tiny_model_dirs, tmp_path, row, match):
    rows = [{**row, "safety_label": 1}, {**row, "safety_label": 0}]
    args = PreSafetySFTConfig(output_dir=str(tmp_path), max_steps=1, max_length=256, **CPU_TRAINING_KWARGS)
    with pytest.raises((TypeError, ValueError), match=f"The train dataset: .*{match}"):
        PreSafetySFTTrainer(model=tiny_model_dirs["qwen3"], args=args, train_dataset=Dataset.from_list(rows))


def test_sft_trainer_reads_sharegpt_rows_like_chat_rows(tiny_model_dirs, tmp_path):
    rows = load_tiny_sft_rows(4)
    sharegpt = [
        {"conversations": [{"from": "human" if m["role"] == "user" else "gpt", "value": m["content"]}
                           for m in [*r["prompt"], *r["completion"]]], "safety_label": r["safety_label"]}
        for r in rows
    ]  # fmt: skip
    args = PreSafetySFTConfig(output_dir=str(tmp_path), max_steps=1, max_length=256, **CPU_TRAINING_KWARGS)
    trainer = PreSafetySFTTrainer(model=tiny_model_dirs["qwen3"], args=args, train_dataset=Dataset.from_list(sharegpt))
    messages = [{"messages": [*r["prompt"], *r["completion"]], "safety_label": r["safety_label"]} for r in rows]
    reference = PreSafetySFTTrainer(
        model=tiny_model_dirs["qwen3"], args=args, train_dataset=Dataset.from_list(messages)
    )
    for column in ("input_ids", "presafety_anchor_positions"):
        assert trainer.train_dataset[column] == reference.train_dataset[column]


# --- recipes ------------------------------------------------------------------------------------------------------

SFT_RECIPE = Path(__file__).parents[1] / "recipes" / "tiny" / "sft" / "config_presafety.yaml"


def _parse_sft(recipe: Path):
    from trl_presafety.scripts import sft
    from trl_presafety.scripts.arguments import parse_args_strict

    return parse_args_strict(sft.make_parser(), ["--config", str(recipe), "--use_cpu", "true"])


def test_recipe_with_a_duplicate_key_is_refused(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    text = SFT_RECIPE.read_text()
    recipe.write_text(text + "presafety_loss_weight: 0.0\n")
    line = len(text.splitlines()) + 1
    first = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith("presafety_loss_weight:"))
    with pytest.raises(
        ValueError, match=rf"{recipe}, line {line}: the key `presafety_loss_weight` is written twice.*line {first}"
    ):
        _parse_sft(recipe)
    # Nested mappings too
    recipe.write_text(text + "model_init_kwargs:\n  dtype: float32\n  dtype: bfloat16\n")
    with pytest.raises(ValueError, match=rf"line {line + 2}: the key `dtype` is written twice"):
        _parse_sft(recipe)


@pytest.mark.parametrize(
    "block, key, offset",
    [
        ("model_init_kwargs:\n  dtype: float32\n  atn_implementation: eager\n", "atn_implementation", 3),
        ("gradient_checkpointing_kwargs:\n  use_reentrant: false\n  use_rentrant: true\n", "use_rentrant", 3),
    ],
)
def test_recipe_with_unknown_nested_keys_is_refused(tmp_path, block, key, offset):
    recipe = tmp_path / "recipe.yaml"
    text = SFT_RECIPE.read_text()
    recipe.write_text(text + block)
    line = len(text.splitlines()) + offset
    with pytest.raises(
        ValueError, match=rf"{recipe}: unknown key\(s\) in `\w+`: `{key}` \(line {line}\), did you mean"
    ):
        _parse_sft(recipe)


def test_recipe_with_known_nested_keys_parses(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        SFT_RECIPE.read_text() + "model_init_kwargs:\n  dtype: float32\n  use_cache: false\n"
        "gradient_checkpointing_kwargs:\n  use_reentrant: false\n"
    )
    _parse_sft(recipe)


def test_pipeline_file_with_a_duplicate_key_is_refused(tmp_path):
    from trl_presafety.pipeline.config import PipelineError, load_pipeline

    path = tmp_path / "pipeline.yaml"
    path.write_text("run_dir: a\nstages:\n  - name: x\n    command: eval\n    command: label\n")
    with pytest.raises(PipelineError, match="line 5: the key `command` is written twice"):
        load_pipeline(path)


# --- prompts longer than the model's context ----------------------------------------------------------------------

LONG = "Tell me about locks. " * 6000  # far past the tiny model's 4,096 positions


def test_gate_refuses_a_prompt_past_the_context(gate):
    with pytest.raises(ValueError, match=r"1 of 2 prompts to gate are longer than the model's context of 4,096.*1 \("):
        gate.predict_proba([REQUEST, LONG])


def test_label_refuses_a_prompt_past_the_context_before_loading(label_inputs, tmp_path, monkeypatch):
    from trl_presafety import generation
    from trl_presafety.labeling import label_dataset

    root, classifier = label_inputs
    monkeypatch.setattr(generation, "load_causal_lm", lambda *a, **k: pytest.fail("the model was loaded"))
    dataset = Dataset.from_list([{"prompt": "hi"}, {"prompt": LONG}])
    with pytest.raises(
        ValueError, match=r"1 of 2 prompts are longer than the model's context of 4,096 positions: row 1"
    ):
        label_dataset(dataset, str(root / "lrm"), None, classifier, output_dir=tmp_path / "labels")
    assert not (tmp_path / "labels").exists()


def test_eval_refuses_a_prompt_past_the_context_before_loading(tiny_model_dirs, tmp_path, monkeypatch):
    from trl_presafety.evaluation import EvalConfig, evaluate, evaluator

    rows = [json.loads(line) for line in (Path(__file__).parents[1] / "trl_presafety/data/eval/smoke.jsonl").open()][
        :2
    ]
    rows[1]["prompt"] = LONG
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(evaluator, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    config = EvalConfig(model_name_or_path=tiny_model_dirs["qwen3"], datasets=[str(data)], backend="transformers",
                        max_new_tokens=8, output_dir=str(tmp_path / "out"), dtype="float32")  # fmt: skip
    with pytest.raises(
        ValueError, match=r"evaluation prompts are longer than the model's context of 4,096.*\(thinking"
    ):
        evaluate(config)


def test_generation_refuses_a_prompt_past_the_context(tiny_model_dirs):
    from trl_presafety.generation import generate_responses

    with pytest.raises(ValueError, match="longer than the model's context"):
        generate_responses(tiny_model_dirs["qwen3"], None, [LONG], thinking=False, backend="transformers")


# --- training entry points ----------------------------------------------------------------------------------------


def test_resume_from_checkpoint_true_takes_the_latest_checkpoint(tmp_path):
    from trl_presafety.scripts.training import resolve_resume_from_checkpoint

    with pytest.raises(ValueError, match=r"resumes the latest `checkpoint-N` folder in `output_dir`.*there is none"):
        resolve_resume_from_checkpoint("true", str(tmp_path))
    for step in (5, 20, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
    assert resolve_resume_from_checkpoint("true", str(tmp_path)) == str(tmp_path / "checkpoint-20")
    assert resolve_resume_from_checkpoint(True, str(tmp_path)) == str(tmp_path / "checkpoint-20")
    assert resolve_resume_from_checkpoint("false", str(tmp_path)) is None
    assert resolve_resume_from_checkpoint(None, str(tmp_path)) is None
    assert resolve_resume_from_checkpoint(str(tmp_path / "checkpoint-5"), None) == str(tmp_path / "checkpoint-5")
    with pytest.raises(ValueError, match="is not a checkpoint folder"):
        resolve_resume_from_checkpoint(str(tmp_path / "checkpoint-7"), None)


def test_sft_script_resolves_resume_from_checkpoint_before_loading(tiny_model_dirs, tmp_path):
    from trl_presafety.scripts import sft

    recipe = Path(__file__).parents[1] / "recipes" / "tiny" / "sft" / "config_presafety.yaml"
    with pytest.raises(ValueError, match="resumes the latest `checkpoint-N`"):
        sft.main(["--config", str(recipe), "--output_dir", str(tmp_path), "--resume_from_checkpoint", "true",
                  "--use_cpu", "true", "--dataset_name", "trl_presafety/data/tiny/sft",
                  "--model_name_or_path", tiny_model_dirs["qwen3"]])  # fmt: skip


def test_labels_made_by_another_model_get_a_note(label_inputs, tmp_path, caplog):
    import shutil

    from trl_presafety.generation import GenerationArguments
    from trl_presafety.labeling import label_dataset
    from trl_presafety.scripts.training import note_label_provenance

    root, classifier = label_inputs
    generation = GenerationArguments(backend="transformers", max_new_tokens=4, generation_batch_size=4)
    label_dataset(_prompts(2), str(root / "lrm"), None, classifier, generation=generation,
                  output_dir=tmp_path / "labels", show_progress=False)  # fmt: skip
    shutil.copytree(root / "lrm", tmp_path / "same")
    assert note_label_provenance(tmp_path / "labels", str(tmp_path / "same")) is None  # same weights elsewhere
    _retrain_in_place(tmp_path / "same")
    note = note_label_provenance(tmp_path / "labels", str(tmp_path / "same"))
    assert note is not None and "were made by another model" in note and "relabel" in note


def test_a_template_whose_assistant_turn_drops_the_generation_prompt_is_named(tmp_path):
    from trl_presafety.tiny import build_tiny_model

    model, tokenizer = build_tiny_model(style="r1", hidden_size=16, num_attention_heads=2, num_key_value_heads=1)
    # As the stock DeepSeek-R1 template does: the assistant turn without the reasoning (and its opening tag)
    tokenizer.chat_template = tokenizer.chat_template.replace(
        "message['content'] + '<｜end▁of▁sentence｜>'",
        "message['content'].split('</think>')[-1] + '<｜end▁of▁sentence｜>'",
    )
    args = PreSafetySFTConfig(output_dir=str(tmp_path), max_steps=1, max_length=256, **CPU_TRAINING_KWARGS)
    with pytest.raises(
        ValueError, match=r"is not a prefix of prompt \+ completion.*training template.*chat_template_path"
    ) as error:
        PreSafetySFTTrainer(model=model, processing_class=tokenizer, args=args,
                            train_dataset=Dataset.from_list(load_tiny_sft_rows(4)))  # fmt: skip
    assert "merge" not in str(error.value).split("; indices")[0]


def test_eval_report_names_the_weights_by_content_and_a_retrained_model_is_not_served_from_cache(
    tmp_path, tiny_model_dirs
):
    import shutil

    from trl_presafety.evaluation import evaluate

    from .test_evaluation import small_config

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dirs["qwen3"], model_dir)
    config = small_config(
        str(model_dir), tmp_path / "out", sampling_grid=["greedy"], datasets=["smoke@1"], probe=False, plot=False
    )
    first = evaluate(config)
    assert first["model"]["fingerprints"] == {"model": fingerprint_path(model_dir)}
    assert first["provenance"]["data_fingerprint"].startswith("sha256:")
    assert first["provenance"]["local_inputs"]["model_name_or_path"] == fingerprint_path(model_dir)
    _retrain_in_place(model_dir)
    again = evaluate(config)
    assert again["model"]["fingerprints"]["model"] != first["model"]["fingerprints"]["model"]
    assert again["runtime"]["generations_from_cache"] == 0


def test_build_ipo_pairs_records_what_the_pairs_were_computed_from(tiny_model_dirs, tmp_path):
    from trl_presafety.scripts.build_ipo_pairs import main
    from trl_presafety.tiny import TINY_DATA_DIR

    argv = ["--dataset_name", str(TINY_DATA_DIR / "ipo" / "traces"), "--tokenizer_name_or_path",
            tiny_model_dirs["qwen3"], "--continuation", "supplied", "--output_dir", str(tmp_path)]  # fmt: skip
    main(argv)
    record = json.loads((tmp_path / "ipo_stats.json").read_text())["provenance"]
    assert record["tokenizer_fingerprint"] == fingerprint_path(tiny_model_dirs["qwen3"])
    assert record["data_fingerprint"].startswith("sha256:") and record["arguments_fingerprint"].startswith("sha256:")
