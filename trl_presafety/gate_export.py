# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Serve a gate where models are served: export it as a sequence-classification checkpoint.

The export is the gate's base weights (without the LM head) with the head's weight as the `score` layer of the
architecture's `*ForSequenceClassification` class (`Qwen3ForSequenceClassification`, `Qwen2ForSequenceClassification`,
`LlamaForSequenceClassification`, ...), `num_labels=1`, plus the tokenizer: a standard checkpoint that
`transformers.pipeline("text-classification")`, `AutoModelForSequenceClassification` and vLLM's classify runner load
with no custom code.

Two facts of those classes decide the format:

- **They pool the last (non-padding) token.** A request is the conversation rendered by the chat template with the
  generation prompt (`apply_chat_template(messages, add_generation_prompt=True, tokenize=False)`, with the chat
  template arguments the gate was fitted with), so the last token is the `prompt_end` anchor the head reads. Only
  linear heads reading the final hidden state at `prompt_end` with `pooling="last"` are exported; others are refused.
- **Their score layer has no bias** (in transformers and in vLLM), and after the final RMSNorm no hidden feature is
  constant, so the head's bias `b` cannot live in the weights. The checkpoint outputs the score `s = w . h` (the
  gate's logit minus `b`) as a regression output (`problem_type="regression"`, which both engines return as is: a
  sigmoid of `s` would saturate, since `b` offsets the large common component of the hidden states). Its config's
  `presafety_gate` records `logit_bias` (`b`), the gate's `threshold`, and `score_threshold = logit(threshold) - b`:
  a request is routed when `s >= score_threshold`, exactly `SafetyGate`'s decision. `SafetyGate`'s probability is
  `sigmoid(s + b)`; vLLM adds `b` itself with `--pooler-config '{"logit_mean": -b}'` (its affine calibration), and
  then returns the gate's logit.
"""

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch

from .anchors import MISSING_POSITION, inference_anchor
from .gate import SafetyGate
from .modeling import get_base_causal_lm, get_safety_head


logger = logging.getLogger(__name__)

EXPORT_CONFIG_KEY = "presafety_gate"
REFUSE_LABEL = "refuse"
# A conversation to check the request rendering on (the last token must be the anchor)
_PROBE = [{"role": "user", "content": "How do I pick a lock?"}]


def _logit(p: float) -> float:
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    return math.log(p) - math.log1p(-p)


def _sigmoid(x: float) -> float:
    if x == math.inf:
        return 1.0
    if x == -math.inf:
        return 0.0
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def check_exportable(gate: SafetyGate) -> None:
    """Refuses a head a sequence classifier cannot serve: it pools the final hidden state of the last token."""
    config = gate.config
    if config.head_type == "tied":
        raise ValueError(
            "This gate is a tied head (`head_type='tied'`): its P(refuse) is the model's own probability of closing "
            "the think block at the first reasoning position, which any engine returns with the generation's "
            "logprobs; there is no classifier to export. See 'Self-routing' in docs/serving.md."
        )
    problems = []
    if config.anchor != "prompt_end":
        problems.append(
            f"`anchor={config.anchor!r}`: a sequence classifier reads the last token of the request, which is the "
            "'prompt_end' anchor of the rendered generation prompt"
        )
    if config.layer is not None:
        problems.append(f"`layer={config.layer}`: a sequence classifier reads the final hidden state (layer None)")
    if config.pooling != "last":
        problems.append(f"`pooling={config.pooling!r}`: a sequence classifier pools the last token ('last')")
    if config.head_type != "linear":
        problems.append(f"`head_type={config.head_type!r}`: the `score` layer is one linear map ('linear')")
    if problems:
        raise ValueError(
            "This gate cannot be exported as a sequence classifier: "
            + "; ".join(problems)
            + ". Fit an exportable gate on the same model with `trl-presafety fit-gate --anchor prompt_end` (the "
            "defaults), or serve this one with `SafetyGate`."
        )
    base = get_base_causal_lm(gate.model)
    if getattr(base, "peft_config", None) or hasattr(gate.model, "peft_config"):
        raise ValueError(
            "The gate's model carries a PEFT adapter: the export holds full weights. Merge the adapter first "
            "(`model = PeftModel.from_pretrained(base, path).merge_and_unload()`, then `save_pretrained`), and fit "
            "or load the gate on the merged model."
        )


def export_gate(
    gate: SafetyGate | str | os.PathLike,
    output_dir: str | os.PathLike,
    chat_template_kwargs: dict[str, Any] | None = None,
    **model_kwargs,
) -> Path:
    """Writes `gate` as a sequence-classification checkpoint (see the module's docstring for the format).

    Args:
        gate ([`SafetyGate`] or a path): The gate, or a head folder (`SafetyGate.from_pretrained`).
        output_dir (`str`): Folder of the checkpoint.
        chat_template_kwargs (`dict`, *optional*): Chat template arguments requests are rendered with; defaults to
            those the head was fitted with.
        **model_kwargs (`Any`, *optional*): Passed to `SafetyGate.from_pretrained` for a path (e.g.
            `dtype=torch.bfloat16`).

    Returns:
        The output folder.
    """
    from transformers import AutoModelForSequenceClassification

    if not isinstance(gate, SafetyGate):
        gate = SafetyGate.from_pretrained(gate, **model_kwargs)
    check_exportable(gate)
    config = gate.config
    if chat_template_kwargs is None:
        chat_template_kwargs = dict(((config.fit or {}).get("chat_template_kwargs")) or {})
    tokenizer = gate.tokenizer
    base = get_base_causal_lm(gate.model)
    head = get_safety_head(gate.model)
    weight = head.proj.weight.detach().to("cpu")
    bias = float(head.proj.bias.detach().float().item())

    # The request rendering: the last token of the rendered generation prompt is the anchor, and tokenizing the
    # rendered text gives the template's ids (else the request must be sent as token ids)
    ids, position = inference_anchor(tokenizer, _PROBE, gate._spec, gate._family, **chat_template_kwargs)
    if position == MISSING_POSITION or position != len(ids) - 1:
        raise ValueError(
            f"The rendered generation prompt does not end at the head's anchor (anchor {position}, {len(ids)} tokens): "
            "a sequence classifier would read another token than the gate. Check `chat_template_kwargs`."
        )
    text = tokenizer.apply_chat_template(_PROBE, add_generation_prompt=True, tokenize=False, **chat_template_kwargs)
    plain = list(tokenizer(text)["input_ids"]) == ids
    without_special = list(tokenizer(text, add_special_tokens=False)["input_ids"]) == ids
    if not (plain or without_special):
        raise ValueError(
            "Tokenizing the rendered chat prompt does not give the chat template's token ids, so a text request "
            "would not reach the anchor token. Serve this gate with `SafetyGate`."
        )

    threshold = gate.threshold
    cls_config = base.config.__class__.from_dict(base.config.to_dict())
    architecture = type(base).__name__.replace("ForCausalLM", "ForSequenceClassification")
    cls_config.architectures = [architecture]
    cls_config.num_labels = 1
    cls_config.problem_type = "regression"  # the raw score, in transformers and vLLM alike (see the docstring)
    cls_config.id2label = {0: REFUSE_LABEL}
    cls_config.label2id = {REFUSE_LABEL: 0}
    if cls_config.pad_token_id is None:
        cls_config.pad_token_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
    logit_threshold = _logit(threshold)
    setattr(
        cls_config,
        EXPORT_CONFIG_KEY,
        {
            "logit_bias": bias,
            "threshold": threshold,
            "logit_threshold": logit_threshold,
            "score_threshold": logit_threshold - bias,
            "rule": "route when score >= score_threshold, i.e. P(refuse) = sigmoid(score + logit_bias) >= threshold",
            "vllm_pooler_config": {"logit_mean": -bias},
            "anchor": config.anchor,
            "template_family": config.template_family,
            "anchor_token_id": config.anchor_token_id,
            "chat_template_kwargs": chat_template_kwargs,
            "request": "apply_chat_template(messages, add_generation_prompt=True, tokenize=False, "
            "**chat_template_kwargs); its last token is the anchor",
            "add_special_tokens": plain,
            "head_backbone_fingerprint": config.backbone_fingerprint,
            "head_checksum": config.checksum,
            "calibration": {k: v for k, v in (config.calibration or {}).items() if k != "prompt_hashes"} or None,
        },
    )
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(cls_config)
    if type(model).__name__ != architecture:
        raise ValueError(
            f"transformers builds {type(model).__name__} for this config, not {architecture}: the architecture has no "
            "sequence-classification class with a `score` layer to export to."
        )
    state = {k: v for k, v in base.state_dict().items() if not k.startswith(("lm_head.", "safety_head."))}
    state["score.weight"] = weight.to(next(iter(state.values())).dtype).reshape(1, -1)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if "rotary_emb" not in k]
    if missing or unexpected:
        raise ValueError(
            f"The {architecture} weights do not match the gate's model: missing {missing}, unexpected {unexpected}."
        )
    for name, buffer in list(model.named_buffers()):  # rotary frequencies are rebuilt from the config on load
        if buffer.device.type == "meta":
            module_name, _, buffer_name = name.rpartition(".")
            module = model.get_submodule(module_name)
            module.register_buffer(buffer_name, torch.zeros(buffer.shape, dtype=buffer.dtype), persistent=False)
    folder = Path(output_dir)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "README.md").write_text(_model_card(architecture, cls_config, bias, threshold), encoding="utf-8")
    logger.info(f"Exported the gate as {architecture} to {folder}.")
    return folder


def _model_card(architecture: str, config: Any, bias: float, threshold: float) -> str:
    gate = getattr(config, EXPORT_CONFIG_KEY)
    kwargs = gate["chat_template_kwargs"]
    render = "add_generation_prompt=True, tokenize=False" + (f", **{json.dumps(kwargs)}" if kwargs else "")
    return f"""---
library_name: transformers
pipeline_tag: text-classification
tags: [trl-presafety, safety-gate]
---

# Pre-CoT safety gate ({architecture})

Exported by `trl-presafety export-gate`: the base model's weights with the safety head's weight as the `score` layer
(`num_labels=1`, a raw score). It reads the final hidden state of the last token of the request, which must be the
conversation rendered by the chat template with the generation prompt (`tokenizer.apply_chat_template(messages,
{render})`), tokenized with `add_special_tokens={gate["add_special_tokens"]}`.

The score layer has no bias; the head's bias is in `config.json` (`{EXPORT_CONFIG_KEY}`):

- route (answer without free reasoning) when score >= {gate["score_threshold"]:.9g};
- P(refuse) = sigmoid(score + {bias:.9g}), the probability `SafetyGate` gives (threshold {threshold:.6g});
- vLLM adds the bias itself: `vllm serve <this folder> --runner pooling --pooler-config '{{"logit_mean": {-bias:.9g}}}'`
  returns score + bias, the gate's logit.

Routing with vLLM: the trl-presafety documentation, "Gates, thresholds and serving".
"""
