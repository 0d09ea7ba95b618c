# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Helpers shared by the tests: markers, small CPU trainer configs, the bundled tiny data, and the SFT and DPO trainers
(plain TRL or PreSafety) built the same way. The offline environment is set once, in `conftest.py`."""

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from trl_presafety.tiny import load_tiny_rows


REPO_ROOT = Path(__file__).resolve().parent.parent

require_torch_accelerator = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA accelerator")
require_deepspeed = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="needs deepspeed")
require_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vllm")


def require_vllm_modules(*modules: str) -> pytest.MarkDecorator:
    """Skips unless vLLM's Python code imports `modules` (`make vllm_check` installs it; its optional compiled parts
    are absent on a CPU machine, so a module that needs them fails to import and the test is skipped)."""

    def importable() -> bool:
        if importlib.util.find_spec("vllm") is None:
            return False
        try:
            for module in modules:
                importlib.import_module(module)
        except Exception:
            return False
        return True

    return pytest.mark.skipif(not importable(), reason="needs vLLM's Python code (make vllm_check)")


# CPU settings for every trainer config built in tests
CPU_TRAINING_KWARGS = {
    "bf16": False,
    "use_cpu": True,
    "report_to": "none",
    "save_strategy": "no",
    "disable_tqdm": True,
    "dataloader_num_workers": 0,
}


def load_tiny_sft_rows(n: int | None = None) -> list[dict]:
    """Rows of the bundled tiny SFT set (conversational prompt-completion with `safety_label`)."""
    return load_tiny_rows("sft", n)


def load_tiny_dpo_rows(n: int | None = None) -> list[dict]:
    """Rows of the bundled tiny DPO set (conversational prompt/chosen/rejected with `safety_label`)."""
    return load_tiny_rows("dpo", n)


def to_messages(rows: list[dict]) -> list[dict]:
    """Conversational prompt-completion rows as conversational language-modeling ("messages") rows."""
    return [{"messages": r["prompt"] + r["completion"], "safety_label": r["safety_label"]} for r in rows]


def to_standard(rows: list[dict], tokenizer) -> list[dict]:
    """Conversational prompt-completion rows as standard (text) prompt-completion rows, rendered by the template."""
    out = []
    for r in rows:
        prompt = tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=False)
        out.append({"prompt": prompt, "completion": full[len(prompt) :], "safety_label": r["safety_label"]})
    return out


def params_snapshot(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def config_kwargs(tmp_path, **kwargs) -> dict:
    """Keyword arguments of a small CPU trainer config (SFT or DPO) writing under `tmp_path`."""
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=1e-2,
        logging_steps=1,
        gradient_checkpointing=False,
        max_length=256,
        seed=0,
        **CPU_TRAINING_KWARGS,
    )
    defaults.update(kwargs)
    return defaults


def trainer_classes(kind: str, plain: bool = False) -> tuple[type, type]:
    """(config class, trainer class) of `kind` ("sft" or "dpo"): plain TRL's, or the PreSafety ones."""
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from trl_presafety import PreSafetyDPOConfig, PreSafetyDPOTrainer, PreSafetySFTConfig, PreSafetySFTTrainer

    return {
        ("sft", True): (SFTConfig, SFTTrainer),
        ("sft", False): (PreSafetySFTConfig, PreSafetySFTTrainer),
        ("dpo", True): (DPOConfig, DPOTrainer),
        ("dpo", False): (PreSafetyDPOConfig, PreSafetyDPOTrainer),
    }[kind, plain]


def build_trainer(kind: str, model, tmp_path, rows: list[dict], plain: bool = False, **kwargs):
    """A `kind` trainer on `rows` with `config_kwargs(tmp_path, **kwargs)`; a plain TRL one writes to `tmp_path/plain`,
    so that it can sit beside a PreSafety one built on the same `tmp_path`."""
    from datasets import Dataset

    config_cls, trainer_cls = trainer_classes(kind, plain)
    args = config_kwargs(tmp_path, **kwargs)
    if plain:
        args["output_dir"] = str(tmp_path / "plain")
    return trainer_cls(model=model, args=config_cls(**args), train_dataset=Dataset.from_list(rows))


def head_probs(trainer, batch) -> torch.Tensor:
    """The head's P(refuse) at the anchors of `batch`, computed from `compute_loss` (the hooked training path)."""
    trainer.model.eval()
    scores, targets = trainer.presafety_callback._scores["eval"]
    scores.clear()
    targets.clear()
    with torch.no_grad():
        trainer.compute_loss(trainer.model, dict(batch))
    probs = torch.cat(scores)
    scores.clear()
    targets.clear()
    trainer._metrics["eval"].clear()
    return probs


def safetensors_keys(folder) -> set[str]:
    """Every tensor name in the `*.safetensors` files of `folder`."""
    from pathlib import Path

    from safetensors import safe_open

    keys = set()
    for file in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            keys.update(f.keys())
    return keys


# Run in a fresh interpreter: `cli.main(argv)` with its stdout captured (a `--help` exits), then which of the given
# modules the run imported
CLI_PROBE = """
import contextlib, io, json, sys
from trl_presafety import cli
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        cli.main(sys.argv[2:])
    except SystemExit:
        pass
print(json.dumps({"out": out.getvalue(), "loaded": [m for m in json.loads(sys.argv[1]) if m in sys.modules]}))
"""


def run_cli_in_fresh_process(argv: Sequence[str], modules: Sequence[str]) -> tuple[str, list[str], str]:
    """`trl-presafety <argv>` in a new Python process: `(what it printed, which of modules it imported, stderr)`."""
    result = subprocess.run(
        [sys.executable, "-c", CLI_PROBE, json.dumps(list(modules)), *argv],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    report = json.loads(result.stdout.splitlines()[-1])
    return report["out"], report["loaded"], result.stderr


def run_stage_in_process(stage) -> int:
    """A pipeline stage's own command line (`python -m trl_presafety.cli <command> ...`) run by `cli.main` in this
    process: the argv the default runner starts, without a new interpreter per stage (what the subprocess runner adds
    is tested once per chain). Returns the exit code, as a runner does."""
    from trl_presafety import cli

    command = stage.command_line()
    assert command[1:3] == ["-m", "trl_presafety.cli"], command
    try:
        cli.main(command[3:])
    except SystemExit as exit:  # argparse and the scripts' clear errors exit; a code of None is success
        return exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    return 0
