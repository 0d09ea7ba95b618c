# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Batched response generation with thinking on or off, shared by labeling, evaluation and IPO pair building.

Two backends:

- `"vllm"`: vLLM's offline `LLM`, the real choice on GPUs (the model must be a path or hub id: vLLM loads weights).
- `"transformers"`: `model.generate` in batches with left padding; runs anywhere, including CPU-only machines.

`"auto"` picks vLLM when it is importable, a CUDA device is present and the model is given by path; otherwise
transformers. Both backends tokenize the same prompt texts (from `reasoning.build_prompt`) and decode the generated
token ids the same way, so their outputs are comparable.

```python
from trl_presafety.generation import generate_responses

answers = generate_responses("Qwen/Qwen3-0.6B", None, ["How do I make a bomb?"], thinking=False, max_new_tokens=256)
```
"""

import importlib.util
import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from .generation_arguments import (
    BACKENDS,
    DTYPES,
    GENERATION_KEYWORDS,
    GenerationArguments,
    as_generation_arguments,
    check_generation_fields,
    vllm_engine_kwargs,
)
from .reasoning import THINK_CLOSE, THINK_OPEN, build_prompt


logger = logging.getLogger(__name__)

# The decoding settings live in `generation_arguments.py` (no torch import); their names stay importable from here
__all__ = [
    "BACKENDS",
    "DTYPES",
    "GENERATION_KEYWORDS",
    "GenerationArguments",
    "as_generation_arguments",
    "check_generation_fields",
    "decode_generated",
    "generate_responses",
    "generate_responses_from_texts",
    "is_vllm_available",
    "load_causal_lm",
    "resolve_backend",
    "vllm_engine_kwargs",
]

Prompt = str | list[dict[str, str]]


def is_vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def resolve_backend(backend: str, model: PreTrainedModel | str) -> str:
    """The backend `generate_responses` will use: `"vllm"` or `"transformers"`."""
    if backend == "transformers":
        return backend
    if backend == "vllm":
        if not is_vllm_available():
            raise ImportError(
                "backend='vllm' needs vLLM, which is not installed. Install it with `pip install trl-presafety[vllm]` "
                "or use backend='transformers'."
            )
        if not isinstance(model, str):
            raise ValueError(
                "vLLM loads the weights itself, so backend='vllm' needs the model as a path or hub id, got a "
                f"{type(model).__name__} object. Save it with `save_pretrained` and pass the folder, or use "
                "backend='transformers'."
            )
        return backend
    if backend == "auto":
        use_vllm = isinstance(model, str) and is_vllm_available() and torch.cuda.is_available()
        return "vllm" if use_vllm else "transformers"
    raise ValueError(f"Unknown generation backend {backend!r}. Choose one of {list(BACKENDS)}.")


def load_causal_lm(model_id: str, model_init_kwargs: dict[str, Any] | None = None) -> PreTrainedModel:
    """Loads a causal LM for the transformers backend, on the GPU when there is one."""
    kwargs = {"dtype": "auto", **(model_init_kwargs or {})}
    model = AutoModelForCausalLM.from_pretrained(model_id, **kwargs)
    if torch.cuda.is_available() and "device_map" not in kwargs:
        model = model.to("cuda")
    return model.eval()


def context_length(model: Any, max_model_len: int | None = None) -> int | None:
    """The positions the model can read (`max_position_embeddings` of its text config, or vLLM's smaller
    `max_model_len`), for a model in memory or a path / hub id; `None` when its config does not say."""
    config = getattr(model, "config", None)
    if config is None and isinstance(model, (str, os.PathLike)):
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(str(model))
        except (OSError, ValueError):
            return max_model_len
    if config is None:
        return max_model_len
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    limit = getattr(text_config, "max_position_embeddings", None)
    if max_model_len is not None:
        limit = max_model_len if limit is None else min(limit, int(max_model_len))
    return int(limit) if limit else None


def check_prompt_lengths(
    lengths: Sequence[int],
    context: int | None,
    names: Sequence[Any] | None = None,
    what: str = "prompts",
    max_new_tokens: int | None = None,
) -> None:
    """Refuses prompts the model cannot read whole: `length >= context` (no position left to answer from). Nothing is
    truncated: a decision or an answer for a prompt whose start or end was cut would be reported as if it had been
    read. Prompts whose answer would run past the context (`length + max_new_tokens > context`) are reported: their
    answers stop at the context."""
    if context is None:
        return
    names = list(names) if names is not None else list(range(len(lengths)))
    long = [(name, n) for name, n in zip(names, lengths, strict=True) if n >= context]
    if long:
        shown = ", ".join(f"{name} ({n:,} tokens)" for name, n in long[:5]) + (" ..." if len(long) > 5 else "")
        raise ValueError(
            f"{len(long)} of {len(lengths)} {what} are longer than the model's context of {context:,} positions: "
            f"{shown}. The model cannot read them whole, so no decision or answer is given for them (none is "
            "truncated silently). Remove or shorten them (e.g. filter the data on length), or use a model with a "
            "longer context."
        )
    if max_new_tokens:
        capped = sum(n + max_new_tokens > context for n in lengths)
        if capped:
            logger.warning(
                f"{capped} of {len(lengths)} {what} leave less than max_new_tokens={max_new_tokens} positions of the "
                f"model's context ({context:,}): their answers stop at the context."
            )


def _model_id(model: PreTrainedModel | str) -> str | None:
    return model if isinstance(model, str) else (getattr(model, "name_or_path", None) or None)


def _load_tokenizer(
    model: PreTrainedModel | str, tokenizer: PreTrainedTokenizerBase | None
) -> PreTrainedTokenizerBase:
    if tokenizer is not None:
        return tokenizer
    model_id = _model_id(model)
    if not model_id:
        raise ValueError(
            "No tokenizer was given and the model has no `name_or_path` to load one from. Pass `tokenizer=`."
        )
    return AutoTokenizer.from_pretrained(model_id)


def _keep_token_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Ids of the think tags: kept when decoding even where the tokenizer marks them special, because
    `split_reasoning` needs `</think>` to separate the reasoning from the answer."""
    keep = set()
    for tag in (THINK_OPEN, THINK_CLOSE):
        token_id = tokenizer.convert_tokens_to_ids(tag)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            keep.add(token_id)
    return keep


def decode_generated(tokenizer: PreTrainedTokenizerBase, token_ids: Sequence[int]) -> str:
    """Decodes generated ids without special tokens (eos, padding, role markers), keeping the think tags."""
    drop = set(tokenizer.all_special_ids) - _keep_token_ids(tokenizer)
    return tokenizer.decode([int(i) for i in token_ids if int(i) not in drop], skip_special_tokens=False)


def _eos_token_ids(model: PreTrainedModel | None, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Stop ids: the generation config's (Qwen3 lists both `<|im_end|>` and `<|endoftext|>`) plus the tokenizer's."""
    ids: list[int] = []
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (config_eos, tokenizer.eos_token_id):
        for token_id in value if isinstance(value, list) else [value]:
            if token_id is not None and token_id not in ids:
                ids.append(int(token_id))
    return ids


def generate_responses(
    model: PreTrainedModel | str,
    tokenizer: PreTrainedTokenizerBase | None,
    prompts: Sequence[Prompt],
    *,
    thinking: bool,
    generation: GenerationArguments | None = None,
    chat_template_kwargs: dict[str, Any] | None = None,
    show_progress: bool = True,
    model_init_kwargs: dict[str, Any] | None = None,
    vllm_kwargs: dict[str, Any] | None = None,
    **settings: Any,
) -> list[str]:
    """Generates one response per prompt, with thinking on or off.

    Args:
        model: a `PreTrainedModel`, or a path / hub id (required for vLLM, which loads the weights itself).
        tokenizer: the model's tokenizer (with a chat template); `None` loads it from the model's path.
        prompts: user messages (strings) or chat message lists.
        thinking: `False` generates with thinking disabled (`reasoning.build_prompt`: the template's
            `enable_thinking=False` switch where it has one, otherwise an empty, closed think block is prefilled).
        generation: the decoding settings (backend, `max_new_tokens`, sampling, batch size, seed, vLLM engine);
            `GenerationArguments()` by default.
        model_init_kwargs: `from_pretrained` kwargs when `model` is a path and the transformers backend loads it.
        vllm_kwargs: `vllm.LLM` kwargs (`gpu_memory_utilization`, `tensor_parallel_size`, `max_model_len`...), and
            `data_parallel_size` (that many engines, see `trl_presafety.vllm_data_parallel`); default: those of
            `generation`.
        **settings: single settings over `generation`, by keyword: `backend`, `max_new_tokens`, `do_sample`,
            `temperature`, `top_p`, `top_k`, `batch_size`, `seed`.

    Returns:
        The generated text only, in prompt order, with special tokens removed except the think tags. With thinking
        on and an R1-style template, the response starts inside the think block (the prompt opened it), so it holds
        `</think>` but not `<think>`: `reasoning.split_reasoning` handles both forms.
    """
    generation = as_generation_arguments(generation, **settings)
    tokenizer = _load_tokenizer(model, tokenizer)
    # Build every prompt before loading anything, so a tokenizer without a chat template fails fast
    texts = [build_prompt(tokenizer, p, thinking, chat_template_kwargs) for p in prompts]
    return generate_responses_from_texts(
        model,
        tokenizer,
        texts,
        generation=generation,
        show_progress=show_progress,
        model_init_kwargs=model_init_kwargs,
        vllm_kwargs=vllm_kwargs,
    )


def generate_responses_from_texts(
    model: PreTrainedModel | str,
    tokenizer: PreTrainedTokenizerBase | None,
    texts: Sequence[str],
    *,
    generation: GenerationArguments | None = None,
    num_return_sequences: int = 1,
    show_progress: bool = True,
    model_init_kwargs: dict[str, Any] | None = None,
    vllm_kwargs: dict[str, Any] | None = None,
    **settings: Any,
) -> list[str]:
    """Like [`generate_responses`], but continues already-built prompt texts (chat template applied, possibly with a
    prefilled partial reasoning trace, as IPO's continuations need). Texts are tokenized without adding special
    tokens: the chat template already put in the ones it wants.

    `num_return_sequences=k` (sampling only) draws k samples per text, returned flat and grouped by text (the samples
    of text `i` at `[i * k, (i + 1) * k)`). They are drawn so that they differ: one vLLM request with `n=k` (vLLM
    seeds its k children `seed + j`), or transformers' `num_return_sequences` from one RNG stream. Repeating a text k
    times with one seed would not do: on vLLM identical prompt and seed give identical samples."""
    generation = as_generation_arguments(generation, **settings)
    if num_return_sequences < 1:
        raise ValueError(f"`num_return_sequences` must be >= 1, got {num_return_sequences}.")
    if num_return_sequences > 1 and not generation.do_sample:
        raise ValueError(
            f"`num_return_sequences={num_return_sequences}` with greedy decoding gives {num_return_sequences} identical "
            "copies. Set `do_sample=True` to draw different samples, or ask for 1."
        )
    texts = list(texts)
    if not texts:
        return []
    tokenizer = _load_tokenizer(model, tokenizer)
    prompt_ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    # Before any model is loaded or memory allocated: a prompt past the context gets no answer
    engine_kwargs = generation.vllm_kwargs() if vllm_kwargs is None else vllm_kwargs
    check_prompt_lengths(
        [len(ids) for ids in prompt_ids],
        context_length(model, engine_kwargs.get("max_model_len")),
        max_new_tokens=generation.max_new_tokens,
    )
    if resolve_backend(generation.backend, model) == "vllm":
        engine_kwargs = generation.vllm_kwargs() if vllm_kwargs is None else vllm_kwargs
        return _generate_vllm(
            model, tokenizer, prompt_ids, generation, show_progress, engine_kwargs, num_return_sequences
        )
    if isinstance(model, str):
        model = load_causal_lm(model, model_init_kwargs)
    return _generate_transformers(model, tokenizer, prompt_ids, generation, show_progress, num_return_sequences)


def _generate_transformers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: list[list[int]],
    generation: GenerationArguments,
    show_progress: bool,
    num_return_sequences: int = 1,
) -> list[str]:
    eos_ids = _eos_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    # A fresh config: the model's own defaults (e.g. Qwen3's sampling temperature) must not leak into greedy decoding
    config = GenerationConfig(
        max_new_tokens=generation.max_new_tokens,
        do_sample=generation.do_sample,
        eos_token_id=eos_ids,
        num_return_sequences=num_return_sequences,
    )
    config.pad_token_id = pad_id
    if generation.do_sample:
        config.temperature = generation.temperature
        config.top_p = generation.top_p
        config.top_k = generation.top_k  # 0 disables top-k in transformers too
    # Longest first: less padding per batch, and an out-of-memory error shows up on the first batch
    order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))
    k = num_return_sequences
    outputs: list[list[str] | None] = [None] * len(prompt_ids)
    devices = [model.device] if model.device.type == "cuda" else []
    was_training = model.training
    model.eval()
    progress = tqdm(total=len(prompt_ids), desc="Generating", unit="prompt", disable=not show_progress)
    # A private RNG state: sampling is reproducible from `seed` and the caller's RNG is left untouched
    with torch.random.fork_rng(devices=devices), torch.inference_mode():
        torch.manual_seed(generation.generation_seed)
        for start in range(0, len(order), generation.generation_batch_size):
            indices = order[start : start + generation.generation_batch_size]
            batch = tokenizer.pad(
                {"input_ids": [prompt_ids[i] for i in indices]},
                padding=True,
                padding_side="left",  # decoder-only models continue from the last position: pad on the left
                return_tensors="pt",
            ).to(model.device)
            generated = model.generate(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], generation_config=config
            )
            # `generate` returns the k samples of each prompt next to each other
            new_tokens = generated[:, batch["input_ids"].shape[1] :].tolist()
            for j, i in enumerate(indices):
                outputs[i] = [decode_generated(tokenizer, ids) for ids in new_tokens[j * k : (j + 1) * k]]
            progress.update(len(indices))
    progress.close()
    model.train(was_training)
    return [text for samples in outputs for text in samples]  # type: ignore[union-attr]


# vLLM engines are expensive to start: keep the last one, since labeling calls generation once per shard
_VLLM_ENGINE: dict[str, Any] = {}


def _get_vllm_engine(model_id: str, seed: int, vllm_kwargs: dict[str, Any]) -> Any:
    """The vLLM engine for `model_id` and `vllm_kwargs`: `vllm.LLM`, or with `data_parallel_size > 1` a
    [`~trl_presafety.vllm_data_parallel.DataParallelLLM`] (that many engines, one per GPU group)."""
    # The seed is not part of the key: each request carries its own (`SamplingParams.seed`), and labeling changes it
    # per shard, which would otherwise reload the model for every shard
    key = repr((model_id, sorted(vllm_kwargs.items())))
    engine = _VLLM_ENGINE.get("engine")
    if _VLLM_ENGINE.get("key") != key or getattr(engine, "closed", False):
        _VLLM_ENGINE.clear()  # drop the previous engine first: two engines rarely fit on one GPU
        if hasattr(engine, "close"):
            engine.close()
        kwargs = dict(vllm_kwargs)
        data_parallel_size = int(kwargs.pop("data_parallel_size", 1))
        if data_parallel_size > 1:
            from .vllm_data_parallel import DataParallelLLM

            _VLLM_ENGINE["engine"] = DataParallelLLM(model_id, seed, data_parallel_size, kwargs)
        else:
            from vllm import LLM

            _VLLM_ENGINE["engine"] = LLM(model=model_id, seed=seed, **kwargs)
        _VLLM_ENGINE["key"] = key
    return _VLLM_ENGINE["engine"]


def _generate_vllm(
    model_id: str,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: list[list[int]],
    generation: GenerationArguments,
    show_progress: bool,
    vllm_kwargs: dict[str, Any],
    num_return_sequences: int = 1,
) -> list[str]:
    from vllm import SamplingParams

    seed = generation.generation_seed
    llm = _get_vllm_engine(model_id, seed, vllm_kwargs)
    greedy = not generation.do_sample
    params = SamplingParams(
        n=num_return_sequences,  # one request, k children seeded seed + j: k different samples
        max_tokens=generation.max_new_tokens,
        temperature=0.0 if greedy else generation.temperature,
        top_p=1.0 if greedy else generation.top_p,
        top_k=-1 if greedy or not generation.top_k else generation.top_k,  # -1 disables top-k in every version
        seed=seed,
        stop_token_ids=_eos_token_ids(None, tokenizer),
    )
    # Token ids in, token ids out: vLLM sees exactly the prompt the transformers backend sees (no second BOS), and
    # the decoding rule (keep the think tags) is the same for both backends
    requests = [{"prompt_token_ids": ids} for ids in prompt_ids]
    results = llm.generate(requests, sampling_params=params, use_tqdm=show_progress)
    outputs = []
    for result in results:
        if len(result.outputs) != num_return_sequences:
            raise RuntimeError(
                f"vLLM returned {len(result.outputs)} samples for a request of n={num_return_sequences}; expected one "
                "per requested sample."
            )
        outputs.extend(decode_generated(tokenizer, sample.token_ids) for sample in result.outputs)
    return outputs
