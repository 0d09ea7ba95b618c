# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The safety head on disk: saved beside a checkpoint in its own files (`safety_head.safetensors`,
`safety_head_config.json`), read back only into a model it fits and was trained with, refused when damaged."""

import logging
import os
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from .modeling import (
    SAFETY_HEAD_ATTR,
    SAFETY_HEAD_CONFIG_NAME,
    SAFETY_HEAD_WEIGHTS_NAME,
    TIED_HEAD,
    SafetyHead,
    SafetyHeadConfig,
    TiedSafetyHead,
    get_base_causal_lm,
)


logger = logging.getLogger(__name__)


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
