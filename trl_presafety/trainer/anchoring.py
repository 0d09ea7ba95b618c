# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Where the anchor of a training example is, for both trainers: the template structure of its prompt (one
function for SFT rows and DPO pairs), and one report of the labeled examples left without a usable anchor."""

import json
from typing import Any

from accelerate.logging import get_logger
from trl.data_utils import _tokenize, is_conversational

from ..anchors import RESPONSE_START_COLUMN, Boundary, common_prefix_length, conversation_prompt, describe_indices


logger = get_logger(__name__)

MERGE_REASON = (
    "the prompt's last tokens merge with the completion's first, so the anchor token the gate reads at inference is "
    "absent in training; `presafety_anchor='think_end'` reads the tag, which no merge touches, or start completions "
    "on a token boundary"
)
NOT_PREFIX_REASON = (
    "the prompt rendered alone, with the chat template's generation prompt (what the gate reads), is not a prefix of "
    "prompt + completion rendered together: the template renders the assistant turn without what its generation "
    "prompt ends with (the stock DeepSeek-R1 template drops the generation prompt's `<think>` and the reasoning from "
    "assistant turns), so the rendered completion does not start where the generation prompt ends and training would "
    "read another position than inference. Train with a training template whose assistant turn keeps the generation "
    "prompt and the reasoning (`chat_template_path`, as recipes/DeepSeek-R1-Distill-Qwen-7B/sft/"
    "deepseek_r1_distill_training.jinja ships)"
)
MISSING_ANCHOR_FIX = "check the chat template, `presafety_anchor`, `presafety_think_token` and `max_length`"


def prompt_boundary(
    example: dict[str, Any],
    prompt: Any,
    token_ids: list[int],
    processing_class: Any,
    chat_template: str | None = None,
) -> tuple[Boundary, int]:
    """The template structure of `prompt` (a conversation or a text) and how many leading tokens of the prompt
    tokenized alone `token_ids` (the tokenized example: SFT's `input_ids`, DPO's `prompt_ids`) shares.

    Found from the template's structure, the way TRL finds the completion start, never from the text: a conversation
    is rendered with and without its generation prompt; a text prompt ends where `presafety_response_start` says (an
    IPO pair's prompt carries part of the reasoning), else at its end. The shared prefix is shorter than the boundary
    when the prompt's last tokens merged with the completion's first.
    """
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    if is_conversational({"prompt": prompt}):
        prompt_ids, generation_start = conversation_prompt(
            tokenizer, prompt, **_template_kwargs(example, chat_template)
        )
    else:
        offset = example.get(RESPONSE_START_COLUMN)
        head = prompt if offset is None else prompt[:offset]
        prompt_ids, generation_start = _tokenize(processing_class, head)["input_ids"], None
    return Boundary(len(prompt_ids), generation_start), common_prefix_length(prompt_ids, token_ids)


def _template_kwargs(example: dict[str, Any], chat_template: str | None) -> dict[str, Any]:
    """What the chat template of an example is rendered with, as TRL renders it: its `tools` (a JSON string in a
    dataset, decoded), its `chat_template_kwargs`, and the trainer's template override."""
    tools = example.get("tools")
    tools = json.loads(tools) if isinstance(tools, str) else tools
    kwargs = {"tools": tools, **(example.get("chat_template_kwargs") or {})}
    if chat_template is not None:
        kwargs["chat_template"] = chat_template
    return kwargs


def prompt_is_text_prefix(
    example: dict[str, Any], prompt: Any, token_ids: list[int], processing_class: Any, chat_template: str | None = None
) -> bool:
    """Whether the text of the tokenized example starts with the text of the prompt rendered alone (with the
    generation prompt). True when the tokens differ only by a merge at the boundary; false when the template renders
    the assistant turn differently from its generation prompt (asked only for examples whose tokens differ)."""
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    if is_conversational({"prompt": prompt}):
        prompt_ids, _ = conversation_prompt(tokenizer, prompt, **_template_kwargs(example, chat_template))
        return tokenizer.decode(token_ids).startswith(tokenizer.decode(prompt_ids))
    return True  # a text prompt is a prefix of prompt + completion by construction


def report_missing_anchors(
    name: str,
    total: int,
    policy: str,
    anchor: str,
    max_length: int | None,
    not_found: list[int] = (),
    cut: list[int] = (),
    merged: list[int] = (),
    not_prefix: list[int] = (),
) -> None:
    """The labeled examples of the `name` dataset without a usable anchor, by cause: stops under the `"error"`
    policy, else warns that they train without the auxiliary loss."""
    for missing, reason in (
        (not_found, f"anchor '{anchor}' not found"),
        (cut, f"anchor cut by max_length={max_length}"),
        (merged, MERGE_REASON),
        (not_prefix, NOT_PREFIX_REASON),
    ):
        if not missing:
            continue
        message = (
            f"{len(missing)} of {total} labeled examples of the {name} dataset have no usable pre-CoT anchor "
            f"({reason}); indices {describe_indices(missing)}."
        )
        if policy == "error":
            raise ValueError(
                f"{message} Set `presafety_on_missing_anchor='skip'` to train them without the auxiliary loss, or fix "
                f"the data ({MISSING_ANCHOR_FIX})."
            )
        logger.warning(
            f"{message} They are trained without the auxiliary loss (`presafety_on_missing_anchor='skip'`)."
        )


def missing_anchor_error(index: int, anchor: str, max_length: int | None) -> ValueError:
    """The error of the `"error"` policy on a streamed dataset, which cannot be scanned up front."""
    return ValueError(
        f"Example {index} of a streamed dataset has no usable pre-CoT anchor '{anchor}' (not found, cut by "
        f"max_length={max_length}, or merged with the completion). Set `presafety_on_missing_anchor='skip'` to train "
        f"it without the auxiliary loss, or {MISSING_ANCHOR_FIX}."
    )
