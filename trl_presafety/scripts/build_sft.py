# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""
`trl-presafety build-sft`: self-generated safety SFT data (and DPO pairs) from prompt lists
(https://huggingface.co/papers/2603.17368 trains on ~5k harmful and ~3k benign prompts answered by the model itself).

Harmful prompts are answered with thinking on and guidance towards a safe decision (a safety policy, STAR-1 style,
and/or a prefilled opening of the reasoning such as SAFEPATH's safety primer), up to `num_samples` times; a completion
is kept when its answer refuses and its reasoning is judged safe. Benign prompts are answered with thinking on and no
guidance; a completion is kept when it answers and, for math with a gold answer, is correct. The guidance is never
written to the output: the rows' prompts are the requests alone (see `trl_presafety.data.build_sft`).

Output: `<output_dir>/data/train-NNNNN-of-MMMMM.parquet` (conversational prompt/completion rows with `harmful`, what
`trl-presafety label` and the SFT recipes read), `labeling_state.json` (resume: rerun the same command after an
interruption and only the missing shards are computed; until it is complete the other commands refuse the folder),
`build_sft_stats.json` (acceptance per category, also printed) and `samples/` (every draw with its verdicts). With
`--pairs_output_dir`, prompt/chosen/rejected pairs go there in the same layout, for `label` and the DPO recipes.

# The tiny path (CPU, offline; the bundled prompts, with their reference traces as fallback)
```bash
python -m trl_presafety.tiny --output_dir runs/tiny-qwen3 --style qwen3
trl-presafety train-classifier --config recipes/tiny/train_classifier.yaml
trl-presafety build-sft --config recipes/tiny/build_sft.yaml
```

# A real model on one GPU (vLLM), WildJailbreak prompts, the refusal classifier and Llama-Guard-3-8B as judges
```bash
trl-presafety build-sft --config recipes/Qwen3-8B/build_sft.yaml
```
"""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.build_checks import ALLOW_EMPTY_CLASS_HELP, class_balance_problems, warn_if_inside_package
from ..data.build_sft_config import BuildSFTConfig
from ..generation_arguments import GenerationArguments
from ..judges.registry import JudgeArguments
from ..shards import ShardWorkerArguments


STATS_FILE = "build_sft_stats.json"
SAMPLES_DIR = "samples"
STATE_VERSION = 1
# Settings that change the rows: a resumed run must match them (backend, batch sizes and judge batching may differ)
RESUME_KEYS = (
    "version",
    "command",
    "num_rows",
    "shard_size",
    "split",
    "prompts_sha256",
    # What was at the model's and judges' paths, not the paths: a retrained model at the same path rebuilds
    "model_fingerprint",
    "judges_fingerprints",
    "decoding",
    "build",
    "judges",
    "pairs",
)


@dataclass
class BuildSFTScriptArguments(ShardWorkerArguments):
    r"""
    Data and output of `trl-presafety build-sft` (guidance and checks: `BuildSFTConfig`; judges: `JudgeArguments`;
    decoding: `GenerationArguments`; the model: `ModelConfig`; several workers sharing the shards: `num_workers`,
    `worker_index`, `claim_timeout`, `take_over_claims` of [`~trl_presafety.shards.ShardWorkerArguments`]).

    prompts (`list[str]`):
        Prompt sources (`trl_presafety.data.sources`): `star1`, `star_benign_915`, `safechain`, `gsm8k`,
        `wildjailbreak`, `wildjailbreak_{vanilla,adversarial}_{harmful,benign}`, `tiny`, `harmful=PATH`,
        `benign=PATH` or a file with `prompt` and `harmful` columns; `name=PATH` reads a local copy of a published
        set; `@N` keeps N prompts.
    data_seed (`int`, *optional*, defaults to `0`):
        Seed of the `@N` draws.
    output_dir (`str`):
        Folder of the SFT rows (shards), `labeling_state.json`, `build_sft_stats.json` and `samples/`.
    pairs_output_dir (`str`, *optional*):
        Also build DPO pairs (chosen: the kept completion; rejected: an unguided one judged unsafe for a harmful
        prompt, a refusal for a benign one), written to this folder in the same layout. Unset: no pairs.
    shard_size (`int`, *optional*, defaults to `256`):
        Prompts per shard: the unit of resumption.
    overwrite_output_dir (`bool`, *optional*, defaults to `False`):
        Delete existing shards (of both folders) and start over instead of resuming.
    allow_empty_class (`bool`, *optional*, defaults to `False`):
        Mark the output complete even when no harmful (or no benign) row was kept although the prompts had some.
    """

    prompts: list[str] = field(
        default_factory=list,
        metadata={"help": "Prompt sources: names (star1, safechain, gsm8k, wildjailbreak_vanilla_harmful, ...), "
                  "name=PATH, harmful=PATH, benign=PATH or a file with prompt/harmful columns; `@N` keeps N prompts."},
    )  # fmt: skip
    data_seed: int = field(default=0, metadata={"help": "Seed of the `@N` draws of prompts."})
    output_dir: str | None = field(
        default=None, metadata={"help": "Folder of the SFT rows, labeling_state.json and build_sft_stats.json."}
    )
    pairs_output_dir: str | None = field(
        default=None, metadata={"help": "Also build DPO pairs (chosen/rejected) into this folder. Unset: no pairs."}
    )
    shard_size: int = field(default=256, metadata={"help": "Prompts per shard: the unit of resumption."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Delete existing shards and start over instead of resuming."}
    )
    allow_empty_class: bool = field(default=False, metadata={"help": ALLOW_EMPTY_CLASS_HELP})

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.prompts, str):
            self.prompts = [self.prompts]
        if not self.prompts:
            raise ValueError(
                "Invalid `prompts`: []. Name at least one prompt source, e.g. `--prompts "
                "wildjailbreak_vanilla_harmful@5000 wildjailbreak_vanilla_benign@3000` or `--prompts tiny`."
            )
        if not self.output_dir:
            raise ValueError(f"Invalid `output_dir`: {self.output_dir!r}. Set the folder of the SFT rows.")
        if (
            self.pairs_output_dir is not None
            and Path(self.pairs_output_dir).resolve() == Path(self.output_dir).resolve()
        ):
            raise ValueError(
                f"Invalid `pairs_output_dir`: {self.pairs_output_dir!r} is `output_dir`. Give the pairs a folder of "
                "their own (e.g. `<output_dir>-pairs`): the SFT recipes and the DPO recipes read one folder each."
            )
        if self.shard_size < 1:
            raise ValueError(f"Invalid `shard_size`: {self.shard_size}. Use a positive number of prompts, e.g. 256.")


def make_parser() -> Any:
    from trl import ModelConfig

    from .arguments import make_script_parser

    dataclass_types = (BuildSFTScriptArguments, BuildSFTConfig, JudgeArguments, GenerationArguments, ModelConfig)
    return make_script_parser("build-sft", dataclass_types)


def check_arguments(config: BuildSFTConfig, generation: GenerationArguments, model_args: Any) -> None:
    if not model_args.model_name_or_path:
        raise ValueError(
            f"Invalid `model_name_or_path`: {model_args.model_name_or_path!r}. Set the reasoning model that answers "
            "the prompts (the model to train), e.g. `--model_name_or_path Qwen/Qwen3-8B`."
        )
    if config.num_samples > 1 and not generation.do_sample:
        raise ValueError(
            f"Invalid `num_samples`: {config.num_samples} with `do_sample=False`: greedy decoding gives "
            f"{config.num_samples} identical completions. Set `do_sample: true` (e.g. temperature 0.6, top_p 0.95), "
            "or `num_samples: 1`."
        )


def build_judges_for(judge_args: JudgeArguments, config: BuildSFTConfig, model: Any, tokenizer: Any) -> Any:
    """The answer, reasoning and step judges, through the judges' registry."""
    from ..data.build_sft import CompletionJudges
    from ..judges.registry import build_answer_judge, build_judges

    answer_judge, step_judge = build_judges(judge_args, model=model, tokenizer=tokenizer)
    reasoning_judge = None
    if config.reasoning_judge not in (None, judge_args.answer_judge):
        reasoning_judge = build_answer_judge(dataclasses.replace(judge_args, answer_judge=config.reasoning_judge))
    return CompletionJudges(
        answer_judge, reasoning_judge, step_judge if config.check_steps else None, config.check_math
    )


def _source(name_or_path: str) -> str:
    path = Path(name_or_path)
    return str(path.resolve()) if path.exists() else str(name_or_path)


def build(
    args: BuildSFTScriptArguments,
    config: BuildSFTConfig,
    judge_args: JudgeArguments,
    generation: GenerationArguments,
    model_args: Any,
    *,
    on_shard_end: Any = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Builds (or resumes) the SFT rows and pairs; returns the acceptance statistics (empty when this worker ends
    while other workers still hold or owe shards: the last of them aggregates and records the folder complete)."""
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer

    from ..data.build_sft import (
        SFTRowBuilder,
        aggregate_stats,
        fingerprint,
        format_stats,
        output_features,
    )
    from ..data.sources import load_prompt_sources
    from ..fingerprints import fingerprint_local_paths, fingerprint_path
    from ..generation import generate_responses_from_texts, load_causal_lm, resolve_backend
    from ..inputs import check_classifier_input, check_model_input
    from ..shards import ShardedJob, write_json_atomic

    check_arguments(config, generation, model_args)
    check_model_input(model_args.model_name_or_path)
    if "classifier" in (judge_args.answer_judge, judge_args.step_judge):
        check_classifier_input(judge_args.classifier_path, "classifier_path")
    if "guard" in (judge_args.answer_judge, judge_args.step_judge):
        check_model_input(judge_args.guard_model, "guard_model")
    for folder in (args.output_dir, args.pairs_output_dir):
        if folder is not None:
            warn_if_inside_package(folder, "build-sft")
    prompts = load_prompt_sources(args.prompts, args.data_seed)
    model_id = model_args.model_name_or_path
    tokenizer = AutoTokenizer.from_pretrained(model_id, revision=model_args.model_revision)
    pairs = args.pairs_output_dir is not None
    kwargs = generation.to_kwargs()
    model_init_kwargs = {"revision": model_args.model_revision, "dtype": model_args.dtype}
    if model_args.attn_implementation is not None:
        model_init_kwargs["attn_implementation"] = model_args.attn_implementation
    vllm_kwargs = {**kwargs["vllm_kwargs"], **{k: v for k, v in model_init_kwargs.items() if k == "dtype" and v}}
    decoding = {k: kwargs[k] for k in ("max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "seed")}

    folders = {"sft": Path(args.output_dir)}
    if pairs:
        folders["pairs"] = Path(args.pairs_output_dir)
    model: Any = model_id
    judges = None
    state = {
        "version": STATE_VERSION,
        "command": "build-sft",
        "prompts": list(args.prompts),
        "prompts_sha256": fingerprint(prompts.to_list()),
        "model": _source(model_id),
        "model_fingerprint": fingerprint_path(model_id),
        "decoding": decoding,
        "build": dataclasses.asdict(config),
        "judges": fingerprint(dataclasses.asdict(judge_args)),
        "judges_fingerprints": fingerprint_local_paths(dataclasses.asdict(judge_args)),
        "pairs": pairs,
    }
    job = ShardedJob(
        folders,
        state,
        RESUME_KEYS,
        num_rows=len(prompts),
        shard_size=args.shard_size,
        overwrite=args.overwrite_output_dir,
        what="SFT rows",
        **args.worker_kwargs(),
    )
    if not all(job.done(i) for i in job.shards()):
        if resolve_backend(kwargs["backend"], model_id) == "transformers":
            model = load_causal_lm(model_id, model_init_kwargs)
        judges = build_judges_for(judge_args, config, model, tokenizer)

    def generate(texts: list[str], seed: int) -> list[str]:
        return generate_responses_from_texts(
            model,
            tokenizer,
            texts,
            generation=generation,
            num_return_sequences=config.num_samples,
            show_progress=False,
            model_init_kwargs=model_init_kwargs,
            vllm_kwargs=vllm_kwargs,
            seed=generation.generation_seed + seed,
        )

    def generate_thinking_off(texts: list[str], seed: int) -> list[str]:
        # The safe model of `self_routing`: one greedy answer per prompt, as `trl-presafety label` draws it
        return generate_responses_from_texts(
            model,
            tokenizer,
            texts,
            generation=dataclasses.replace(generation, do_sample=False),
            num_return_sequences=1,
            show_progress=False,
            model_init_kwargs=model_init_kwargs,
            vllm_kwargs=vllm_kwargs,
            seed=generation.generation_seed + seed,
        )

    builder = SFTRowBuilder(
        generate,
        tokenizer,
        config,
        judges,
        pairs=pairs,
        generate_thinking_off=generate_thinking_off if config.self_routing else None,
    )

    def process(index: int, rows: range) -> tuple[dict[str, Any], dict[str, Any]]:
        sft_rows, pair_rows, records, stats = builder.build(prompts.select(rows).to_list(), seed=index)
        outputs = {"sft": _rows_dataset(sft_rows, output_features(False, config.self_routing))}
        if pairs:
            outputs["pairs"] = _rows_dataset(pair_rows, output_features(True))
        extras = {f"{SAMPLES_DIR}/shard-{index:05d}.json": {"stats": stats, "samples": records}}
        return outputs, extras

    progress = tqdm(
        total=len(prompts), initial=job.rows_done(), desc="Building SFT rows", unit="prompt", disable=not show_progress
    )
    job.run(process, progress=progress, on_shard_end=on_shard_end)
    progress.close()
    if not job.all_done():  # other workers still hold or owe shards: the last of them aggregates and finishes
        print(job.pending_message())
        return {}

    shard_stats = [
        json.loads((folders["sft"] / SAMPLES_DIR / f"shard-{i:05d}.json").read_text(encoding="utf-8"))["stats"]
        for i in range(job.num_shards)
    ]
    stats = aggregate_stats(shard_stats)
    table = format_stats(stats, pairs)
    print(f"build-sft acceptance ({len(prompts)} prompts, k={config.num_samples} draws each):\n{table}")
    _check_classes(prompts, stats, pairs, args.allow_empty_class, folders)
    summary = {"sources": list(args.prompts), "num_samples": config.num_samples, "acceptance": stats}
    write_json_atomic(folders["sft"] / STATS_FILE, summary)
    job.finish({"acceptance": stats["total"]})
    where = f"SFT rows: {stats['total'].get('rows', 0)} in {folders['sft']}"
    if pairs:
        where += f"; pairs: {stats['total'].get('pairs', 0)} in {folders['pairs']}"
    print(f"{where}. Statistics: {folders['sft'] / STATS_FILE}.")
    return stats


def _rows_dataset(rows: list[dict[str, Any]], features: Any) -> Any:
    """The rows of a shard with the output's columns, even when the shard kept none (all shards share one schema)."""
    from datasets import Dataset

    return Dataset.from_dict({name: [row[name] for row in rows] for name in features}, features=features)


def _check_classes(prompts: Any, stats: dict, pairs: bool, allow: bool, folders: dict[str, Path]) -> None:
    """Stops before the output is marked complete when a class of prompts kept no row (or no pair)."""
    import logging

    expected = {"harmful": sum(prompts["harmful"]), "benign": len(prompts) - sum(prompts["harmful"])}
    harmful_categories = {row["category"] for row in prompts.to_list() if row["harmful"]}
    for what, key in (("SFT rows", "rows"), ("pairs", "pairs"))[: 2 if pairs else 1]:
        counts = {"harmful": 0, "benign": 0}
        for category, values in stats.items():
            if category != "total":
                counts["harmful" if category in harmful_categories else "benign"] += values.get(key, 0)
        empty, _ = class_balance_problems(counts, expected)
        if not empty:
            continue
        message = (
            f"build-sft kept no {' and no '.join(empty)} {what} ({counts['harmful']} harmful + {counts['benign']} "
            f"benign, from {expected['harmful']} harmful + {expected['benign']} benign prompts): see the acceptance "
            f"table above and the draws' verdicts in {folders['sft'] / SAMPLES_DIR}. Draw more (`num_samples`), "
            "loosen the guidance or the judges, or set `reference_fallback` for sources with reference traces."
        )
        if not allow:
            raise ValueError(
                f"{message} The shards stay on disk but the output is not marked complete, so no command reads it. "
                "To accept it as it is, rerun the same command with `--allow_empty_class` (nothing is recomputed)."
            )
        logging.getLogger(__name__).warning(f"{message} Marked complete anyway (`allow_empty_class=True`).")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point of `trl-presafety build-sft`; returns the acceptance statistics."""
    from .arguments import parse_args_strict

    args, config, judge_args, generation, model_args = parse_args_strict(make_parser(), argv)
    return build(args, config, judge_args, generation, model_args)


if __name__ == "__main__":
    main()
