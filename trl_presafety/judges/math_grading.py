# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Reasoning accuracy: checking a final answer against the gold one with `math-verify` (GSM8K, MATH-500, AIME). Used by
the evaluation, build-sft's check of benign math traces and GRPO's accuracy reward."""

from typing import Any


def gsm8k_final_answer(solution: str) -> str | None:
    """The final answer of a GSM8K solution: the text after `####`, without thousands separators (`None` without it)."""
    if "####" not in solution:
        return None
    return solution.rsplit("####", 1)[1].strip().replace(",", "")


def gold_latex(gold: str) -> str:
    """The gold answer in math mode, as math-verify needs it: a bare gold (GSM8K's `72`, MATH-500's `\\sqrt{2}`) is
    wrapped in `$...$`, since math-verify finds nothing in bare LaTeX such as `\\sqrt{2}` or `x^2+1`."""
    gold = str(gold).strip()
    if gold.startswith("$") or "\\boxed" in gold:
        return gold
    return f"${gold}$"


def grade_math(answer: str, gold: str) -> dict[str, Any]:
    """Whether `answer` (the final answer, reasoning trace removed) states the `gold` answer.

    `math-verify` extracts the last `\\boxed{...}` (or, failing that, the last expression) from the answer and compares
    it with the gold symbolically. An empty answer (e.g. the token cap was hit inside the reasoning) is wrong.

    Returns:
        `{"correct": bool, "predicted": str | None, "gold": str, "error": str | None}`.
    """
    from math_verify import parse, verify

    result: dict[str, Any] = {"correct": False, "predicted": None, "gold": str(gold), "error": None}
    if not answer or not answer.strip():
        return result
    try:
        gold_parsed = parse(gold_latex(gold))
        if not gold_parsed:
            result["error"] = f"math-verify could not parse the gold answer {gold!r}"
            return result
        predicted = parse(answer)
        if predicted:
            result["predicted"] = str(predicted[-1])
        result["correct"] = bool(predicted) and bool(verify(gold_parsed, predicted))
    except Exception as error:  # a pathological expression must not stop the evaluation
        result["error"] = f"{type(error).__name__}: {error}"
    return result
