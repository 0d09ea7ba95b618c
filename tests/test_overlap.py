# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Held-out evaluation: the bundled smoke set shares no prompt with the tiny training data; `eval` finds the prompts a
model was trained on (recorded by the training run, or read from the data its model card names), warns with the count
in the report, on the command line and in eval-compare; a small-n AUROC interval says what it cannot tell."""

import json
import shutil

from trl_presafety.data.build_tiny import SMOKE_PATH, check_held_out, smoke_rows
from trl_presafety.evaluation import evaluate
from trl_presafety.evaluation import loop as eval_loop
from trl_presafety.evaluation.compare import compare_reports
from trl_presafety.evaluation.report import auroc_interval_note
from trl_presafety.overlap import TRAINING_PROMPTS_FILE, normalize_prompt, prompt_text, record_training_prompts
from trl_presafety.tiny import TINY_DATA_DIR

from .test_evaluation import scripted_generate, small_config
from .testing_utils import REPO_ROOT


def test_smoke_set_is_held_out_from_every_tiny_training_file():
    """Before: 11 of the 12 smoke prompts were in trl_presafety/data/tiny/sft word for word."""
    shipped = [json.loads(line) for line in SMOKE_PATH.read_text(encoding="utf-8").splitlines()]
    assert shipped == smoke_rows()  # the generator and the shipped file agree
    check_held_out(shipped, TINY_DATA_DIR)
    smoke = {normalize_prompt(row["prompt"]) for row in shipped}
    for name in ("sft", "dpo", "prompts", "rl", "alttrain"):
        rows = [json.loads(line) for line in (TINY_DATA_DIR / name / "train.jsonl").read_text().splitlines()]
        assert not smoke & {normalize_prompt(prompt_text(row)) for row in rows if prompt_text(row)}, name


def test_normalized_prompts_match_across_case_spacing_and_chat_format():
    assert normalize_prompt("  How do I KILL a  process?\n") == normalize_prompt("how do i kill a process")
    assert prompt_text({"prompt": [{"role": "user", "content": "hi"}]}) == "hi"
    assert prompt_text({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}) == "a"


def test_eval_counts_and_warns_about_training_prompts(tiny_model_dirs, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(eval_loop, "generate_texts", scripted_generate)
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dirs["qwen3"], model)
    smoke = smoke_rows()
    # Two smoke prompts in the training data, re-typed (case, spaces) and in chat format
    rows = [
        {"prompt": [{"role": "user", "content": "  " + smoke[0]["prompt"].upper()}]},
        {"prompt": smoke[5]["prompt"].replace(" ", "  ")},
        {"prompt": "Something else entirely."},
    ]
    record_training_prompts(rows, model, ["my-data"])
    report = evaluate(small_config(str(model), tmp_path / "out", sampling_grid=["greedy"], probe=False))
    overlap = report["training_overlap"]
    assert overlap["status"] == "checked" and overlap["n_overlap"] == 2 and overlap["n_examples"] == 12
    assert overlap["ids"] == ["smoke/h1", "smoke/b1"] and overlap["source"].endswith(TRAINING_PROMPTS_FILE)
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "⚠ 2 of the 12 evaluation prompts were in the model's training data (smoke: 2 of 12" in markdown
    comparison = compare_reports([report, report])
    assert any("2 of the 12 evaluation prompts were in the model's training data" in w for w in comparison["warnings"])

    # Without the record, the local data the model card names are read
    (model / TRAINING_PROMPTS_FILE).unlink()
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"prompt": smoke[2]["prompt"], "completion": "No."}) + "\n")
    (model / "README.md").write_text(f"This model is a fine-tuned version of x on `{data}` (local), with a head.\n")
    report = evaluate(small_config(str(model), tmp_path / "out2", sampling_grid=["greedy"], probe=False))
    assert report["training_overlap"]["n_overlap"] == 1 and report["training_overlap"]["ids"] == ["smoke/h3"]

    # Nothing recorded: said, not guessed
    (model / "README.md").unlink()
    from trl_presafety.scripts import evaluate as evaluate_script

    recipe = str(REPO_ROOT / "recipes" / "tiny" / "eval.yaml")
    evaluate_script.main(["--config", recipe, "--model_name_or_path", str(model), "--output_dir", str(tmp_path / "o3")]
                         + ["--sampling_grid", "greedy", "--probe", "false", "--plot", "false"])  # fmt: skip
    assert "overlap with the evaluation prompts not checked" in capsys.readouterr().out


def test_small_n_auroc_interval_says_what_it_cannot_tell():
    """Before: "AUROC harmful vs benign 1.000 [1.000, 1.000]" at n = 5 + 7, with no word."""
    note = auroc_interval_note({"status": "ok", "auroc": 1.0, "auroc_ci": [1.0, 1.0], "n_harmful": 5, "n_benign": 7})
    assert "5 harmful + 7 benign" in note and "zero width" in note and "not that it is certain" in note
    assert "at least 30 prompts per class" in note
    wide = {"status": "ok", "auroc": 0.8, "auroc_ci": [0.6, 0.95], "n_harmful": 200, "n_benign": 200}
    assert auroc_interval_note(wide) is None
