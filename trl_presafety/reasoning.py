# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Reasoning traces and answers: split a generated response, and build prompts with thinking on or off."""

from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase


THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
EMPTY_THINK_BLOCK = "<think>\n\n</think>\n\n"


@dataclass
class SplitResponse:
    """A response split into its reasoning trace and final answer.

    `closed` is False when a think block was opened and never closed (the token cap was hit mid-reasoning, or the
    model never stopped thinking): judges treat such a response as incomplete, its whole text as reasoning.
    """

    reasoning: str | None
    answer: str
    closed: bool


def split_reasoning(text: str, think_open: str = THINK_OPEN, think_close: str = THINK_CLOSE) -> SplitResponse:
    """Splits a response into reasoning and answer, for R1-style outputs (the prompt already opened the think block,
    so the response starts inside it and has only the closing tag) and Qwen3-style outputs (`<think>...</think>`).

    Examples:
    ```python
    >>> split_reasoning("<think>\\nplan\\n</think>\\n\\nHello")
    SplitResponse(reasoning='plan', answer='Hello', closed=True)
    >>> split_reasoning("plan</think>Hello")  # R1 style: the tag was in the prompt
    SplitResponse(reasoning='plan', answer='Hello', closed=True)
    >>> split_reasoning("<think>\\nstill thinking")
    SplitResponse(reasoning='still thinking', answer='', closed=False)
    >>> split_reasoning("Hello")
    SplitResponse(reasoning=None, answer='Hello', closed=True)
    ```
    """
    stripped = text.lstrip()
    has_open = stripped.startswith(think_open)
    if think_close in text:
        head, _, tail = text.partition(think_close)
        if think_open in head:
            head = head.split(think_open, 1)[1]
        return SplitResponse(reasoning=head.strip(), answer=tail.strip(), closed=True)
    if has_open:
        return SplitResponse(reasoning=stripped[len(think_open) :].strip(), answer="", closed=False)
    return SplitResponse(reasoning=None, answer=text.strip(), closed=True)


def template_has_thinking_switch(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the chat template reads `enable_thinking` (Qwen3 style)."""
    template = tokenizer.chat_template or ""
    if isinstance(template, dict):
        template = " ".join(template.values())
    return "enable_thinking" in template


def build_prompt(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str | list[dict[str, str]],
    thinking: bool,
    chat_template_kwargs: dict[str, Any] | None = None,
) -> str:
    """The generation prompt of `prompt` with thinking on or off.

    Off follows SafeChain's "ZeroThink": with a thinking switch in the template (Qwen3), `enable_thinking=False`;
    otherwise the template's generation prompt is completed with an immediately closed, empty think block (adding the
    opening tag when the template does not, as R1-style templates already do).
    """
    if tokenizer.chat_template is None:
        raise ValueError(
            f"The tokenizer ({type(tokenizer).__name__}) has no chat template, so thinking cannot be switched on or "
            "off. Set `tokenizer.chat_template` (or pass `chat_template_path`) to the model's template."
        )
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    kwargs = dict(chat_template_kwargs or {})
    switch = template_has_thinking_switch(tokenizer)
    if switch:
        kwargs.setdefault("enable_thinking", thinking)
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **kwargs)
    if thinking or switch:
        return text
    if text.rstrip().endswith(THINK_OPEN):  # R1 style: the template already opened the block
        return text.rstrip() + "\n\n" + THINK_CLOSE + "\n\n"
    return text + EMPTY_THINK_BLOCK


def reasoning_start_text(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str | list[dict[str, Any]],
    chat_template_kwargs: dict[str, Any] | None = None,
    think_open: str = THINK_OPEN,
) -> str:
    """The text after which the reasoning starts: the thinking generation prompt, plus the opening think tag when the
    template leaves it to the completion (Qwen3 style). R1-style templates already end with `<think>\\n`."""
    text = build_prompt(tokenizer, prompt, thinking=True, chat_template_kwargs=chat_template_kwargs)
    if text.rstrip().endswith(think_open):
        return text
    return text + think_open + "\n"
