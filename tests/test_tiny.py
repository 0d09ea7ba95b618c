# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The bundled tiny assets: the tokenizer is reproducible from the bundled data, and the data sets load by name."""

import pytest

from trl_presafety.tiny import TOKENIZER_FILE, load_tiny_rows, main


def test_retraining_the_tokenizer_reproduces_the_shipped_asset(tmp_path, capsys):
    out = tmp_path / "tokenizer.json"
    main(["--retrain_tokenizer", str(out)])
    assert out.read_bytes() == TOKENIZER_FILE.read_bytes()
    assert capsys.readouterr().out == f"Saved the tiny tokenizer to {out}\n"
    # Building a model still needs its folder
    with pytest.raises(SystemExit) as error:
        main(["--style", "r1"])
    assert error.value.code == 2
    assert "the following arguments are required: --output_dir" in capsys.readouterr().err


def test_tiny_rows_load_by_name():
    sft, dpo = load_tiny_rows("sft"), load_tiny_rows("dpo")
    assert (len(sft), len(dpo)) == (140, 140)
    assert load_tiny_rows("sft", 3) == sft[:3]
    assert set(sft[0]) >= {"prompt", "completion", "safety_label"} and set(dpo[0]) >= {"chosen", "rejected"}
    with pytest.raises(ValueError, match=r"No bundled tiny set 'nope'.*Choose one of \['alttrain', 'dpo', 'eval', "):
        load_tiny_rows("nope")
