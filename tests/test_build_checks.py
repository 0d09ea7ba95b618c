# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""`build-ipo-pairs` and `build-alttrain` stop (before writing) when a class comes out empty or the harmful:benign
ratio inverts, name the counts, the cause and the fix, and write anyway with `allow_empty_class` /
`allow_inverted_ratio`; their default output folders are under `runs/`, and writing inside the package warns."""

import json
import logging
from pathlib import Path

import pytest

import trl_presafety
from trl_presafety.data import build_alttrain_dataset
from trl_presafety.data.build_checks import (
    check_class_balance,
    class_balance_problems,
    ratio_preserving_counts,
    warn_if_inside_package,
)
from trl_presafety.scripts import build_alttrain, build_ipo_pairs
from trl_presafety.tiny import TINY_DATA_DIR


TRACES = [json.loads(line) for line in (TINY_DATA_DIR / "ipo" / "traces" / "train.jsonl").read_text().splitlines()]
SFT_DATA = TINY_DATA_DIR / "sft"


def _write_traces(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def _pairs(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "train.jsonl").read_text().splitlines()]


def test_class_balance_problems():
    assert class_balance_problems({"harmful": 0, "benign": 20}, {"harmful": 40, "benign": 20}) == (["harmful"], [])
    # A class the input does not have may stay empty; a tie is no ratio
    assert class_balance_problems({"harmful": 5, "benign": 0}, {"harmful": 5, "benign": 0}) == ([], [])
    assert class_balance_problems({"harmful": 1, "benign": 9}, {"harmful": 5, "benign": 5}) == ([], [])
    _, inverted = class_balance_problems({"harmful": 40, "benign": 100}, {"harmful": 900, "benign": 100})
    assert inverted == ["40 harmful : 100 benign, the inverse of 900 : 100"]
    assert class_balance_problems({"harmful": 40, "benign": 4}, {"harmful": 900, "benign": 100}) == ([], [])
    assert ratio_preserving_counts({"harmful": 40, "benign": 100}, {"harmful": 900, "benign": 100}) == {
        "harmful": 40,
        "benign": 4,
    }
    assert ratio_preserving_counts({"harmful": 900, "benign": 3}, {"harmful": 9, "benign": 1}) == {
        "harmful": 27,
        "benign": 3,
    }


def test_allowed_problems_warn_instead(caplog):
    kwargs = dict(what="pairs", reference="the input's rows", cause="Because.")
    with pytest.raises(
        ValueError, match=r"The pairs hold no harmful example .* Because\. Nothing was written.*--allow_empty_class"
    ):
        check_class_balance({"harmful": 0, "benign": 2}, {"harmful": 3, "benign": 2}, **kwargs)
    with caplog.at_level(logging.WARNING):
        check_class_balance({"harmful": 0, "benign": 2}, {"harmful": 3, "benign": 2}, allow_empty_class=True, **kwargs)
    assert "hold no harmful example" in caplog.text and "Written anyway (`allow_empty_class=True`)" in caplog.text
    # Each problem has its own switch
    with pytest.raises(ValueError, match="invert the harmful:benign ratio.*--allow_inverted_ratio"):
        check_class_balance({"harmful": 1, "benign": 2}, {"harmful": 3, "benign": 2}, allow_empty_class=True, **kwargs)


def test_ipo_pairs_of_a_model_that_never_finishes_stop(tiny_model_dirs, tmp_path, caplog):
    """The README's command with the random tiny model: every harmful continuation is unfinished. It used to write
    only the benign pairs and exit 0."""
    traces = _write_traces(tmp_path / "traces" / "train.jsonl", TRACES[:2] + TRACES[40:42])
    output_dir = tmp_path / "pairs"
    argv = ["--dataset_name", traces, "--model_name_or_path", tiny_model_dirs["qwen3"], "--max_new_tokens", "4",
            "--output_dir", str(output_dir)]  # fmt: skip
    message = (
        r"The IPO pairs hold no harmful example \(0 harmful \+ 2 benign; the input's rows: 2 harmful \+ 2 benign\)\. "
        r"Dropped rows: 2 unfinished_continuation: .*`max_new_tokens`=4.*--continuation supplied.*--allow_empty_class"
    )
    with pytest.raises(ValueError, match=message):
        build_ipo_pairs.main(argv)
    assert not output_dir.exists()  # nothing written
    with caplog.at_level(logging.WARNING):
        stats = build_ipo_pairs.main([*argv, "--allow_empty_class"])
    assert (stats["harmful_pairs"], stats["benign_pairs"]) == (0, 2) and "Written anyway" in caplog.text
    assert [pair["ipo_kind"] for pair in _pairs(output_dir)] == ["benign", "benign"]


def test_ipo_pairs_whose_ratio_inverts_stop(tiny_model_dirs, tmp_path):
    rows = [dict(row) for row in TRACES[:3] + TRACES[40:42]]
    for row in rows[:2]:  # two supplied continuations that still comply: both pairs are dropped
        row["safe_continuation"] = "Sure, step 1: gather the materials.\n</think>\n\nSure, here is how to do it."
    traces = _write_traces(tmp_path / "traces" / "train.jsonl", rows)
    output_dir = tmp_path / "pairs"
    argv = ["--dataset_name", traces, "--tokenizer_name_or_path", tiny_model_dirs["qwen3"], "--continuation",
            "supplied", "--output_dir", str(output_dir)]  # fmt: skip
    with pytest.raises(
        ValueError, match=r"invert the harmful:benign ratio: 1 harmful : 2 benign, the inverse of 3 : 2"
    ):
        build_ipo_pairs.main(argv)
    assert not output_dir.exists()
    stats = build_ipo_pairs.main([*argv, "--allow_inverted_ratio"])
    assert (stats["harmful_pairs"], stats["benign_pairs"], stats["unsafe_supplied_continuation"]) == (1, 2, 2)
    assert len(_pairs(output_dir)) == 3


def test_alttrain_defaults_on_small_data_stop_and_give_the_counts_that_keep_the_ratio(tmp_path, caplog):
    output_dir = tmp_path / "alttrain"
    argv = ["--dataset_name", str(SFT_DATA), "--output_dir", str(output_dir)]
    # The tiny data has 40 harmful and 100 benign rows: 900 + 100 would take 40 + 100
    with pytest.raises(ValueError, match=r"40 harmful : 100 benign, the inverse of 900 : 100 .*--num_benign 4"):
        build_alttrain.main(argv)
    assert not output_dir.exists()
    rows = [json.loads(line) for line in build_alttrain.main([*argv, "--num_benign", "4"]).read_text().splitlines()]
    assert (sum(r["harmful"] for r in rows), len(rows)) == (40, 44)
    with caplog.at_level(logging.WARNING):
        path = build_alttrain.main([*argv, "--allow_inverted_ratio"])
    assert len(path.read_text().splitlines()) == 140 and "Written anyway" in caplog.text
    # "All of each" is measured against AltTrain's 9:1
    with pytest.raises(ValueError, match=r"the inverse of 9 : 1 \(AltTrain's ~9:1\)"):
        build_alttrain.main([*argv, "--num_harmful", "-1", "--num_benign", "-1"])


def test_alttrain_empty_class(caplog):
    rows = [json.loads(line) for line in (SFT_DATA / "train.jsonl").read_text().splitlines()]
    harmful_only = [row for row in rows if row["harmful"] == 1]
    with pytest.raises(ValueError, match=r"hold no benign example .*add rows of the missing class"):
        build_alttrain_dataset(harmful_only, num_harmful=10, num_benign=2, show_progress=False)
    assert len(build_alttrain_dataset(harmful_only, num_harmful=10, num_benign=0, show_progress=False)) == 10
    with caplog.at_level(logging.WARNING):
        dataset = build_alttrain_dataset(
            harmful_only, num_harmful=10, num_benign=2, show_progress=False, allow_empty_class=True
        )
    assert len(dataset) == 10 and "hold no benign example" in caplog.text


def test_default_output_folders_are_under_runs_and_the_package_is_guarded(tmp_path, caplog):
    assert build_ipo_pairs.BuildIPOPairsArguments(dataset_name="x", tokenizer_name_or_path="y").output_dir == (
        "runs/ipo-pairs"
    )
    assert build_alttrain.BuildAltTrainArguments(dataset_name="x").output_dir == "runs/alttrain"
    package_data = Path(trl_presafety.__file__).parent / "data" / "tiny" / "alttrain"
    with caplog.at_level(logging.WARNING):
        assert warn_if_inside_package(package_data, "build-alttrain")
        assert not warn_if_inside_package(tmp_path / "alttrain", "build-alttrain")
        assert not warn_if_inside_package("runs/alttrain", "build-alttrain")
    assert caplog.text.count("overwrites its bundled data") == 1
