# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Self-routing SFT data: the safe model's decision becomes the model's own first reasoning token.

For a prompt the safe model refuses (`safety_label` 1: the LRM with thinking off refused it), the thinking-on training
target is the safe model's own thinking-off answer after an immediately closed think block; every other prompt keeps
its reasoning trace. Trained on such rows, the model learns to close the think block at once when it decides to
refuse and to reason otherwise, so the decision is the token it generates at the first reasoning position. With
`presafety_head="tied"` the auxiliary loss trains that very token (see `trl_presafety.modeling.TiedSafetyHead`), and
P(refuse) is its probability, which any engine returns (vLLM `logprobs`).

The closed block is `<think>\\n</think>\\n\\n` + answer, in both template families: the reasoning opens with
`<think>\\n` in every row (R1-style templates put it in the generation prompt, Qwen3-style ones at the start of the
response), so what follows it is one token, `</think>` or the first reasoning token. Qwen3's own thinking-off block,
`<think>\\n\\n</think>\\n\\n`, would hide the decision in the blank line: real Qwen3 tokenizers merge `\\n\\n` into one
token, and at the position after `<think>` the choice would be between two newline tokens, not `</think>`.

Rows keep every column, `safety_label` (the safe model's decision) and `harmful` (the prompt's harmfulness) with their
meanings; `self_routed` says whether the row's target was replaced.
"""

import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

from ..anchors import MISSING_LABEL, normalize_label
from ..reasoning import THINK_CLOSE, THINK_OPEN


logger = logging.getLogger(__name__)

# The target of a self-routed row starts with it; the reasoning of every other row opens with `<think>\n` too
CLOSED_THINK_PREFIX = f"{THINK_OPEN}\n{THINK_CLOSE}\n\n"
SELF_ROUTED_COLUMN = "self_routed"
RESPONSE_COLUMN = "safe_response"


def closed_think_completion(answer: str) -> str:
    """The assistant content of a self-routed row: an immediately closed think block, then `answer`."""
    return CLOSED_THINK_PREFIX + answer.strip()


def thinking_off_answer_problem(answer: Any) -> str | None:
    """Why a thinking-off answer cannot be a training target (`None` when it can): missing, empty, or carrying a think
    tag (the model reopened or closed a block it was not in)."""
    if not isinstance(answer, str):
        return "no_answer"
    if THINK_OPEN in answer or THINK_CLOSE in answer:
        return "stray_think_tag"
    if not answer.strip():
        return "empty_answer"
    return None


def is_self_routed(response: str) -> bool:
    """Whether a thinking-on response closed its think block at once, with no reasoning (`"<think>\\n</think>..."`,
    or `"</think>..."` when an R1-style prompt opened the block): the model routed itself to answer without
    reasoning."""
    from ..reasoning import split_reasoning

    split = split_reasoning(response)
    return split.closed and split.reasoning == "" and THINK_CLOSE in response


def decision_prompt_ids(
    tokenizer: Any,
    prompt: str | list[dict[str, Any]],
    think_token: str = THINK_OPEN,
    chat_template_kwargs: dict[str, Any] | None = None,
) -> list[int]:
    """The token ids after which a self-routing model makes its decision: the thinking-on generation prompt, plus the
    opening `<think>\\n` when the template leaves it to the response (Qwen3 style). The last id is the first reasoning
    position (`presafety_anchor="reasoning_start"`); the next token's probability of being `</think>` is P(refuse).

    With an engine that returns prompt log-probabilities (vLLM: `SamplingParams(max_tokens=1, prompt_logprobs=0)` on
    `TokensPrompt(prompt_token_ids=ids + [close_id])`), the last prompt log-probability is log P(refuse); the same ids
    with `logprobs=k` return it among the first token's top k when it is there.
    """
    from ..anchors import MISSING_POSITION, AnchorSpec, detect_template_family, inference_anchor

    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    kwargs = dict(chat_template_kwargs or {})
    spec = AnchorSpec.from_tokenizer(tokenizer, "reasoning_start", think_token)
    family = detect_template_family(tokenizer, think_token, **kwargs)
    ids, position = inference_anchor(tokenizer, messages, spec, family, **kwargs)
    if position == MISSING_POSITION or position != len(ids) - 1:
        raise ValueError(
            f"The chat template's thinking-on generation prompt does not end at the first reasoning position "
            f"({think_token!r} + newline) for {prompt!r}: thinking is off, or the template is not one of the two "
            "families (think tag in the generation prompt or at the start of the response)."
        )
    return ids


def _set_assistant_content(messages: Any, content: str, column: str, index: int) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], Mapping):
        raise ValueError(
            f"Row {index}: column '{column}' is {type(messages).__name__}, not a list of chat messages. Self-routing "
            "rewrites conversational rows (a 'completion' or 'messages' list ending with the assistant turn), as "
            "`build-sft` writes them."
        )
    if messages[-1].get("role") != "assistant":
        raise ValueError(
            f"Row {index}: the last message of '{column}' has role {messages[-1].get('role')!r}, not 'assistant'; "
            "there is no training target to replace."
        )
    return [*(dict(m) for m in messages[:-1]), {**messages[-1], "content": content}]


def self_routing_row(
    row: Mapping[str, Any],
    index: int,
    label_column: str = "safety_label",
    response_column: str = RESPONSE_COLUMN,
) -> tuple[dict[str, Any], str]:
    """One row's self-routing version and what happened to it: `"self_routed"` (target replaced), `"kept_trace"`
    (safe model complied: reasoning trace kept), `"unlabeled"` (no label: kept) or `"kept_trace:<problem>"` (refused,
    but the thinking-off answer is unusable: kept, see [`thinking_off_answer_problem`])."""
    column = "completion" if "completion" in row else "messages" if "messages" in row else None
    if column is None:
        raise ValueError(
            f"Row {index} has no 'completion' or 'messages' column (columns: {sorted(row)}). Self-routing keeps the "
            "reasoning traces of the prompts the safe model answers, so it needs SFT rows: label the rows of "
            "`trl-presafety build-sft` (or any prompt/completion set) with `trl-presafety label`."
        )
    label = normalize_label(row.get(label_column), label_column, index)
    out = dict(row)
    if label == MISSING_LABEL:
        outcome = "unlabeled"
    elif label < 0.5:
        outcome = "kept_trace"
    else:
        problem = thinking_off_answer_problem(row.get(response_column))
        if problem is None:
            out[column] = _set_assistant_content(
                row[column], closed_think_completion(row[response_column]), column, index
            )
            outcome = "self_routed"
        else:
            outcome = f"kept_trace:{problem}"
    out[SELF_ROUTED_COLUMN] = outcome == "self_routed"
    return out, outcome


def self_routing_dataset(
    dataset: Any, label_column: str = "safety_label", response_column: str = RESPONSE_COLUMN
) -> tuple[Any, dict[str, int]]:
    """The self-routing version of labeled SFT rows (a `datasets.Dataset` with `safety_label` and `safe_response`, as
    `trl-presafety label` writes them), and the count of each outcome of [`self_routing_row`].

    Example:
    ```python
    >>> from trl_presafety.labeling import load_labeled_dataset
    >>> rows, counts = self_routing_dataset(load_labeled_dataset("runs/tiny-labels"))
    >>> counts
    {'self_routed': 42, 'kept_trace': 98}
    ```
    """
    from datasets import Dataset

    missing = [c for c in (label_column, response_column) if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"The dataset has no {missing} column(s) (columns: {dataset.column_names}). Self-routing needs the safe "
            f"model's decision ('{label_column}') and its thinking-off answer ('{response_column}'): both are written "
            "by `trl-presafety label`."
        )
    rows, counts = [], Counter()
    for index, row in enumerate(dataset):
        out, outcome = self_routing_row(row, index, label_column, response_column)
        rows.append(out)
        counts[outcome] += 1
    unusable = {k: v for k, v in counts.items() if k.startswith("kept_trace:")}
    if unusable:
        logger.warning(
            f"{sum(unusable.values())} prompts the safe model refused keep their reasoning trace, because their "
            f"thinking-off answer cannot be a target ({unusable}). Check the label folder's `{response_column}`."
        )
    features = dataset.features.copy()
    from datasets import Value

    features[SELF_ROUTED_COLUMN] = Value("bool")
    return Dataset.from_list(rows, features=features), dict(sorted(counts.items()))
