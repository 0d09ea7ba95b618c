# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""`vllm_data_parallel_size`: one vLLM engine per GPU group, each in its own process (`trl_presafety.vllm_data_parallel`).

Where vLLM is not installed, a recording stand-in for the `vllm` package (put first on `sys.path`, which spawned engine
processes inherit) records how each engine is built, which GPUs it sees and which requests it answers; the engine
processes, pipes and the split of the requests are the package's own.
"""

import dataclasses
import importlib.util
import json
import sys

import pytest
import torch

from trl_presafety import generation
from trl_presafety.evaluation.config import EvalConfig
from trl_presafety.generation import GenerationArguments, generate_responses_from_texts
from trl_presafety.tiny import build_tiny_tokenizer
from trl_presafety.vllm_data_parallel import gpu_groups, split_evenly


FAKE_VLLM = '''
"""Stands in for vLLM: records each engine's construction and requests; answers with the prompt ids reversed."""
import json, os, types
from pathlib import Path

LOG = Path(os.environ["FAKE_VLLM_LOG"])


class SamplingParams:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


class LLM:
    def __init__(self, model, seed, **kwargs):
        self.devices = os.environ.get("CUDA_VISIBLE_DEVICES")
        if os.environ.get("FAKE_VLLM_FAIL") == self.devices:
            raise ValueError("World size (2) is larger than the number of available GPUs (1) in this node.")
        self.record = LOG / f"engine-{os.getpid()}-{id(self)}.json"
        self.content = {"model": model, "seed": seed, "kwargs": kwargs, "devices": self.devices, "requests": []}
        self.record.write_text(json.dumps(self.content))

    def generate(self, requests, sampling_params, use_tqdm):
        self.content["requests"].extend(r["prompt_token_ids"] for r in requests)
        self.record.write_text(json.dumps(self.content))
        return [
            types.SimpleNamespace(outputs=[
                types.SimpleNamespace(token_ids=r["prompt_token_ids"][::-1][: sampling_params.max_tokens])
                for _ in range(sampling_params.n)
            ])
            for r in requests
        ]
'''


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch):
    package = tmp_path / "site" / "vllm"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(FAKE_VLLM)
    log = tmp_path / "engines"
    log.mkdir()
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    monkeypatch.setenv("FAKE_VLLM_LOG", str(log))
    monkeypatch.setattr(generation, "resolve_backend", lambda backend, model: "vllm")
    monkeypatch.setattr(generation, "_VLLM_ENGINE", {})
    yield log
    engine = generation._VLLM_ENGINE.get("engine")
    if hasattr(engine, "close"):
        engine.close()


def _engines(log) -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in log.glob("engine-*.json")), key=lambda e: str(e["devices"]))


def test_data_parallel_size_starts_one_engine_per_gpu_group(fake_vllm, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,4,5,6")
    tokenizer = build_tiny_tokenizer("qwen3")
    texts = ["first prompt", "the second one", "third", "fourth prompt here", "fifth"]
    args = GenerationArguments(
        backend="vllm", max_new_tokens=3, vllm_tensor_parallel_size=2, vllm_data_parallel_size=2, generation_seed=7
    )
    assert args.to_kwargs()["vllm_kwargs"]["data_parallel_size"] == 2
    parallel = generate_responses_from_texts("some/model", tokenizer, texts, generation=args, show_progress=False)
    engines = _engines(fake_vllm)
    # Two engines, each on its own two GPUs, each built with the tensor-parallel size and no data-parallel argument
    # (vllm.LLM refuses data_parallel_size > 1 in one process)
    assert [e["devices"] for e in engines] == ["3,4", "5,6"]
    for engine in engines:
        assert engine["model"] == "some/model" and engine["seed"] == 7
        assert engine["kwargs"] == {"gpu_memory_utilization": 0.9, "tensor_parallel_size": 2}
    # Contiguous blocks of the requests, larger first; the answers come back in request order
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert [e["requests"] for e in engines] == [ids[:3], ids[3:]]
    single = dataclasses.replace(args, vllm_data_parallel_size=1)
    monkeypatch.setattr(generation, "_VLLM_ENGINE", {})
    assert generate_responses_from_texts("some/model", tokenizer, texts, generation=single) == parallel
    assert len(_engines(fake_vllm)) == 3  # the single engine, in this process


def test_an_engine_that_fails_to_start_names_its_gpus(fake_vllm, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("FAKE_VLLM_FAIL", "1")
    args = GenerationArguments(backend="vllm", max_new_tokens=3, vllm_data_parallel_size=2)
    with pytest.raises(RuntimeError, match=r"(?s)vLLM engine 1 of 2 \(CUDA_VISIBLE_DEVICES=1\) failed while starting.*"
                       r"World size"):  # fmt: skip
        generate_responses_from_texts("some/model", build_tiny_tokenizer("qwen3"), ["x"], generation=args)


def test_more_engines_than_gpus_fail_clearly(fake_vllm, monkeypatch):
    assert gpu_groups(2, 2, ["a", "b", "c", "d"]) == ["a,b", "c,d"]
    assert gpu_groups(3, 1, ["0", "1", "2", "3"]) == ["0", "1", "2"]
    with pytest.raises(ValueError, match=r"Invalid `vllm_data_parallel_size`: 4. With `vllm_tensor_parallel_size: 2` it "
                       r"needs 4 x 2 = 8 GPUs, and 4 are visible.*Lower `vllm_data_parallel_size` to 2"):  # fmt: skip
        gpu_groups(4, 2, ["0", "1", "2", "3"])
    with pytest.raises(ValueError, match=r"Lower `vllm_tensor_parallel_size` to at most 1"):
        gpu_groups(2, 2, ["0"])
    # Through generation: refused before any engine process starts
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    args = GenerationArguments(backend="vllm", vllm_data_parallel_size=2, vllm_tensor_parallel_size=2)
    with pytest.raises(ValueError, match=r"needs 2 x 2 = 4 GPUs, and 2 are visible \(CUDA_VISIBLE_DEVICES=0,1\)"):
        generate_responses_from_texts("some/model", build_tiny_tokenizer("qwen3"), ["x"], generation=args)
    assert not _engines(fake_vllm)


def test_bad_data_parallel_sizes_fail_in_every_config():
    with pytest.raises(ValueError, match=r"Invalid `vllm_data_parallel_size`: 0. Use the number of vLLM engines"):
        GenerationArguments(vllm_data_parallel_size=0)
    assert "data_parallel_size" not in GenerationArguments().vllm_kwargs()  # vllm.LLM's arguments as before
    config = EvalConfig(model_name_or_path="m", vllm_data_parallel_size=4, vllm_tensor_parallel_size=2)
    assert config.vllm_kwargs()["data_parallel_size"] == 4
    assert config.generation_arguments().vllm_data_parallel_size == 4
    with pytest.raises(ValueError, match=r"Invalid `vllm_data_parallel_size`: -1"):
        EvalConfig(model_name_or_path="m", vllm_data_parallel_size=-1)


def test_split_evenly_covers_every_request_once():
    for n in range(0, 12):
        for parts in range(1, 5):
            blocks = split_evenly(n, parts)
            assert [i for block in blocks for i in block] == list(range(n))
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


def test_every_generating_command_takes_the_setting():
    """`label`, `build-sft`, `build-ipo-pairs` and `eval` read `vllm_data_parallel_size` from a recipe or the command
    line, and hand it to the engine factory with their other vLLM settings."""
    from trl_presafety.scripts import build_ipo_pairs, build_sft, label
    from trl_presafety.scripts.arguments import parse_args_strict

    flags = ["--vllm_data_parallel_size", "4", "--vllm_tensor_parallel_size", "2"]
    required = {
        label: ["--dataset_name", "d", "--output_dir", "o", "--classifier_name_or_path", "c"],
        build_sft: ["--prompts", "tiny", "--output_dir", "o"],
        build_ipo_pairs: ["--dataset_name", "d", "--output_dir", "o", "--model_name_or_path", "m"],
    }
    for module, argv in required.items():
        parsed = parse_args_strict(module.make_parser(), argv + flags)
        (generation,) = [p for p in parsed if isinstance(p, GenerationArguments)]
        assert generation.to_kwargs()["vllm_kwargs"] == {
            "gpu_memory_utilization": 0.9,
            "tensor_parallel_size": 2,
            "data_parallel_size": 4,
        }
    config = EvalConfig(model_name_or_path="m", vllm_data_parallel_size=4, vllm_tensor_parallel_size=2)
    assert config.generation_arguments().to_kwargs()["vllm_kwargs"]["data_parallel_size"] == 4


@pytest.mark.gpu
@pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None or not torch.cuda.is_available() or torch.cuda.device_count() < 2,
    reason="needs vLLM and 2 GPUs",
)
def test_two_real_engines_answer_like_one(tmp_path):
    # head_dim 64: vLLM's attention kernels do not take the tiny head sizes of the CPU tests
    from trl_presafety.tiny import build_tiny_model

    model, tokenizer = build_tiny_model(style="r1", hidden_size=128, num_attention_heads=2, num_key_value_heads=1)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    texts = [f"prompt number {i}" for i in range(9)]
    args = GenerationArguments(backend="vllm", max_new_tokens=8, vllm_gpu_memory_utilization=0.3)
    single = generate_responses_from_texts(str(tmp_path), tokenizer, texts, generation=args)
    parallel_args = dataclasses.replace(args, vllm_data_parallel_size=2)
    try:
        parallel = generate_responses_from_texts(str(tmp_path), tokenizer, texts, generation=parallel_args)
        assert len(generation._VLLM_ENGINE["engine"].groups) == 2
    finally:
        generation._VLLM_ENGINE.get("engine").close()
        generation._VLLM_ENGINE.clear()
    assert parallel == single  # greedy: the split changes nothing
