# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Prompts of the evaluation: the chat turns of an example, its generation prompt with thinking on or off, the work
items (example x thinking mode x decoding setting) and the split of a generated response into reasoning and answer."""

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..reasoning import THINK_CLOSE, THINK_OPEN, build_prompt, split_reasoning
from .cache import stable_hash
from .config import DecodingSetting, EvalConfig


@dataclass
class WorkItem:
    """One generation: an example, a thinking mode and a decoding setting, with the exact prompt text."""

    key: str
    example: dict[str, Any]
    thinking: str
    setting: DecodingSetting
    prompt_text: str


def eval_messages(example: dict[str, Any], config: EvalConfig) -> list[dict[str, str]]:
    """The chat turns of an example: optional system turn, then the user turn (math problems get the template)."""
    content = example["prompt"]
    if example["category"] == "math":
        content = config.math_prompt_template.replace("{prompt}", content)
    messages = [{"role": "system", "content": config.system_prompt}] if config.system_prompt else []
    return messages + [{"role": "user", "content": content}]


def build_eval_prompt(example: dict[str, Any], tokenizer: Any, thinking: str, config: EvalConfig) -> str:
    """The generation prompt text of `example` with thinking `"on"` or `"off"` (see `reasoning.build_prompt`)."""
    return build_prompt(
        tokenizer,
        eval_messages(example, config),
        thinking=thinking == "on",
        chat_template_kwargs=config.chat_template_kwargs,
    )


def prompt_opens_think_block(prompt_text: str) -> bool:
    """Whether the prompt ends inside an opened think block (R1-style templates), so the response starts in the CoT."""
    return prompt_text.rfind(THINK_OPEN) > prompt_text.rfind(THINK_CLOSE)


def split_generated(prompt_text: str, response: str) -> dict[str, Any]:
    """Reasoning / answer of a generated response, accounting for a think block the prompt already opened.

    With an R1-style prompt ending in `<think>\\n`, a response without `</think>` is all reasoning and unclosed (the
    cap was hit, or the model never stopped thinking), not an answer.
    """
    text = THINK_OPEN + response if prompt_opens_think_block(prompt_text) else response
    split = split_reasoning(text)
    return {"reasoning": split.reasoning, "answer": split.answer, "closed": split.closed}


def check_eval_prompt_lengths(
    examples: Sequence[dict[str, Any]], tokenizer: Any, model: Any, config: EvalConfig
) -> None:
    """Refuses, before any model is loaded, the examples whose prompt (in any thinking mode) is longer than the model's
    context: they would get no readable answer (see `generation.check_prompt_lengths`)."""
    from ..generation import check_prompt_lengths, context_length

    context = context_length(model if model is not None else config.model_name_or_path, config.vllm_max_model_len)
    if context is None:
        return
    names, texts = [], []
    for example in examples:
        for mode in config.thinking_modes:
            names.append(f"{example['dataset']}/{example['id']} (thinking {mode})")
            texts.append(build_eval_prompt(example, tokenizer, mode, config))
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
    check_prompt_lengths(lengths, context, names, what="evaluation prompts", max_new_tokens=config.max_new_tokens)


def build_work_items(
    examples: Sequence[dict[str, Any]],
    tokenizer: Any,
    config: EvalConfig,
    fingerprint: str,
    route_key: str | None = None,
) -> list[WorkItem]:
    """Every (example, thinking mode, decoding setting) to generate, in a fixed order (mode, setting, example).

    With routing (`route_key`, what the route depends on: policy, threshold, head), thinking-on generations are keyed
    by it too; unrouted keys are unchanged, so an unrouted run's cache stays valid."""
    items = []
    prompts = {
        (example["id"], mode): build_eval_prompt(example, tokenizer, mode, config)
        for example in examples
        for mode in config.thinking_modes
    }
    for mode in config.thinking_modes:
        for setting in config.decoding_settings:
            for example in examples:
                if setting not in config.settings_for(example["category"]):
                    continue
                prompt_text = prompts[(example["id"], mode)]
                parts = ["generation", fingerprint, prompt_text, asdict(setting), config.max_new_tokens, config.seed]
                if route_key is not None and mode == "on":
                    parts.append(route_key)
                key = stable_hash(*parts)
                items.append(WorkItem(key, example, mode, setting, prompt_text))
    return items
