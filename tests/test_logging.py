# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""No third-party noise on every command: bitsandbytes' "Failed to load CPU gemm_4bit_forward" line (peft imports
bitsandbytes when transformers' Trainer is imported) is dropped when its cause is the optional `kernels` package not
being installed; every other record, of bitsandbytes or not, still shows."""

import importlib.util
import logging
from pathlib import Path

import pytest

import trl_presafety  # noqa: F401  (installs the filter, as every command does)
from trl_presafety._logging import BITSANDBYTES_CPU_LOGGER, MISSING_KERNEL_MESSAGE

from .testing_utils import run_cli_in_fresh_process


REPO_ROOT = Path(__file__).resolve().parent.parent
# bitsandbytes' own format string (bitsandbytes/backends/cpu/ops.py)
BNB_FORMAT = (
    MISSING_KERNEL_MESSAGE + ": %s. Please make sure you already `pip install kernels` and the kernels >= 0.11.1"
)


def test_only_the_missing_kernels_record_is_dropped(caplog):
    logger = logging.getLogger(BITSANDBYTES_CPU_LOGGER)
    with caplog.at_level(logging.WARNING):
        logger.warning(BNB_FORMAT, ModuleNotFoundError("No module named 'kernels'", name="kernels"))
        # A `kernels` install that fails for another reason, and any other record, are real warnings
        logger.warning(BNB_FORMAT, ModuleNotFoundError("No module named 'triton'", name="triton"))
        logger.warning(BNB_FORMAT, RuntimeError("kernel repository unreachable"))
        logger.warning("bitsandbytes: something else")
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 3 and "kernels'" not in messages[0]
    assert "triton" in messages[0] and "unreachable" in messages[1] and messages[2] == "bitsandbytes: something else"


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="the line comes from bitsandbytes")
def test_training_command_help_prints_no_kernel_warning():
    """`trl-presafety sft --help_all` imports the trainer (hence peft and bitsandbytes). On a CPU with AVX512-BF16 and
    without `kernels`, bitsandbytes logs its warning at import; the command prints none of it."""
    out, loaded, stderr = run_cli_in_fresh_process(["sft", "--help_all"], ("bitsandbytes",))
    assert "--presafety_loss_weight" in out and loaded == ["bitsandbytes"]
    assert "gemm_4bit_forward" not in stderr
