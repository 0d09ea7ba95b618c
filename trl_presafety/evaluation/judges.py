# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The evaluation's judges, now in `trl_presafety.judges`; this module keeps their old import path."""

from ..judges import (
    GUARD_FORMATS,
    JUDGES,
    REASONING_REFUSAL_PATTERNS,
    REFUSAL_PATTERNS,
    ClassifierJudge,
    GuardJudge,
    Judge,
    RegexRefusalJudge,
    Verdict,
    detect_guard_format,
    llama_guard_categories,
    parse_llama_guard,
    parse_wildguard,
)
from ..judges.guard import WILDGUARD_TEMPLATE


__all__ = [
    "GUARD_FORMATS",
    "JUDGES",
    "REASONING_REFUSAL_PATTERNS",
    "REFUSAL_PATTERNS",
    "WILDGUARD_TEMPLATE",
    "ClassifierJudge",
    "GuardJudge",
    "Judge",
    "RegexRefusalJudge",
    "Verdict",
    "detect_guard_format",
    "llama_guard_categories",
    "parse_llama_guard",
    "parse_wildguard",
]
