# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The decoding settings of the commands that generate (`label`, `eval`, `build-ipo-pairs`): one object,
[`GenerationArguments`], that the generation functions take, and the checks of its fields, which `EvalConfig` reuses
for the generation fields it holds. This module imports neither torch nor transformers."""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .validation import check_choice, check_range


BACKENDS = ("auto", "transformers", "vllm")
# Weights dtypes a model can be loaded in (`from_pretrained(dtype=...)`)
DTYPES = ("auto", "bfloat16", "float16", "float32")
# Routed generation (`routing.py`): what answers a prompt whose pre-CoT P(refuse) reaches the threshold. Here, with no
# torch import, so that configs (`EvalConfig`) can name them
ROUTE_POLICIES = ("no_think", "primer", "refuse")
# SAFEPATH (https://huggingface.co/papers/2505.14667) prefills this sentence at the start of the reasoning
DEFAULT_ROUTE_PRIMER = "Let's think about safety first."
DEFAULT_ROUTE_REFUSAL = "I'm sorry, but I can't help with that request."


@dataclass
class GenerationArguments:
    r"""
    Decoding settings shared by the scripts that generate responses (`label`, `eval`, `build-ipo-pairs`).

    > Parameters that control generation

    backend (`str`, *optional*, defaults to `"auto"`):
        `"vllm"`, `"transformers"` (batched `generate` with left padding), or `"auto"`: vLLM when it is installed, a
        GPU is present and the model is given by path, otherwise transformers.
    max_new_tokens (`int`, *optional*, defaults to `512`):
        Maximum number of generated tokens per response.
    do_sample (`bool`, *optional*, defaults to `False`):
        Sample instead of greedy decoding. `temperature`, `top_p` and `top_k` apply only when sampling.
    temperature (`float`, *optional*, defaults to `1.0`):
        Sampling temperature (> 0).
    top_p (`float`, *optional*, defaults to `1.0`):
        Nucleus sampling mass in (0, 1]; 1 disables it.
    top_k (`int`, *optional*, defaults to `0`):
        Top-k sampling; 0 disables it.
    generation_batch_size (`int`, *optional*, defaults to `8`):
        Prompts per `generate` call (transformers backend; vLLM schedules its own batches).
    generation_seed (`int`, *optional*, defaults to `0`):
        Seed of the sampling RNG, so that sampled responses are reproducible.
    vllm_gpu_memory_utilization (`float`, *optional*, defaults to `0.9`):
        Fraction of GPU memory vLLM may use.
    vllm_tensor_parallel_size (`int`, *optional*, defaults to `1`):
        Number of GPUs vLLM shards the model over.
    vllm_data_parallel_size (`int`, *optional*, defaults to `1`):
        Number of vLLM engines on this node, each on its own `vllm_tensor_parallel_size` GPUs and a contiguous share
        of the prompts (`trl_presafety.vllm_data_parallel`): `vllm_data_parallel_size * vllm_tensor_parallel_size`
        GPUs in all, at most the visible ones. Across nodes, run the sharded commands as workers instead
        (`--num_workers`, docs/scaling.md).
    vllm_max_model_len (`int`, *optional*):
        Context length vLLM reserves KV cache for; defaults to the model's.
    """

    backend: str = field(
        default="auto",
        metadata={
            "help": "Generation backend: 'vllm', 'transformers' (batched generate, left padding), or 'auto' (vLLM "
            "when installed with a GPU and a model path, else transformers).",
            "choices": list(BACKENDS),
        },
    )
    max_new_tokens: int = field(default=512, metadata={"help": "Maximum number of generated tokens per response."})
    do_sample: bool = field(
        default=False, metadata={"help": "Sample instead of greedy decoding (temperature/top_p/top_k apply)."}
    )
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (> 0), used with do_sample."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass in (0, 1]; 1 disables it."})
    top_k: int = field(default=0, metadata={"help": "Top-k sampling; 0 disables it."})
    generation_batch_size: int = field(
        default=8, metadata={"help": "Prompts per generate call (transformers backend)."}
    )
    generation_seed: int = field(default=0, metadata={"help": "Seed of the sampling RNG (reproducible sampling)."})
    vllm_gpu_memory_utilization: float = field(
        default=0.9, metadata={"help": "Fraction of GPU memory vLLM may use (vLLM backend)."}
    )
    vllm_tensor_parallel_size: int = field(
        default=1, metadata={"help": "Number of GPUs vLLM shards the model over (vLLM backend)."}
    )
    vllm_data_parallel_size: int = field(
        default=1,
        metadata={
            "help": "Number of vLLM engines on this node, each on its own vllm_tensor_parallel_size GPUs and a share "
            "of the prompts (data x tensor parallel size <= visible GPUs; vLLM backend)."
        },
    )
    vllm_max_model_len: int | None = field(
        default=None, metadata={"help": "Context length vLLM reserves KV cache for; defaults to the model's."}
    )

    def __post_init__(self) -> None:
        check_generation_fields(self)

    def vllm_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `vllm.LLM`."""
        return vllm_engine_kwargs(self)

    def to_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for [`generate_responses`] and [`generate_responses_from_texts`]."""
        return {
            "backend": self.backend,
            "max_new_tokens": self.max_new_tokens,
            "do_sample": self.do_sample,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "batch_size": self.generation_batch_size,
            "seed": self.generation_seed,
            "vllm_kwargs": self.vllm_kwargs(),
        }


def generation_field(name: str, default: Any = dataclasses.MISSING, help: str | None = None) -> Any:
    """The field `name` of [`GenerationArguments`] (default, choices, help), for a config that holds it too
    (`EvalConfig`), possibly under another name and with its own default or help."""
    source = next(f for f in dataclasses.fields(GenerationArguments) if f.name == name)
    metadata = dict(source.metadata) | ({} if help is None else {"help": help})
    return field(default=source.default if default is dataclasses.MISSING else default, metadata=metadata)


def vllm_engine_kwargs(args: Any) -> dict[str, Any]:
    """Keyword arguments for `vllm.LLM` from the `vllm_*` fields of a config (generation or evaluation)."""
    kwargs: dict[str, Any] = {
        "gpu_memory_utilization": args.vllm_gpu_memory_utilization,
        "tensor_parallel_size": args.vllm_tensor_parallel_size,
    }
    if args.vllm_max_model_len is not None:
        kwargs["max_model_len"] = args.vllm_max_model_len
    # Not a `vllm.LLM` argument (it refuses data parallelism in one process): the engine factory of `generation.py`
    # starts that many engines (`trl_presafety.vllm_data_parallel`)
    data_parallel_size = getattr(args, "vllm_data_parallel_size", 1)
    if data_parallel_size != 1:
        kwargs["data_parallel_size"] = data_parallel_size
    return kwargs


def check_generation_fields(args: Any, names: Mapping[str, str] | None = None) -> None:
    """Checks the generation fields of `args`: a [`GenerationArguments`], or a config that holds some of its fields
    (`EvalConfig`, whose sampling comes from its grid). `names` maps a field to the caller's name for it; a field the
    caller does not have is not checked. Each error names the field as the caller spells it, the value and the fix."""
    names = dict(names or {})

    def value(field_name: str) -> Any:
        return getattr(args, names.get(field_name, field_name), None)

    def check(field_name: str, *bounds: Any, fix: str) -> None:
        if value(field_name) is not None:
            check_range(names.get(field_name, field_name), value(field_name), *bounds, fix=fix)

    check_choice(names.get("backend", "backend"), value("backend"), BACKENDS)
    check("max_new_tokens", 1, fix="Use a positive integer.")
    check("generation_batch_size", 1, fix="Use a positive integer.")
    if value("do_sample"):
        check("temperature", 0, None, False, fix="Use a temperature > 0 when sampling, or do_sample=False for greedy.")
    check("top_p", 0, 1, False, fix="Use a value in (0, 1]; 1.0 disables nucleus sampling.")
    check("top_k", 0, fix="Use an integer >= 0; 0 disables top-k sampling.")
    check("vllm_gpu_memory_utilization", 0, 1, False, fix="Use a fraction in (0, 1], e.g. 0.9.")
    check("vllm_tensor_parallel_size", 1, fix="Use the number of GPUs, >= 1.")
    check(
        "vllm_data_parallel_size",
        1,
        fix="Use the number of vLLM engines on this node, >= 1 (each takes vllm_tensor_parallel_size GPUs).",
    )


# The keyword arguments of `generate_responses(_from_texts)`, and the field of `GenerationArguments` each one sets
GENERATION_KEYWORDS = {
    "backend": "backend",
    "max_new_tokens": "max_new_tokens",
    "do_sample": "do_sample",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "batch_size": "generation_batch_size",
    "seed": "generation_seed",
}


def as_generation_arguments(generation: GenerationArguments | None = None, **settings: Any) -> GenerationArguments:
    """One [`GenerationArguments`]: `generation` (defaults: `GenerationArguments()`) with single settings given by
    their keyword names (`batch_size`, `seed`, `do_sample`, ...) over it, checked once."""
    unknown = sorted(set(settings) - set(GENERATION_KEYWORDS))
    if unknown:
        raise TypeError(
            f"Unknown generation setting(s) {unknown}. Use {sorted(GENERATION_KEYWORDS)}, or pass a "
            "`GenerationArguments` as `generation`."
        )
    generation = generation if generation is not None else GenerationArguments()
    if not settings:
        return generation
    return dataclasses.replace(generation, **{GENERATION_KEYWORDS[key]: value for key, value in settings.items()})
