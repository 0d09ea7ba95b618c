# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""A gate from any model: fit a safety head on a frozen model's pre-CoT anchor states.

[`fit_safety_head`] reads the hidden state at the anchor of each labeled prompt through [`SafetyGate`] (the same
template rendering, anchor, layer and pooling the trainers and the gate use), fits a class-balanced, L2-regularized
logistic regression on them, and writes the head as a training run does (`safety_head.safetensors` +
`safety_head_config.json`), with the base model's name and weight fingerprint in place of the weights, which are not
copied. With a calibration set, the threshold is chosen in the same run ([`calibrate_safety_head`], in
`gate_calibration.py`).

Why a logistic regression rather than the trainers' SGD: the model is frozen, so the head's problem is convex; a
full-batch L-BFGS fit in float64 on standardized states has one solution, reached deterministically in seconds, with
no learning rate or epoch count to tune (the probe literature's standard, e.g. https://arxiv.org/abs/1610.01644).
"""

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .anchors import MISSING_POSITION, AnchorSpec, detect_template_family, inference_anchor
from .fingerprints import fingerprint_weights
from .gate import SafetyGate, _tokenizer_source, load_causal_lm
from .gate_calibration import (
    DEFAULT_TARGET_RATE,
    _auroc,
    _check_two_classes,
    _class_counts,
    calibrate_safety_head,
    check_calibration_set,
    check_target_rate,
    load_labeled_prompts,
    prompts_fingerprint,
)
from .modeling import SafetyHeadConfig, attach_safety_head, get_base_causal_lm, get_safety_head


logger = logging.getLogger(__name__)


# --- the fit -------------------------------------------------------------------------------------------------------
@torch.enable_grad()
def fit_logistic_regression(
    features: torch.Tensor,
    labels: torch.Tensor,
    l2: float = 1.0,
    class_balance: bool = True,
    max_iter: int = 500,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """L2-regularized logistic regression, in float64 with full-batch L-BFGS; returns `(weight, bias, info)` in the
    units of `features` (the fit runs on standardized features and is mapped back).

    Objective: `sum_i c_i * BCE(x_i w + b, y_i) + l2 / 2 * ||w||^2` over standardized features, with `c_i` the class
    weights `n / (2 n_class)` when `class_balance` (scikit-learn's `class_weight="balanced"`), else 1: the same as
    `sklearn.linear_model.LogisticRegression(C=1 / l2, class_weight="balanced")` on standardized features. Labels may
    be soft (in [0, 1]); the class sizes are then the sums of `y` and `1 - y`.
    """
    x = features.detach().to(torch.float64)
    y = labels.detach().to(torch.float64)
    n = x.shape[0]
    mean = x.mean(0)
    std = x.std(0, unbiased=False)
    # A constant feature carries nothing; scaling it by 1 keeps it at 0 after centring
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    z = (x - mean) / std
    positives, negatives = y.sum(), (1 - y).sum()
    if positives <= 0 or negatives <= 0:
        raise ValueError(
            f"A logistic regression needs both classes: the labels sum to {float(positives):g} refuse and "
            f"{float(negatives):g} comply."
        )
    if class_balance:
        weights = y * (n / (2 * positives)) + (1 - y) * (n / (2 * negatives))
    else:
        weights = torch.ones_like(y)
    params = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [params],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        logits = z @ params[:-1] + params[-1]
        loss = (weights * F.binary_cross_entropy_with_logits(logits, y, reduction="none")).sum()
        loss = loss + 0.5 * l2 * params[:-1].pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    state = optimizer.state[params]
    loss = objective().detach()
    w_std, b_std = params.detach()[:-1], params.detach()[-1]
    weight = w_std / std
    bias = b_std - (w_std * mean / std).sum()
    if not (torch.isfinite(weight).all() and torch.isfinite(bias)):
        raise ValueError(
            "The logistic regression diverged (non-finite weights): the states hold NaN or inf values. Check the "
            "model's dtype (float16 overflows), or raise `l2`."
        )
    info = {"iterations": int(state.get("n_iter", 0)), "objective": float(loss)}
    return weight, bias, info


def head_config_for(
    model: nn.Module,
    tokenizer: Any,
    anchor: str = "prompt_end",
    think_token: str = "<think>",
    layer: int | None = None,
    pooling: str = "last",
    chat_template_kwargs: dict[str, Any] | None = None,
) -> SafetyHeadConfig:
    """A linear head's config for `model`, with the template family and anchor token the gate will check."""
    text_config = get_base_causal_lm(model).config.get_text_config()
    spec = AnchorSpec.from_tokenizer(tokenizer, anchor, think_token)
    family = detect_template_family(tokenizer, think_token, **(chat_template_kwargs or {}))
    ids, position = inference_anchor(
        tokenizer, [{"role": "user", "content": "Hello"}], spec, family, **(chat_template_kwargs or {})
    )
    return SafetyHeadConfig(
        hidden_size=text_config.hidden_size,
        head_type="linear",
        layer=layer,
        pooling=pooling,
        anchor=anchor,
        think_token=think_token,
        model_type=getattr(text_config, "model_type", None),
        template_family=family,
        anchor_token_id=ids[position] if position != MISSING_POSITION else None,
        detached=True,
    )


def fit_safety_head(
    model: str | nn.Module,
    dataset: Any,
    output_dir: str | os.PathLike | None = None,
    *,
    tokenizer: Any = None,
    calibration_dataset: Any = None,
    calibration_split: str | None = None,
    target_rate: float = DEFAULT_TARGET_RATE,
    anchor: str = "prompt_end",
    think_token: str = "<think>",
    layer: int | None = None,
    pooling: str = "last",
    prompt_column: str = "prompt",
    label_column: str = "safety_label",
    split: str = "train",
    l2: float = 1.0,
    class_balance: bool = True,
    batch_size: int = 16,
    chat_template_kwargs: dict[str, Any] | None = None,
    evaluation_prompts: Sequence[Any] | None = None,
    allow_incomplete_labels: bool = False,
    progress: bool = True,
    model_init_kwargs: dict[str, Any] | None = None,
) -> SafetyGate:
    """Fits a linear safety head on a frozen model's pre-CoT anchor states, and returns the gate it makes.

    The model's weights are not changed (nor copied: with `output_dir`, the folder holds the head, its config, which
    names the base model and the fingerprint of its weights, and the tokenizer). Load it back with
    `SafetyGate.from_pretrained(output_dir)` or, on a model already loaded, `load_safety_head(model, output_dir)`.

    Args:
        model (`str` or `PreTrainedModel`): The frozen LRM: a local folder, a hub id, or a loaded model.
        dataset: Labeled prompts: a label folder (`trl-presafety label` output), a data file, a hub id, a
            `datasets.Dataset` or a list of dicts, with `prompt_column` (strings or chat messages) and `label_column`.
        output_dir (`str`, *optional*): Where the head is written.
        tokenizer (*optional*): Defaults to the model's (its chat template renders the prompts).
        calibration_dataset (*optional*): Labeled prompts, apart from `dataset`, on which the threshold is calibrated
            in the same run (see [`calibrate_safety_head`]). It may be another split of the same label folder
            (`split="train[:90%]"`, `calibration_split="train[90%:]"`).
        calibration_split (`str`, *optional*): Split of `calibration_dataset`; defaults to `split`.
        target_rate (`float`, *optional*, defaults to `0.05`): Largest share of comply-labeled calibration prompts
            routed.
        anchor (`str`, *optional*, defaults to `"prompt_end"`): Where the head reads, as the trainers'
            `presafety_anchor` (see `trl_presafety.anchors.ANCHORS`).
        think_token (`str`, *optional*, defaults to `"<think>"`): The think-opening token, as `presafety_think_token`.
        layer (`int`, *optional*): Hidden layer read, as `presafety_layer`; defaults to the last.
        pooling (`str`, *optional*, defaults to `"last"`): Pooling of the anchor states, as `presafety_pooling`.
        prompt_column (`str`, *optional*, defaults to `"prompt"`): Column of `dataset` (and `calibration_dataset`)
            with the prompts.
        label_column (`str`, *optional*, defaults to `"safety_label"`): Column with the safe model's decision (1 =
            refuse).
        split (`str`, *optional*, defaults to `"train"`): Split of `dataset` (and of `calibration_dataset` when
            `calibration_split` is not given).
        l2 (`float`, *optional*, defaults to `1.0`): L2 penalty on standardized features (scikit-learn's `1 / C`).
        class_balance (`bool`, *optional*, defaults to `True`): Weight the classes by `n / (2 n_class)`.
        batch_size (`int`, *optional*, defaults to `16`): Prompts per forward.
        chat_template_kwargs (`dict`, *optional*): Passed to the chat template; the gate must be called with the same.
        evaluation_prompts (*optional*): Prompts a report will evaluate; calibrating on any of them is refused.
        allow_incomplete_labels (`bool`, *optional*, defaults to `False`): Read an unfinished label folder.
        progress (`bool`, *optional*, defaults to `True`): Show a progress bar while reading the states.
        model_init_kwargs (`dict`, *optional*): Passed to `AutoModelForCausalLM.from_pretrained` for a model given by
            name (e.g. `{"dtype": "bfloat16"}`).
    """
    from transformers import AutoTokenizer

    if l2 <= 0 or not math.isfinite(l2):
        raise ValueError(f"Invalid `l2`: {l2!r}. Use a positive penalty, e.g. 1.0 (scikit-learn's C = 1 / l2).")
    check_target_rate(target_rate)
    started = time.perf_counter()
    prompts, labels, description = load_labeled_prompts(
        dataset, prompt_column, label_column, split, allow_incomplete_labels
    )
    _check_two_classes(labels, description, "Fitting a safety head")
    calibration = None
    if calibration_dataset is not None:
        calibration = load_labeled_prompts(
            calibration_dataset, prompt_column, label_column, calibration_split or split, allow_incomplete_labels
        )
        check_calibration_set(calibration[0], calibration[2], prompts, description, evaluation_prompts)
    elif evaluation_prompts is not None:
        logger.info("No calibration set: `evaluation_prompts` is only checked against a calibration set.")

    if isinstance(model, (str, os.PathLike)):
        base_model = str(model)
        model = load_causal_lm(base_model, **(model_init_kwargs or {}))  # an adapter folder: merged
    else:
        base_model = getattr(get_base_causal_lm(model).config, "_name_or_path", None) or None
    if tokenizer is None:
        if base_model is None:
            raise ValueError("The model has no `name_or_path` to load its tokenizer from: pass `tokenizer`.")
        tokenizer = AutoTokenizer.from_pretrained(_tokenizer_source(base_model, _adapter_base(base_model)))
    if get_safety_head(model) is not None:
        raise ValueError(
            "The model already carries a safety head (a PreSafety run's, or one loaded with `load_safety_head`). "
            "Fit on the model without it: load it with `AutoModelForCausalLM.from_pretrained` only."
        )
    model.requires_grad_(False)
    config = head_config_for(model, tokenizer, anchor, think_token, layer, pooling, chat_template_kwargs)
    # The head is bound to the weights it read (their fingerprint, checked by `load_safety_head`), not to the path
    config.base_model, config.backbone_fingerprint = base_model, fingerprint_weights(model)
    head = attach_safety_head(model, config)
    gate = SafetyGate(model, tokenizer, threshold=None, batch_size=batch_size)

    states = gate.anchor_states(prompts, chat_template_kwargs, progress=progress)
    extracted = time.perf_counter()
    weight, bias, info = fit_logistic_regression(
        states, torch.tensor(labels, dtype=torch.float64), l2=l2, class_balance=class_balance
    )
    with torch.no_grad():
        head.proj.weight.copy_(weight.reshape(1, -1).to(head.proj.weight.dtype))
        head.proj.bias.copy_(bias.reshape(1).to(head.proj.bias.dtype))
        # The training figures as the gate computes them: the head, in the model's dtype, on the states it read
        train_probs = torch.sigmoid(head(states.to(head.proj.weight.device)).float()).tolist()
    comply, refuse = _class_counts(labels)
    config.fit = {
        "method": "logistic_regression",
        "l2": l2,
        "class_balance": class_balance,
        "standardized": True,
        "source": description,
        "source_fingerprint": prompts_fingerprint(prompts, labels),
        "label_column": label_column,
        "n_comply": comply,
        "n_refuse": refuse,
        "train_auroc": _auroc(labels, train_probs),
        "train_accuracy": sum((p >= 0.5) == (v >= 0.5) for p, v in zip(train_probs, labels)) / len(labels),
        "iterations": info["iterations"],
        "chat_template_kwargs": dict(chat_template_kwargs or {}),
        "seconds_states": round(extracted - started, 3),
        "seconds_fit": round(time.perf_counter() - extracted, 3),
    }
    logger.info(
        f"Fitted a safety head on {len(labels)} prompts of {description} ({refuse} refuse, {comply} comply): "
        f"training AUROC {config.fit['train_auroc']}, states in {config.fit['seconds_states']} s, fit in "
        f"{config.fit['seconds_fit']} s."
    )
    if calibration is not None:
        calibrate_safety_head(
            gate,
            calibration[0],
            labels=calibration[1],
            description=calibration[2],
            target_rate=target_rate,
            chat_template_kwargs=chat_template_kwargs,
        )
    if output_dir is not None:
        gate.save_pretrained(output_dir)
    return gate


def _adapter_base(name_or_path: str) -> str | None:
    config = Path(name_or_path) / "adapter_config.json"
    return json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path") if config.is_file() else None
