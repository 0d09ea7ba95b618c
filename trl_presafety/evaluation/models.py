# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The models of an evaluation: the evaluated model (full, or base + adapter merged) and its tokenizer, where its safety
head is, what identifies its weights in the cache, and the judge (from the judges' registry)."""

import gc
from pathlib import Path
from typing import Any

from ..judges import Judge, JudgeArguments, build_answer_judge
from .cache import stable_hash
from .config import EvalConfig


def _has_file(path: str | None, name: str) -> bool:
    return path is not None and (Path(path) / name).is_file()


def find_safety_head(config: EvalConfig) -> str | None:
    """The folder of the trained head: `safety_head_path`, else the adapter folder, else the model folder."""
    from ..modeling import SAFETY_HEAD_CONFIG_NAME

    if config.safety_head_path:
        if not _has_file(config.safety_head_path, SAFETY_HEAD_CONFIG_NAME):
            raise ValueError(
                f"Invalid `safety_head_path`: {config.safety_head_path!r} has no {SAFETY_HEAD_CONFIG_NAME}. Point it at "
                "the output folder of a PreSafety training run, or unset it (the probe is then skipped)."
            )
        return config.safety_head_path
    for candidate in (config.adapter_path, config.model_name_or_path):
        if _has_file(candidate, SAFETY_HEAD_CONFIG_NAME):
            return candidate
    return None


def load_tokenizer(config: EvalConfig) -> Any:
    from transformers import AutoTokenizer

    # A training run saves its tokenizer (with the template it trained on) next to the adapter: prefer it
    source = (
        config.adapter_path if _has_file(config.adapter_path, "tokenizer_config.json") else config.model_name_or_path
    )
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=config.trust_remote_code)
    if config.chat_template_path:
        tokenizer.chat_template = Path(config.chat_template_path).read_text(encoding="utf-8")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(config: EvalConfig) -> Any:
    """The model as a `PreTrainedModel` (adapter merged), on the GPU when there is one."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = config.dtype if config.dtype == "auto" else getattr(torch, config.dtype)
    model = AutoModelForCausalLM.from_pretrained(
        config.model_name_or_path, dtype=dtype, trust_remote_code=config.trust_remote_code
    )
    if config.adapter_path:
        from peft import PeftModel

        from ..head_io import merge_adapter

        # Merged once for speed; the merged model remembers the adapter's weights, to which a LoRA run's head is bound
        model = merge_adapter(PeftModel.from_pretrained(model, config.adapter_path))
    if torch.cuda.is_available():
        model = model.to("cuda")
    model.eval()
    return model


def merged_model_dir(config: EvalConfig, model: Any | None, tokenizer: Any) -> str:
    """A folder vLLM can load: the model itself, or (with an adapter) the merged model saved once in output_dir."""
    if not config.adapter_path:
        return config.model_name_or_path
    path = Path(config.output_dir) / "merged_model"
    if not (path / "config.json").is_file():
        from ..head_io import safety_head_detached

        model = model if model is not None else load_model(config)
        with safety_head_detached(model):  # the probe's or the route's head is not part of the weights vLLM loads
            model.save_pretrained(path)
        tokenizer.save_pretrained(path)
    return str(path)


def model_fingerprint(config: EvalConfig, model: Any | None) -> str:
    """What identifies the evaluated weights in the cache keys: the content fingerprints of the model and adapter
    (`trl_presafety.fingerprints`), not their paths or file times, so that a model retrained at the same path is
    evaluated again and an identical copy elsewhere reuses the cache; for a model in memory, its weights'."""
    return stable_hash(list(evaluated_fingerprints(config, model).values()))


def evaluated_fingerprints(config: EvalConfig, model: Any | None) -> dict[str, str | None]:
    """The content fingerprints of what is evaluated (recorded in the report): the model (its files, or its weights
    when it was given in memory) and the adapter."""
    from ..fingerprints import fingerprint_path, fingerprint_weights

    local = config.model_name_or_path and Path(config.model_name_or_path).exists()
    if model is not None and not local:
        return {"model_weights": fingerprint_weights(model)}
    values = {"model": fingerprint_path(config.model_name_or_path)}
    if config.adapter_path:
        values["adapter"] = fingerprint_path(config.adapter_path)
    return values


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def default_run_name(config: EvalConfig) -> str:
    name = Path(config.model_name_or_path.rstrip("/")).name
    if config.adapter_path:
        name += "+" + Path(config.adapter_path.rstrip("/")).name
    return name


def build_judge(config: EvalConfig) -> Judge:
    """The judge named by `config.judge`, from the judges' registry (a guard model loaded like any causal LM)."""
    path = config.judge_model_name_or_path
    args = JudgeArguments.from_fields(
        config,
        answer_judge=config.judge,
        classifier_path=path if config.judge == "classifier" else None,
        guard_model=path if config.judge == "guard" else None,
        judge_dtype=config.dtype,
        judge_trust_remote_code=config.trust_remote_code,
    )
    # The policy's context length does not apply to the guard
    return build_answer_judge(
        args, vllm_kwargs={k: v for k, v in config.vllm_kwargs().items() if k != "max_model_len"}
    )
