# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Every YAML under `recipes/` parses with the parser of the script that runs it, so a recipe never fails at launch on
a typo; the SFT/DPO recipes carry valid, commented PreSafety fields whose anchor exists in their template family; and a
wrong `presafety_*` key or value fails at parse time with a message naming it."""

import fnmatch
import importlib
import importlib.util
import os
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from trl_presafety import PreSafetyDPOConfig, PreSafetySFTConfig
from trl_presafety.anchors import MISSING_POSITION, AnchorSpec, Boundary, conversation_prompt, locate_anchor
from trl_presafety.harmfulness import DECISION_COLUMNS, HARMFUL_COLUMN
from trl_presafety.scripts.arguments import parse_args_strict
from trl_presafety.tiny import build_tiny_tokenizer


REPO_ROOT = Path(__file__).resolve().parent.parent
RECIPES_DIR = REPO_ROOT / "recipes"
RECIPE_FILES = sorted(p.relative_to(RECIPES_DIR).as_posix() for p in RECIPES_DIR.rglob("*.yaml"))
TINY_SFT = RECIPES_DIR / "tiny" / "sft" / "config_presafety.yaml"

# Recipe path (relative to recipes/) -> the script module whose `make_parser()` reads it; the first match wins
RECIPE_SCRIPTS = [
    ("*/sft/*.yaml", "trl_presafety.scripts.sft"),
    ("*/dpo/*.yaml", "trl_presafety.scripts.dpo"),
    ("*/grpo/*.yaml", "trl_presafety.scripts.grpo"),
    ("*/alttrain/config_*.yaml", "trl_presafety.scripts.sft"),  # AltTrain trains with plain SFT
    ("*/alttrain/build*.yaml", "trl_presafety.scripts.build_alttrain"),
    ("*/ipo/*.yaml", "trl_presafety.scripts.build_ipo_pairs"),
    ("*/build_ipo_pairs*.yaml", "trl_presafety.scripts.build_ipo_pairs"),
    ("*/build_sft*.yaml", "trl_presafety.scripts.build_sft"),
    ("*/label*.yaml", "trl_presafety.scripts.label"),
    ("*/train_classifier*.yaml", "trl_presafety.scripts.train_classifier"),
    ("*/fit_gate*.yaml", "trl_presafety.scripts.fit_gate"),
    ("*/calibrate_gate*.yaml", "trl_presafety.scripts.calibrate_gate"),
    ("*/export_gate*.yaml", "trl_presafety.scripts.export_gate"),
    ("*/eval.yaml", "trl_presafety.scripts.evaluate"),
    ("*/eval_*.yaml", "trl_presafety.scripts.evaluate"),
    ("*/pipeline*.yaml", "trl_presafety.scripts.pipeline"),  # checked stage by stage (tests/test_pipeline.py too)
]
TRAINING_SCRIPTS = {"trl_presafety.scripts.sft": PreSafetySFTConfig, "trl_presafety.scripts.dpo": PreSafetyDPOConfig}
HARDWARE = re.compile(r"(?i)\b(cpu|gpus?|h100|h200|a100|a10g?|l40s?|\d+\s*x)\b")
PRESAFETY_FIELDS = [name for name in PreSafetySFTConfig.__dataclass_fields__ if name.startswith("presafety_")]
# A short prompt/completion in each template family, to check that a recipe's anchor exists there
STYLE_OF_MODEL = {"DeepSeek-R1-Distill": "r1", "Qwen3": "qwen3", "tiny-qwen3": "qwen3", "tiny-r1": "r1"}
EXAMPLE = {
    "prompt": [{"role": "user", "content": "How do I pick a lock?"}],
    "completion": [{"role": "assistant", "content": "<think>\nThis is unsafe.\n</think>\n\nI can't help with that."}],
}


def script_for(recipe: str) -> str:
    for pattern, module in RECIPE_SCRIPTS:
        if fnmatch.fnmatch(recipe, pattern):
            return module
    raise AssertionError(
        f"No script is known to read recipes/{recipe}. Put it where its script's recipes live "
        f"({', '.join(p for p, _ in RECIPE_SCRIPTS)}) or add its pattern to RECIPE_SCRIPTS in tests/test_recipes.py."
    )


def parse_recipe(path: Path, *extra: str) -> tuple[Any, ...]:
    """Parses a recipe with its script's parser, exactly as the script does (strict: unknown keys fail)."""
    if script_for(path.relative_to(RECIPES_DIR).as_posix()) == "trl_presafety.scripts.pipeline":
        return parse_pipeline(path)
    module = importlib.import_module(script_for(path.relative_to(RECIPES_DIR).as_posix()))
    parser = module.make_parser()
    raw = yaml.safe_load(path.read_text())
    overrides = list(extra)
    # GPU recipes set bf16, which TrainingArguments refuses on a machine without an accelerator unless use_cpu is set
    fields = {action.dest for action in parser._actions}
    if "use_cpu" in fields and not torch.cuda.is_available() and not raw.get("use_cpu"):
        overrides += ["--use_cpu", "true"]
    environ = dict(os.environ)
    try:  # a recipe's `env:` block sets environment variables: keep them out of the other tests
        return parse_args_strict(parser, ["--config", str(path), *overrides])
    finally:
        os.environ.clear()
        os.environ.update(environ)


def parse_pipeline(path: Path) -> tuple[Any, ...]:
    """A pipeline file: its keys, and every stage's arguments with that stage's command parser (paths in it are
    relative to the repository root). The trackers its training stages name count as installed here: the check that
    they are is tested in tests/test_pipeline.py."""
    from unittest import mock

    import transformers.integrations

    from trl_presafety.pipeline.config import load_pipeline
    from trl_presafety.pipeline.run import validate_stage_arguments

    available = [*transformers.integrations.get_available_reporting_integrations(), "trackio"]
    cwd = Path.cwd()
    os.chdir(REPO_ROOT)
    try:
        with mock.patch.object(transformers.integrations, "get_available_reporting_integrations", lambda: available):
            _, _, stages = load_pipeline(path)
            for stage in stages:
                validate_stage_arguments(stage)
    finally:
        os.chdir(cwd)
    return tuple(stages)


def presafety_lines(text: str) -> dict[str, str]:
    return {m.group(1): m.group(0) for m in re.finditer(r"^(presafety_\w+)\s*:.*$", text, flags=re.MULTILINE)}


def test_every_recipe_has_a_script():
    assert RECIPE_FILES, "no recipes found"
    missing = []
    for recipe in RECIPE_FILES:
        module = script_for(recipe)
        if importlib.util.find_spec(module) is None:
            missing.append(f"recipes/{recipe} -> {module}")
    assert not missing, f"recipes whose script does not exist: {missing}"


@pytest.mark.parametrize("recipe", RECIPE_FILES)
def test_recipe_parses(recipe):
    path = RECIPES_DIR / recipe
    text = path.read_text()
    first_line = text.splitlines()[0]
    assert first_line.startswith("#") and HARDWARE.search(first_line), (
        f"recipes/{recipe} must open with a comment naming the hardware it is sized for, got {first_line!r}"
    )
    parsed = parse_recipe(path)
    module = script_for(recipe)
    if module not in TRAINING_SCRIPTS:
        return
    script_args, training_args, model_args, _ = parsed
    assert isinstance(training_args, TRAINING_SCRIPTS[module])
    assert model_args.model_name_or_path, "a training recipe names its model"
    assert script_args.dataset_name or yaml.safe_load(text).get("datasets"), "a training recipe names its data"
    for group in ("# Model arguments", "# Data arguments", "# Trainer arguments"):
        assert group in text, f"recipes/{recipe} lacks the comment group {group!r}"

    raw = yaml.safe_load(text)
    lines = presafety_lines(text)
    if lines:
        assert "# PreSafety arguments" in text, f"recipes/{recipe} lacks the comment group '# PreSafety arguments'"
    for name, line in lines.items():
        # The parsed value is the recipe's (no key silently dropped or renamed), and each field is explained
        assert getattr(training_args, name) == raw[name], f"{name}: parsed {getattr(training_args, name)!r}"
        assert re.search(r"\s#\s*\S", line), f"recipes/{recipe}: `{name}` needs a comment saying why: {line!r}"


@pytest.mark.parametrize("recipe", [r for r in RECIPE_FILES if script_for(r) in TRAINING_SCRIPTS or "/grpo/" in r])
def test_each_method_reads_the_signal_it_was_designed_for(recipe):
    """The pre-CoT head reads the safe model's decision; the GRPO safety rewards read the prompts' harmfulness."""
    parsed = parse_recipe(RECIPES_DIR / recipe)
    if "/grpo/" in recipe:
        assert parsed[0].harmful_column == HARMFUL_COLUMN
    else:
        assert parsed[1].presafety_label_column in DECISION_COLUMNS


@pytest.mark.parametrize("recipe", [r for r in RECIPE_FILES if script_for(r) in TRAINING_SCRIPTS or "/grpo/" in r])
def test_logging_settings(recipe):
    """The tiny (CPU) recipes show progress bars and log to no tracker; the real-model ones log to a tracker, which
    parsing does not need installed. Either choice is commented in the recipe."""
    path = RECIPES_DIR / recipe
    training_args = parse_recipe(path)[1]
    if recipe.startswith("tiny/"):
        assert training_args.disable_tqdm is False and training_args.report_to == []
    else:
        assert training_args.report_to == ["trackio"] and training_args.project == "trl-presafety"
        assert training_args.disable_tqdm is not True
    line = re.search(r"^report_to:.*$", path.read_text(), flags=re.MULTILINE).group(0)
    assert re.search(r"\s#\s*\S", line), f"recipes/{recipe}: `report_to` needs a comment: {line!r}"


@pytest.mark.skipif(importlib.util.find_spec("trackio") is not None, reason="needs trackio not to be installed")
@pytest.mark.parametrize("script", ["sft", "dpo", "grpo"])
def test_missing_tracker_fails_before_anything_loads(script, tmp_path):
    """A real-model recipe as shipped (`report_to: trackio`) without the tracker installed: the command names it and
    the fix before reading data or loading the 8B model (transformers would fail only once the trainer is built)."""
    module = importlib.import_module(f"trl_presafety.scripts.{script}")
    recipe = (
        RECIPES_DIR / "Qwen3-8B" / script / ("config_safety_rl.yaml" if script == "grpo" else "config_presafety.yaml")
    )
    # Local inputs that pass the missing-input check (which runs first, offline) but could not be loaded: a model
    # folder with a config and no weights, an empty data file. Anything loaded before the tracker check would fail
    # with another error than the one expected here.
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text('{"model_type": "qwen3"}')
    data_file = tmp_path / "train.jsonl"
    data_file.write_text("")
    message = r"Invalid `report_to`: \['trackio'\], but trackio is not installed.*\[tracking\].*`--report_to none`"
    environ = dict(os.environ)
    try:
        with pytest.raises(ValueError, match=message):
            module.main(
                ["--config", str(recipe), "--use_cpu", "true", "--dataset_name", str(data_file)]
                + ["--model_name_or_path", str(model_dir)]
            )
    finally:
        os.environ.clear()
        os.environ.update(environ)


PRESAFETY_RECIPES = [r for r in RECIPE_FILES if r.endswith(("config_presafety.yaml", "config_self_routing.yaml"))]


@pytest.mark.parametrize("recipe", PRESAFETY_RECIPES)
def test_presafety_recipe_fields(recipe):
    path = RECIPES_DIR / recipe
    _, training_args, model_args, _ = parse_recipe(path)
    text = path.read_text()
    assert training_args.presafety_loss_weight > 0
    if not recipe.startswith("tiny/"):
        # The full-size recipes spell out every PreSafety field, so a user sees each knob and its comment
        assert sorted(presafety_lines(text)) == sorted(PRESAFETY_FIELDS)
        assert training_args.bf16 and training_args.gradient_checkpointing
    # DDP cannot see the head's gradient path (a forward hook); the recipes opt out of the unused-parameter search
    assert training_args.ddp_find_unused_parameters is False

    # The anchor exists in the template family of the model, with the chat template the run will use
    style = next(s for key, s in STYLE_OF_MODEL.items() if key in model_args.model_name_or_path)
    tokenizer = build_tiny_tokenizer(style)
    template_path = getattr(training_args, "chat_template_path", None) or yaml.safe_load(text).get(
        "chat_template_path"
    )
    if template_path:
        template = REPO_ROOT / template_path
        assert template.is_file(), f"{template_path} does not exist"
        tokenizer.chat_template = template.read_text()
    prompt_ids = tokenizer.apply_chat_template(EXAMPLE["prompt"], add_generation_prompt=True, tokenize=True)
    full_ids = tokenizer.apply_chat_template(EXAMPLE["prompt"] + EXAMPLE["completion"], tokenize=True)
    prompt_ids, full_ids = (
        list(getattr(prompt_ids, "input_ids", prompt_ids)),
        list(getattr(full_ids, "input_ids", full_ids)),
    )
    assert full_ids[: len(prompt_ids)] == prompt_ids, "the prompt must be a prefix of prompt + completion"
    spec = AnchorSpec.from_tokenizer(tokenizer, training_args.presafety_anchor, training_args.presafety_think_token)
    _, generation_start = conversation_prompt(tokenizer, EXAMPLE["prompt"])
    position = locate_anchor(full_ids, Boundary(len(prompt_ids), generation_start), spec)
    assert position != MISSING_POSITION
    # The last position before the CoT: the reasoning (kept by the template) starts right after the anchor, at most
    # behind the opening think tag
    before, after = tokenizer.decode(full_ids[: position + 1]), tokenizer.decode(full_ids[position + 1 :])
    assert "This is unsafe." not in before, f"the anchor is inside the CoT: {before!r}"
    assert after.lstrip().removeprefix("<think>").lstrip().startswith("This is unsafe."), after


def test_r1_training_template_keeps_the_reasoning():
    """Why the R1 recipes set `chat_template_path`: the stock template deletes the reasoning of assistant turns."""
    from importlib.resources import files

    tokenizer = build_tiny_tokenizer("r1")
    stock = files("trl").joinpath("chat_templates/deepseek_r1_distill.jinja").read_text()
    training = (RECIPES_DIR / "DeepSeek-R1-Distill-Qwen-7B/sft/deepseek_r1_distill_training.jinja").read_text()
    messages = EXAMPLE["prompt"] + EXAMPLE["completion"]
    assert "This is unsafe." not in tokenizer.apply_chat_template(messages, chat_template=stock, tokenize=False)
    rendered = tokenizer.apply_chat_template(messages, chat_template=training, tokenize=False)
    prompt = tokenizer.apply_chat_template(
        EXAMPLE["prompt"], chat_template=training, add_generation_prompt=True, tokenize=False
    )
    assert "This is unsafe." in rendered and rendered.startswith(prompt) and prompt.endswith("<think>\n")


# --- wrong keys and values fail at parse time, naming them ------------------------------------------------------
def _recipe_with(tmp_path: Path, source: Path, replace: dict[str, str | None]) -> Path:
    """A copy of `source` with `key: value` lines replaced (None removes the line); new keys are appended."""
    lines = source.read_text().splitlines()
    seen = set()
    for i, line in enumerate(lines):
        key = line.split(":", 1)[0]
        if key in replace:
            seen.add(key)
            lines[i] = "" if replace[key] is None else f"{key}: {replace[key]}"
    lines += [f"{key}: {value}" for key, value in replace.items() if key not in seen and value is not None]
    path = tmp_path / "recipe.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    "script, source",
    [
        ("sft", TINY_SFT),
        ("dpo", RECIPES_DIR / "tiny" / "dpo" / "config_presafety.yaml"),
    ],
)
def test_misspelled_presafety_key_fails_naming_it(script, source, tmp_path):
    path = _recipe_with(tmp_path, source, {"presafety_loss_weight": None, "presafety_los_weight": "0.5"})
    module = importlib.import_module(f"trl_presafety.scripts.{script}")
    with pytest.raises(ValueError, match=r"Unknown key\(s\) in recipe .*recipe.yaml: `presafety_los_weight`") as info:
        parse_args_strict(module.make_parser(), ["--config", str(path)])
    assert "did you mean `presafety_loss_weight`?" in str(info.value)


def test_misspelled_required_key_is_named_not_its_effect(tmp_path):
    # A misspelled `model_name_or_path` leaves the required field unset, which the config's `__post_init__` reports
    # first; the error names the misspelled key instead, and keeps the other message
    path = _recipe_with(
        tmp_path, RECIPES_DIR / "tiny" / "eval.yaml", {"model_name_or_path": None, "model_name_or_pth": "x"}
    )
    module = importlib.import_module("trl_presafety.scripts.evaluate")
    with pytest.raises(
        ValueError,
        match=r"Unknown key\(s\) in recipe .*recipe.yaml: `model_name_or_pth` \(did you mean `model_name_or_path`\?\)",
    ) as info:
        parse_args_strict(module.make_parser(), ["--config", str(path)])
    assert "(Parsing stopped at: Invalid `model_name_or_path`: None." in str(info.value)


@pytest.mark.parametrize(
    "key, value, expected",
    [
        (
            "presafety_anchor",
            "think_start",
            r"presafety_anchor`: 'think_start'. Choose one of \['prompt_end', 'think_end', 'reasoning_start'\]",
        ),
        (
            "presafety_head",
            "transformer",
            r"presafety_head`: 'transformer'. Choose one of \['linear', 'mlp', 'tied'\]",
        ),
        ("presafety_loss_weight", "-0.5", r"presafety_loss_weight`: -0.5. Use a finite weight >= 0"),
        (
            "presafety_head_hidden_size",
            "64",
            r"presafety_head_hidden_size`: 64. It only applies to presafety_head='mlp'",
        ),
        ("presafety_threshold", "1.5", r"presafety_threshold`: 1.5. Use a probability in \(0, 1\)"),
    ],
)
def test_wrong_presafety_value_fails_naming_it(key, value, expected, tmp_path):
    path = _recipe_with(tmp_path, TINY_SFT, {key: value})
    with pytest.raises(ValueError, match=expected) as info:
        parse_args_strict(importlib.import_module("trl_presafety.scripts.sft").make_parser(), ["--config", str(path)])
    assert f"recipe {path}" in str(info.value), "the message names the recipe file"


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("presafety_loss_weight", ".nan", r"Invalid `presafety_loss_weight`: nan. Use a finite weight >= 0"),
        ("presafety_loss_weight", ".inf", r"Invalid `presafety_loss_weight`: inf. Use a finite weight >= 0"),
        (
            "presafety_loss_weight",
            "[1.0, 2.0]",
            r"Invalid `presafety_loss_weight` in recipe .*: \[1.0, 2.0\] \(list\)",
        ),
        ("presafety_threshold", "{a: 1}", r"Invalid `presafety_threshold` in recipe .*\(dict\). It takes a number"),
        ("learning_rate", "[1.0e-5]", r"Invalid `learning_rate` in recipe .*\(list\). It takes a number"),
        ("presafety_anchor", "[think_end]", r"Invalid `presafety_anchor` in recipe .*\(list\). It takes a string"),
    ],
)
def test_non_finite_and_list_values_fail_at_parse_time(key, value, expected, tmp_path):
    # YAML values reach the dataclasses unconverted: a list or a NaN used to pass parsing (and fail, or train, later)
    path = _recipe_with(tmp_path, TINY_SFT, {key: value})
    with pytest.raises(ValueError, match=expected):
        parse_args_strict(importlib.import_module("trl_presafety.scripts.sft").make_parser(), ["--config", str(path)])


def test_non_finite_weight_fails_in_python_too(tmp_path):
    for value in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="Invalid `presafety_loss_weight`"):
            PreSafetySFTConfig(output_dir=str(tmp_path), presafety_loss_weight=value, use_cpu=True, bf16=False)
    with pytest.raises(ValueError, match=r"Invalid `presafety_loss_weight` in the config: \[1.0\] \(list\)"):
        PreSafetyDPOConfig(output_dir=str(tmp_path), presafety_loss_weight=[1.0], use_cpu=True, bf16=False)


def test_wrong_presafety_type_fails_naming_it(tmp_path, capsys):
    path = _recipe_with(tmp_path, TINY_SFT, {"presafety_loss_weight": "heavy"})
    with pytest.raises(SystemExit) as info:
        parse_args_strict(importlib.import_module("trl_presafety.scripts.sft").make_parser(), ["--config", str(path)])
    assert info.value.code == 2
    error = capsys.readouterr().err
    assert "argument --presafety_loss_weight" in error and "invalid float value: 'heavy'" in error
    assert len(error.splitlines()) <= 3, "the usage line printed above the error stays short"


def test_wrong_presafety_command_line_value_and_key_fail(capsys):
    parser_module = importlib.import_module("trl_presafety.scripts.sft")
    with pytest.raises(SystemExit):
        parse_args_strict(parser_module.make_parser(), ["--config", str(TINY_SFT), "--presafety_pooling", "max"])
    assert "argument --presafety_pooling" in capsys.readouterr().err
    with pytest.raises(
        ValueError,
        match=r"Unknown command-line argument\(s\): `presafety_pool` \(did you mean `presafety_pooling`\?\)",
    ):
        parse_args_strict(parser_module.make_parser(), ["--config", str(TINY_SFT), "--presafety_pool", "mean"])


def test_accelerate_launch_keys_are_allowed_in_a_recipe(tmp_path):
    """As with `trl sft`, a recipe may carry `accelerate launch` options; the CLI hands them to the launcher."""
    path = _recipe_with(tmp_path, TINY_SFT, {"num_processes": "2", "presafety_pooling": "mean"})
    _, training_args, _, _ = parse_args_strict(
        importlib.import_module("trl_presafety.scripts.sft").make_parser(), ["--config", str(path)]
    )
    assert training_args.presafety_pooling == "mean"


def test_recipe_adoption_diff_is_config_only(tmp_path):
    """The recipe diff in docs/recipes.md: its left side is a TRL SFT recipe that TRL's own parser reads; its right
    side parses with ours into a `PreSafetySFTConfig` in which every TRL field keeps its value."""
    from trl.scripts.sft import make_parser as trl_make_parser

    from trl_presafety.scripts import sft

    doc = (REPO_ROOT / "docs" / "recipes.md").read_text()
    blocks = re.findall(r"```diff\n(.*?)```", doc, flags=re.DOTALL)
    diff = next(block for block in blocks if "model_name_or_path:" in block).splitlines()
    before = "\n".join(line[1:] for line in diff if line[:1] in (" ", "-") or line == "")
    after = "\n".join(line[1:] for line in diff if line[:1] in (" ", "+") or line == "")
    (tmp_path / "trl.yaml").write_text(before)
    (tmp_path / "presafety.yaml").write_text(after)
    cpu = [] if torch.cuda.is_available() else ["--use_cpu", "true"]  # the recipe sets bf16

    _, trl_args, trl_model_args, _ = parse_args_strict(
        trl_make_parser(), ["--config", str(tmp_path / "trl.yaml"), *cpu]
    )
    script_args, args, model_args, _ = parse_args_strict(
        sft.make_parser(), ["--config", str(tmp_path / "presafety.yaml"), *cpu]
    )
    assert type(trl_args).__name__ == "SFTConfig" and isinstance(args, PreSafetySFTConfig)
    assert (args.presafety_loss_weight, args.presafety_anchor) == (1.0, "think_end")
    assert model_args == trl_model_args
    changed = {
        name
        for name in trl_args.__dataclass_fields__
        if name not in ("ddp_find_unused_parameters",) and getattr(trl_args, name) != getattr(args, name)
    }
    assert not changed, f"TRL fields changed by the adoption diff: {changed}"
    assert script_args.dataset_name.startswith("runs/Qwen3-8B/labels")
