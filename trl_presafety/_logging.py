# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Drops one import-time log line of a third-party package that every training command would otherwise print.

transformers' `Trainer` imports peft, which imports bitsandbytes when it is installed. On a CPU with AVX512-BF16,
bitsandbytes then tries to fetch an optional 4-bit CPU kernel from the `kernels` package and, when that package is not
installed, logs at WARNING: "Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'".
Nothing here runs 4-bit kernels on the CPU, and the import cannot be avoided (it sits in transformers'
`training_args` import chain), so the record is filtered on bitsandbytes' own logger. Only that record, and only when
the cause is the missing `kernels` package: a `kernels` install that fails for another reason still warns, and so does
every other record of bitsandbytes.
"""

import logging


BITSANDBYTES_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
MISSING_KERNEL_MESSAGE = "Failed to load CPU gemm_4bit_forward from kernels-community"


class MissingOptionalKernelFilter(logging.Filter):
    """Rejects bitsandbytes' "Failed to load CPU gemm_4bit_forward" record when the `kernels` package is absent."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(MISSING_KERNEL_MESSAGE):
            return True
        cause = record.args[0] if isinstance(record.args, tuple) and record.args else None
        return not (isinstance(cause, ModuleNotFoundError) and cause.name == "kernels")


_FILTER = MissingOptionalKernelFilter()


def quiet_optional_kernel_warning() -> None:
    """Installs the filter (idempotent). Must run before bitsandbytes is imported to have an effect."""
    logging.getLogger(BITSANDBYTES_CPU_LOGGER).addFilter(_FILTER)
