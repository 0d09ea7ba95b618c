# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Routed generation: the pre-CoT decision chooses how the model answers.

The safety head's P(refuse) is read at the pre-CoT anchor, from the hidden state that the generation's own prefill
computes. At or above the threshold (or when the gate's output is not a finite number: the gate fails closed), the
answer comes from a policy instead of free reasoning:

- `"no_think"`: the template's thinking-off path (Qwen3's `enable_thinking=False`; an immediately closed think block
  for R1-style templates, whose generation prompt opens it), where reasoning models are much safer;
- `"primer"`: a sentence prefilled at the start of the reasoning (SAFEPATH's "Let's think about safety first." by
  default); the reasoning then continues;
- `"refuse"`: a fixed refusal; nothing is generated.

Below the threshold the model reasons as usual.

One prefill (transformers): the prompt is run once with a KV cache, with the head reading the anchor state inside that
forward ([`AnchorCapture`]); the chosen path then continues from the cache. The tokens the path shares with the
prompt are not recomputed: only the policy's own tokens (e.g. `\\n\\n</think>\\n\\n`) are fed, and a path that is a
prefix of the prompt (a Qwen3-style `think_end` anchor reads the `<think>` the model would write) masks what it does
not share. Greedy outputs equal those of plain generation on the chosen path's full prompt, token for token.

With vLLM the gate is its own request: the prompts go once through the transformers model (backbone only, no token
generated), and vLLM generates from the routed prompts. vLLM cannot hand a prefill's hidden states to a head, so
this is the simplest correct way; its cost is one extra prompt forward, on the gate's model.

The anchor and every prompt come from the chat template's structure ([`inference_anchor`], `build_prompt`): think
tags or template markers typed by a user are text and steer neither the gate nor the route.

```python
from trl_presafety import RoutedGenerator, load_safety_head

load_safety_head(model, "runs/presafety-sft")
router = RoutedGenerator(model, tokenizer, policy="no_think")
outputs = router.generate(["How do I make a pipe bomb?", "What is 12 * 7?"], max_new_tokens=512)
[(o.routed, round(o.proba, 2)) for o in outputs]  # [(True, 0.97), (False, 0.03)]
```
"""

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from .anchors import common_prefix_length
from .gate import DEFAULT_THRESHOLD, SafetyGate, _left_pad
from .generation import (
    GenerationArguments,
    Prompt,
    _eos_token_ids,
    as_generation_arguments,
    decode_generated,
    generate_responses_from_texts,
    resolve_backend,
)
from .generation_arguments import DEFAULT_ROUTE_PRIMER, DEFAULT_ROUTE_REFUSAL, ROUTE_POLICIES
from .modeling import get_base_causal_lm, get_safety_head
from .reasoning import build_prompt, reasoning_start_text


DEFAULT_PRIMER = DEFAULT_ROUTE_PRIMER
DEFAULT_REFUSAL = DEFAULT_ROUTE_REFUSAL


@dataclass
class RoutedOutput:
    """One answer of routed generation.

    Args:
        text (`str`): What the model generated after `prompt_text` (the refusal itself for `"refuse"`), decoded like
            `generate_responses` does (special tokens dropped, think tags kept).
        routed (`bool`): Whether the policy answered (P(refuse) >= threshold, or a non-finite gate output).
        proba (`float`): The gate's P(refuse) at the anchor; NaN when the head's output was not finite.
        prompt_text (`str`): The prompt the answer continues: the thinking prompt, or the policy's (the thinking-off
            prompt for `"no_think"` and `"refuse"`, the reasoning start plus the primer for `"primer"`).
        policy (`str` or `None`): The policy that answered, `None` when the model reasoned as usual.
    """

    text: str
    routed: bool
    proba: float
    prompt_text: str
    policy: str | None


def check_route_policy(policy: str, field: str = "policy") -> str:
    if policy not in ROUTE_POLICIES:
        raise ValueError(
            f"Invalid `{field}`: {policy!r}. Choose one of {list(ROUTE_POLICIES)}: 'no_think' answers with thinking "
            "off, 'primer' prefills a sentence at the start of the reasoning, 'refuse' returns a fixed refusal."
        )
    return policy


def resolve_threshold(threshold: float | None, head_config: Any) -> tuple[float, str]:
    """The routing threshold and where it comes from: the explicit value, the head's calibrated threshold (the
    `threshold` of its `safety_head_config.json`), else 0.5."""
    if threshold is not None:
        value, source = float(threshold), "given"
    elif getattr(head_config, "threshold", None) is not None:
        value, source = float(head_config.threshold), "calibrated (safety_head_config.json)"
    else:
        value, source = DEFAULT_THRESHOLD, "default 0.5 (the head has no calibrated threshold)"
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise ValueError(f"Invalid routing threshold: {value}. Use a probability in [0, 1].")
    return value, source


def should_route(proba: float, threshold: float) -> bool:
    """The route decision: at or above the threshold, and always for a non-finite gate output (fail closed)."""
    return not math.isfinite(proba) or proba >= threshold


def route_prompt(
    tokenizer: PreTrainedTokenizerBase,
    prompt: Prompt,
    policy: str | None,
    primer: str = DEFAULT_PRIMER,
    chat_template_kwargs: dict[str, Any] | None = None,
) -> str:
    """The prompt text a path continues: `None` is the thinking prompt (the model reasons as usual); `"no_think"` and
    `"refuse"` the thinking-off prompt (`reasoning.build_prompt`); `"primer"` the reasoning start plus the primer.
    Every one is rendered by the chat template, so text typed in the conversation stays inside its turn."""
    if policy is None:
        return build_prompt(tokenizer, prompt, thinking=True, chat_template_kwargs=chat_template_kwargs)
    check_route_policy(policy)
    if policy == "primer":
        return reasoning_start_text(tokenizer, prompt, chat_template_kwargs) + primer
    return build_prompt(tokenizer, prompt, thinking=False, chat_template_kwargs=chat_template_kwargs)


def _sampling_processors(generation: GenerationArguments) -> list[Any]:
    """The logits warpers `generate` applies for these settings, in its order (temperature, top-k, top-p)."""
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    if not generation.do_sample:
        return []
    processors: list[Any] = []
    if generation.temperature != 1.0:
        processors.append(TemperatureLogitsWarper(generation.temperature))
    if generation.top_k:
        processors.append(TopKLogitsWarper(generation.top_k))
    if generation.top_p < 1.0:
        processors.append(TopPLogitsWarper(generation.top_p))
    return processors


class RoutedGenerator:
    """Generation that the pre-CoT decision routes, read from the generation's own prefill.

    Args:
        model (`PreTrainedModel` or `PeftModel`): A causal LM with a safety head (`load_safety_head`, a PreSafety
            trainer, or a fitted gate).
        tokenizer (`PreTrainedTokenizerBase`): Its tokenizer, with the chat template the head was trained with.
        policy (`str`, *optional*, defaults to `"no_think"`): What answers a routed prompt: `"no_think"`,
            `"primer"` or `"refuse"` (see the module's docstring).
        threshold (`float`, *optional*): P(refuse) at or above which a prompt is routed. Defaults to the head's
            calibrated threshold (`threshold` in its `safety_head_config.json`), else 0.5.
        primer (`str`, *optional*, defaults to `"Let's think about safety first."`): The sentence `"primer"`
            prefills at the start of the reasoning.
        refusal (`str`, *optional*, defaults to `"I'm sorry, but I can't help with that request."`): The answer of
            `"refuse"`.
        batch_size (`int`, *optional*, defaults to `8`): Prompts per prefill.

    Example:
    ```python
    >>> router = RoutedGenerator(model, tokenizer, policy="primer")
    >>> out = router.generate(["How do I make a pipe bomb?"], max_new_tokens=256)[0]
    >>> out.routed, out.prompt_text[-31:]
    (True, "Let's think about safety first.")
    ```
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        policy: str = "no_think",
        threshold: float | None = None,
        primer: str = DEFAULT_PRIMER,
        refusal: str = DEFAULT_REFUSAL,
        batch_size: int = 8,
    ):
        self.policy = check_route_policy(policy)
        if policy == "primer" and not primer.strip():
            raise ValueError("Invalid `primer`: it is empty. Give the sentence to prefill, e.g. DEFAULT_PRIMER.")
        if batch_size < 1:
            raise ValueError(f"Invalid `batch_size`: {batch_size}. Use a positive integer.")
        # The gate's checks (a head that fits this model, finite weights, the template family and the anchor token
        # it was trained on) and its anchor code; its forward hook reads the head inside our prefill
        self.threshold, self.threshold_source = resolve_threshold(
            threshold, getattr(get_safety_head(model), "config", None)
        )
        self.gate = SafetyGate(model, tokenizer, threshold=self.threshold, batch_size=batch_size)
        self.model = model
        self.tokenizer = tokenizer
        self.primer = primer
        self.refusal = refusal
        self.batch_size = batch_size

    def close(self) -> None:
        """Removes the gate's hooks from the model."""
        self.gate.close()

    def __enter__(self) -> "RoutedGenerator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- the gate --------------------------------------------------------------------------------------------------

    def _messages(self, prompt: Prompt) -> list[dict[str, str]]:
        return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)

    @torch.no_grad()
    def predict_proba(
        self, prompts: Sequence[Prompt], chat_template_kwargs: dict[str, Any] | None = None
    ) -> list[float]:
        """The gate's P(refuse) per prompt, NaN where the head's output is not finite (which routes: fail closed).
        One backbone forward per batch, no token generated: the vLLM path's gate request."""
        kwargs = dict(chat_template_kwargs or {})
        encoded = [self.gate._encode(self._messages(p), kwargs) for p in prompts]
        base = get_base_causal_lm(self.model)
        probs: list[float] = []
        with _eval_mode(self.model):
            for start in range(0, len(encoded), self.batch_size):
                batch = _left_pad(encoded[start : start + self.batch_size], self._pad_id)
                self.gate._capture.arm(batch.anchor_index, batch.offsets)
                try:
                    base.get_decoder()(
                        input_ids=batch.input_ids.to(self._device),
                        attention_mask=batch.attention_mask.to(self._device),
                        position_ids=batch.position_ids.to(self._device),
                        use_cache=False,
                    )
                finally:
                    logits = self.gate._capture.disarm()
                probs.extend(_probabilities(logits))
        return probs

    # --- generation ------------------------------------------------------------------------------------------------

    @property
    def _device(self) -> torch.device:
        return get_base_causal_lm(self.model).get_input_embeddings().weight.device

    @property
    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad) if pad is not None else _eos_token_ids(self.model, self.tokenizer)[0]

    def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        generation: GenerationArguments | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        vllm_model: str | None = None,
        vllm_kwargs: dict[str, Any] | None = None,
        show_progress: bool = False,
        **settings: Any,
    ) -> list[RoutedOutput]:
        """Routed answers to `prompts` (user messages, or chat message lists ending with the user turn).

        Args:
            generation (`GenerationArguments`, *optional*): Decoding settings (backend, `max_new_tokens`, sampling,
                batch size, seed); `**settings` override single fields by keyword, as in `generate_responses`.
            chat_template_kwargs (`dict`, *optional*): Extra `apply_chat_template` arguments (not `enable_thinking`:
                the route sets it).
            vllm_model (`str`, *optional*): With `backend="vllm"`, the folder or hub id vLLM loads (the same weights
                as `model`); defaults to `model.name_or_path`.
            vllm_kwargs (`dict`, *optional*): `vllm.LLM` arguments.

        Returns:
            One [`RoutedOutput`] per prompt, in order.
        """
        generation = as_generation_arguments(generation, **settings)
        if chat_template_kwargs and "enable_thinking" in chat_template_kwargs:
            raise ValueError(
                "Invalid `chat_template_kwargs`: remove `enable_thinking`; the route sets it (thinking on below the "
                "threshold, the policy's prompt above)."
            )
        prompts = list(prompts)
        if not prompts:
            return []
        kwargs = dict(chat_template_kwargs or {})
        target = vllm_model or getattr(self.model, "name_or_path", None) or self.model
        if resolve_backend(generation.backend, target if generation.backend != "transformers" else self.model) == (
            "vllm"
        ):
            return self._generate_vllm(prompts, generation, kwargs, str(target), vllm_kwargs, show_progress)
        return self._generate_transformers(prompts, generation, kwargs, show_progress)

    def _paths(self, prompt: Prompt, routed: bool, kwargs: dict[str, Any]) -> tuple[str | None, str]:
        policy = self.policy if routed else None
        return policy, route_prompt(self.tokenizer, prompt, policy, self.primer, kwargs)

    def _generate_vllm(
        self,
        prompts: list[Prompt],
        generation: GenerationArguments,
        kwargs: dict[str, Any],
        vllm_model: str,
        vllm_kwargs: dict[str, Any] | None,
        show_progress: bool,
    ) -> list[RoutedOutput]:
        # vLLM exposes no hidden state of its prefill: the gate is one backbone forward of its own, then vLLM
        # generates every prompt that the fixed refusal does not answer
        def generate(texts: list[str]) -> list[str]:
            return generate_responses_from_texts(
                vllm_model,
                self.tokenizer,
                texts,
                generation=generation,
                show_progress=show_progress,
                vllm_kwargs=vllm_kwargs,
            )

        return route_from_probabilities(
            self.tokenizer,
            prompts,
            self.predict_proba(prompts, kwargs),
            generate,
            policy=self.policy,
            threshold=self.threshold,
            primer=self.primer,
            refusal=self.refusal,
            chat_template_kwargs=kwargs,
        )

    def _generate_transformers(
        self, prompts: list[Prompt], generation: GenerationArguments, kwargs: dict[str, Any], show_progress: bool
    ) -> list[RoutedOutput]:
        from tqdm.auto import tqdm

        encoded = [self.gate._encode(self._messages(p), kwargs) for p in prompts]
        # Longest first (less padding per batch), as `generate_responses` does
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i][0]))
        outputs: list[RoutedOutput | None] = [None] * len(prompts)
        devices = [self._device] if self._device.type == "cuda" else []
        progress = tqdm(total=len(prompts), desc="Generating (routed)", unit="prompt", disable=not show_progress)
        # A private RNG state: sampling is reproducible from the seed and the caller's RNG is left untouched
        with _eval_mode(self.model), torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(generation.generation_seed)
            for start in range(0, len(order), generation.generation_batch_size):
                indices = order[start : start + generation.generation_batch_size]
                batch = self._generate_batch(
                    [prompts[i] for i in indices], [encoded[i] for i in indices], generation, kwargs
                )
                for i, output in zip(indices, batch):
                    outputs[i] = output
                progress.update(len(indices))
        progress.close()
        return outputs  # type: ignore[return-value]

    def _generate_batch(
        self,
        prompts: list[Prompt],
        encoded: list[tuple[list[int], int]],
        generation: GenerationArguments,
        kwargs: dict[str, Any],
    ) -> list[RoutedOutput]:
        device = self._device
        batch = _left_pad(encoded, self._pad_id)
        size, width = batch.input_ids.shape
        # Both paths are known before the decision, each tokenized as plain generation tokenizes it: the logits of a
        # path that ends inside the prefill (it shares all its tokens with it) are read from the prefill
        candidates = [
            {
                policy: None
                if policy == "refuse"
                else self._tokenize(route_prompt(self.tokenizer, p, policy, self.primer, kwargs))
                for policy in (None, self.policy)
            }
            for p in prompts
        ]
        first_column = width - 1
        for i, paths_of_prompt in enumerate(candidates):
            for path in paths_of_prompt.values():
                if path is not None and common_prefix_length(encoded[i][0], path) == len(path):
                    first_column = min(first_column, int(batch.offsets[i]) + len(path) - 1)
        attention_mask = batch.attention_mask.to(device)
        # The prefill: the generation's first forward, with the gate's hook reading the anchor state inside it
        self.gate._capture.arm(batch.anchor_index, batch.offsets)
        try:
            out = self.model(
                input_ids=batch.input_ids.to(device),
                attention_mask=attention_mask,
                position_ids=batch.position_ids.to(device),
                use_cache=True,
                logits_to_keep=width - first_column,
            )
        finally:
            head_logits = self.gate._capture.disarm()
        probs = _probabilities(head_logits)
        cache, prefill_logits = _output_cache(out), out.logits
        del out

        results: list[RoutedOutput] = []
        paths: list[list[int] | None] = []
        for i, (prompt, proba) in enumerate(zip(prompts, probs)):
            routed = should_route(proba, self.threshold)
            policy, text = self._paths(prompt, routed, kwargs)
            results.append(RoutedOutput(self.refusal if policy == "refuse" else "", routed, proba, text, policy))
            paths.append(candidates[i][policy])
        active = torch.tensor([p is not None for p in paths], device=device)
        if not active.any():
            return results

        # Each path continues from the cache: what it shares with the prefill is kept, the prefill's tokens past
        # that are masked out, and only the path's own tokens are fed (one forward for all rows)
        first_logits = torch.zeros(size, prefill_logits.shape[-1], dtype=torch.float32, device=device)
        extras: list[list[int]] = []
        for i, path in enumerate(paths):
            prefill_ids, offset = encoded[i][0], int(batch.offsets[i])
            if path is None:
                extras.append([])
                continue
            keep = common_prefix_length(prefill_ids, path)
            if keep == len(path):
                # The prefill computed the path's last position: its logits pick the first token
                first_logits[i] = prefill_logits[i, offset + keep - 1 - first_column].float()
                extras.append([])
            else:
                extras.append(path[keep:])
            attention_mask[i, offset + keep :] = 0
        del prefill_logits
        longest = max(len(e) for e in extras)
        if longest:
            block = torch.full((size, longest), self._pad_id, dtype=torch.long)
            block_mask = torch.zeros((size, longest), dtype=attention_mask.dtype)
            for i, tokens in enumerate(extras):
                if tokens:  # left-padded inside the block: every fed row's last column is its own last token
                    block[i, longest - len(tokens) :] = torch.tensor(tokens)
                    block_mask[i, longest - len(tokens) :] = 1
            attention_mask = torch.cat([attention_mask, block_mask.to(device)], dim=1)
            position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, -longest:]
            out = self.model(
                input_ids=block.to(device),
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=True,
                logits_to_keep=1,
                **self._cache_kwarg(cache),
            )
            cache = _output_cache(out)
            fed = torch.tensor([bool(t) for t in extras], device=device)
            first_logits[fed] = out.logits[fed, -1].float()
            del out

        tokens = self._decode(first_logits, attention_mask, cache, active, generation)
        for i, ids in enumerate(tokens):
            if paths[i] is not None:
                results[i].text = decode_generated(self.tokenizer, ids)
        return results

    def _decode(
        self,
        logits: torch.Tensor,
        attention_mask: torch.Tensor,
        cache: Any,
        active: torch.Tensor,
        generation: GenerationArguments,
    ) -> list[list[int]]:
        """Greedy or sampled decoding from the first step's logits, as `generate` decodes (same warpers, same stop
        ids, no forward after the last token)."""
        device = logits.device
        eos = torch.tensor(_eos_token_ids(self.model, self.tokenizer), device=device)
        processors = _sampling_processors(generation)
        unfinished = active.clone()
        generated: list[list[int]] = [[] for _ in range(logits.shape[0])]
        for step in range(generation.max_new_tokens):
            scores = logits
            for processor in processors:
                scores = processor(None, scores)
            if generation.do_sample:
                next_tokens = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
            else:
                next_tokens = torch.argmax(scores, dim=-1)
            next_tokens = torch.where(unfinished, next_tokens, torch.full_like(next_tokens, self._pad_id))
            for i in torch.nonzero(unfinished).flatten().tolist():
                generated[i].append(int(next_tokens[i]))
            unfinished &= ~torch.isin(next_tokens, eos)
            if not unfinished.any() or step == generation.max_new_tokens - 1:
                break
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((attention_mask.shape[0], 1))], 1)
            position_ids = (attention_mask.sum(-1, keepdim=True) - 1).clamp(min=0)
            out = self.model(
                input_ids=next_tokens[:, None],
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=True,
                logits_to_keep=1,
                **self._cache_kwarg(cache),
            )
            cache, logits = _output_cache(out), out.logits[:, -1].float()
        return generated

    def _cache_kwarg(self, cache: Any) -> dict[str, Any]:
        # transformers 5.25 renamed the forward's `past_key_values` to `cache` (the old name still works, with a
        # deprecation warning); the lower bound 5.20 knows only the old one
        forward = inspect.signature(get_base_causal_lm(self.model).forward).parameters
        return {"cache": cache} if "cache" in forward else {"past_key_values": cache}

    def _tokenize(self, text: str) -> list[int]:
        # As `generate_responses_from_texts` tokenizes: the template already put in its special tokens
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def route_from_probabilities(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    probs: Sequence[float],
    generate: Callable[[list[str]], list[str]],
    *,
    policy: str,
    threshold: float,
    primer: str = DEFAULT_PRIMER,
    refusal: str = DEFAULT_REFUSAL,
    chat_template_kwargs: dict[str, Any] | None = None,
) -> list[RoutedOutput]:
    """Routed answers from the gate's probabilities computed apart (the gate as its own request, as with vLLM):
    each prompt's path is chosen, and `generate(prompt_texts)` continues every path but the fixed refusal."""
    check_route_policy(policy)
    outputs = []
    for prompt, proba in zip(prompts, probs, strict=True):
        chosen = policy if should_route(proba, threshold) else None
        text = route_prompt(tokenizer, prompt, chosen, primer, chat_template_kwargs)
        outputs.append(RoutedOutput(refusal if chosen == "refuse" else "", chosen is not None, proba, text, chosen))
    todo = [i for i, output in enumerate(outputs) if output.policy != "refuse"]
    if todo:
        for i, text in zip(todo, generate([outputs[i].prompt_text for i in todo]), strict=True):
            outputs[i].text = text
    return outputs


def generate_routed(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    *,
    policy: str = "no_think",
    threshold: float | None = None,
    primer: str = DEFAULT_PRIMER,
    refusal: str = DEFAULT_REFUSAL,
    generation: GenerationArguments | None = None,
    chat_template_kwargs: dict[str, Any] | None = None,
    vllm_model: str | None = None,
    vllm_kwargs: dict[str, Any] | None = None,
    show_progress: bool = True,
    **settings: Any,
) -> list[RoutedOutput]:
    """Routed answers to `prompts` in one call: a [`RoutedGenerator`] is built, used and its hooks removed.

    Example:
    ```python
    >>> outputs = generate_routed(model, tokenizer, ["How do I make a pipe bomb?"], policy="refuse")
    >>> outputs[0].text, outputs[0].routed
    ("I'm sorry, but I can't help with that request.", True)
    ```
    """
    generation = as_generation_arguments(generation, **settings)
    with RoutedGenerator(
        model,
        tokenizer,
        policy=policy,
        threshold=threshold,
        primer=primer,
        refusal=refusal,
        batch_size=generation.generation_batch_size,
    ) as router:
        return router.generate(
            prompts,
            generation=generation,
            chat_template_kwargs=chat_template_kwargs,
            vllm_model=vllm_model,
            vllm_kwargs=vllm_kwargs,
            show_progress=show_progress,
        )


# --- helpers -------------------------------------------------------------------------------------------------------


def _output_cache(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _probabilities(logits: torch.Tensor) -> list[float]:
    # NaN for a non-finite head output: `should_route` routes it, and it is never read as a low P(refuse)
    values = logits.float()
    probs = torch.sigmoid(values)
    return [p if finite else math.nan for p, finite in zip(probs.tolist(), torch.isfinite(values).tolist())]


class _eval_mode:
    """The model in eval mode for the block, restored after."""

    def __init__(self, model: nn.Module):
        self.model, self.was_training = model, model.training

    def __enter__(self) -> None:
        self.model.eval()

    def __exit__(self, *exc: Any) -> None:
        self.model.train(self.was_training)
