# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Data-parallel vLLM generation on one node: `vllm_data_parallel_size` engines, each on its own group of
`vllm_tensor_parallel_size` GPUs, each in its own process.

vLLM's offline `LLM` refuses `data_parallel_size > 1` in one process ("not supported for single-process usage and may
hang"), and its multi-process offline mode (the `VLLM_DP_*` variables of its `data_parallel_offline.py` example) is
refused for dense models ("Offline data parallel mode is not supported/useful for dense models"): for a dense model,
vLLM's data-parallel ranks are independent engines anyway. So [`DataParallelLLM`] starts those engines itself, the way
that example does: one process per rank, each seeing only its GPUs (`CUDA_VISIBLE_DEVICES`), each running
`vllm.LLM(model, tensor_parallel_size=tp, ...)`. `generate` splits the requests into contiguous blocks, one per engine,
and returns the outputs in request order. Every request carries its own seed (`SamplingParams.seed`), so the split does
not change which sample a request draws.

This module imports neither torch nor vLLM at import time: an engine process imports vLLM only after it has set its
`CUDA_VISIBLE_DEVICES`.
"""

import atexit
import multiprocessing
import os
import traceback
import types
from collections.abc import Sequence
from multiprocessing.connection import wait
from typing import Any


def visible_devices() -> list[str]:
    """The GPUs this process may use, as `CUDA_VISIBLE_DEVICES` names them (indices or UUIDs)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_groups(data_parallel_size: int, tensor_parallel_size: int, devices: Sequence[str]) -> list[str]:
    """The `CUDA_VISIBLE_DEVICES` of each engine: consecutive groups of `tensor_parallel_size` of `devices`.

    Raises a `ValueError` naming both settings and the fix when `data_parallel_size * tensor_parallel_size` exceeds
    the visible GPUs (vLLM's own check would stop each engine with "World size (N) is larger than the number of
    available GPUs")."""
    needed = data_parallel_size * tensor_parallel_size
    if needed > len(devices):
        fit = len(devices) // tensor_parallel_size
        fix = (
            f"Lower `vllm_data_parallel_size` to {fit} (visible GPUs // `vllm_tensor_parallel_size`)"
            if fit >= 1
            else f"Lower `vllm_tensor_parallel_size` to at most {len(devices)}"
            if devices
            else "Run on a machine with GPUs, or use `backend: transformers`"
        )
        raise ValueError(
            f"Invalid `vllm_data_parallel_size`: {data_parallel_size}. With `vllm_tensor_parallel_size: "
            f"{tensor_parallel_size}` it needs {data_parallel_size} x {tensor_parallel_size} = {needed} GPUs, and "
            f"{len(devices)} are visible (CUDA_VISIBLE_DEVICES={','.join(devices) or 'none'}). {fix}, or spread the "
            "job over more nodes as independent workers (`--num_workers N --worker_index i`, see docs/scaling.md)."
        )
    return [
        ",".join(devices[rank * tensor_parallel_size : (rank + 1) * tensor_parallel_size])
        for rank in range(data_parallel_size)
    ]


def _serve_engine(connection: Any, model: str, seed: int, engine_kwargs: dict[str, Any], devices: str) -> None:
    """An engine process: sets its GPUs, starts `vllm.LLM`, then answers `(requests, params, use_tqdm)` messages with
    the token ids of each request's samples until it receives `None`."""
    os.environ["CUDA_VISIBLE_DEVICES"] = devices  # before vLLM (and torch) initialize CUDA
    try:
        from vllm import LLM

        llm = LLM(model=model, seed=seed, **engine_kwargs)
    except BaseException:
        connection.send(("error", traceback.format_exc()))
        return
    connection.send(("ready", None))
    while True:
        try:
            message = connection.recv()
        except EOFError:  # the parent is gone
            return
        if message is None:
            return
        requests, params, use_tqdm = message
        try:
            results = llm.generate(requests, sampling_params=params, use_tqdm=use_tqdm)
            connection.send(("ok", [[list(sample.token_ids) for sample in result.outputs] for result in results]))
        except BaseException:
            connection.send(("error", traceback.format_exc()))


def split_evenly(num_items: int, parts: int) -> list[range]:
    """`parts` contiguous ranges covering `range(num_items)`, sizes differing by at most one (larger ones first)."""
    base, extra = divmod(num_items, parts)
    bounds = [0]
    for part in range(parts):
        bounds.append(bounds[-1] + base + (part < extra))
    return [range(bounds[i], bounds[i + 1]) for i in range(parts)]


class DataParallelLLM:
    """`data_parallel_size` vLLM engines of `model`, one per GPU group, behind `vllm.LLM`'s `generate`.

    Args:
        model (`str`): Path or hub id of the model.
        seed (`int`): Engine seed (each request also carries its own).
        data_parallel_size (`int`): Number of engines.
        engine_kwargs (`dict`): `vllm.LLM` keyword arguments of each engine (`tensor_parallel_size`,
            `gpu_memory_utilization`, `max_model_len`, `dtype`, ...).
        devices (`Sequence[str]`, *optional*): The GPUs to split; default: the visible ones.
    """

    def __init__(
        self,
        model: str,
        seed: int,
        data_parallel_size: int,
        engine_kwargs: dict[str, Any],
        devices: Sequence[str] | None = None,
    ):
        tensor_parallel_size = int(engine_kwargs.get("tensor_parallel_size", 1))
        self.groups = gpu_groups(
            data_parallel_size, tensor_parallel_size, visible_devices() if devices is None else devices
        )
        # spawn, not fork: a forked child inherits this process's CUDA state, which CUDA does not support
        context = multiprocessing.get_context("spawn")
        self._engines: list[tuple[Any, Any]] = []
        for group in self.groups:
            parent, child = context.Pipe()
            process = context.Process(
                target=_serve_engine, args=(child, model, seed, dict(engine_kwargs), group), daemon=False
            )
            process.start()
            child.close()
            self._engines.append((process, parent))
        atexit.register(self.close)
        try:
            for rank in range(len(self._engines)):
                self._receive(rank, "starting")
        except BaseException:
            self.close()
            raise

    def _receive(self, rank: int, what: str) -> Any:
        process, connection = self._engines[rank]
        ready = wait([connection, process.sentinel])
        if connection in ready:
            try:
                status, payload = connection.recv()
            except EOFError:
                status, payload = "error", "the engine process closed its connection"
        else:
            status, payload = "error", f"the engine process exited with code {process.exitcode}"
        if status == "error":
            raise RuntimeError(
                f"vLLM engine {rank} of {len(self._engines)} (CUDA_VISIBLE_DEVICES={self.groups[rank]}) failed while "
                f"{what}:\n{payload}"
            )
        return payload

    def generate(self, requests: Sequence[Any], sampling_params: Any = None, use_tqdm: bool = True) -> list[Any]:
        """Like `vllm.LLM.generate`: one output per request, in request order, each with `outputs[j].token_ids`."""
        if self.closed:
            raise RuntimeError("These vLLM engines were stopped (`close`, or an engine failed); start new ones.")
        try:
            return self._generate(list(requests), sampling_params, use_tqdm)
        except BaseException:
            self.close()  # an engine that failed midway leaves the others' answers unread: start over cleanly
            raise

    def _generate(self, requests: list[Any], sampling_params: Any, use_tqdm: bool) -> list[Any]:
        blocks = split_evenly(len(requests), len(self._engines))
        busy = []
        for rank, block in enumerate(blocks):
            if len(block):
                # One progress bar (the first engine's) rather than one per engine writing over the others
                self._engines[rank][1].send(([requests[i] for i in block], sampling_params, use_tqdm and rank == 0))
                busy.append(rank)
        outputs: list[Any] = []
        for rank in busy:
            for samples in self._receive(rank, "generating"):
                outputs.append(
                    types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=ids) for ids in samples])
                )
        return outputs

    @property
    def closed(self) -> bool:
        return not self._engines

    def close(self) -> None:
        """Stops the engine processes (and frees their GPUs)."""
        for process, connection in self._engines:
            if process.is_alive():
                try:
                    connection.send(None)
                except (BrokenPipeError, OSError):
                    pass
        for process, connection in self._engines:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
                process.join()
            connection.close()
        self._engines = []
        atexit.unregister(self.close)
