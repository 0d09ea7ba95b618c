# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The safety head, its loss, and attaching, saving and re-loading it on a causal LM.

The head reads the LRM's hidden state at the pre-CoT anchor (the last position before the chain-of-thought) and
predicts the safety decision signal of the safe model (1 = refuse, 0 = comply), following "Towards Safer Large
Reasoning Models by Promoting Safety Decision-Making before Chain-of-Thought Generation"
(https://huggingface.co/papers/2603.17368).
"""

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


SAFETY_HEAD_ATTR = "safety_head"
SAFETY_HEAD_CONFIG_NAME = "safety_head_config.json"
HEAD_TYPES = ("linear", "mlp")
POOLINGS = ("last", "mean")
ANCHORS = ("prompt_end", "think_end")


@dataclass
class SafetyHeadConfig:
    """What a saved head needs to be rebuilt and read at the right place.

    Args:
        hidden_size (`int`): Width of the hidden state the head reads.
        head_type (`str`, *optional*, defaults to `"linear"`): `"linear"` (`Linear(hidden, 1)`) or `"mlp"`.
        mlp_hidden_size (`int`, *optional*): Width of the MLP's hidden layer; defaults to `hidden_size`.
        dropout (`float`, *optional*, defaults to `0.0`): Dropout on the head's input.
        layer (`int`, *optional*): Decoder layer whose output is read; `None` is the final hidden state (after the
            final norm).
        pooling (`str`, *optional*, defaults to `"last"`): `"last"` reads the anchor token; `"mean"` averages the
            prompt span up to and including the anchor (SafeKey-style).
        anchor (`str`, *optional*, defaults to `"prompt_end"`): `"prompt_end"` or `"think_end"`.
        think_token (`str`, *optional*, defaults to `"<think>"`): Opening think tag, for `anchor="think_end"`.
    """

    hidden_size: int
    head_type: str = "linear"
    mlp_hidden_size: int | None = None
    dropout: float = 0.0
    layer: int | None = None
    pooling: str = "last"
    anchor: str = "prompt_end"
    think_token: str = "<think>"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.head_type not in HEAD_TYPES:
            raise ValueError(f"Unknown safety head type {self.head_type!r}. Choose one of {list(HEAD_TYPES)}.")
        if self.pooling not in POOLINGS:
            raise ValueError(f"Unknown pooling {self.pooling!r}. Choose one of {list(POOLINGS)}.")
        if self.anchor not in ANCHORS:
            raise ValueError(f"Unknown anchor {self.anchor!r}. Choose one of {list(ANCHORS)}.")

    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / SAFETY_HEAD_CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "SafetyHeadConfig":
        path = Path(directory) / SAFETY_HEAD_CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"No {SAFETY_HEAD_CONFIG_NAME} in {directory}. It is written by PreSafetySFTTrainer/PreSafetyDPOTrainer "
                "`save_model`; pass the output or checkpoint folder of such a run."
            )
        return cls(**json.loads(path.read_text(encoding="utf-8")))


class SafetyHead(nn.Module):
    """A small classifier on one hidden state: returns one logit per row, `sigmoid(logit)` = P(refuse)."""

    def __init__(self, config: SafetyHeadConfig):
        super().__init__()
        self.config = config
        self.dropout = nn.Dropout(config.dropout)
        if config.head_type == "linear":
            self.proj = nn.Linear(config.hidden_size, 1)
        else:
            width = config.mlp_hidden_size or config.hidden_size
            self.proj = nn.Sequential(nn.Linear(config.hidden_size, width), nn.GELU(), nn.Linear(width, 1))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.proj(self.dropout(hidden_states)).squeeze(-1)


def gather_anchor_states(
    hidden_states: torch.Tensor,
    index: torch.Tensor,
    pooling: str = "last",
    span_start: torch.Tensor | None = None,
) -> torch.Tensor:
    """Picks the hidden states the head reads.

    Args:
        hidden_states (`torch.Tensor` of shape `(batch, seq_len, hidden)`): Hidden states of the batch.
        index (`torch.Tensor` of shape `(n, 2)`): `(row, column)` of each anchor.
        pooling (`str`): `"last"` returns the anchor's state; `"mean"` averages columns `span_start..anchor`.
        span_start (`torch.Tensor` of shape `(n,)`, *optional*): First column of each example's span (`"mean"` only).

    Returns:
        `torch.Tensor` of shape `(n, hidden)`.
    """
    rows, cols = index[:, 0], index[:, 1]
    if pooling == "last":
        return hidden_states[rows, cols]
    if span_start is None:
        raise ValueError("pooling='mean' needs `span_start`, the first position of each example's prompt span.")
    # One slice per example: n is the batch size, and a slice avoids a (batch, seq, hidden) cumulative sum
    return (
        torch.stack(
            [
                hidden_states[r, s : c + 1].float().mean(0).to(hidden_states.dtype)
                for r, s, c in zip(rows.tolist(), span_start.tolist(), cols.tolist())
            ]
        )
        if len(rows)
        else hidden_states.new_zeros((0, hidden_states.size(-1)))
    )


def presafety_bce(logits: torch.Tensor, labels: torch.Tensor, pos_weight: float | None = None) -> torch.Tensor:
    """Per-example binary cross-entropy of the head's logits against hard (0/1) or soft ([0, 1]) labels, in float32."""
    weight = None if pos_weight is None else torch.tensor(pos_weight, device=logits.device, dtype=torch.float32)
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float(), pos_weight=weight, reduction="none")


def presafety_loss(
    hidden_states: torch.Tensor,
    index: torch.Tensor,
    labels: torch.Tensor,
    head: nn.Module,
    pooling: str = "last",
    span_start: torch.Tensor | None = None,
    pos_weight: float | None = None,
    num_items: int | None = None,
) -> torch.Tensor:
    """The pre-CoT auxiliary loss: BCE of `head` at the anchors, summed and divided by `num_items` (default: mean).

    This is the reference composition the trainers use (they split it around the model's forward, see
    `PreSafetyTrainerMixin`): pass `num_items` to normalize by the number of labeled examples of a whole
    gradient-accumulation window rather than of this micro-batch.
    """
    logits = head(gather_anchor_states(hidden_states, index, pooling, span_start))
    losses = presafety_bce(logits, labels, pos_weight)
    denominator = max(int(num_items if num_items is not None else labels.numel()), 1)
    return losses.sum() / denominator


def get_base_causal_lm(model: nn.Module) -> nn.Module:
    """The `PreTrainedModel` under PEFT / DeepSpeed / DDP wrappers, on which the head is registered."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP, DeepSpeed engine
            model = model.module
        elif hasattr(model, "get_base_model") and callable(model.get_base_model):  # PEFT
            base = model.get_base_model()
            if base is model:
                return model
            model = base
        else:
            return model


def get_safety_head(model: nn.Module) -> nn.Module | None:
    """The head attached to `model` (possibly PEFT's `ModulesToSaveWrapper` around it), or `None`."""
    return getattr(get_base_causal_lm(model), SAFETY_HEAD_ATTR, None)


def _is_peft_model(model: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def attach_safety_head(model: nn.Module, config: SafetyHeadConfig | Any, seed: int = 0) -> SafetyHead:
    """Builds a `SafetyHead` and registers it as `model.safety_head` (on the base model under PEFT).

    Registration makes the head part of the model: the optimizer trains it, DeepSpeed shards it, checkpoints save it.
    It is created in the model's dtype and device (mixed dtypes break ZeRO-3), with its own RNG stream so that adding a
    head does not change the random draws of the rest of the run. On a `PeftModel`, the head is added to the active
    adapter's `modules_to_save`, so it trains and is saved with the adapter.

    Args:
        model (`PreTrainedModel` or `PeftModel`): The causal LM.
        config (`SafetyHeadConfig` or a `PreSafetySFTConfig`/`PreSafetyDPOConfig`): The head to build.
        seed (`int`, *optional*, defaults to `0`): Seed of the head's initialization.
    """
    base = get_base_causal_lm(model)
    if not isinstance(config, SafetyHeadConfig):
        config = head_config_from_args(config, base.config.get_text_config().hidden_size)
    reference = base.get_input_embeddings().weight
    with torch.random.fork_rng(devices=[reference.device] if reference.device.type == "cuda" else []):
        torch.manual_seed(seed)
        head = SafetyHead(config)
    head.to(device=reference.device, dtype=reference.dtype)
    setattr(base, SAFETY_HEAD_ATTR, head)
    if _is_peft_model(model):
        _add_head_to_modules_to_save(model)
    return head


def _add_head_to_modules_to_save(peft_model: nn.Module) -> None:
    from peft.utils.other import _set_trainable

    adapter_name = peft_model.active_adapter
    peft_config = peft_model.peft_config[adapter_name]
    modules_to_save = set(peft_config.modules_to_save or [])
    modules_to_save.add(SAFETY_HEAD_ATTR)
    peft_config.modules_to_save = sorted(modules_to_save)
    _set_trainable(
        peft_model, adapter_name, module_names=[SAFETY_HEAD_ATTR], inference_mode=peft_config.inference_mode
    )


def head_config_from_args(args: Any, hidden_size: int) -> SafetyHeadConfig:
    """The `SafetyHeadConfig` described by the `presafety_*` fields of a trainer config."""
    return SafetyHeadConfig(
        hidden_size=hidden_size,
        head_type=args.presafety_head,
        mlp_hidden_size=args.presafety_head_hidden_size,
        dropout=args.presafety_head_dropout,
        layer=args.presafety_layer,
        pooling=args.presafety_pooling,
        anchor=args.presafety_anchor,
        think_token=args.presafety_think_token,
    )


def _read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor whose key names the safety head, from the weight files of a checkpoint or adapter folder."""
    from safetensors import safe_open

    files = sorted(directory.glob("*.safetensors"))
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                if f"{SAFETY_HEAD_ATTR}." in key:
                    tensors[key] = f.get_tensor(key)
    if not files:
        for file in sorted(directory.glob("*.bin")):
            state = torch.load(file, map_location="cpu", weights_only=True)
            tensors.update({k: v for k, v in state.items() if f"{SAFETY_HEAD_ATTR}." in k})
    return tensors


def _strip_head_prefix(key: str) -> str:
    # "base_model.model.safety_head.modules_to_save.default.proj.weight" -> "proj.weight"
    key = key.split(f"{SAFETY_HEAD_ATTR}.", 1)[1]
    for marker in ("modules_to_save.", "original_module."):
        if key.startswith(marker):
            key = key[len(marker) :].split(".", 1)[1]
    return key


def load_safety_head(model: nn.Module, path: str | os.PathLike) -> SafetyHead:
    """Re-attaches a trained head to a model loaded with `from_pretrained`.

    `from_pretrained` drops the head's weights as unknown keys; this reads them back from `path`, a folder written by
    the trainers' `save_model` (a full checkpoint, a sharded one, or a LoRA adapter folder, where the head was saved
    as a module of `modules_to_save`), and registers the head on `model`.

    Example:
    ```python
    >>> model = AutoModelForCausalLM.from_pretrained("runs/presafety-sft")
    >>> head = load_safety_head(model, "runs/presafety-sft")
    ```
    """
    directory = Path(path)
    config = SafetyHeadConfig.load(directory)
    tensors = _read_state_dict(directory)
    if not tensors:
        raise ValueError(
            f"No `{SAFETY_HEAD_ATTR}.*` weights in {directory}. Save the model with the PreSafety trainers' `save_model` "
            "(under ZeRO-3 set `stage3_gather_16bit_weights_on_model_save: true`) so the head is written with it."
        )
    state = {}
    for key, value in tensors.items():
        if ".original_module." in key:  # PEFT keeps the untrained copy beside the trained one
            continue
        state[_strip_head_prefix(key)] = value
    base = get_base_causal_lm(model)
    head = SafetyHead(config)
    missing, unexpected = head.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"The safety head weights in {directory} do not match its {SAFETY_HEAD_CONFIG_NAME}: missing {missing}, "
            f"unexpected {unexpected}."
        )
    reference = base.get_input_embeddings().weight
    head.to(device=reference.device, dtype=reference.dtype)
    setattr(base, SAFETY_HEAD_ATTR, head)
    head.eval()
    return head
