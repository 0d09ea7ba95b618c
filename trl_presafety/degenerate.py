# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Degenerate outputs: responses that say nothing a judge or a classifier could read as a decision.

A tiny or broken model answers `"\\n\\n"`, `<think><think><think>...` or stops at the token cap inside its reasoning.
Such an output is neither a refusal nor a compliance: a judge that reads it as one (a cue judge finding no refusal
phrase, a classifier reading the prompt because the answer is blank) turns noise into a behaviour figure. Every judge
([`trl_presafety.judges.Judge.judge`]), the evaluation and `trl-presafety label` give such texts a category of their
own, counted and reported, and never a verdict or a label.

Checks (light: no torch or transformers here):

- `empty`: the answer is empty or whitespace only (also when the think block never closed, so no answer came).
- `repeated_tags`: think tags where none belong (`<think>` inside an answer, a second `<think>` in a response).
- `unclosed_think`: the reasoning never closed (reported per response; its answer is empty).
- `token_cap`: the response stopped at `max_new_tokens` (reported; a long answer cut at the cap still says something,
  so the cap alone is not degenerate).
"""

from typing import Any


THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
DEGENERATE_KINDS = ("empty", "repeated_tags")
# The checks reported for each response of an evaluation, in the report's order
RESPONSE_CHECKS = ("empty_answer", "unclosed_think", "repeated_tags", "token_cap")


def count_think_tags(text: str) -> tuple[int, int]:
    return text.count(THINK_OPEN), text.count(THINK_CLOSE)


def degenerate_text(text: str | None, kind: str = "answer") -> str | None:
    """Why `text` cannot be judged (`"empty"`, `"repeated_tags"`), or `None` when it can.

    Args:
        text: what the judge would read.
        kind: `"answer"` (a final answer: no think tag belongs in it), `"reasoning"` (a trace: no tag either) or
            `"answer_reasoning"` (reasoning and answer joined: at most one `<think>` and one `</think>`).
    """
    if text is None or not text.strip():
        return "empty"
    opened, closed = count_think_tags(text)
    allowed = 1 if kind == "answer_reasoning" else 0
    if opened > allowed or closed > allowed:
        return "repeated_tags"
    return None


def response_checks(response: str, answer: str | None, closed: bool, hit_token_cap: bool | None) -> dict[str, bool]:
    """The per-response checks of the evaluation (see the module docstring), and `degenerate` (empty answer or
    repeated tags: the answer judge is not asked, and the response counts neither as refusal nor as compliance)."""
    opened, closes = count_think_tags(response)
    checks = {
        "empty_answer": not (answer or "").strip(),
        "unclosed_think": not closed,
        # A response holds at most one think block; an answer none
        "repeated_tags": opened > 1 or closes > 1 or (answer is not None and any(count_think_tags(answer))),
        "token_cap": bool(hit_token_cap),
    }
    checks["degenerate"] = checks["empty_answer"] or checks["repeated_tags"]
    return checks


def degenerate_reason(checks: dict[str, Any]) -> str | None:
    """`"empty"` / `"repeated_tags"` for a degenerate response (per [`response_checks`]), else `None`."""
    if checks.get("empty_answer"):
        return "empty"
    if checks.get("repeated_tags"):
        return "repeated_tags"
    return None
