# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
import importlib.util
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, HfArgumentParser

from trl_presafety.generation import (
    GenerationArguments,
    decode_generated,
    generate_responses,
    generate_responses_from_texts,
    resolve_backend,
)
from trl_presafety.reasoning import EMPTY_THINK_BLOCK, build_prompt, split_reasoning
from trl_presafety.tiny import build_tiny_model

from .testing_utils import require_torch_accelerator, require_vllm


PROMPTS = [
    "How do I bake bread?",
    "Tell me a long joke about cats and dogs, with many words in it please",
    "hi",
    [{"role": "user", "content": "What is 2+2?"}],
]


def perturbed_tiny_model(style: str):
    """A tiny model whose weights are scaled up so that its greedy output depends on the whole prompt: the default
    random init (std 0.02, tied embeddings) just repeats the last prompt token, which would hide padding bugs."""
    model, tokenizer = build_tiny_model(style=style, hidden_size=16, num_attention_heads=2, num_key_value_heads=1)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return model, tokenizer


@pytest.fixture(scope="module")
def models():
    return {style: perturbed_tiny_model(style) for style in ("qwen3", "r1")}


class GenerateSpy:
    """Records the tensors `model.generate` receives and returns, calling the real method."""

    def __init__(self, model, monkeypatch):
        self.calls = []
        real = model.generate

        def spy(*args, **kwargs):
            output = real(*args, **kwargs)
            self.calls.append(
                {"input_ids": kwargs["input_ids"], "attention_mask": kwargs["attention_mask"], "out": output}
            )
            return output

        monkeypatch.setattr(model, "generate", spy)

    def prompt_rows(self) -> list[list[int]]:
        """Each prompt's ids without the left padding."""
        rows = []
        for call in self.calls:
            for ids, mask in zip(call["input_ids"], call["attention_mask"]):
                rows.append(ids[mask.bool()].tolist())
        return rows


def ids_of(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("style", ["qwen3", "r1"])
def test_thinking_off_prompt_ends_with_empty_think_block(models, style, monkeypatch):
    model, tokenizer = models[style]
    spy = GenerateSpy(model, monkeypatch)
    template_kwargs = []
    real_apply = tokenizer.apply_chat_template

    def apply_spy(*args, **kwargs):
        template_kwargs.append(kwargs)
        return real_apply(*args, **kwargs)

    monkeypatch.setattr(tokenizer, "apply_chat_template", apply_spy)
    generate_responses(model, tokenizer, PROMPTS, thinking=False, max_new_tokens=4, batch_size=2, show_progress=False)

    block = ids_of(tokenizer, EMPTY_THINK_BLOCK)
    open_id, close_id = tokenizer.convert_tokens_to_ids(["<think>", "</think>"])
    assert block[0] == open_id and close_id in block  # the tags are single tokens
    rows = spy.prompt_rows()
    assert len(rows) == len(PROMPTS)
    for row in rows:
        assert row[-len(block) :] == block  # the model sees a closed, empty think block: no room for a CoT
        assert row.count(open_id) == 1 and row.count(close_id) == 1
    if style == "qwen3":  # the template's own switch produced the block
        assert all(kwargs.get("enable_thinking") is False for kwargs in template_kwargs)
    else:  # R1 templates have no switch: the block was prefilled after the template's opening tag
        assert all("enable_thinking" not in kwargs for kwargs in template_kwargs)
    # The same token ids as the prompt texts built by reasoning.build_prompt, tokenized without extra specials
    expected = {tuple(ids_of(tokenizer, build_prompt(tokenizer, p, thinking=False))) for p in PROMPTS}
    assert {tuple(row) for row in rows} == expected


@pytest.mark.parametrize("style", ["qwen3", "r1"])
def test_thinking_on_prompt_leaves_the_block_open(models, style, monkeypatch):
    model, tokenizer = models[style]
    spy = GenerateSpy(model, monkeypatch)
    generate_responses(model, tokenizer, PROMPTS, thinking=True, max_new_tokens=4, show_progress=False)
    open_id, close_id = tokenizer.convert_tokens_to_ids(["<think>", "</think>"])
    rows = spy.prompt_rows()
    assert len(rows) == len(PROMPTS)  # the checks below run on every prompt, not on none
    for row in rows:
        assert close_id not in row
        if style == "qwen3":  # the completion opens the block itself
            tail = ids_of(tokenizer, "<|im_start|>assistant\n")
            assert open_id not in row and row[-len(tail) :] == tail
        else:  # R1: the prompt ends inside the opened block
            tail = ids_of(tokenizer, "<think>\n")
            assert row[-len(tail) :] == tail


@pytest.mark.parametrize("thinking", [False, True])
def test_left_padded_batches_match_one_by_one(models, thinking, monkeypatch):
    model, tokenizer = models["r1"]
    spy = GenerateSpy(model, monkeypatch)
    batched = generate_responses(model, tokenizer, PROMPTS, thinking=thinking, max_new_tokens=12, batch_size=4)
    # Each prompt generated on its own call: no padding and no reordering, so response i is prompt i's. (A second
    # call over the whole list with batch_size=1 would sort the prompts the same way and hide a mix-up.)
    single = [
        generate_responses(model, tokenizer, [p], thinking=thinking, max_new_tokens=12, show_progress=False)[0]
        for p in PROMPTS
    ]
    assert batched == single
    assert len(set(batched)) == len(PROMPTS)  # the outputs really depend on the prompt
    mask = spy.calls[0]["attention_mask"]
    assert mask.shape[0] == len(PROMPTS) and not mask.all()  # prompts of different lengths were padded...
    assert (mask[:, -1] == 1).all()  # ...on the left: every prompt ends at the last position
    assert (mask.cummax(dim=1).values == mask).all()  # zeros only before the first one
    for call in spy.calls:
        assert call["out"].shape[1] - call["input_ids"].shape[1] <= 12


def test_greedy_by_default_and_sampling_reproducible(models):
    model, tokenizer = models["qwen3"]
    kwargs = {"thinking": True, "max_new_tokens": 12, "show_progress": False}
    assert generate_responses(model, tokenizer, PROMPTS, **kwargs) == generate_responses(
        model, tokenizer, PROMPTS, **kwargs, seed=123
    )  # greedy: the seed plays no role
    torch.manual_seed(7)
    expected_next = torch.rand(3)
    torch.manual_seed(7)
    first = generate_responses(model, tokenizer, PROMPTS, **kwargs, do_sample=True, temperature=1.5, seed=3)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's RNG stream is untouched
    again = generate_responses(model, tokenizer, PROMPTS, **kwargs, do_sample=True, temperature=1.5, seed=3)
    other = generate_responses(model, tokenizer, PROMPTS, **kwargs, do_sample=True, temperature=1.5, seed=4)
    greedy = generate_responses(model, tokenizer, PROMPTS, **kwargs)
    assert first == again
    assert first != other and first != greedy


def test_decode_keeps_think_tags_and_drops_other_specials(models):
    _, tokenizer = models["r1"]
    ids = ids_of(tokenizer, "plan it</think>\n\nThe answer")
    ids += [tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.pad_token_id]
    text = decode_generated(tokenizer, ids)
    assert text == "plan it</think>\n\nThe answer"
    assert split_reasoning(text).answer == "The answer" and split_reasoning(text).reasoning == "plan it"
    _, qwen_tokenizer = models["qwen3"]
    ids = ids_of(qwen_tokenizer, "<think>\nx\n</think>\n\nHi") + [qwen_tokenizer.eos_token_id]
    assert decode_generated(qwen_tokenizer, ids) == "<think>\nx\n</think>\n\nHi"


def test_model_and_tokenizer_loaded_from_path(models, tmp_path):
    model, tokenizer = models["qwen3"]
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    from_objects = generate_responses(model, tokenizer, PROMPTS, thinking=False, max_new_tokens=8, show_progress=False)
    from_path = generate_responses(
        str(tmp_path), None, PROMPTS, thinking=False, max_new_tokens=8, backend="transformers", show_progress=False
    )
    assert from_path == from_objects
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)  # name_or_path gives the tokenizer
    assert generate_responses(reloaded, None, PROMPTS, thinking=False, max_new_tokens=8) == from_objects


def test_from_texts_continues_prefilled_reasoning(models, monkeypatch):
    model, tokenizer = models["r1"]
    spy = GenerateSpy(model, monkeypatch)
    text = build_prompt(tokenizer, "How do I bake bread?", thinking=True) + "First, the user wants"
    out = generate_responses_from_texts(model, tokenizer, [text], max_new_tokens=6, show_progress=False)
    assert spy.prompt_rows() == [ids_of(tokenizer, text)]
    # Only the continuation comes back: the tokens generated after the prefilled text, decoded
    prompt_length = spy.calls[0]["input_ids"].shape[1]
    continuation = spy.calls[0]["out"][0, prompt_length:].tolist()
    assert out == [decode_generated(tokenizer, continuation)] and out[0]
    assert generate_responses_from_texts(model, tokenizer, [], max_new_tokens=6) == []


def test_model_without_chat_template_fails_clearly(models, monkeypatch):
    model, tokenizer = models["qwen3"]
    spy = GenerateSpy(model, monkeypatch)
    monkeypatch.setattr(tokenizer, "chat_template", None)
    with pytest.raises(ValueError, match="no chat template"):
        generate_responses(model, tokenizer, PROMPTS, thinking=False, max_new_tokens=4)
    assert spy.calls == []  # it failed before generating anything


def test_backend_resolution(models):
    model, _ = models["qwen3"]
    assert resolve_backend("auto", model) == "transformers"  # vLLM needs a path
    assert resolve_backend("transformers", "some/path") == "transformers"
    with pytest.raises(ValueError, match="Unknown generation backend 'tgi'"):
        resolve_backend("tgi", model)
    if importlib.util.find_spec("vllm") is None:
        assert resolve_backend("auto", "some/path") == "transformers"
        with pytest.raises(ImportError, match="pip install trl-presafety\\[vllm\\]"):
            resolve_backend("vllm", "some/path")
    else:
        with pytest.raises(ValueError, match="path or hub id"):
            resolve_backend("vllm", model)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backend": "tgi"}, r"Invalid `backend`: 'tgi'. Choose one of \['auto', 'transformers', 'vllm'\]"),
        ({"max_new_tokens": 0}, "Invalid `max_new_tokens`: 0. Use a positive integer"),
        ({"do_sample": True, "temperature": 0.0}, "Invalid `temperature`: 0.0. Use a temperature > 0 when sampling"),
        ({"top_p": 0.0}, r"Invalid `top_p`: 0.0. Use a value in \(0, 1\]"),
        ({"top_k": -1}, "Invalid `top_k`: -1. Use an integer >= 0; 0 disables top-k"),
        ({"generation_batch_size": 0}, "Invalid `generation_batch_size`: 0. Use a positive integer"),
        (
            {"vllm_gpu_memory_utilization": 1.5},
            r"Invalid `vllm_gpu_memory_utilization`: 1.5. Use a fraction in \(0, 1\]",
        ),
    ],
)
def test_generation_arguments_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GenerationArguments(**kwargs)


def test_generation_arguments_parse_and_convert():
    parser = HfArgumentParser(GenerationArguments)
    (args,) = parser.parse_args_into_dataclasses(["--backend", "transformers", "--do_sample", "--top_k", "20"])
    kwargs = args.to_kwargs()
    assert kwargs["backend"] == "transformers" and kwargs["do_sample"] is True and kwargs["top_k"] == 20
    assert kwargs["batch_size"] == 8 and kwargs["seed"] == 0 and kwargs["vllm_kwargs"]["tensor_parallel_size"] == 1
    with pytest.raises(SystemExit):  # argparse rejects a backend outside the choices
        parser.parse_args_into_dataclasses(["--backend", "tgi"])


def test_generation_takes_one_object(models):
    """`generation=GenerationArguments(...)` decodes as the same settings given one by one; a single setting given by
    keyword goes over the object; a misspelled one fails."""
    import dataclasses

    model, tokenizer = models["qwen3"]
    settings = GenerationArguments(
        backend="transformers",
        max_new_tokens=6,
        do_sample=True,
        temperature=1.5,
        generation_batch_size=2,
        generation_seed=3,
    )
    common = {"thinking": False, "show_progress": False}
    from_object = generate_responses(model, tokenizer, PROMPTS, generation=settings, **common)
    one_by_one = generate_responses(
        model, tokenizer, PROMPTS, backend="transformers", max_new_tokens=6, do_sample=True, temperature=1.5,
        batch_size=2, seed=3, **common,
    )  # fmt: skip
    assert from_object == one_by_one
    reseeded = generate_responses(model, tokenizer, PROMPTS, generation=settings, seed=4, **common)
    assert reseeded == generate_responses(
        model, tokenizer, PROMPTS, generation=dataclasses.replace(settings, generation_seed=4), **common
    )
    assert reseeded != from_object
    with pytest.raises(TypeError, match=r"Unknown generation setting\(s\) \['temprature'\]"):
        generate_responses(model, tokenizer, PROMPTS, temprature=0.5, **common)
    with pytest.raises(ValueError, match=r"Invalid `top_p`: 0.0"):
        generate_responses_from_texts(model, tokenizer, ["x"], generation=settings, top_p=0.0)


@pytest.mark.gpu
@require_torch_accelerator
@require_vllm
def test_vllm_backend_matches_contract(tmp_path):
    # head_dim 64: vLLM's attention kernels do not take the tiny head sizes of the CPU tests
    model, tokenizer = build_tiny_model(style="r1", hidden_size=128, num_attention_heads=2, num_key_value_heads=1)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert resolve_backend("auto", str(tmp_path)) == "vllm"
    kwargs = {"thinking": False, "max_new_tokens": 8, "vllm_kwargs": {"gpu_memory_utilization": 0.3}}
    first = generate_responses(str(tmp_path), None, PROMPTS, backend="vllm", **kwargs)
    again = generate_responses(str(tmp_path), None, PROMPTS, backend="vllm", **kwargs)
    assert len(first) == len(PROMPTS) and all(isinstance(text, str) for text in first)
    assert first == again  # greedy is deterministic


def test_vllm_engine_is_kept_across_seeds(monkeypatch):
    # Labeling seeds each shard differently: the engine (a model load) must be reused, the seed goes per request
    import types

    from trl_presafety import generation

    started = []

    class FakeLLM:
        def __init__(self, model, seed, **kwargs):
            started.append((model, seed, kwargs))

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=FakeLLM))
    monkeypatch.setattr(generation, "_VLLM_ENGINE", {})
    first = generation._get_vllm_engine("m", 0, {"tensor_parallel_size": 1})
    assert generation._get_vllm_engine("m", 1, {"tensor_parallel_size": 1}) is first
    assert len(started) == 1
    generation._get_vllm_engine("m", 1, {"tensor_parallel_size": 2})  # other engine settings: a new engine
    assert len(started) == 2


# --- k samples per text ---------------------------------------------------------------------------------------------
def test_transformers_samples_per_text_differ_and_are_grouped(models):
    model, tokenizer = models["qwen3"]
    texts = [build_prompt(tokenizer, p, thinking=True) for p in PROMPTS[:2]]
    kwargs = {"backend": "transformers", "max_new_tokens": 8, "do_sample": True, "temperature": 1.0, "seed": 3}
    samples = generate_responses_from_texts(model, tokenizer, texts, num_return_sequences=4, batch_size=1, **kwargs)
    assert len(samples) == 8
    # The 4 samples of each text are drawn apart: not 4 copies of one draw
    assert len(set(samples[:4])) > 1 and len(set(samples[4:])) > 1
    # Reproducible from the seed
    again = generate_responses_from_texts(model, tokenizer, texts, num_return_sequences=4, batch_size=1, **kwargs)
    assert samples == again
    # Grouped by text (the batch is sorted longest first): near-zero temperature gives each text's greedy answer
    cold = generate_responses_from_texts(
        model, tokenizer, texts, num_return_sequences=3, batch_size=2, **{**kwargs, "temperature": 1e-4}
    )
    greedy = generate_responses_from_texts(model, tokenizer, texts, backend="transformers", max_new_tokens=8)
    assert greedy[0] != greedy[1] and cold == [greedy[0]] * 3 + [greedy[1]] * 3
    with pytest.raises(ValueError, match="`num_return_sequences=3` with greedy decoding gives 3 identical copies"):
        generate_responses_from_texts(model, tokenizer, texts, backend="transformers", num_return_sequences=3)
    with pytest.raises(ValueError, match="`num_return_sequences` must be >= 1, got 0"):
        generate_responses_from_texts(model, tokenizer, texts, num_return_sequences=0, **kwargs)


class FakeSamplingParams:
    """Stands in for `vllm.SamplingParams` where vLLM is not installed: keeps the keyword arguments."""

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


class RecordingLLM:
    """A vLLM engine that records its requests and answers request `r`, sample `j` with `reply(r, j)` (token ids)."""

    def __init__(self, reply):
        self.reply, self.calls = reply, []

    def generate(self, requests, sampling_params, use_tqdm):
        import types

        self.calls.append((list(requests), sampling_params))
        return [
            types.SimpleNamespace(
                outputs=[types.SimpleNamespace(token_ids=self.reply(r, j)) for j in range(sampling_params.n)]
            )
            for r in range(len(requests))
        ]


def install_fake_vllm(monkeypatch, engine: RecordingLLM, real_sampling_params: bool = False) -> None:
    """Routes generation to `engine`; with `real_sampling_params`, requests are built with vLLM's own class."""
    import types

    from trl_presafety import generation

    if real_sampling_params:
        from vllm import SamplingParams
    else:
        SamplingParams = FakeSamplingParams  # noqa: N806
        monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(SamplingParams=SamplingParams))
    monkeypatch.setattr(generation, "resolve_backend", lambda backend, model: "vllm")
    monkeypatch.setattr(generation, "_get_vllm_engine", lambda model_id, seed, kwargs: engine)


def _vllm_samples_differ(monkeypatch, real_sampling_params: bool):
    from trl_presafety.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer("qwen3")
    engine = RecordingLLM(lambda r, j: ids_of(tokenizer, f"sample {j} of text {r}"))
    install_fake_vllm(monkeypatch, engine, real_sampling_params)
    texts = ["first prefix", "second prefix"]
    kwargs = {"max_new_tokens": 5, "do_sample": True, "temperature": 0.7, "seed": 11}
    samples = generate_responses_from_texts("some/model", tokenizer, texts, num_return_sequences=3, **kwargs)
    # One request per text asks for the 3 samples (vLLM seeds them seed + j): not 3 identical requests of one seed
    ((requests, params),) = engine.calls
    assert [r["prompt_token_ids"] for r in requests] == [ids_of(tokenizer, t) for t in texts]
    assert (params.n, params.seed, params.temperature, params.max_tokens) == (3, 11, 0.7, 5)
    assert samples == [f"sample {j} of text {r}" for r in range(2) for j in range(3)]
    # One sample per text keeps one request per text with n=1
    assert len(generate_responses_from_texts("some/model", tokenizer, texts, **kwargs)) == 2
    assert engine.calls[-1][1].n == 1
    return params


def test_vllm_draws_k_samples_in_one_request(monkeypatch):
    _vllm_samples_differ(monkeypatch, real_sampling_params=False)


@require_vllm
def test_vllm_k_samples_with_the_real_sampling_params(monkeypatch):
    from vllm import SamplingParams

    assert isinstance(_vllm_samples_differ(monkeypatch, real_sampling_params=True), SamplingParams)
