# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Lazy public names for a package (PEP 562): a submodule is imported when one of its names is first used, so
importing the package costs no torch/transformers/trl import (and none of their import-time warnings)."""

import importlib
import sys
from collections.abc import Callable, Iterable
from typing import Any


def lazy_exports(package: str, exports: dict[str, Iterable[str]]) -> tuple[Callable[[str], Any], Callable[[], list]]:
    """`(__getattr__, __dir__)` for `package`, whose public names live in the submodules named by `exports`."""
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{where[name]}", package), name)
        setattr(sys.modules[package], name, value)  # cached: later accesses are plain attribute lookups
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__
