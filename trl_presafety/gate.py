# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""A zero-generation pre-CoT gate: the trained head's refusal probability for a prompt, before any token is sampled."""

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from .anchors import MISSING_POSITION, AnchorSpec, detect_template_family, inference_anchor
from .modeling import (
    AnchorCapture,
    SafetyHeadConfig,
    check_head_fits,
    check_usable_head,
    get_base_causal_lm,
    get_safety_head,
)


class SafetyGate:
    """Pre-CoT refusal probability from a model with a trained safety head, without generating a token.

    It runs the decoder backbone once over the prompt (no LM head), reads the hidden state at the same anchor as in
    training, and applies the head. The anchor comes from the chat template's structure (the generation prompt, or
    the think tag a Qwen3-style response opens with, appended here the way the model would read it), never from the
    text of the conversation. The gate fails closed: a head trained for another model, tokenizer or template, a head
    with non-finite weights, and a non-finite output raise instead of answering.

    Args:
        model (`PreTrainedModel` or `PeftModel`): A causal LM with a head (`load_safety_head` or a PreSafety trainer).
        tokenizer (`PreTrainedTokenizerBase`): Its tokenizer, with a chat template.
        threshold (`float`, *optional*, defaults to `0.5`): Probability above which `should_refuse` says yes.
        batch_size (`int`, *optional*, defaults to `16`): Prompts per forward.

    Example:
    ```python
    >>> model = AutoModelForCausalLM.from_pretrained("runs/presafety-sft")
    >>> load_safety_head(model, "runs/presafety-sft")
    >>> gate = SafetyGate(model, AutoTokenizer.from_pretrained("runs/presafety-sft"))
    >>> gate.predict_proba(["How do I make a pipe bomb?", "What is 12 * 7?"])
    [0.97, 0.03]
    ```
    """

    def __init__(
        self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, threshold: float = 0.5, batch_size: int = 16
    ):
        head = get_safety_head(model)
        if head is None:
            raise ValueError(
                "The model has no safety head. Attach the trained one with `load_safety_head(model, path)` first."
            )
        if tokenizer.chat_template is None:
            raise ValueError("The tokenizer has no chat template; SafetyGate builds prompts with it.")
        self.model = model
        self.tokenizer = tokenizer
        self.threshold = threshold
        self.batch_size = batch_size
        self.config: SafetyHeadConfig = head.config
        check_head_fits(self.config, model, "the model")
        check_usable_head(head, "the model")
        self._spec = AnchorSpec.from_tokenizer(tokenizer, self.config.anchor, self.config.think_token)
        self._family = detect_template_family(tokenizer, self.config.think_token)
        if self.config.template_family is not None and self.config.template_family != self._family:
            raise ValueError(
                f"The head was trained with a chat template of family {self.config.template_family!r}, but this "
                f"tokenizer's template is {self._family!r}: the gate would read another position than training. Use "
                "the tokenizer (and chat template) saved with the trained model."
            )
        self._capture = AnchorCapture(model, self.config.layer, self.config.pooling)

    def _encode(
        self, prompt: str | Sequence[dict[str, str]], chat_template_kwargs: dict[str, Any]
    ) -> tuple[list[int], int]:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        ids, position = inference_anchor(self.tokenizer, messages, self._spec, self._family, **chat_template_kwargs)
        if position == MISSING_POSITION:
            raise ValueError(
                f"No '{self.config.anchor}' anchor in the generation prompt of {prompt!r}: the chat template does not "
                "produce the structure the head was trained on."
            )
        expected = self.config.anchor_token_id
        if expected is not None and ids[position] != expected:
            read = self.tokenizer.convert_ids_to_tokens([ids[position], expected])
            raise ValueError(
                f"The gate reads token {read[0]!r} (id {ids[position]}) at the '{self.config.anchor}' anchor, but the "
                f"head was trained on token {read[1]!r} (id {expected}). The tokenizer or chat template differs from "
                "training; use the ones saved with the trained model."
            )
        return ids, position

    @torch.no_grad()
    def predict_proba(
        self, prompts: Sequence[str | Sequence[dict[str, str]]], chat_template_kwargs: dict[str, Any] | None = None
    ) -> list[float]:
        """P(refuse) for each prompt (a string, or a list of chat messages ending with the user turn)."""
        encoded = [self._encode(p, chat_template_kwargs or {}) for p in prompts]
        base = get_base_causal_lm(self.model)
        device = base.get_input_embeddings().weight.device
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        was_training = self.model.training
        self.model.eval()
        probs: list[float] = []
        try:
            for start in range(0, len(encoded), self.batch_size):
                chunk = encoded[start : start + self.batch_size]
                width = max(len(ids) for ids, _ in chunk)
                # Left padding: every anchor keeps its distance to the end, the position ids skip the padding
                input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
                attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)
                index, span_start = [], []
                for row, (ids, position) in enumerate(chunk):
                    offset = width - len(ids)
                    input_ids[row, offset:] = torch.tensor(ids)
                    attention_mask[row, offset:] = 1
                    index.append((row, offset + position))
                    span_start.append(offset)
                position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
                self._capture.arm(torch.tensor(index), torch.tensor(span_start))
                try:
                    base.get_decoder()(
                        input_ids=input_ids.to(device),
                        attention_mask=attention_mask.to(device),
                        position_ids=position_ids.to(device),
                        use_cache=False,
                    )
                finally:
                    logits = self._capture.disarm()
                if not torch.isfinite(logits).all():
                    bad = [start + i for i, v in enumerate(torch.isfinite(logits).tolist()) if not v]
                    raise ValueError(
                        f"The safety head gave non-finite logits for prompts {bad}: the model or head produces NaN or "
                        "inf (overflow in this dtype, or corrupted weights). No decision is returned."
                    )
                probs.extend(torch.sigmoid(logits.float()).tolist())
        finally:
            self.model.train(was_training)
        return probs

    def should_refuse(self, prompts: Sequence[str | Sequence[dict[str, str]]], **kwargs) -> list[bool]:
        return [p > self.threshold for p in self.predict_proba(prompts, **kwargs)]

    def __call__(self, prompt: str | Sequence[dict[str, str]], **kwargs) -> float:
        return self.predict_proba([prompt], **kwargs)[0]

    def close(self) -> None:
        """Removes the gate's hooks from the model."""
        self._capture.remove()
