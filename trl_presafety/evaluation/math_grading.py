# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Moved to `trl_presafety.judges.math_grading`; this path keeps old imports working."""

from ..judges.math_grading import gold_latex, grade_math, gsm8k_final_answer


__all__ = ["gold_latex", "grade_math", "gsm8k_final_answer"]
