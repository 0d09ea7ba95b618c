# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Where the pre-CoT decision is read: the anchor position of each example, and the safety labels it is trained on.

The anchor is found from the *structure* of the chat template, never by searching text the user controls (a `<think>`
typed in a user turn, a system prompt or an earlier assistant turn is text). Every caller describes an example by its
token ids and a [`Boundary`]: where the model's own output starts (`response_start`) and, for conversations, where the
template's generation prompt starts (`generation_start`). Only the tokens between those two, and the first tokens of
the response, are written by the template or the model.

Anchor kinds (https://huggingface.co/papers/2603.17368 reads the last position before the CoT), each one function in
[`ANCHOR_REGISTRY`] (their names, [`ANCHORS`], are the choices of `presafety_anchor`):

- `"prompt_end"`: the last token of the generation prompt, i.e. the position that predicts the first response token.
  With an R1-style template (generation prompt ending in `<think>\\n`) it is the `\\n` after the tag; with a
  Qwen3-style template (the response opens the think block) it is the end of the assistant header.
- `"think_end"`: the last token of the opening think tag, where the template puts it: inside the generation prompt
  (R1 style), else at the very start of the response (Qwen3 style).
- `"reasoning_start"`: the first reasoning position, i.e. the last token of the reasoning's opening `<think>\\n` (the
  think tag and the newline after it), the position whose next token is the first reasoning token, or `</think>` when
  the model skips reasoning. R1 style: the generation prompt ends with `<think>\\n`, so it is the last prompt token;
  Qwen3 style: the response opens with `<think>\\n`, so it is the response's second token. The tied head
  (`presafety_head="tied"`, self-routing) reads the model's own next-token logit of `</think>` there.

A new kind is one function `(input_ids, boundary, spec) -> position` added to [`ANCHOR_REGISTRY`]; the SFT and DPO
trainers, [`SafetyGate`], the evaluation probe and IPO pairs all go through [`locate_anchor`], and every setting of an
anchor kind (trainer config, head config, [`AnchorSpec`]) is checked by [`check_anchor`].
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedTokenizerBase


MISSING_LABEL = -100.0
MISSING_POSITION = -1

# Where the template puts the opening think tag: in the generation prompt (DeepSeek-R1 distills) or at the start of
# the response (Qwen3). Recorded with a trained head, so the gate reads the place training read.
THINK_IN_PROMPT = "think_in_prompt"
THINK_IN_RESPONSE = "think_in_response"
TEMPLATE_FAMILIES = (THINK_IN_PROMPT, THINK_IN_RESPONSE)
# Dataset column: the character offset into a text prompt where the template's generation prompt ends and the model's
# own output begins. IPO pairs carry part of the reasoning in their prompt; the anchor is located relative to this
# offset (written by the code that rendered the template), not to the end of the prompt
RESPONSE_START_COLUMN = "presafety_response_start"


@dataclass(frozen=True)
class Boundary:
    """The template structure of one tokenized example.

    Args:
        response_start (`int`): Index of the first token the model itself produces: the completion's first token, or,
            for an IPO pair whose prompt carries part of the reasoning, the end of the template's generation prompt.
        generation_start (`int` or `None`): Index of the first token of the template's generation prompt (e.g.
            `<|im_start|>assistant\\n`). `None` for text data, where only the tokens adjacent to `response_start`
            are taken as the template's.
    """

    response_start: int
    generation_start: int | None = None


@dataclass(frozen=True)
class AnchorSpec:
    """What [`locate_anchor`] needs besides the example: the kind, and the tokenizer's ids of the think tag.

    Build it with [`AnchorSpec.from_tokenizer`].
    """

    kind: str
    # The opening the anchor looks for: the think tag (`"think_end"`), or the tag and its newline (`"reasoning_start"`)
    think_ids: tuple[int, ...] = ()
    # Tokens that decode to whitespace only: allowed between the think tag and the prompt/response boundary
    blank_ids: frozenset[int] = field(default_factory=frozenset)

    @classmethod
    def from_tokenizer(
        cls, tokenizer: PreTrainedTokenizerBase, kind: str, think_token: str = "<think>"
    ) -> "AnchorSpec":
        check_anchor(kind)
        if kind == "think_end":
            think_ids = tuple(think_token_ids(tokenizer, think_token))
        elif kind == "reasoning_start":
            think_ids = tuple(reasoning_opening_ids(tokenizer, think_token))
        else:
            think_ids = ()
        return cls(kind=kind, think_ids=think_ids, blank_ids=blank_token_ids(tokenizer) if think_ids else frozenset())


AnchorFn = Callable[[Sequence[int], Boundary, AnchorSpec], int]


def locate_anchor(input_ids: Sequence[int], boundary: Boundary, spec: AnchorSpec) -> int:
    """Index of the anchor token in `input_ids`, or `MISSING_POSITION` when the template structure has none."""
    if not 0 < boundary.response_start <= len(input_ids):
        return MISSING_POSITION
    return ANCHOR_REGISTRY[spec.kind](input_ids, boundary, spec)


def _prompt_end(input_ids: Sequence[int], boundary: Boundary, spec: AnchorSpec) -> int:
    return boundary.response_start - 1


def _think_end(input_ids: Sequence[int], boundary: Boundary, spec: AnchorSpec) -> int:
    tag, m, start = list(spec.think_ids), len(spec.think_ids), boundary.response_start
    if boundary.generation_start is not None:
        # R1 style: the tag is part of the generation prompt, which the template writes after the last turn
        hits = find_subsequence(input_ids, tag, boundary.generation_start, start - m + 1)
        if hits:
            return hits[0] + m - 1
    else:
        # Text data: the tag must end the prompt side (whitespace aside)
        end = start
        while end > 0 and input_ids[end - 1] in spec.blank_ids:
            end -= 1
        if end >= m and list(input_ids[end - m : end]) == tag:
            return end - 1
    # Qwen3 style: the response opens the think block
    begin = start
    while begin < len(input_ids) and input_ids[begin] in spec.blank_ids:
        begin += 1
    if list(input_ids[begin : begin + m]) == tag:
        return begin + m - 1
    return MISSING_POSITION


def _reasoning_start(input_ids: Sequence[int], boundary: Boundary, spec: AnchorSpec) -> int:
    opening, m, start = list(spec.think_ids), len(spec.think_ids), boundary.response_start
    if boundary.generation_start is not None:
        # R1 style: the generation prompt, which the template writes after the last turn, holds `<think>\n`
        hits = find_subsequence(input_ids, opening, boundary.generation_start, start - m + 1)
        if hits:
            return hits[0] + m - 1
    elif start >= m and list(input_ids[start - m : start]) == opening:
        return start - 1  # text data whose prompt side ends with `<think>\n`
    # Qwen3 style: the response opens with `<think>\n` (the template's blank tokens before it aside)
    begin = start
    while begin < len(input_ids) and input_ids[begin] in spec.blank_ids:
        begin += 1
    if list(input_ids[begin : begin + m]) == opening:
        return begin + m - 1
    return MISSING_POSITION


# name -> function `(input_ids, boundary, spec) -> position` (`MISSING_POSITION` when the structure has none)
ANCHOR_REGISTRY: dict[str, AnchorFn] = {
    "prompt_end": _prompt_end,
    "think_end": _think_end,
    "reasoning_start": _reasoning_start,
}
ANCHORS = tuple(ANCHOR_REGISTRY)


def check_anchor(kind: Any, field_name: str = "presafety_anchor") -> None:
    """Fails on a name that is not an anchor kind of [`ANCHOR_REGISTRY`], naming the field and the kinds."""
    if kind not in ANCHOR_REGISTRY:
        raise ValueError(
            f"Invalid `{field_name}`: {kind!r}. Choose one of {list(ANCHOR_REGISTRY)} (see `trl_presafety.anchors`)."
        )


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


def reasoning_opening_ids(tokenizer: PreTrainedTokenizerBase, think_token: str) -> list[int]:
    """Token ids of the reasoning's opening, the think tag and one newline (`<think>\\n`): the tag's own id(s) then a
    single newline token, as both template families write it."""
    tag = think_token_ids(tokenizer, think_token)
    ids = tokenizer.encode(think_token + "\n", add_special_tokens=False)
    if ids[: len(tag)] != tag or len(ids) != len(tag) + 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise ValueError(
            f"`{think_token!r} + '\\n'` encodes to {pieces} with this tokenizer ({type(tokenizer).__name__}), not the "
            "tag followed by one newline token, so the first reasoning position (`presafety_anchor="
            "'reasoning_start'`) is not a token boundary. Use `presafety_anchor='think_end'` or 'prompt_end'."
        )
    return ids


def think_close_token(think_token: str) -> str:
    """The closing tag of an opening think tag: `"<think>"` -> `"</think>"`."""
    tag = think_token.strip()
    if not (tag.startswith("<") and tag.endswith(">")) or tag.startswith("</"):
        raise ValueError(
            f"Cannot derive the closing tag of the think token {think_token!r}: expected an opening tag like '<think>'."
        )
    return "</" + tag[1:]


def think_close_token_id(tokenizer: PreTrainedTokenizerBase, think_token: str) -> int:
    """The single token id of the closing think tag (`</think>`), which the tied head reads; fails if the tokenizer
    splits it into pieces."""
    close = think_close_token(think_token)
    ids = tokenizer.encode(close, add_special_tokens=False)
    if len(ids) != 1 or close not in tokenizer.get_vocab():
        raise ValueError(
            f"The closing think tag {close!r} is not a single token of the tokenizer ({type(tokenizer).__name__}): it "
            f"encodes to {tokenizer.convert_ids_to_tokens(ids)}. `presafety_head='tied'` reads the model's next-token "
            "probability of that one token; add it to the tokenizer as a token, or use a 'linear' or 'mlp' head."
        )
    return ids[0]


def blank_token_ids(tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """Ids of the tokens that decode to whitespace only (spaces, newlines), among the short tokens of the vocabulary."""
    vocab = tokenizer.get_vocab()
    # A whitespace token is a few characters in every tokenizer family (byte-level "ĊĊ", SentencePiece "▁", "<0x0A>")
    candidates = [i for token, i in vocab.items() if len(token) <= 8]
    texts = tokenizer.batch_decode([[i] for i in candidates])
    return frozenset(i for i, text in zip(candidates, texts, strict=True) if text and not text.strip())


# --- the template's structure ------------------------------------------------------------------------------------
def _tokenize_messages(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, Any]], add_generation_prompt: bool, **kwargs
) -> list[int]:
    ids = tokenizer.apply_chat_template(
        list(messages), add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=True, **kwargs
    )["input_ids"]
    return list(ids)


def common_prefix_length(ids: Sequence[int], other: Sequence[int]) -> int:
    n = 0
    for a, b in zip(ids, other):
        if a != b:
            break
        n += 1
    return n


def conversation_prompt(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, Any]], **template_kwargs
) -> tuple[list[int], int]:
    """The generation prompt of a conversation and where the template's generation prompt begins in it.

    The conversation is rendered with and without `add_generation_prompt`: they agree up to the end of the last turn,
    and everything after is the template's own text (`<|im_start|>assistant\\n`, `<｜Assistant｜><think>\\n`), which
    no user text can reach.
    """
    prompt_ids = _tokenize_messages(tokenizer, messages, True, **template_kwargs)
    conversation_ids = _tokenize_messages(tokenizer, messages, False, **template_kwargs)
    return prompt_ids, common_prefix_length(conversation_ids, prompt_ids)


def detect_template_family(tokenizer: PreTrainedTokenizerBase, think_token: str = "<think>", **template_kwargs) -> str:
    """`"think_in_prompt"` when the generation prompt opens the think block (R1 style), else `"think_in_response"`."""
    prompt_ids, generation_start = conversation_prompt(
        tokenizer, [{"role": "user", "content": "Hello"}], **template_kwargs
    )
    think_ids = tokenizer.encode(think_token, add_special_tokens=False)
    return THINK_IN_PROMPT if find_subsequence(prompt_ids, think_ids, generation_start) else THINK_IN_RESPONSE


def inference_anchor(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[dict[str, Any]],
    spec: AnchorSpec,
    family: str,
    **template_kwargs,
) -> tuple[list[int], int]:
    """The ids a model sees before it answers `messages`, and the anchor in them, as in training.

    With `"think_end"` (`"reasoning_start"`) and a Qwen3-style template (`family="think_in_response"`), the response
    would open with the think tag (and its newline): they are appended, the way the model would read them.
    """
    prompt_ids, generation_start = conversation_prompt(tokenizer, messages, **template_kwargs)
    opens_response = spec.kind in ("think_end", "reasoning_start") and family == THINK_IN_RESPONSE
    ids = prompt_ids + (list(spec.think_ids) if opens_response else [])
    return ids, locate_anchor(ids, Boundary(len(prompt_ids), generation_start), spec)


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
