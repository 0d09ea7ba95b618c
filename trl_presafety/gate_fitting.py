# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""A gate from any model: fit a safety head on a frozen model's pre-CoT anchor states, and calibrate its threshold.

[`fit_safety_head`] reads the hidden state at the anchor of each labeled prompt through [`SafetyGate`] (the same
template rendering, anchor, layer and pooling the trainers and the gate use), fits a class-balanced, L2-regularized
logistic regression on them, and writes the head as a training run does (`safety_head.safetensors` +
`safety_head_config.json`), with the base model's name and weight fingerprint in place of the weights, which are not
copied. [`calibrate_safety_head`] chooses the P(refuse) threshold on labeled prompts so that at most a target share of
comply-labeled prompts is routed, and records it in the head's config, where [`SafetyGate`] reads it by default.

Why a logistic regression rather than the trainers' SGD: the model is frozen, so the head's problem is convex; a
full-batch L-BFGS fit in float64 on standardized states has one solution, reached deterministically in seconds, with
no learning rate or epoch count to tune (the probe literature's standard, e.g. https://arxiv.org/abs/1610.01644).
"""

import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .anchors import MISSING_LABEL, MISSING_POSITION, AnchorSpec, detect_template_family, inference_anchor
from .fingerprints import fingerprint_json, fingerprint_weights
from .gate import SafetyGate, _tokenizer_source, load_causal_lm
from .head_io import save_safety_head
from .modeling import SafetyHeadConfig, attach_safety_head, get_base_causal_lm, get_safety_head


logger = logging.getLogger(__name__)

DEFAULT_TARGET_RATE = 0.05
ROUTING_RULE = "route when P(refuse) >= threshold"


# --- data ----------------------------------------------------------------------------------------------------------
def load_labeled_prompts(
    source: Any,
    prompt_column: str = "prompt",
    label_column: str = "safety_label",
    split: str = "train",
    allow_incomplete_labels: bool = False,
) -> tuple[list[Any], list[float], str]:
    """`(prompts, labels, description)` of the labeled rows of `source`: a label folder (`trl-presafety label`
    output; refused while incomplete), a data file, a hub id, a `datasets.Dataset` or a list of dicts. Rows without a
    label (`None`, NaN, -100) are left out, with a warning."""
    from .anchors import normalize_label

    if isinstance(source, (str, os.PathLike)):
        from .labeling.pipeline import load_prompt_dataset

        description = str(source) if split == "train" else f"{source} (split {split!r})"
        base_split, rows = split_slice(split)
        dataset = load_prompt_dataset(str(source), split=base_split, allow_incomplete_labels=allow_incomplete_labels)
        if rows is not None:
            dataset = dataset.select(range(*rows(len(dataset))))
        rows_columns = dataset.column_names
        column = lambda name: dataset[name]  # noqa: E731
    elif isinstance(source, list):
        description = f"{len(source)} rows in memory"
        rows_columns = sorted({k for row in source for k in row})
        column = lambda name: [row.get(name) for row in source]  # noqa: E731
    else:  # a datasets.Dataset
        description = f"a dataset of {len(source)} rows"
        rows_columns = source.column_names
        column = lambda name: source[name]  # noqa: E731
    for name, role, fix in (
        (prompt_column, "prompts", "set `prompt_column`"),
        (label_column, "labels", "label the prompts with `trl-presafety label`, or set `label_column`"),
    ):
        if name not in rows_columns:
            raise ValueError(f"{description} has no {role} column {name!r} (columns: {rows_columns}): {fix}.")
    prompts, raw = column(prompt_column), column(label_column)
    labels = [normalize_label(v, label_column, i) for i, v in enumerate(raw)]
    keep = [i for i, v in enumerate(labels) if v != MISSING_LABEL]
    if len(keep) < len(labels):
        logger.warning(f"{len(labels) - len(keep)} of {len(labels)} rows of {description} have no label: left out.")
    return [prompts[i] for i in keep], [labels[i] for i in keep], description


def text_hash(prompt: Any) -> str:
    """A short hash of one prompt, the same for the same request however it is written: a string, or chat messages
    (their user turns; so a one-turn conversation and its user text hash alike, as the label folders and the evaluation
    sets write them). Whitespace runs count as one space."""
    if isinstance(prompt, str):
        text = prompt
    elif isinstance(prompt, (list, tuple)) and all(isinstance(m, dict) for m in prompt):
        text = "\n".join(str(m.get("content", "")) for m in prompt if m.get("role") == "user")
    else:
        text = json.dumps(prompt, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()[:16]


def prompts_fingerprint(prompts: Sequence[Any], labels: Sequence[Any] | None = None) -> str:
    """A fingerprint of a labeled prompt set, independent of row order."""
    return fingerprint_json(
        sorted(f"{text_hash(p)}:{'' if labels is None else labels[i]}" for i, p in enumerate(prompts))
    )


def split_slice(split: str) -> tuple[str, Any]:
    """`"train[:90%]"` -> `("train", rows)` with `rows(n)` the `(start, stop)` of the slice (as `datasets` reads
    split slices: integers, or percentages of the split rounded to the nearest row); `("train", None)` for a plain
    split."""
    match = re.fullmatch(r"\s*([^\[\]]+?)\s*(?:\[\s*([^:\]]*)\s*:\s*([^:\]]*)\s*\])?\s*", split)
    if match is None:
        raise ValueError(
            f"Invalid split {split!r}: use a split name, or a slice such as 'train[:90%]' or 'train[100:]'."
        )
    name, start, stop = match.groups()
    if start is None:
        return name, None

    def bound(value: str, n: int, default: int) -> int:
        if not value:
            return default
        if value.endswith("%"):
            return round(float(value[:-1]) * n / 100)
        return int(value) if int(value) >= 0 else n + int(value)

    for value in (start, stop):
        if value and not re.fullmatch(r"-?\d+%?|\d+(\.\d+)?%", value):
            raise ValueError(f"Invalid split slice {split!r}: bounds are integers or percentages, e.g. 'train[:90%]'.")
    return name, lambda n: (max(0, bound(start, n, 0)), min(n, bound(stop, n, n)))


def _class_counts(labels: Sequence[float]) -> tuple[int, int]:
    refuse = sum(1 for v in labels if v >= 0.5)
    return len(labels) - refuse, refuse


def _check_two_classes(labels: Sequence[float], description: str, what: str) -> None:
    comply, refuse = _class_counts(labels)
    if comply == 0 or refuse == 0:
        raise ValueError(
            f"{what} needs prompts of both classes, but {description} has {refuse} refuse-labeled (label >= 0.5) and "
            f"{comply} comply-labeled prompts. Label a set with both harmful and benign prompts."
        )


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


def _auroc(labels: Sequence[float], scores: Sequence[float]) -> float | None:
    from sklearn.metrics import roc_auc_score

    hard = [int(v >= 0.5) for v in labels]
    return float(roc_auc_score(hard, scores)) if 0 < sum(hard) < len(hard) else None


def _rates(probs: Sequence[float], labels: Sequence[float], threshold: float) -> dict[str, Any]:
    comply = [p for p, v in zip(probs, labels) if v < 0.5]
    refuse = [p for p, v in zip(probs, labels) if v >= 0.5]
    routed = lambda values: sum(p >= threshold for p in values) / len(values) if values else None  # noqa: E731
    return {
        "n_comply": len(comply),
        "n_refuse": len(refuse),
        "comply_routed_rate": routed(comply),
        "refuse_routed_rate": routed(refuse),
    }


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
        save_fitted_gate(gate, output_dir)
    return gate


def _adapter_base(name_or_path: str) -> str | None:
    config = Path(name_or_path) / "adapter_config.json"
    return json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path") if config.is_file() else None


def save_fitted_gate(gate: SafetyGate, output_dir: str | os.PathLike) -> Path:
    """Writes the gate's head (weights, config) to `output_dir`, and the tokenizer unless the folder has one.

    In a folder without the model's weights (a head fitted on a frozen model, or a head written elsewhere than its
    training run's output), the config names the base model and the fingerprint of its weights, so that
    `SafetyGate.from_pretrained(output_dir)` finds and checks them.
    """
    folder = Path(output_dir)
    has_weights = (folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()
    if not has_weights and gate.config.base_model is None:
        if _is_peft(gate.model):
            raise ValueError(
                f"The gate's model is a PEFT adapter, whose weights {folder} would not hold: write the head into the "
                "adapter's own folder (the training output), or merge the adapter and fit the gate on the merged model."
            )
        gate.config.base_model = getattr(get_base_causal_lm(gate.model).config, "_name_or_path", None) or None
    head = get_safety_head(gate.model)
    # Beside a training run's weights the head keeps the binding the run recorded; a folder without weights is bound to
    # the weights the gate read
    save_safety_head(folder, head.state_dict(), gate.config, backbone=None if has_weights else gate.model)
    if not (folder / "tokenizer_config.json").is_file():
        gate.tokenizer.save_pretrained(folder)
    return folder


def _is_peft(model: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


# --- the threshold -------------------------------------------------------------------------------------------------
def check_target_rate(target_rate: float) -> None:
    if not (isinstance(target_rate, (int, float)) and 0.0 <= target_rate < 1.0):
        raise ValueError(
            f"Invalid `target_rate`: {target_rate!r}. Use the largest share of comply-labeled prompts that may be "
            "routed, in [0, 1), e.g. 0.05."
        )


def choose_threshold(probs: Sequence[float], labels: Sequence[float], target_rate: float) -> float:
    """The lowest threshold at which at most `target_rate` of the comply-labeled prompts have P(refuse) >= threshold:
    just above the (k+1)-th highest comply-labeled probability, k = floor(target_rate * n_comply). The lowest such
    threshold routes the most refuse-labeled prompts the target allows."""
    comply = sorted((p for p, v in zip(probs, labels) if v < 0.5), reverse=True)
    allowed = math.floor(target_rate * len(comply) + 1e-9)
    if allowed >= len(comply):
        return 0.0
    return min(math.nextafter(comply[allowed], math.inf), 1.0)


def check_calibration_set(
    prompts: Sequence[Any],
    description: str,
    training_prompts: Sequence[Any] | None = None,
    training_description: str = "",
    evaluation_prompts: Sequence[Any] | None = None,
) -> None:
    """Refuses a calibration set that is the training set or shares prompts with an evaluation set; warns when it
    shares some prompts with the training set (their probabilities are optimistic)."""
    hashes = {text_hash(p) for p in prompts}
    if evaluation_prompts is not None:
        shared = hashes & {text_hash(p) for p in evaluation_prompts}
        if shared:
            raise ValueError(
                f"{len(shared)} of the {len(hashes)} calibration prompts of {description} are prompts the evaluation "
                "reports on: a threshold chosen on them would make the report's routed share and over-refusal look "
                "better than they are. Calibrate on a held-out dev split (e.g. label a separate set with "
                "`trl-presafety label`)."
            )
    if training_prompts is not None:
        shared = hashes & {text_hash(p) for p in training_prompts}
        if shared == hashes:
            raise ValueError(
                f"The calibration set {description} is the set the head is fitted on ({training_description}): its "
                "probabilities are optimistic, so the threshold would route more benign prompts than `target_rate` "
                "on new prompts. Pass a separate labeled set."
            )
        if shared:
            logger.warning(
                f"{len(shared)} of the {len(hashes)} calibration prompts of {description} are also in the fitting set "
                f"{training_description}: their probabilities are optimistic."
            )


def calibrate_safety_head(
    gate: SafetyGate | str | os.PathLike,
    dataset: Any,
    *,
    labels: Sequence[float] | None = None,
    description: str | None = None,
    target_rate: float = DEFAULT_TARGET_RATE,
    prompt_column: str = "prompt",
    label_column: str = "safety_label",
    split: str = "train",
    chat_template_kwargs: dict[str, Any] | None = None,
    evaluation_prompts: Sequence[Any] | None = None,
    output_dir: str | os.PathLike | None = None,
    allow_incomplete_labels: bool = False,
    **model_kwargs,
) -> dict[str, Any]:
    """Chooses the gate's threshold on labeled prompts: at most `target_rate` of the comply-labeled ones routed
    (P(refuse) >= threshold), and records it with how it was chosen in the head's config.

    Args:
        gate ([`SafetyGate`] or a path): The gate, or a head folder (loaded with `SafetyGate.from_pretrained`, and
            written back to the same folder unless `output_dir` says otherwise).
        dataset: Labeled prompts (as [`fit_safety_head`] reads them), or a list of prompts with `labels`.
        target_rate (`float`, *optional*, defaults to `0.05`): Largest share of comply-labeled prompts routed.
        evaluation_prompts (*optional*): Prompts a report will evaluate; any of them in `dataset` is refused.
        output_dir (`str`, *optional*): Where the head (with its new config) is written.

    Returns:
        The `calibration` record (also set on `gate.config`, and `gate.threshold` is updated).
    """
    check_target_rate(target_rate)
    if isinstance(gate, (str, os.PathLike)):
        output_dir = gate if output_dir is None else output_dir
        gate = SafetyGate.from_pretrained(gate, **model_kwargs)
    if labels is not None:
        prompts, labels = list(dataset), [float(v) for v in labels]
        description = description or f"{len(prompts)} prompts in memory"
    else:
        prompts, labels, description = load_labeled_prompts(
            dataset, prompt_column, label_column, split, allow_incomplete_labels
        )
    _check_two_classes(labels, description, "Calibrating a threshold")
    check_calibration_set(prompts, description, evaluation_prompts=evaluation_prompts)
    fit = gate.config.fit or {}
    if fit.get("source_fingerprint") == prompts_fingerprint(prompts, labels):
        check_calibration_set(prompts, description, prompts, fit.get("source", "the fitting set"))
    probs = gate.predict_proba(prompts, chat_template_kwargs)
    threshold = choose_threshold(probs, labels, target_rate)
    rates = _rates(probs, labels, threshold)
    record = {
        "rule": ROUTING_RULE,
        "target_comply_routed_rate": target_rate,
        "threshold": threshold,
        **rates,
        "target_met": rates["comply_routed_rate"] <= target_rate + 1e-12,
        "auroc": _auroc(labels, probs),
        "label_column": label_column,
        "source": description,
        "source_fingerprint": prompts_fingerprint(prompts, labels),
        # Per-prompt hashes: an evaluation can tell whether it reports on prompts the threshold was chosen on
        "prompt_hashes": sorted({text_hash(p) for p in prompts}),
        "chat_template_kwargs": dict(chat_template_kwargs or {}),
    }
    if not record["target_met"]:
        logger.warning(
            f"No threshold routes at most {target_rate:.1%} of the comply-labeled prompts of {description}: their "
            f"P(refuse) saturates at 1. The threshold {threshold} routes {rates['comply_routed_rate']:.1%}."
        )
    gate.config.threshold = threshold
    gate.config.calibration = record
    gate.threshold = threshold
    if output_dir is not None:
        save_fitted_gate(gate, output_dir)
    logger.info(
        f"Calibrated threshold {threshold:.6g} on {description}: routes {rates['comply_routed_rate']:.3f} of "
        f"{rates['n_comply']} comply-labeled and {rates['refuse_routed_rate']:.3f} of {rates['n_refuse']} "
        "refuse-labeled prompts."
    )
    return record


def calibration_overlap(config: SafetyHeadConfig | str | os.PathLike, prompts: Sequence[Any]) -> int:
    """How many of `prompts` the head's threshold was calibrated on (0 when it was not calibrated): an evaluation that
    reports on them should say so, or refuse."""
    if not isinstance(config, SafetyHeadConfig):
        config = SafetyHeadConfig.load(config)
    hashes = set((config.calibration or {}).get("prompt_hashes") or ())
    return sum(text_hash(p) in hashes for p in prompts)
