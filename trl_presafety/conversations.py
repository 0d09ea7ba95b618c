# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The shapes a prompt and a training row may take, checked at every public entry point before anything is computed.

A prompt is a string, or a conversation: a list of chat messages, dicts with a `role` (`"system"`, `"user"`,
`"assistant"`, `"tool"`) and a `content` (a string). Training rows are TRL's: `messages` (a conversation), `text`, or
`prompt` + `completion` (both strings, or both conversations), and `prompt` + `chosen` + `rejected` for preferences.

ShareGPT rows (`{"from": "human", "value": ...}` messages, a `conversations` column) work as in TRL, whose
`maybe_convert_to_chatml` renames `from`/`value` to `role`/`content` and `conversations` to `messages`; the ShareGPT role
names `human` and `gpt` become `user` and `assistant` (TRL keeps them, and chat templates do not know them).
"""

from collections.abc import Mapping, Sequence
from typing import Any


PROMPT_SHAPES = (
    "a string, or a list of chat messages ({'role': 'user', 'content': '...'} dicts, roles among "
    "system/user/assistant/tool, content a string)"
)
ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "user": "user", "assistant": "assistant", "system": "system"}
MESSAGE_COLUMNS = ("prompt", "completion", "chosen", "rejected", "messages", "conversations")


def is_sharegpt_message(message: Any) -> bool:
    return isinstance(message, Mapping) and "from" in message and "value" in message and "role" not in message


def convert_sharegpt(messages: Sequence[Any]) -> list[Any]:
    """ShareGPT messages (`from`/`value`) as chat messages (`role`/`content`), roles `human`/`gpt` as
    `user`/`assistant`; other messages unchanged."""
    converted = []
    for message in messages:
        if is_sharegpt_message(message):
            role = message["from"]
            extra = {k: v for k, v in message.items() if k not in ("from", "value")}
            converted.append({"role": SHAREGPT_ROLES.get(role, role), "content": message["value"], **extra})
        else:
            converted.append(message)
    return converted


def convert_sharegpt_example(example: dict[str, Any]) -> dict[str, Any]:
    """TRL's `maybe_convert_to_chatml`, with the ShareGPT role names mapped: a row in the chat-message format."""
    example = dict(example)
    for key in MESSAGE_COLUMNS:
        if isinstance(example.get(key), list):
            example[key] = convert_sharegpt(example[key])
    if "conversations" in example:
        example["messages"] = example.pop("conversations")
    return example


def is_sharegpt_example(example: Mapping[str, Any]) -> bool:
    return any(
        isinstance(example.get(key), list) and any(is_sharegpt_message(m) for m in example[key])
        for key in MESSAGE_COLUMNS
    )


def check_messages(messages: Any, where: str) -> list[dict[str, Any]]:
    """A conversation, checked: a non-empty list of `{'role', 'content'}` dicts (ShareGPT messages converted)."""
    if isinstance(messages, str) or not isinstance(messages, Sequence) or not messages:
        raise TypeError(
            f"{where} must be a non-empty list of chat messages, got {type(messages).__name__} "
            f"{_preview(messages)}. Accepted: {PROMPT_SHAPES}."
        )
    messages = convert_sharegpt(messages)
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise TypeError(
                f"{where}, message {i}: a chat message is a dict with `role` and `content`, got "
                f"{type(message).__name__} {_preview(message)}."
            )
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or role not in ROLES:
            raise ValueError(
                f"{where}, message {i}: `role` is {role!r}; use one of {list(ROLES)} "
                "(ShareGPT's 'human'/'gpt' with `from`/`value` keys are converted)."
            )
        if not isinstance(content, str) and not (isinstance(content, list) and content):
            raise ValueError(
                f"{where}, message {i} ({role}): `content` is {content!r} ({type(content).__name__}); it must be a "
                "string (the text of the message)."
            )
    return list(messages)


def check_prompt(prompt: Any, where: str = "The prompt") -> str | list[dict[str, Any]]:
    """One prompt, checked against [`PROMPT_SHAPES`]: returned as a string or a checked conversation."""
    if isinstance(prompt, str):
        return prompt
    if prompt is None or isinstance(prompt, (Mapping, bytes, int, float)):
        raise TypeError(f"{where} is {type(prompt).__name__} {_preview(prompt)}; a prompt is {PROMPT_SHAPES}.")
    return check_messages(prompt, where)


def check_prompts(prompts: Any, where: str) -> list[str | list[dict[str, Any]]]:
    """A batch of prompts: a list (or tuple) of prompts, each checked. A lone string is refused (it would be read as
    one prompt per character)."""
    if isinstance(prompts, str):
        raise TypeError(
            f"{where} takes a list of prompts, got a string ({_preview(prompts)}): it would be read one character per "
            f"prompt. Pass [prompt] (or call the object with one prompt)."
        )
    if prompts is None or isinstance(prompts, Mapping) or not isinstance(prompts, Sequence):
        raise TypeError(
            f"{where} takes a list of prompts, got {type(prompts).__name__} {_preview(prompts)}. Each prompt is "
            f"{PROMPT_SHAPES}."
        )
    if prompts and all(isinstance(p, Mapping) for p in prompts):
        raise TypeError(
            f"{where} takes a list of prompts, got one list of chat messages: wrap it as [messages] for one "
            "conversation."
        )
    return [check_prompt(p, f"{where}: prompt {i}") for i, p in enumerate(prompts)]


def check_training_row(example: Mapping[str, Any], index: int, preference: bool = False) -> None:
    """A training row in one of TRL's shapes (see the module's docstring), or a `TypeError`/`ValueError` naming the
    row, the column and the accepted shapes."""
    where = f"Row {index}"
    if "messages" in example and example["messages"] is not None:
        if isinstance(example["messages"], str):
            raise TypeError(
                f"{where}: `messages` is a string ({_preview(example['messages'])}), not a list of chat messages. "
                "Store the conversation as a list of {'role', 'content'} dicts, or put plain text in a `text` column."
            )
        check_messages(example["messages"], f"{where}, column `messages`")
        return
    keys = ("chosen", "rejected") if preference else ("completion",)
    prompt = example.get("prompt")
    present = [k for k in keys if example.get(k) is not None]
    if prompt is None or not present:
        return  # `text`, tokenized rows, or rows TRL itself reports
    conversational = [isinstance(example[k], list) for k in present]
    if isinstance(prompt, str) and any(conversational):
        raise TypeError(
            f"{where}: `prompt` is a string but `{present[conversational.index(True)]}` is a list of chat messages. "
            "Use one format for both: a list of messages for the prompt too ([{'role': 'user', 'content': prompt}]), "
            "or strings for both."
        )
    if isinstance(prompt, list):
        check_messages(prompt, f"{where}, column `prompt`")
        for key in present:
            if not isinstance(example[key], list):
                raise TypeError(
                    f"{where}: `prompt` is a list of chat messages but `{key}` is {type(example[key]).__name__}. Use "
                    f"one format for both: `{key}` as [{{'role': 'assistant', 'content': ...}}], or strings for both."
                )
            check_messages(example[key], f"{where}, column `{key}`")


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
