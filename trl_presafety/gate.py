# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""A zero-generation pre-CoT gate: the trained head's refusal probability for a prompt, before any token is sampled."""

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from .anchors import MISSING_POSITION, anchor_position, think_token_ids
from .modeling import SafetyHeadConfig, get_base_causal_lm, get_safety_head


class SafetyGate:
    """Pre-CoT refusal probability from a model with a trained safety head, without generating a token.

    It runs the decoder backbone once over the prompt (no LM head), reads the hidden state at the same anchor as in
    training, and applies the head. With `anchor="think_end"` and a template whose completion opens the think block
    (Qwen3 style), the think tag is appended to the prompt as input, the way the model would see it.

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
        from .trainer.presafety_mixin import AnchorCapture

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
        inner = getattr(head, "original_module", head)  # PEFT's ModulesToSaveWrapper
        self.config: SafetyHeadConfig = (
            inner.config if hasattr(inner, "config") else head.modules_to_save.default.config
        )
        self._think_ids = (
            think_token_ids(tokenizer, self.config.think_token) if self.config.anchor == "think_end" else None
        )
        self._capture = AnchorCapture(model, self.config.layer, self.config.pooling)

    def _encode(
        self, prompt: str | Sequence[dict[str, str]], chat_template_kwargs: dict[str, Any]
    ) -> tuple[list[int], int]:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        ids = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, **chat_template_kwargs
        )["input_ids"]
        ids = list(ids)
        if self.config.anchor == "prompt_end":
            return ids, len(ids) - 1
        position = anchor_position(ids, len(ids), "think_end", self._think_ids)
        if position == MISSING_POSITION:  # Qwen3 style: the completion would open with the tag
            ids = ids + list(self._think_ids)
            position = len(ids) - 1
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
