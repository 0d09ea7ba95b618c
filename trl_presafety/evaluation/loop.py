# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The generation and judging loop of the evaluation, written once ([`run_chunks`]).

Work is cut into chunks; each chunk is computed in one call and its results are appended to a JSON-lines cache before
the next one starts, and what the cache already holds is skipped, so an interrupted run resumes where it stopped. A
chunk that fails is retried one item at a time: one bad example costs only itself, and its error is recorded (and
retried by the next run), never fatal.
"""

import logging
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..generation_arguments import GenerationArguments
from ..judges import Judge
from .cache import JsonlCache
from .config import DecodingSetting, EvalConfig
from .prompts import WorkItem


logger = logging.getLogger(__name__)


def error_text(error: BaseException) -> str:
    """`Type: message (at file:line)` of an exception, as recorded in the report."""
    last = traceback.extract_tb(error.__traceback__)[-1:] if error.__traceback__ else []
    where = f" (at {Path(last[0].filename).name}:{last[0].lineno})" if last else ""
    return f"{type(error).__name__}: {error}{where}"


@dataclass
class Chunk:
    """Items (each with a cache `key`) computed by one call: `run(items)` returns one output per item."""

    items: list[Any]
    run: Callable[[list[Any]], list[Any]]


def _run_with_retry(chunk: Chunk, what: str) -> list[tuple[Any, Any, str | None]]:
    """`(item, output, error)` of every item of the chunk: the whole chunk in one call, else one item at a time."""
    try:
        outputs = chunk.run(chunk.items)
        if len(outputs) != len(chunk.items):
            raise RuntimeError(f"{what.lower()} returned {len(outputs)} outputs for {len(chunk.items)} inputs")
        return [(item, output, None) for item, output in zip(chunk.items, outputs)]
    except Exception as error:
        logger.warning(f"{what} failed on a chunk of {len(chunk.items)} ({error}); retrying one by one.")
    results = []
    for item in chunk.items:
        try:
            results.append((item, chunk.run([item])[0], None))
        except Exception as item_error:
            results.append((item, None, error_text(item_error)))
    return results


def run_chunks(
    chunks: Sequence[Chunk],
    cache: JsonlCache,
    record: Callable[[Any, Any], dict[str, Any] | str],
    what: str,
    desc: str,
    unit: str,
) -> tuple[dict[str, str], int]:
    """Computes the chunks in order, appending `record(item, output)` to `cache` after each chunk.

    `record` returns the cache record of an item, or an error text when the output itself is a failure. `what` names
    the work in warnings (`"Generation"`), `desc` and `unit` in the progress bar. Returns
    {key: error} of the failed items (not cached: the next run retries them) and the number of records written.
    """
    errors: dict[str, str] = {}
    written = 0
    total = sum(len(chunk.items) for chunk in chunks)
    with tqdm(total=total, desc=desc, unit=unit, disable=total == 0) as progress:
        for chunk in chunks:
            records = []
            for item, output, error in _run_with_retry(chunk, what):
                result = error if error is not None else record(item, output)
                if isinstance(result, str):
                    errors[item.key] = result
                else:
                    records.append(result)
            cache.put_many(records)
            written += len(records)
            progress.update(len(chunk.items))
    return errors, written


# --- generation ----------------------------------------------------------------------------------------------------


def generate_texts(model: Any, tokenizer: Any, texts: list[str], generation: GenerationArguments) -> list[str]:
    """One generation call of the evaluation (the texts of one chunk)."""
    from ..generation import generate_responses_from_texts

    return generate_responses_from_texts(model, tokenizer, texts, generation=generation, show_progress=False)


def _generate_chunk(
    model: Any, tokenizer: Any, config: EvalConfig, backend: str, setting: DecodingSetting, seed: int, items: list
) -> list[str]:
    generation = config.generation_arguments(setting, backend=backend, generation_seed=seed)
    return generate_texts(model, tokenizer, [item.prompt_text for item in items], generation)


def _route_chunk(
    router: Any, route: Any, model: Any, tokenizer: Any, config: EvalConfig, backend: str, setting, seed, items: list
) -> list[Any]:
    """Routed thinking-on generation of a chunk: one prefill per batch through `router` (transformers), or, with
    vLLM, the probabilities computed before it loaded and vLLM continuing the routed prompts."""
    from ..routing import route_from_probabilities
    from .prompts import eval_messages

    generation = config.generation_arguments(setting, backend=backend, generation_seed=seed)
    messages = [eval_messages(item.example, config) for item in items]
    if router is not None:
        return router.generate(messages, generation=generation, chat_template_kwargs=config.chat_template_kwargs)
    return route_from_probabilities(
        tokenizer,
        messages,
        [route.probabilities[(item.example["dataset"], item.example["id"])] for item in items],
        lambda texts: generate_texts(model, tokenizer, texts, generation),
        policy=route.policy,
        threshold=route.threshold,
        primer=route.primer,
        refusal=route.refusal,
        chat_template_kwargs=config.chat_template_kwargs,
    )


def generate_all(
    items: list[WorkItem],
    cache: JsonlCache,
    model: Any,
    tokenizer: Any,
    config: EvalConfig,
    backend: str,
    route: Any = None,
    router: Any = None,
) -> tuple[dict[str, str], int]:
    """Generates what the cache lacks, chunk by chunk; returns {key: error} for failed items and the number generated.

    Chunks are cut per (mode, setting) group at fixed boundaries (`save_every`) and chunk `c` is seeded `seed + c`
    (transformers samples a batch from one RNG stream), so a resumed run generates exactly the chunks an uninterrupted
    one would have. vLLM seeds each request on its own, so there every chunk keeps `seed`, which also keeps its engine
    (cached per seed).
    """
    groups: list[list[WorkItem]] = []
    for item in items:
        if groups and (groups[-1][-1].thinking, groups[-1][-1].setting) == (item.thinking, item.setting):
            groups[-1].append(item)
        else:
            groups.append([item])
    cut = [group[i : i + config.save_every] for group in groups for i in range(0, len(group), config.save_every)]
    chunks = []
    for index, chunk in enumerate(cut):
        todo = [item for item in chunk if item.key not in cache]
        seed = config.seed + index if backend != "vllm" else config.seed
        if route is not None and chunk[0].thinking == "on":
            run = partial(_route_chunk, router, route, model, tokenizer, config, backend, chunk[0].setting, seed)
        else:
            run = partial(_generate_chunk, model, tokenizer, config, backend, chunk[0].setting, seed)
        if todo:
            chunks.append(Chunk(todo, run))

    def record(item: WorkItem, output: Any) -> dict[str, Any]:
        from .route import route_record_fields

        routed = not isinstance(output, str)
        response = output.text if routed else output
        # A fixed refusal is not generated: no token
        generated = not routed or output.policy != "refuse"
        return {
            "key": item.key,
            "id": item.example["id"],
            "thinking": item.thinking,
            "decoding": item.setting.name,
            "response": response,
            "num_tokens": len(tokenizer(response, add_special_tokens=False)["input_ids"]) if generated else 0,
            **(route_record_fields(output) if routed else {}),
        }

    return run_chunks(chunks, cache, record, "Generation", "Generating", "prompt")


# --- judging -------------------------------------------------------------------------------------------------------


@dataclass
class JudgeTask:
    """One text to judge: an answer or a reasoning trace (`kind`), with its prompt and cache key."""

    key: str
    prompt: str
    text: str
    kind: str


def _judge_chunk(judge: Judge, kind: str, tasks: list[JudgeTask]) -> list[Any]:
    return judge.judge([t.prompt for t in tasks], [t.text for t in tasks], kind=kind)


def judge_all(judge: Judge, tasks: list[JudgeTask], cache: JsonlCache, batch_size: int) -> dict[str, str]:
    """Judges the tasks the cache lacks, `batch_size` texts at a time (one judge call per kind of text in a batch).

    Returns {key: error} for the texts the judge crashed on (not cached, so the next run retries them); a verdict the
    judge gave (even a malformed one, with its raw output) is cached.
    """
    unique = list({task.key: task for task in tasks if task.key not in cache}.values())
    chunks = []
    for start in range(0, len(unique), batch_size):
        kinds: dict[str, list[JudgeTask]] = {}
        for task in unique[start : start + batch_size]:
            kinds.setdefault(task.kind, []).append(task)
        chunks += [Chunk(group, partial(_judge_chunk, judge, kind)) for kind, group in kinds.items()]

    def record(task: JudgeTask, verdict: Any) -> dict[str, Any] | str:
        if verdict.error is not None and verdict.raw is None:
            return verdict.error  # a crash, not an answer of the judge
        return {"key": task.key, "verdict": verdict.to_dict()}

    errors, _ = run_chunks(chunks, cache, record, "Judging", "Judging", "text")
    return errors
