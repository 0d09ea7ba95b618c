# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""A zero-generation pre-CoT gate: the trained head's refusal probability for a prompt, before any token is sampled."""

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from .anchors import MISSING_POSITION, AnchorSpec, detect_template_family, inference_anchor
from .conversations import check_prompt, check_prompts
from .generation import check_prompt_lengths, context_length
from .head_io import check_head_fits, check_usable_head
from .modeling import AnchorCapture, SafetyHeadConfig, _is_peft_model, get_base_causal_lm, get_safety_head


logger = logging.getLogger(__name__)
DEFAULT_THRESHOLD = 0.5


def load_causal_lm(name_or_path: str | os.PathLike, **model_kwargs) -> nn.Module:
    """`AutoModelForCausalLM.from_pretrained`, except that a PEFT adapter folder is merged into its base model: the
    weights an evaluation (which merges adapters) or a server runs, so that a gate fitted on them is bound to those."""
    import json

    from transformers import AutoModelForCausalLM

    path = Path(name_or_path)
    adapter = path / "adapter_config.json"
    if adapter.is_file() and not (path / "config.json").is_file():
        from peft import PeftModel

        base = json.loads(adapter.read_text(encoding="utf-8"))["base_model_name_or_path"]
        model = AutoModelForCausalLM.from_pretrained(base, **model_kwargs)
        return PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    return AutoModelForCausalLM.from_pretrained(str(name_or_path), **model_kwargs)


def _tokenizer_source(*candidates: str | os.PathLike | None) -> str:
    """The first candidate folder holding a tokenizer, else the last candidate (a hub id)."""
    for candidate in candidates:
        if candidate is not None and (Path(candidate) / "tokenizer_config.json").is_file():
            return str(candidate)
    return str([c for c in candidates if c is not None][-1])


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
        threshold (`float`, *optional*): P(refuse) at or above which `should_refuse` says yes (the prompt is routed).
            Defaults to the head's calibrated threshold (`threshold` in its `safety_head_config.json`, written by
            `trl-presafety calibrate-gate` or `fit-gate --calibration_dataset`), and to 0.5 when it has none.
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
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        threshold: float | None = None,
        batch_size: int = 16,
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
        self.batch_size = batch_size
        self.config: SafetyHeadConfig = head.config
        if threshold is None:
            threshold = self.config.threshold
            if threshold is None:
                threshold = DEFAULT_THRESHOLD
                logger.info(
                    f"The safety head has no calibrated threshold: routing at P(refuse) >= {DEFAULT_THRESHOLD}. "
                    "Calibrate one on labeled prompts with `trl-presafety calibrate-gate`."
                )
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"Invalid `threshold`: {threshold!r}. Use a probability in [0, 1], or None (calibrated).")
        self.threshold = float(threshold)
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

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        threshold: float | None = None,
        batch_size: int = 16,
        tokenizer: PreTrainedTokenizerBase | None = None,
        base_model: str | None = None,
        allow_other_weights: bool = False,
        **model_kwargs,
    ) -> "SafetyGate":
        """The gate saved in `path`: a training run's output (model weights and head side by side) or a head fitted on
        a frozen model (`trl-presafety fit-gate`: the head only, with the base model named in its config).

        The model's weights must have the fingerprint recorded with the head (`backbone_fingerprint`): a head read on
        other weights (a fine-tune of the same shapes) would give a confident, meaningless probability.

        Args:
            path (`str` or `os.PathLike`): Folder with `safety_head.safetensors` and `safety_head_config.json`.
            threshold (`float`, *optional*): Overrides the head's calibrated threshold.
            batch_size (`int`, *optional*, defaults to `16`): Prompts per forward.
            tokenizer (`PreTrainedTokenizerBase`, *optional*): Defaults to the one in `path`, else the base model's.
            base_model (`str`, *optional*): Where the base model of a fitted head is now, when it moved since fitting
                (its weights must still be those the head was fitted on).
            allow_other_weights (`bool`, *optional*, defaults to `False`): Load the head onto other weights than it
                read when it was fitted or trained (see `load_safety_head`), with a warning.
            **model_kwargs (`Any`, *optional*): Passed to `AutoModelForCausalLM.from_pretrained` (e.g.
                `dtype=torch.bfloat16`).
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from .head_io import load_safety_head

        folder = Path(path)
        config = SafetyHeadConfig.load(folder)
        has_weights = (folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()
        model_path = str(folder) if has_weights else (base_model or config.base_model)
        if model_path is None:
            raise ValueError(
                f"{folder} holds a safety head but no model weights, and its {folder / 'safety_head_config.json'} "
                "names no `base_model`. Pass the output folder of the training run, or refit the head with "
                "`trl-presafety fit-gate`, which records the base model."
            )
        if has_weights:  # a training run's output: its weights (or its adapter over the base) as saved with the head
            model = AutoModelForCausalLM.from_pretrained(model_path, **model_kwargs)
        else:  # a fitted head reads the base model's weights, an adapter merged (as fit-gate read them)
            model = load_causal_lm(model_path, **model_kwargs)
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(_tokenizer_source(folder, model_path))
        # Refused on other weights than the head read when it was fitted or trained (its `backbone_fingerprint`)
        load_safety_head(model, folder, allow_other_weights=allow_other_weights)
        return cls(model, tokenizer, threshold=threshold, batch_size=batch_size)

    def save_pretrained(self, output_dir: str | os.PathLike) -> Path:
        """Writes the gate's head (weights, config) to `output_dir`, and the tokenizer unless the folder has one: what
        [`SafetyGate.from_pretrained`] reads back.

        In a folder without the model's weights (a head fitted on a frozen model, or a head written elsewhere than its
        training run's output), the config names the base model and the fingerprint of its weights, so that
        `SafetyGate.from_pretrained(output_dir)` finds and checks them.
        """
        from .head_io import save_safety_head

        folder = Path(output_dir)
        has_weights = (folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()
        if not has_weights and self.config.base_model is None:
            if _is_peft_model(self.model):
                raise ValueError(
                    f"The gate's model is a PEFT adapter, whose weights {folder} would not hold: write the head into "
                    "the adapter's own folder (the training output), or merge the adapter and fit the gate on the "
                    "merged model."
                )
            self.config.base_model = getattr(get_base_causal_lm(self.model).config, "_name_or_path", None) or None
        head = get_safety_head(self.model)
        # Beside a training run's weights the head keeps the binding the run recorded; a folder without weights is
        # bound to the weights the gate read
        save_safety_head(folder, head.state_dict(), self.config, backbone=None if has_weights else self.model)
        if not (folder / "tokenizer_config.json").is_file():
            self.tokenizer.save_pretrained(folder)
        return folder

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
    def _run(
        self,
        prompts: Sequence[str | Sequence[dict[str, str]]],
        chat_template_kwargs: dict[str, Any] | None,
        states: bool = False,
        progress: bool = False,
    ) -> list[torch.Tensor]:
        """One backbone forward per batch of prompts; per prompt, the head's logit or (`states=True`) the state the
        head reads, in the input order. Prompts are batched by length, so that a batch pads little."""
        prompts = check_prompts(prompts, f"SafetyGate.{'anchor_states' if states else 'predict_proba'}")
        encoded = [self._encode(p, chat_template_kwargs or {}) for p in prompts]
        # Before any forward: a prompt past the model's positions was not read, and gets no decision
        check_prompt_lengths([len(ids) for ids, _ in encoded], context_length(self.model), what="prompts to gate")
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
        base = get_base_causal_lm(self.model)
        device = base.get_input_embeddings().weight.device
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        was_training = self.model.training
        self.model.eval()
        outputs: list[torch.Tensor | None] = [None] * len(encoded)
        starts = range(0, len(order), self.batch_size)
        try:
            for start in tqdm(starts, desc="Anchor states", unit="batch", disable=not progress):
                rows = order[start : start + self.batch_size]
                batch = _left_pad([encoded[i] for i in rows], pad_id)
                self._capture.arm(batch.anchor_index, batch.offsets, states=states)
                try:
                    base.get_decoder()(
                        input_ids=batch.input_ids.to(device),
                        attention_mask=batch.attention_mask.to(device),
                        position_ids=batch.position_ids.to(device),
                        use_cache=False,
                    )
                finally:
                    result = self._capture.disarm()
                finite = torch.isfinite(result.float()).reshape(len(rows), -1).all(-1).tolist()
                if not all(finite):
                    bad = sorted(i for i, ok in zip(rows, finite) if not ok)
                    what = "anchor states" if states else "logits"
                    raise ValueError(
                        f"The safety head gave non-finite {what} for prompts {bad}: the model or head produces NaN or "
                        "inf (overflow in this dtype, or corrupted weights). No decision is returned."
                    )
                for i, value in zip(rows, result.cpu()):
                    outputs[i] = value
        finally:
            self.model.train(was_training)
        return outputs

    def predict_proba(
        self, prompts: Sequence[str | Sequence[dict[str, str]]], chat_template_kwargs: dict[str, Any] | None = None
    ) -> list[float]:
        """P(refuse) for each prompt (a string, or a list of chat messages ending with the user turn)."""
        logits = self._run(prompts, chat_template_kwargs)
        return torch.sigmoid(torch.stack(logits).float()).tolist() if logits else []

    def anchor_states(
        self,
        prompts: Sequence[str | Sequence[dict[str, str]]],
        chat_template_kwargs: dict[str, Any] | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """The hidden states the head reads (`(n, hidden)`, in the model's dtype, on CPU), for fitting a head on them
        (see [`fit_safety_head`]): same template, anchor, layer and pooling as `predict_proba`."""
        states = self._run(prompts, chat_template_kwargs, states=True, progress=progress)
        if not states:
            return torch.zeros((0, self.config.hidden_size))
        return torch.stack(states)

    def should_refuse(self, prompts: Sequence[str | Sequence[dict[str, str]]], **kwargs) -> list[bool]:
        """Whether each prompt is routed: P(refuse) at or above `threshold` (fail closed: a non-finite output
        raises)."""
        return [p >= self.threshold for p in self.predict_proba(prompts, **kwargs)]

    def __call__(self, prompt: str | Sequence[dict[str, str]], **kwargs) -> float:
        """P(refuse) of one prompt (a string or a list of chat messages)."""
        return self.predict_proba([check_prompt(prompt, "SafetyGate(prompt)")], **kwargs)[0]

    def close(self) -> None:
        """Removes the gate's hooks from the model."""
        self._capture.remove()


@dataclass
class _Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    offsets: torch.Tensor
    anchor_index: torch.Tensor


def _left_pad(encoded: Sequence[tuple[list[int], int]], pad_id: int) -> _Batch:
    """Left padding (every anchor keeps its distance to the end); the position ids skip the padding."""
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
    offsets, index = [], []
    for row, (ids, position) in enumerate(encoded):
        offset = width - len(ids)
        input_ids[row, offset:] = torch.tensor(ids)
        attention_mask[row, offset:] = 1
        offsets.append(offset)
        index.append((row, offset + position))
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return _Batch(input_ids, attention_mask, position_ids, torch.tensor(offsets), torch.tensor(index))
