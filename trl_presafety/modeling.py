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
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
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


def is_safety_head_key(key: str) -> bool:
    return key.startswith(f"{SAFETY_HEAD_ATTR}.") or f".{SAFETY_HEAD_ATTR}." in key


def split_safety_head_state(
    state_dict: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """`(model_state, head_state)`: the head's entries (keys relative to the head, e.g. `"proj.weight"`) apart."""
    model_state, head_state = {}, {}
    for key, value in state_dict.items():
        if is_safety_head_key(key):
            head_state[_strip_head_prefix(key)] = value
        else:
            model_state[key] = value
    return model_state, head_state


def save_safety_head(
    directory: str | os.PathLike,
    state_dict: dict[str, torch.Tensor],
    config: SafetyHeadConfig,
    backbone: nn.Module | dict[str, torch.Tensor] | None = None,
) -> None:
    """Writes the head beside a checkpoint: `safety_head.safetensors` (its own keys) and `safety_head_config.json`.

    A tied head has no weights: only its config is written (and a weights file left by an earlier save is removed,
    so the folder says one thing).

    Args:
        directory: The checkpoint folder.
        state_dict: The head's tensors (keys relative to the head, e.g. `"proj.weight"`).
        config: Its config, written with a fresh checksum.
        backbone: The model (or the state dict being saved) whose weights the head reads; its fingerprint is recorded
            as `backbone_fingerprint`, binding the head to these weights. `None` keeps the config's.
    """
    from safetensors.torch import save_file

    from .fingerprints import fingerprint_weights

    if backbone is not None:
        config = replace(config, backbone_fingerprint=fingerprint_weights(backbone))

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if config.head_type == TIED_HEAD:
        (directory / SAFETY_HEAD_WEIGHTS_NAME).unlink(missing_ok=True)
        config.save(directory)
        return
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    save_file(tensors, str(directory / SAFETY_HEAD_WEIGHTS_NAME), metadata={"format": "pt"})
    config.save(directory)


@contextmanager
def safety_head_detached(model: nn.Module):
    """Unregisters the head while the block runs (a plain save or load of the model), and registers it again."""
    base = get_base_causal_lm(model)
    head = base._modules.pop(SAFETY_HEAD_ATTR, None)
    try:
        yield head
    finally:
        if head is not None:
            base._modules[SAFETY_HEAD_ATTR] = head


def read_safety_head_state(directory: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The head's tensors from `safety_head.safetensors`, or, for folders written by trl-presafety < 0.1, from the
    head's keys inside the checkpoint's or adapter's safetensors files. Pickle files (`*.bin`) are never read."""
    from safetensors import safe_open

    directory = Path(directory)
    own = directory / SAFETY_HEAD_WEIGHTS_NAME
    files = [own] if own.is_file() else sorted(directory.glob("*.safetensors"))
    if not files:
        pickles = sorted(p.name for p in directory.glob("*.bin"))
        raise FileNotFoundError(
            f"No {SAFETY_HEAD_WEIGHTS_NAME} (nor any .safetensors file) in {directory}"
            + (f"; {pickles} are pickle files, which are not read" if pickles else "")
            + ". Pass the output or checkpoint folder of a PreSafety run saved with safetensors."
        )
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                    if file == own:
                        tensors[key] = f.get_tensor(key)
                    elif is_safety_head_key(key) and ".original_module." not in key:
                        tensors[_strip_head_prefix(key)] = f.get_tensor(key)
        except Exception as error:  # safetensors raises its own error types for a truncated or foreign file
            raise ValueError(
                f"Cannot read {file}: {error}. The file is truncated or not a safetensors file."
            ) from None
    return tensors


def _strip_head_prefix(key: str) -> str:
    # Layout of trl-presafety < 0.1 (the head inside the weights, in `modules_to_save` under PEFT):
    # "base_model.model.safety_head.modules_to_save.default.proj.weight" -> "proj.weight"
    key = key.split(f"{SAFETY_HEAD_ATTR}.", 1)[1]
    for marker in ("modules_to_save.", "original_module."):
        if key.startswith(marker):
            key = key[len(marker) :].split(".", 1)[1]
    return key


def check_head_fits(config: SafetyHeadConfig, model: nn.Module, source: str) -> None:
    """Refuses a head trained on another architecture or width than `model`."""
    text_config = get_base_causal_lm(model).config.get_text_config()
    model_type = getattr(text_config, "model_type", None)
    problems = []
    if config.hidden_size != text_config.hidden_size:
        problems.append(f"hidden size {config.hidden_size} (model: {text_config.hidden_size})")
    if config.model_type is not None and model_type is not None and config.model_type != model_type:
        problems.append(f"model type {config.model_type!r} (model: {model_type!r})")
    if config.layer is not None:
        layers = getattr(text_config, "num_hidden_layers", None)
        if layers is not None and not -layers <= config.layer < layers:
            problems.append(f"layer {config.layer} (model: {layers} layers)")
    if problems:
        raise ValueError(
            f"The safety head in {source} was trained for another model: {', '.join(problems)}. Load it onto the "
            "model it was trained with (the base model of that run), or train a head for this one."
        )


def check_finite_head(head: nn.Module, source: str) -> None:
    bad = [name for name, p in head.named_parameters() if not torch.isfinite(p.detach()).all()]
    if bad:
        raise ValueError(
            f"The safety head from {source} has non-finite (NaN or inf) weights in {bad}: the training run diverged "
            "or the file is corrupted. It would give no usable decision; retrain or use an earlier checkpoint."
        )


def check_usable_head(head: nn.Module, source: str) -> None:
    """Refuses a head that cannot give a decision: non-finite weights, or a linear layer whose weight is all zero
    (the output no longer depends on the prompt: the same probability, e.g. 0.5, for every prompt)."""
    check_finite_head(head, source)
    dead = [
        name
        for name, module in head.named_modules()
        if isinstance(module, nn.Linear) and not bool(module.weight.detach().abs().sum() > 0)
    ]
    if dead:
        raise ValueError(
            f"The safety head from {source} is degenerate: the weight of {dead} is all zero, so it gives the same "
            "probability for every prompt and no decision. The file was zeroed or overwritten, or the head was never "
            "trained; use the head saved by the run (or an earlier checkpoint), or retrain."
        )


def check_head_tensors(tensors: dict[str, torch.Tensor], head: nn.Module, source: str) -> None:
    """Refuses head tensors that do not fit `head` before torch copies them: missing or unexpected names, integer or
    boolean values (copied into float parameters they would pass as weights), wrong or empty shapes (what a ZeRO-3 save
    without gathering holds)."""
    expected = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"The safety head weights in {source} do not match its {SAFETY_HEAD_CONFIG_NAME}: missing {missing}, "
            f"unexpected {unexpected}."
        )
    not_float = {k: str(v.dtype) for k, v in tensors.items() if not v.is_floating_point()}
    if not_float:
        raise ValueError(
            f"The safety head weights in {source} are not floating point ({not_float}): the file was rewritten or "
            "quantized. Use the head saved by the run."
        )
    wrong = {k: (tuple(v.shape), expected[k]) for k, v in tensors.items() if tuple(v.shape) != expected[k]}
    if wrong:
        shapes = ", ".join(f"{k} has shape {got} (expected {want})" for k, (got, want) in sorted(wrong.items()))
        empty = any(0 in got for got, _ in wrong.values())
        raise ValueError(
            f"The safety head weights in {source} have the wrong shape: {shapes}. "
            + (
                "Empty tensors are what a DeepSpeed ZeRO-3 save holds when the weights were not gathered: save with "
                "`stage3_gather_16bit_weights_on_model_save: true` in the DeepSpeed config (or consolidate the "
                "checkpoint with `zero_to_fp32.py`) and save the head again."
                if empty
                else f"The file does not belong to the head its {SAFETY_HEAD_CONFIG_NAME} describes (hidden size "
                "or head type differ); copy both files from the same run."
            )
        )


# Set on a model merged from base + adapter by [`merge_adapter`]: the fingerprint of the unmerged weights, which a head
# trained with LoRA records
MERGED_FROM_ATTR = "_presafety_merged_from_fingerprint"


def merge_adapter(model: nn.Module) -> nn.Module:
    """`PeftModel.merge_and_unload()`, remembering the fingerprint of the unmerged weights: a head trained with the
    adapter (bound to base + adapter) still loads on the merged model, which computes the same function."""
    from .fingerprints import fingerprint_weights

    fingerprint = fingerprint_weights(model)
    merged = model.merge_and_unload()
    setattr(merged, MERGED_FROM_ATTR, fingerprint)
    return merged


def check_head_weights_binding(
    config: SafetyHeadConfig, model: nn.Module, source: str, allow_other_weights: bool = False
) -> None:
    """Refuses a head on other weights than those it was saved with (its config's `backbone_fingerprint`)."""
    from .fingerprints import fingerprint_weights

    if config.backbone_fingerprint is None:
        logger.warning(
            f"The safety head in {source} records no fingerprint of the weights it was trained with (written by an "
            "older version, or from partitioned weights): it cannot be checked against this model."
        )
        return
    actual = fingerprint_weights(model)
    # A model merged from an adapter by this package (`merge_adapter`) remembers the weights it was merged from
    if config.backbone_fingerprint in (actual, getattr(get_base_causal_lm(model), MERGED_FROM_ATTR, None)):
        return
    if actual is None:
        logger.warning(
            f"The weights of this model are not all in memory (ZeRO-3 partitions or offloaded tensors), so the safety "
            f"head in {source} cannot be checked against them."
        )
        return
    if allow_other_weights:
        logger.warning(
            f"Loading the safety head of {source} onto other weights than it was trained with, on purpose "
            "(allow_other_weights=True): its decisions are not those measured for it."
        )
        return
    raise ValueError(
        f"The safety head in {source} was trained with other weights than this model's (fingerprint "
        f"{config.backbone_fingerprint[:19]}..., this model {actual[:19]}...). The same architecture with other "
        "weights (the untrained base model, another checkpoint, merged LoRA weights) reads other hidden states, and "
        "the head's decisions would be wrong without any error. Load the model saved with the head (the same folder, "
        "or the same base model and adapter for LoRA), or pass `allow_other_weights=True` (`--allow_other_weights` "
        "on the command line) to use it anyway."
    )


def load_safety_head(model: nn.Module, path: str | os.PathLike, allow_other_weights: bool = False) -> nn.Module:
    """Re-attaches a trained head to a model loaded with `from_pretrained` (or `PeftModel.from_pretrained`).

    Reads `safety_head.safetensors` and `safety_head_config.json` from `path`, a folder written by the trainers'
    `save_model` (a final output or a `checkpoint-N` folder, full fine-tuning or LoRA), and registers it on `model`
    after checking, failing closed: the config is unchanged since it was saved (its checksum), the head fits the
    architecture (type, width, layer), the model holds the weights the head was saved with (the config's
    `backbone_fingerprint`), and the head's tensors have the expected names, shapes and a float dtype, are finite and
    not all zero. A tied head (`head_type="tied"`) has no weights file: it is rebuilt from its config and reads the
    model's own LM head (its P(refuse) is the model's next-token probability of `</think>`, on whatever weights).

    Args:
        model (`PreTrainedModel` or `PeftModel`): The model to attach the head to.
        path (`str` or `os.PathLike`): The folder holding the head.
        allow_other_weights (`bool`, *optional*, defaults to `False`): Attach the head to other weights than it was
            trained with (e.g. to study a head transferred to another checkpoint), with a warning.

    Example:
    ```python
    >>> model = AutoModelForCausalLM.from_pretrained("runs/presafety-sft")
    >>> head = load_safety_head(model, "runs/presafety-sft")
    ```
    """
    directory = Path(path)
    config = SafetyHeadConfig.load(directory)
    check_head_fits(config, model, str(directory))
    if config.anchor_token_id is None and config.template_family is None and config.checksum is None:
        raise ValueError(
            f"The {SAFETY_HEAD_CONFIG_NAME} in {directory} records neither the anchor token nor the template family "
            "the head was trained on, and has no checksum: where the head reads cannot be checked. Use the config "
            "saved by the run."
        )
    if config.head_type == TIED_HEAD:
        if config.close_token_id is None:
            raise ValueError(
                f"The tied safety head in {directory} has no `close_token_id`; the config is incomplete. Copy "
                f"{SAFETY_HEAD_CONFIG_NAME} again from the training output folder."
            )
        vocab = get_base_causal_lm(model).get_output_embeddings().weight.shape[0]
        if not 0 <= config.close_token_id < vocab:
            raise ValueError(
                f"The tied safety head in {directory} reads token id {config.close_token_id}, outside this model's "
                f"vocabulary of {vocab}: it was trained for another model."
            )
        # Its P(refuse) is the model's own, but a calibrated threshold belongs to the weights it was chosen on
        check_head_weights_binding(config, model, str(directory), allow_other_weights)
        head = TiedSafetyHead(config, model)
        setattr(get_base_causal_lm(model), SAFETY_HEAD_ATTR, head)
        head.eval()
        return head
    tensors = read_safety_head_state(directory)
    if not tensors:
        raise ValueError(
            f"No safety head weights in {directory}. Save the model with the PreSafety trainers' `save_model` "
            "(under ZeRO-3 set `stage3_gather_16bit_weights_on_model_save: true`) so the head is written with it."
        )
    head = SafetyHead(config)
    check_head_tensors(tensors, head, str(directory))
    head.load_state_dict(tensors)
    check_usable_head(head, str(directory))
    check_head_weights_binding(config, model, str(directory), allow_other_weights)
    reference = get_base_causal_lm(model).get_input_embeddings().weight
    head.to(device=reference.device, dtype=reference.dtype)
    setattr(get_base_causal_lm(model), SAFETY_HEAD_ATTR, head)
    head.eval()
    return head


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
