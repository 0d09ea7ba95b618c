# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Reasoning steps: a trace split at sentence, line or paragraph boundaries with exact character spans, and the texts
a step judge reads (the user turn, the reasoning up to a step)."""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


STEP_SPLITS = ("sentence", "line", "paragraph")

_SPLIT_PATTERNS = {
    # A sentence ends at . ! ? (optionally closed by a quote or bracket) followed by whitespace, or at a line break
    "sentence": re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n+"),
    "line": re.compile(r"\n+"),
    "paragraph": re.compile(r"\n\s*\n+"),
}


@dataclass(frozen=True)
class Step:
    """One reasoning step: its text and its character span `[start, end)` in the text it was split from."""

    text: str
    start: int
    end: int


def split_steps(text: str, split: str = "sentence") -> list[Step]:
    """Splits reasoning into steps with their exact character spans, so a trace can be cut at a step boundary.

    The whitespace between steps belongs to no step: a prefix `text[:steps[h].start]` keeps the original text up to
    step `h` byte for byte.

    Example:
    ```python
    >>> [s.text for s in split_steps("The user asks X. Let me work out the details.\\nStep 1: gather.")]
    ['The user asks X.', 'Let me work out the details.', 'Step 1: gather.']
    ```
    """
    if split not in _SPLIT_PATTERNS:
        raise ValueError(f"Unknown step split {split!r}. Choose one of {list(STEP_SPLITS)}.")
    steps, position = [], 0
    for match in _SPLIT_PATTERNS[split].finditer(text):
        # The closing quote/bracket of a sentence belongs to it, the whitespace after it does not
        end = match.start() + len(match.group(0)) - len(match.group(0).lstrip("\"')]"))
        _append_step(steps, text, position, end)
        position = match.end()
    _append_step(steps, text, position, len(text))
    return steps


def _append_step(steps: list[Step], text: str, start: int, end: int) -> None:
    piece = text[start:end]
    stripped = piece.strip()
    if not stripped:
        return
    start += len(piece) - len(piece.lstrip())
    steps.append(Step(stripped, start, start + len(stripped)))


def user_text(prompt: str | Sequence[dict[str, Any]]) -> str:
    """The text of the last user turn of a prompt (a string, or chat messages)."""
    if isinstance(prompt, str):
        return prompt
    for message in reversed(list(prompt)):
        if message.get("role") == "user":
            content = message.get("content", "")
            return content if isinstance(content, str) else " ".join(c.get("text", "") for c in content)
    return ""


def prefix_text(steps: Sequence[str], end: int, context: str | None = None) -> str:
    """The assistant text up to and including step `end - 1`: the context, then the steps joined by spaces.

    Example:
    ```python
    >>> prefix_text(["Sure.", "Step 1: mix."], 1, context="I should refuse. Wait.")
    'I should refuse. Wait. Sure.'
    ```
    """
    text = " ".join(steps[:end])
    if not context:
        return text
    return context + ("" if context[-1:].isspace() else " ") + text
