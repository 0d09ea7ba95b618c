# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Where the pre-CoT decision is read: the anchor position of each example, and the safety labels it is trained on.

Two anchors (see `../shared/METHOD.md`):

- `"prompt_end"`: the last prompt token, i.e. the position that predicts the first completion token. With an
  R1-style template (generation prompt ending in `<think>\\n`) it is the last token of the opening think tag; with a
  Qwen3-style template (completion starting with `<think>`) it is the end of the assistant header.
- `"think_end"`: the last token of the opening think tag, wherever the template puts it: the last occurrence inside the
  prompt (R1 style, or an IPO pair whose prompt carries part of the reasoning), else the first one in the completion
  (Qwen3 style).
"""

import math
from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase


MISSING_LABEL = -100.0
MISSING_POSITION = -1


def find_subsequence(
    sequence: Sequence[int], pattern: Sequence[int], start: int = 0, end: int | None = None
) -> list[int]:
    """Start indices of every occurrence of `pattern` in `sequence` that starts in `[start, end)`."""
    n, m = len(sequence), len(pattern)
    end = n if end is None else min(end, n)
    first = pattern[0] if m else None
    hits = []
    for i in range(max(start, 0), min(end, n - m + 1)):
        if sequence[i] == first and list(sequence[i : i + m]) == list(pattern):
            hits.append(i)
    return hits


def think_token_ids(tokenizer: PreTrainedTokenizerBase, think_token: str) -> list[int]:
    """Token ids of the opening think tag, checked to be a real tag of the tokenizer (not split into pieces)."""
    if not think_token:
        raise ValueError("`presafety_think_token` is empty. Set it to the opening think tag of your chat template.")
    ids = tokenizer.encode(think_token, add_special_tokens=False)
    tag = think_token.strip()
    tag_id = tokenizer.convert_tokens_to_ids(tag)
    if not ids or tag_id is None or tag_id == tokenizer.unk_token_id or tag not in tokenizer.get_vocab():
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise ValueError(
            f"`presafety_think_token={think_token!r}` is not a token of the tokenizer "
            f"({type(tokenizer).__name__}): it encodes to {len(ids)} pieces {pieces}. Set `presafety_think_token` to "
            "the opening think tag of your model's chat template (e.g. '<think>'), or use "
            "`presafety_anchor='prompt_end'`, which needs no tag."
        )
    return ids


def anchor_position(
    input_ids: Sequence[int],
    prompt_length: int | None,
    anchor: str,
    think_ids: Sequence[int] | None = None,
) -> int:
    """Index of the anchor token in `input_ids`, or `MISSING_POSITION` when it cannot be found.

    Args:
        input_ids: The tokenized prompt + completion (untruncated).
        prompt_length: Number of prompt tokens at the start of `input_ids` (`None` when unknown, e.g. plain text).
        anchor: `"prompt_end"` or `"think_end"`.
        think_ids: Token ids of the opening think tag (`"think_end"` only).
    """
    if anchor == "prompt_end":
        if prompt_length is None or prompt_length <= 0 or prompt_length > len(input_ids):
            return MISSING_POSITION
        return prompt_length - 1
    if anchor == "think_end":
        if not think_ids:
            raise ValueError("anchor='think_end' needs the token ids of the think tag.")
        m = len(think_ids)
        if prompt_length is None:  # plain text: the first tag opens the reasoning
            hits = find_subsequence(input_ids, think_ids)
            return hits[0] + m - 1 if hits else MISSING_POSITION
        in_prompt = find_subsequence(input_ids, think_ids, 0, prompt_length)
        if in_prompt:
            return in_prompt[-1] + m - 1
        in_completion = find_subsequence(input_ids, think_ids, prompt_length)
        return in_completion[0] + m - 1 if in_completion else MISSING_POSITION
    raise ValueError(f"Unknown anchor {anchor!r}. Choose 'prompt_end' or 'think_end'.")


def normalize_label(value: Any, column: str, index: int) -> float:
    """Maps a dataset label to a float in [0, 1], or `MISSING_LABEL` for an example without a label.

    Accepted: `int` 0/1, `bool`, `float` in [0, 1] (a soft label, e.g. the classifier's probability); `None`, NaN or
    -100 mean "no auxiliary loss for this example".
    """
    if value is None:
        return MISSING_LABEL
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int):
        if value == -100:
            return MISSING_LABEL
        if value in (0, 1):
            return float(value)
        raise ValueError(
            f"Safety label {value!r} in column '{column}' at index {index} is out of range. Use 1 (refuse), 0 "
            "(comply), a probability in [0, 1], or None / -100 for no label."
        )
    if isinstance(value, float):
        if math.isnan(value) or value == -100.0:
            return MISSING_LABEL
        if 0.0 <= value <= 1.0:
            return value
        raise ValueError(
            f"Safety label {value!r} in column '{column}' at index {index} is out of range. Soft labels must lie in "
            "[0, 1] (the classifier's P(refuse)); use None or -100 for no label."
        )
    raise TypeError(
        f"Safety label {value!r} in column '{column}' at index {index} has type {type(value).__name__}. Use an int "
        "0/1, a bool, a float in [0, 1], or None / -100 for no label (map string labels to 0/1 first)."
    )


def describe_indices(indices: Sequence[int], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in indices[:limit])
    return f"[{shown}{', ...' if len(indices) > limit else ''}]"
