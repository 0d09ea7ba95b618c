# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The safety head, its loss, and attaching, saving and re-loading it on a causal LM.

The head reads the LRM's hidden state at the pre-CoT anchor (the last position before the chain-of-thought) and
predicts the safety decision signal of the safe model (1 = refuse, 0 = comply), following "Towards Safer Large
Reasoning Models by Promoting Safety Decision-Making before Chain-of-Thought Generation"
(https://huggingface.co/papers/2603.17368).
"""

import hashlib
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .anchors import TEMPLATE_FAMILIES, check_anchor


logger = logging.getLogger(__name__)

SAFETY_HEAD_ATTR = "safety_head"
SAFETY_HEAD_CONFIG_NAME = "safety_head_config.json"
# The head's weights live in their own file beside a standard checkpoint, whose weight keys stay exactly those of a
# plain TRL run: `from_pretrained`, `PeftModel.from_pretrained` and vLLM load the folder unchanged.
SAFETY_HEAD_WEIGHTS_NAME = "safety_head.safetensors"
# "tied": no weights of its own; the head's logit is the model's own next-token log-odds of closing the think block
HEAD_TYPES = ("linear", "mlp", "tied")
TIED_HEAD = "tied"
POOLINGS = ("last", "mean")


@dataclass
class SafetyHeadConfig:
    """What a saved head needs to be rebuilt, read at the right place, and refused on a model it was not trained for.

    Args:
        hidden_size (`int`): Width of the hidden state the head reads.
        head_type (`str`, *optional*, defaults to `"linear"`): `"linear"` (`Linear(hidden, 1)`), `"mlp"`, or `"tied"`
            (no weights: the logit is the LM's own log-odds of `close_token_id` at the anchor, see [`TiedSafetyHead`]).
        mlp_hidden_size (`int`, *optional*): Width of the MLP's hidden layer; defaults to `hidden_size`.
        dropout (`float`, *optional*, defaults to `0.0`): Dropout on the head's input.
        layer (`int`, *optional*): Decoder layer whose output is read; `None` is the final hidden state (after the
            final norm).
        pooling (`str`, *optional*, defaults to `"last"`): `"last"` reads the anchor token; `"mean"` averages the
            prompt span up to and including the anchor (SafeKey-style).
        anchor (`str`, *optional*, defaults to `"prompt_end"`): An anchor kind of `trl_presafety.anchors.ANCHOR_REGISTRY`.
        think_token (`str`, *optional*, defaults to `"<think>"`): Opening think tag, for `anchor="think_end"`.
        model_type (`str`, *optional*): `config.model_type` of the model the head was trained on (e.g. `"qwen3"`).
        template_family (`str`, *optional*): Where the chat template puts the think tag (`"think_in_prompt"`,
            `"think_in_response"`), as seen in training.
        anchor_token_id (`int`, *optional*): Token the anchor reads for a conversation, as seen in training (e.g. the
            id of `<think>`). [`SafetyGate`] checks that it reads the same token.
        boundary_merges (`int`, *optional*): Training examples whose prompt and completion tokens merged at their
            boundary, counted at dataset preparation (informative).
        loss_weight (`float`, *optional*): `presafety_loss_weight` of the run. `0` means the head was only a probe:
            its predictions were never trained into the model.
        backbone_fingerprint (`str`, *optional*): [`trl_presafety.fingerprints.fingerprint_weights`] of the weights
            the head was saved with. [`load_safety_head`] refuses the head on other weights (e.g. the untrained base
            model of the run) unless `allow_other_weights=True`.
        checksum (`str`, *optional*): [`config_checksum`] of every other field, recomputed by [`SafetyHeadConfig.save`]
            (the one place a head config is written). A config edited after saving (`layer`, `pooling`, `anchor`,
            `threshold`...) changes what the head outputs and is refused on load.
        detached (`bool`, *optional*, defaults to `False`): The head was trained on detached anchor states
            (`presafety_detach_head`, or fitted on a frozen model by `fit_safety_head`): it is a guard read at
            inference, and no gradient of it reached the model's weights.
        base_model (`str`, *optional*): The model whose states the head reads, when its weights are not in the head's
            folder (a head fitted on a frozen model by `trl-presafety fit-gate`): a local folder or a hub id.
        threshold (`float`, *optional*): Calibrated P(refuse) at or above which a prompt is routed (see
            `calibrate_safety_head`); [`SafetyGate`] uses it by default, and 0.5 when it is `None`.
        calibration (`dict`, *optional*): How `threshold` was chosen: the target share of comply-labeled prompts
            routed, the calibration set's n per class, the achieved rates and the set's fingerprint.
        fit (`dict`, *optional*): How a head fitted on a frozen model was fitted (data, n per class, L2, training
            figures).
        close_token_id (`int`, *optional*): For `head_type="tied"`, the id of the closing think tag (`</think>`) whose
            next-token probability at the anchor is P(refuse).
    """

    hidden_size: int
    head_type: str = "linear"
    mlp_hidden_size: int | None = None
    dropout: float = 0.0
    layer: int | None = None
    pooling: str = "last"
    anchor: str = "prompt_end"
    think_token: str = "<think>"
    model_type: str | None = None
    template_family: str | None = None
    anchor_token_id: int | None = None
    boundary_merges: int | None = None
    loss_weight: float | None = None
    close_token_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    backbone_fingerprint: str | None = None
    detached: bool = False
    base_model: str | None = None
    threshold: float | None = None
    calibration: dict[str, Any] | None = None
    fit: dict[str, Any] | None = None
    checksum: str | None = None

    def __post_init__(self):
        if self.head_type not in HEAD_TYPES:
            raise ValueError(f"Unknown safety head type {self.head_type!r}. Choose one of {list(HEAD_TYPES)}.")
        if self.pooling not in POOLINGS:
            raise ValueError(f"Unknown pooling {self.pooling!r}. Choose one of {list(POOLINGS)}.")
        check_anchor(self.anchor, "anchor")
        if self.template_family is not None and self.template_family not in TEMPLATE_FAMILIES:
            raise ValueError(
                f"Unknown template family {self.template_family!r}. Choose one of {list(TEMPLATE_FAMILIES)}."
            )
        if self.threshold is not None and not (
            isinstance(self.threshold, (int, float)) and math.isfinite(self.threshold) and 0.0 <= self.threshold <= 1.0
        ):
            raise ValueError(
                f"Invalid safety head `threshold`: {self.threshold!r}. Use a probability in [0, 1] (calibrate it with "
                "`trl-presafety calibrate-gate`), or None for 0.5."
            )
        if self.head_type == TIED_HEAD:
            check_tied_head_settings(self.anchor, self.layer, self.pooling, self.dropout)

    def save(self, directory: str | os.PathLike) -> Path:
        """Writes `safety_head_config.json` with a fresh `checksum`: every writer of a head config (training, fitting,
        calibration) goes through here, so an edit made afterwards is detected by [`SafetyHeadConfig.load`]."""
        path = Path(directory) / SAFETY_HEAD_CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        values = asdict(self)
        values["checksum"] = self.checksum = config_checksum(values)
        path.write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "SafetyHeadConfig":
        path = Path(directory) / SAFETY_HEAD_CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"No {SAFETY_HEAD_CONFIG_NAME} in {directory}. It is written by PreSafetySFTTrainer/PreSafetyDPOTrainer "
                "`save_model`; pass the output or checkpoint folder of such a run."
            )
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(
                f"{path} is not valid JSON ({error}); the file is truncated or was edited. Copy it again from the "
                "training output folder."
            ) from None
        if not isinstance(values, dict):
            raise ValueError(f"{path} holds a {type(values).__name__}, not the JSON object of a SafetyHeadConfig.")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(
                f"{path} has unknown keys {unknown} (known: {sorted(known)}). It was written by another version of "
                "trl-presafety or edited; remove the keys or upgrade the package."
            )
        expected = {
            "hidden_size": int,
            "mlp_hidden_size": (int, type(None)),
            "layer": (int, type(None)),
            "dropout": (int, float),
            "model_type": (str, type(None)),
            "anchor_token_id": (int, type(None)),
            "boundary_merges": (int, type(None)),
            "loss_weight": (int, float, type(None)),
            "close_token_id": (int, type(None)),
            "head_type": str,
            "pooling": str,
            "anchor": str,
            "think_token": str,
            "template_family": (str, type(None)),
            "extra": dict,
            "backbone_fingerprint": (str, type(None)),
            "detached": bool,
            "base_model": (str, type(None)),
            "threshold": (int, float, type(None)),
            "calibration": (dict, type(None)),
            "fit": (dict, type(None)),
            "checksum": (str, type(None)),
        }
        for name, types in expected.items():
            if name in values and (
                (isinstance(values[name], bool) and types is not bool) or not isinstance(values[name], types)
            ):
                raise ValueError(
                    f"{path}: `{name}` is {values[name]!r} ({type(values[name]).__name__}), which is not a valid "
                    "value; the file was edited or corrupted. Copy it again from the training output folder."
                )
        if "hidden_size" not in values:
            raise ValueError(f"{path} has no `hidden_size`; the file is incomplete. Copy it again from the run.")
        config = cls(**values)  # invalid values (an unknown anchor...) get their own message first
        recorded = values.get("checksum")
        if recorded is None:
            logger.warning(
                f"{path} has no checksum (written by trl-presafety before 0.1, or the key was removed): edits to the "
                "fields that change the head's output cannot be detected. Save it again with `SafetyHeadConfig.save`."
            )
        elif recorded != config_checksum(values):
            raise ValueError(
                f"{path} was edited after it was saved: its checksum does not match its fields. Fields such as "
                "`layer`, `pooling`, `anchor`, `anchor_token_id`, `template_family`, `head_type` or `threshold` "
                "decide where the head reads and what it outputs, so an edited config gives other decisions than the "
                "trained head. Copy the file again from the run's output; to change the threshold use "
                "`trl-presafety calibrate-gate` or `SafetyGate(threshold=...)`; to change where the head reads, train "
                "or fit a new head."
            )
        return config


def config_checksum(values: dict[str, Any]) -> str:
    """The checksum of a head config's fields (all but `checksum`), as written to `safety_head_config.json`."""
    content = {k: v for k, v in values.items() if k != "checksum"}
    return "sha256:" + hashlib.sha256(json.dumps(content, sort_keys=True).encode("utf-8")).hexdigest()


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


def check_tied_head_settings(anchor: str, layer: int | None, pooling: str, dropout: float) -> None:
    """The tied head is the LM's own next-token distribution: at the first reasoning position, on the final hidden
    state of that one token. Refuses the settings that would read anything else."""
    problems = []
    if anchor != "reasoning_start":
        problems.append(
            f"anchor={anchor!r}: the tied logit is the next-token logit of the closing think tag at the first "
            "reasoning position, set `presafety_anchor='reasoning_start'`"
        )
    if layer is not None:
        problems.append(f"layer={layer}: the LM head reads the final hidden state, leave `presafety_layer` unset")
    if pooling != "last":
        problems.append(f"pooling={pooling!r}: the next token is predicted from one position, use 'last'")
    if dropout:
        problems.append(f"dropout={dropout}: the tied head has no input dropout, use 0.0")
    if problems:
        raise ValueError("`presafety_head='tied'` cannot be combined with " + "; ".join(problems) + ".")


def lm_logit_scale(config: Any) -> float:
    """The factor some architectures multiply their logits by before any softcapping, read the way TRL's fused LM head
    reads it (Cohere's `logit_scale`, `output_multiplier`, Falcon-H1's `lm_head_multiplier`, Granite's and MiniCPM3's
    `1 / logits_scaling`, HyperCLOVA X's `logits_scaling`); 1.0 for the others."""
    scale = getattr(config, "logit_scale", None)
    if scale is None:
        scale = getattr(config, "output_multiplier", None)
    if scale is None:
        scale = getattr(config, "lm_head_multiplier", None)
    if scale is None and getattr(config, "logits_scaling", None) is not None:
        scaling = config.logits_scaling
        scale = scaling if getattr(config, "model_type", None) == "hyperclovax" else 1 / scaling
    return 1.0 if scale is None else scale


def lm_logits(model: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """The model's next-token logits from final hidden states, as its forward (and TRL's fused LM head) computes them:
    the output embeddings, the architecture's logit scale ([`lm_logit_scale`]), then Gemma's
    `final_logit_softcapping`."""
    base = get_base_causal_lm(model)
    lm_head = base.get_output_embeddings()
    logits = lm_head(hidden_states.to(lm_head.weight.device))
    config = base.config.get_text_config()
    scale = lm_logit_scale(config)
    if scale != 1.0:
        logits = logits * scale
    cap = getattr(config, "final_logit_softcapping", None)
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits


def token_log_odds(logits: torch.Tensor, token_id: int) -> torch.Tensor:
    """`log p - log(1 - p)` of `token_id` under `softmax(logits)`, i.e. its logit minus the logsumexp of all the other
    tokens', in float32: `sigmoid` of it is exactly the token's softmax probability."""
    logits = logits.float()
    others = torch.cat([logits[..., :token_id], logits[..., token_id + 1 :]], dim=-1)
    return logits[..., token_id] - torch.logsumexp(others, dim=-1)


class TiedSafetyHead(nn.Module):
    """The decision as the model's own next token: no weights, the logit of the closing think tag at the anchor.

    At the first reasoning position (`anchor="reasoning_start"`, after `<think>\\n`) the LM chooses between opening
    its reasoning and closing the think block at once. This head returns the log-odds of `</think>` there (its LM
    logit minus the logsumexp of all the others), so `sigmoid` of it is the probability that generation closes the
    think block, and the BCE against `safety_label` trains the token the model generates. The logits come from the
    model's own output embeddings applied to the anchor's final hidden state, which is the LM's logit at that position
    under every loss path of the trainers (fused, chunked, Liger), with no extra forward.

    The LM head is reached through the model it is bound to (never registered as a submodule: its weights belong to
    the model, and the head saves no file of its own).
    """

    def __init__(self, config: SafetyHeadConfig, model: nn.Module | None = None):
        super().__init__()
        self.config = config
        self.__dict__["_model"] = None
        if model is not None:
            self.bind(model)

    def bind(self, model: nn.Module) -> None:
        self.__dict__["_model"] = get_base_causal_lm(model)

    @property
    def close_token_id(self) -> int | None:
        return self.config.close_token_id

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        model = self.__dict__["_model"]
        if model is None or self.config.close_token_id is None:
            raise RuntimeError(
                "The tied safety head is not bound to a model and its closing token: attach it with "
                "`attach_safety_head` / `load_safety_head`, or let the PreSafety trainer set it up."
            )
        return token_log_odds(lm_logits(model, hidden_states), self.config.close_token_id)


def build_safety_head(config: SafetyHeadConfig, model: nn.Module | None = None) -> nn.Module:
    """The head described by `config`: a [`SafetyHead`], or a [`TiedSafetyHead`] bound to `model`."""
    if config.head_type == TIED_HEAD:
        return TiedSafetyHead(config, model)
    return SafetyHead(config)


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
    """The head attached to `model`, or `None`."""
    return getattr(get_base_causal_lm(model), SAFETY_HEAD_ATTR, None)


def _is_peft_model(model: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def attach_safety_head(model: nn.Module, config: SafetyHeadConfig | Any, seed: int = 0) -> nn.Module:
    """Builds a `SafetyHead` (or a weightless [`TiedSafetyHead`]) and registers it as `model.safety_head` (on the base
    model under PEFT).

    Registration makes the head part of the model: the optimizer trains it and DeepSpeed shards it. The PreSafety
    trainers save it in its own file beside the checkpoint (see [`save_safety_head`]), so the checkpoint's weight keys
    stay those of the plain model. It is created in the model's dtype and device (mixed dtypes break ZeRO-3), with its
    own RNG stream so that adding a head does not change the random draws of the rest of the run, and trainable even
    on a `PeftModel` (whose base weights are frozen).

    Args:
        model (`PreTrainedModel` or `PeftModel`): The causal LM.
        config (`SafetyHeadConfig` or a `PreSafetySFTConfig`/`PreSafetyDPOConfig`): The head to build.
        seed (`int`, *optional*, defaults to `0`): Seed of the head's initialization.
    """
    base = get_base_causal_lm(model)
    if not isinstance(config, SafetyHeadConfig):
        config = head_config_from_args(config, base)
    reference = base.get_input_embeddings().weight
    with torch.random.fork_rng(devices=[reference.device] if reference.device.type == "cuda" else []):
        torch.manual_seed(seed)
        head = build_safety_head(config, base)
    head.to(device=reference.device, dtype=reference.dtype)
    setattr(base, SAFETY_HEAD_ATTR, head)
    return head


def head_config_from_args(args: Any, model: nn.Module | int) -> SafetyHeadConfig:
    """The `SafetyHeadConfig` described by the `presafety_*` fields of a trainer config, for `model` (or a width)."""
    if isinstance(model, int):
        hidden_size, model_type = model, None
    else:
        text_config = get_base_causal_lm(model).config.get_text_config()
        hidden_size, model_type = text_config.hidden_size, getattr(text_config, "model_type", None)
    return SafetyHeadConfig(
        hidden_size=hidden_size,
        head_type=args.presafety_head,
        mlp_hidden_size=args.presafety_head_hidden_size,
        dropout=args.presafety_head_dropout,
        layer=args.presafety_layer,
        pooling=args.presafety_pooling,
        anchor=args.presafety_anchor,
        think_token=args.presafety_think_token,
        model_type=model_type,
        loss_weight=float(args.presafety_loss_weight),
        detached=bool(getattr(args, "presafety_detach_head", False)),
    )


class _TieToOutput(torch.autograd.Function):
    """Returns `hidden` unchanged (a view, no copy) while making `logits` part of its graph.

    DDP with `find_unused_parameters=True` walks the graph back from the model's outputs to find the parameters in use.
    The head's logits leave the forward through the hook, not the outputs, so without this tie DDP would mark the head
    unused and then fail when its gradient arrives ("marked as ready twice"). The tie sends a zero gradient.
    """

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        ctx.logits_shape, ctx.logits_dtype = logits.shape, logits.dtype
        return hidden.view_as(hidden)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, grad.new_zeros(ctx.logits_shape, dtype=ctx.logits_dtype)


class AnchorCapture:
    """Reads the head's input inside a forward the caller already runs (no extra forward pass).

    TRL 1.16's fused LM head returns no hidden states, so a forward hook on the decoder backbone takes them. The hook
    is armed just before the forward (by the trainers' `compute_loss`, or by [`SafetyGate`]) and disarms itself on
    first use, so a second forward through the same backbone (the reference forward of DPO with PEFT, where the
    adapter is disabled) cannot overwrite it. The head runs inside the hook, i.e. inside the model's (or DeepSpeed
    engine's) forward, where ZeRO-3 gathers its parameters. For an intermediate `layer`, a hook on that layer only
    keeps a reference to its output; the head still runs in the backbone hook, outside any gradient-checkpointed region.
    """

    def __init__(self, model: nn.Module, layer: int | None, pooling: str, detach: bool = False):
        self.base = get_base_causal_lm(model)
        self.layer = layer
        self.pooling = pooling
        # `presafety_detach_head`: the head reads detached states, so its loss sends no gradient into the model
        self.detach = detach
        backbone = self.base.get_decoder()
        self.handles = [backbone.register_forward_hook(self._backbone_hook)]
        if layer is not None:
            layers = getattr(backbone, "layers", None)
            if not isinstance(layers, nn.ModuleList):
                raise ValueError(
                    f"`presafety_layer={layer}` needs a backbone with a `layers` ModuleList, but "
                    f"{type(backbone).__name__} has none. Leave `presafety_layer` unset to read the final hidden state."
                )
            if not -len(layers) <= layer < len(layers):
                raise ValueError(
                    f"`presafety_layer={layer}` is out of range for a model with {len(layers)} decoder layers. Use an "
                    f"index in [{-len(layers)}, {len(layers) - 1}], or None for the final hidden state."
                )
            self.handles.append(layers[layer].register_forward_hook(self._layer_hook))
        self._armed = False
        self._index: torch.Tensor | None = None
        self._span_start: torch.Tensor | None = None
        self._layer_output: torch.Tensor | None = None
        self._states = False
        self.logits: torch.Tensor | None = None
        self.forward_calls = 0  # backbone forwards seen, armed or not (for tests and benchmarks)

    def arm(self, index: torch.Tensor, span_start: torch.Tensor | None, states: bool = False) -> None:
        """Reads the next backbone forward at `index`; with `states=True` it keeps the anchor states themselves (what
        the head would read) instead of the head's logits, for fitting a head on a frozen model."""
        self._armed, self._index, self._span_start, self.logits = True, index, span_start, None
        self._layer_output, self._states = None, states

    def disarm(self) -> torch.Tensor | None:
        logits, self.logits = self.logits, None
        self._armed, self._index, self._span_start, self._layer_output = False, None, None, None
        return logits

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def _layer_hook(self, module, args, output):
        if self._armed and self._layer_output is None:
            self._layer_output = output[0] if isinstance(output, tuple) else output

    def _backbone_hook(self, module, args, output):
        self.forward_calls += 1
        if not self._armed:
            return
        self._armed = False
        if self.layer is None:
            hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        else:
            hidden = self._layer_output
            self._layer_output = None
        head = getattr(self.base, SAFETY_HEAD_ATTR)
        index = self._index.to(hidden.device)
        span_start = None if self._span_start is None else self._span_start.to(hidden.device)
        anchor_states = gather_anchor_states(hidden, index, self.pooling, span_start)
        if self._states:
            self.logits = anchor_states.detach()
            return
        self.logits = head(anchor_states.detach() if self.detach else anchor_states)
        if self.logits.requires_grad and hasattr(output, "last_hidden_state"):
            output.last_hidden_state = _TieToOutput.apply(output.last_hidden_state, self.logits)
            return output
