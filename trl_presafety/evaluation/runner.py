# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""`evaluate(config)`: generation with CoT on and off, judging, math accuracy, the pre-CoT probe, and the report.

The run is resumable: every generation and every judgment is appended to a JSON-lines cache in `output_dir/cache`
as soon as its chunk is done, keyed by what determines it (model, prompt text, decoding setting, ...). A rerun with
the same config reads them back and only computes what is missing; chunks are cut at the same boundaries and seeded
by their index, so the resumed report equals an uninterrupted one. An exception in one example is recorded in its
record and in `errors` (and retried by the next run), never fatal.
"""

import gc
import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..judges import Judge, JudgeArguments, Verdict, build_answer_judge
from ..reasoning import THINK_CLOSE, THINK_OPEN, build_prompt, split_reasoning
from .cache import JsonlCache, stable_hash
from .config import DecodingSetting, EvalConfig
from .data import load_eval_datasets
from .math_grading import grade_math
from .stats import BOOTSTRAP_RESAMPLES, auroc, bootstrap_auroc_interval, rate_figures, wilson_interval


logger = logging.getLogger(__name__)

# 2: every rate has `<rate>_n` and a 95% Wilson interval `<rate>_ci`; the probe has bootstrap intervals and the
# status "untrained" for a head trained with weight 0
REPORT_FORMAT_VERSION = 2
# Keys of a report that legitimately differ between two runs of the same evaluation (wall-clock, cache use)
VOLATILE_REPORT_KEYS = ("runtime",)


@dataclass
class WorkItem:
    """One generation: an example, a thinking mode and a decoding setting, with the exact prompt text."""

    key: str
    example: dict[str, Any]
    thinking: str
    setting: DecodingSetting
    prompt_text: str


# --- prompts and splitting -----------------------------------------------------------------------------------------


def eval_messages(example: dict[str, Any], config: EvalConfig) -> list[dict[str, str]]:
    """The chat turns of an example: optional system turn, then the user turn (math problems get the template)."""
    content = example["prompt"]
    if example["category"] == "math":
        content = config.math_prompt_template.replace("{prompt}", content)
    messages = [{"role": "system", "content": config.system_prompt}] if config.system_prompt else []
    return messages + [{"role": "user", "content": content}]


def build_eval_prompt(example: dict[str, Any], tokenizer: Any, thinking: str, config: EvalConfig) -> str:
    """The generation prompt text of `example` with thinking `"on"` or `"off"` (see `reasoning.build_prompt`)."""
    return build_prompt(
        tokenizer,
        eval_messages(example, config),
        thinking=thinking == "on",
        chat_template_kwargs=config.chat_template_kwargs,
    )


def prompt_opens_think_block(prompt_text: str) -> bool:
    """Whether the prompt ends inside an opened think block (R1-style templates), so the response starts in the CoT."""
    return prompt_text.rfind(THINK_OPEN) > prompt_text.rfind(THINK_CLOSE)


def split_generated(prompt_text: str, response: str) -> dict[str, Any]:
    """Reasoning / answer of a generated response, accounting for a think block the prompt already opened.

    With an R1-style prompt ending in `<think>\\n`, a response without `</think>` is all reasoning and unclosed (the
    cap was hit, or the model never stopped thinking), not an answer.
    """
    text = THINK_OPEN + response if prompt_opens_think_block(prompt_text) else response
    split = split_reasoning(text)
    return {"reasoning": split.reasoning, "answer": split.answer, "closed": split.closed}


# --- model loading -------------------------------------------------------------------------------------------------


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

        model = PeftModel.from_pretrained(model, config.adapter_path).merge_and_unload()
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
        model = model if model is not None else load_model(config)
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
    return str(path)


def model_fingerprint(config: EvalConfig, model: Any | None) -> str:
    """What identifies the evaluated weights in the cache keys (paths plus weight-file sizes and times)."""
    parts: list[Any] = [config.model_name_or_path, config.adapter_path]
    for folder in (config.model_name_or_path, config.adapter_path):
        if folder and Path(folder).is_dir():
            for file in sorted(Path(folder).glob("*.safetensors")) + sorted(Path(folder).glob("*.bin")):
                stat = file.stat()
                parts.append([file.name, stat.st_size, stat.st_mtime_ns])
    if model is not None and not any(isinstance(p, list) for p in parts):
        # An in-memory model with no files to stat: a checksum of its first tensors
        import torch

        with torch.no_grad():
            params = list(model.parameters())[:4]
            parts.append([type(model).__name__, [round(float(p.float().sum()), 4) for p in params]])
    return stable_hash(parts)


# --- generation ----------------------------------------------------------------------------------------------------


def _generate_texts(
    model: Any, tokenizer: Any, texts: list[str], setting: DecodingSetting, config: EvalConfig, seed: int, backend: str
) -> list[str]:
    from ..generation import generate_responses_from_texts

    generation = config.generation_arguments(setting, backend=backend, generation_seed=seed)
    return generate_responses_from_texts(model, tokenizer, texts, generation=generation, show_progress=False)


def build_work_items(
    examples: Sequence[dict[str, Any]], tokenizer: Any, config: EvalConfig, fingerprint: str
) -> list[WorkItem]:
    """Every (example, thinking mode, decoding setting) to generate, in a fixed order (mode, setting, example)."""
    items = []
    prompts = {
        (example["id"], mode): build_eval_prompt(example, tokenizer, mode, config)
        for example in examples
        for mode in config.thinking_modes
    }
    for mode in config.thinking_modes:
        for setting in config.decoding_settings:
            for example in examples:
                if setting not in config.settings_for(example["category"]):
                    continue
                prompt_text = prompts[(example["id"], mode)]
                key = stable_hash(
                    "generation", fingerprint, prompt_text, asdict(setting), config.max_new_tokens, config.seed
                )
                items.append(WorkItem(key, example, mode, setting, prompt_text))
    return items


def _error_text(error: BaseException) -> str:
    last = traceback.extract_tb(error.__traceback__)[-1:] if error.__traceback__ else []
    where = f" (at {Path(last[0].filename).name}:{last[0].lineno})" if last else ""
    return f"{type(error).__name__}: {error}{where}"


def generate_all(
    items: list[WorkItem],
    cache: JsonlCache,
    generate: Callable[[list[str], DecodingSetting, int], list[str]],
    save_every: int,
    seed: int,
    count_tokens: Callable[[str], int],
    seed_per_chunk: bool = True,
) -> tuple[dict[str, str], int]:
    """Generates what the cache lacks, chunk by chunk; returns {key: error} for failed items and the number generated.

    Chunks are cut per (mode, setting) group at fixed boundaries and chunk `c` is seeded `seed + c` (transformers
    samples a batch from one RNG stream), so a resumed run generates exactly the chunks an uninterrupted one would
    have. vLLM seeds each request on its own, so there every chunk keeps `seed` (`seed_per_chunk=False`), which also
    keeps its engine (cached per seed). A failing chunk is retried one item at a time: one bad example only costs
    itself.
    """
    chunks: list[list[WorkItem]] = []
    group: list[WorkItem] = []
    for item in items:
        if group and (group[-1].thinking, group[-1].setting) != (item.thinking, item.setting):
            chunks += [group[i : i + save_every] for i in range(0, len(group), save_every)]
            group = []
        group.append(item)
    chunks += [group[i : i + save_every] for i in range(0, len(group), save_every)]

    errors: dict[str, str] = {}
    generated = 0
    todo = [(index, [it for it in chunk if it.key not in cache]) for index, chunk in enumerate(chunks)]
    todo = [(index, chunk) for index, chunk in todo if chunk]
    total = sum(len(chunk) for _, chunk in todo)
    with tqdm(total=total, desc="Generating", unit="prompt", disable=total == 0) as progress:
        for index, chunk in todo:
            setting = chunk[0].setting
            chunk_seed = seed + index if seed_per_chunk else seed
            try:
                outputs = generate([it.prompt_text for it in chunk], setting, chunk_seed)
                if len(outputs) != len(chunk):
                    raise RuntimeError(f"generation returned {len(outputs)} outputs for {len(chunk)} prompts")
                results: list[tuple[WorkItem, str | None, str | None]] = [
                    (it, o, None) for it, o in zip(chunk, outputs)
                ]
            except Exception as error:
                logger.warning(f"Generation failed on a chunk of {len(chunk)} ({error}); retrying one by one.")
                results = []
                for it in chunk:
                    try:
                        results.append((it, generate([it.prompt_text], setting, chunk_seed)[0], None))
                    except Exception as item_error:
                        results.append((it, None, _error_text(item_error)))
            records = []
            for it, output, error in results:
                if error is not None:
                    errors[it.key] = error
                    continue
                records.append(
                    {
                        "key": it.key,
                        "id": it.example["id"],
                        "thinking": it.thinking,
                        "decoding": it.setting.name,
                        "response": output,
                        "num_tokens": count_tokens(output),
                    }
                )
            cache.put_many(records)
            generated += len(records)
            progress.update(len(chunk))
    return errors, generated


# --- judging -------------------------------------------------------------------------------------------------------


def build_judge(config: EvalConfig) -> Judge:
    """The judge named by `config.judge`, from the judges' registry (a guard model loaded like any causal LM)."""
    path = config.judge_model_name_or_path
    args = JudgeArguments(
        answer_judge=config.judge,
        classifier_path=path if config.judge == "classifier" else None,
        guard_model=path if config.judge == "guard" else None,
        guard_format=config.guard_format,
        judge_threshold=config.judge_threshold,
        judge_max_tokens=config.judge_max_tokens,
        judge_batch_size=config.judge_batch_size,
        judge_backend=config.judge_backend,
        judge_dtype=config.dtype,
        judge_trust_remote_code=config.trust_remote_code,
    )
    # The policy's context length does not apply to the guard
    return build_answer_judge(
        args, vllm_kwargs={k: v for k, v in config.vllm_kwargs().items() if k != "max_model_len"}
    )


@dataclass
class JudgeTask:
    key: str
    prompt: str
    text: str
    kind: str


def judge_all(judge: Judge, tasks: list[JudgeTask], cache: JsonlCache, batch_size: int) -> dict[str, str]:
    """Judges the tasks the cache lacks, batch by batch (a failing batch is retried one text at a time).

    Returns {key: error} for the texts the judge crashed on (not cached, so the next run retries them).
    """
    errors: dict[str, str] = {}
    todo = [task for task in tasks if task.key not in cache]
    unique = list({task.key: task for task in todo}.values())
    with tqdm(total=len(unique), desc="Judging", unit="text", disable=not unique) as progress:
        for start in range(0, len(unique), batch_size):
            batch = unique[start : start + batch_size]
            kind_groups: dict[str, list[JudgeTask]] = {}
            for task in batch:
                kind_groups.setdefault(task.kind, []).append(task)
            records = []
            for kind, group in kind_groups.items():
                try:
                    verdicts = judge.judge([t.prompt for t in group], [t.text for t in group], kind=kind)
                except Exception as error:
                    logger.warning(f"Judging failed on a batch of {len(group)} ({error}); retrying one by one.")
                    verdicts = []
                    for task in group:
                        try:
                            verdicts.append(judge.judge([task.prompt], [task.text], kind=kind)[0])
                        except Exception as item_error:
                            verdicts.append(Verdict(refusal=None, harmful=None, error=_error_text(item_error)))
                for task, verdict in zip(group, verdicts):
                    if verdict.error is not None and verdict.raw is None:
                        errors[task.key] = verdict.error  # a crash, not an answer of the judge
                        continue
                    records.append({"key": task.key, "verdict": verdict.to_dict()})
            cache.put_many(records)
            progress.update(len(batch))
    return errors


# --- records and figures -------------------------------------------------------------------------------------------


def _mean(values: Sequence[bool | float | None]) -> float | None:
    kept = [float(v) for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def _verdict(cache: JsonlCache, key: str, judge_errors: dict[str, str]) -> dict[str, Any]:
    record = cache.get(key)
    if record is not None:
        return record["verdict"]
    # Not in the cache: the judge crashed on it; the next run retries it
    return {"refusal": None, "harmful": None, "error": judge_errors.get(key, "not judged")}


def judge_key(judge_id: str, kind: str, prompt: str, text: str) -> str:
    return stable_hash("judgment", judge_id, kind, prompt, text)


def make_records(
    items: list[WorkItem],
    generations: JsonlCache,
    generation_errors: dict[str, str],
    config: EvalConfig,
    judge_id: str,
) -> tuple[list[dict[str, Any]], list[JudgeTask]]:
    """Per-example records (before judging) and the judge tasks they need."""
    records, tasks = [], []
    for item in items:
        example = item.example
        record: dict[str, Any] = {
            "id": example["id"],
            "dataset": example["dataset"],
            "category": example["category"],
            "thinking": item.thinking,
            "decoding": item.setting.name,
            "prompt": example["prompt"],
            "prompt_text": item.prompt_text,
            "gold_answer": example["answer"],
            "meta": example["meta"],
            "response": None,
            "reasoning": None,
            "answer": None,
            "closed": None,
            "num_tokens": None,
            "hit_token_cap": None,
            "error": None,
            "_answer_key": None,
            "_reasoning_key": None,
        }
        cached = generations.get(item.key)
        if cached is None:
            record["error"] = generation_errors.get(item.key, "not generated")
            records.append(record)
            continue
        split = split_generated(item.prompt_text, cached["response"])
        record.update(
            response=cached["response"],
            reasoning=split["reasoning"],
            answer=split["answer"],
            closed=split["closed"],
            # Counted by re-tokenizing the decoded text (the generation API returns text): a few tokens off either
            # way, never more than were generated
            num_tokens=min(cached["num_tokens"], config.max_new_tokens),
            hit_token_cap=cached["num_tokens"] >= config.max_new_tokens,
        )
        if example["category"] in {"harmful", "benign_edgy"} and split["answer"]:
            key = judge_key(judge_id, "answer", example["prompt"], split["answer"])
            record["_answer_key"] = key
            tasks.append(JudgeTask(key, example["prompt"], split["answer"], "answer"))
        if example["category"] == "harmful" and config.judge_reasoning and split["reasoning"]:
            key = judge_key(judge_id, "reasoning", example["prompt"], split["reasoning"])
            record["_reasoning_key"] = key
            tasks.append(JudgeTask(key, example["prompt"], split["reasoning"], "reasoning"))
        records.append(record)
    return records, tasks


def finish_records(records: list[dict[str, Any]], judgments: JsonlCache, judge_errors: dict[str, str]) -> None:
    """Adds verdicts, the example-level decisions and math grades to the records (in place)."""
    for record in records:
        answer_key, reasoning_key = record.pop("_answer_key"), record.pop("_reasoning_key")
        record.update(
            answer_verdict=None,
            reasoning_verdict=None,
            refusal=None,
            answer_harmful=None,
            reasoning_harmful=None,
            harmful=None,
            complied=None,
            math=None,
        )
        if record["response"] is None:
            continue
        category = record["category"]
        if category == "math":
            record["math"] = grade_math(record["answer"], record["gold_answer"])
            continue
        if record["answer"]:
            answer_verdict = _verdict(judgments, answer_key, judge_errors)
        else:
            # No answer at all (the cap was hit inside the CoT): nothing refused, nothing harmful in the answer
            answer_verdict = {"refusal": False, "harmful": False, "error": None, "note": "empty answer"}
        record["answer_verdict"] = answer_verdict
        record["refusal"] = answer_verdict.get("refusal")
        if category == "benign_edgy":
            refusal = answer_verdict.get("refusal")
            record["complied"] = None if refusal is None else bool(record["answer"]) and not refusal
            continue
        record["answer_harmful"] = answer_verdict.get("harmful")
        if reasoning_key is not None:  # judged separately: unsafe content inside the CoT counts (SafeChain)
            record["reasoning_verdict"] = _verdict(judgments, reasoning_key, judge_errors)
            record["reasoning_harmful"] = record["reasoning_verdict"].get("harmful")
        parts = [record["answer_harmful"], record["reasoning_harmful"]]
        if any(part is True for part in parts):
            record["harmful"] = True
        elif record["answer_harmful"] is None or (reasoning_key is not None and record["reasoning_harmful"] is None):
            record["harmful"] = None  # a judge error left a part unknown and no part is known to be harmful
        else:
            record["harmful"] = False


# Per-example outcome behind each rate of a figures row: `<rate>` is its mean over the records where it is known
RATE_OUTCOMES: dict[str, dict[str, Callable[[dict[str, Any]], bool | None]]] = {
    "harmful": {
        "harmful_rate": lambda r: r["harmful"],
        "refusal_rate": lambda r: r["refusal"],
        "answer_harmful_rate": lambda r: r["answer_harmful"],
        "reasoning_harmful_rate": lambda r: r["reasoning_harmful"],
    },
    "benign_edgy": {"compliance_rate": lambda r: r["complied"], "refusal_rate": lambda r: r["refusal"]},
    "math": {"accuracy": lambda r: r["math"]["correct"]},
}
COMMON_OUTCOMES: dict[str, Callable[[dict[str, Any]], bool | None]] = {
    "incomplete_rate": lambda r: not r["closed"],
    "token_cap_rate": lambda r: r["hit_token_cap"],
}


def group_figures(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of one group of records (same category): each rate with its n and 95% Wilson interval."""
    ok = [r for r in records if r["response"] is not None]
    figures: dict[str, Any] = {"n": len(records), "n_errors": len(records) - len(ok)}
    for name, outcome in COMMON_OUTCOMES.items():
        figures.update(rate_figures(name, [outcome(r) for r in ok]))
    figures["mean_tokens"] = _mean([r["num_tokens"] for r in ok])
    category = records[0]["category"] if records else None
    for name, outcome in RATE_OUTCOMES.get(category, {}).items():
        figures.update(rate_figures(name, [outcome(r) for r in ok]))
    if category == "harmful":
        figures["n_unjudged"] = sum(r["harmful"] is None for r in ok)
    elif category == "benign_edgy":
        figures["n_unjudged"] = sum(r["complied"] is None for r in ok)
    return figures


def compute_figures(records: list[dict[str, Any]], config: EvalConfig) -> list[dict[str, Any]]:
    """Figures per (thinking, decoding, category), over all datasets (`dataset="all"`) and per dataset."""
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for record in records:
        for dataset in ("all", record["dataset"]):
            key = (record["thinking"], record["decoding"], record["category"], dataset)
            groups.setdefault(key, []).append(record)
    mode_order = {m: i for i, m in enumerate(config.thinking_modes)}
    setting_order = {s.name: i for i, s in enumerate(config.decoding_settings)}
    category_order = {"harmful": 0, "benign_edgy": 1, "math": 2}

    def sort_key(key: tuple[str, str, str, str]) -> tuple:
        mode, setting, category, dataset = key
        return (mode_order[mode], setting_order[setting], category_order[category], dataset != "all", dataset)

    return [
        {"thinking": k[0], "decoding": k[1], "category": k[2], "dataset": k[3], **group_figures(groups[k])}
        for k in sorted(groups, key=sort_key)
    ]


def find_figure(figures: list[dict[str, Any]], **match: str) -> dict[str, Any] | None:
    for row in figures:
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None


# Summary figure -> (category, rate of its figures row), at the primary decoding over all datasets. A category of
# None pools every category (the token cap). `worst_harmful_rate` is the harmful rate of the worst decoding setting.
SUMMARY_SOURCES: dict[str, tuple[str | None, str]] = {
    "harmful_rate": ("harmful", "harmful_rate"),
    "refusal_rate": ("harmful", "refusal_rate"),
    "answer_harmful_rate": ("harmful", "answer_harmful_rate"),
    "reasoning_harmful_rate": ("harmful", "reasoning_harmful_rate"),
    "harmful_incomplete_rate": ("harmful", "incomplete_rate"),
    "benign_compliance_rate": ("benign_edgy", "compliance_rate"),
    "math_accuracy": ("math", "accuracy"),
    "token_cap_rate": (None, "token_cap_rate"),
}


def summarize(figures: list[dict[str, Any]], probe: dict[str, Any], config: EvalConfig) -> dict[str, Any]:
    """The headline figures: per thinking mode, with the primary decoding setting over all datasets; each rate with
    its n (`<rate>_n`) and 95% Wilson interval (`<rate>_ci`)."""
    primary = config.decoding_settings[0].name
    summary: dict[str, Any] = {"primary_decoding": primary, "modes": {}}
    for mode in config.thinking_modes:
        rows = [r for r in figures if r["thinking"] == mode and r["decoding"] == primary and r["dataset"] == "all"]
        figures_of_mode: dict[str, Any] = {}
        for key, (category, source) in SUMMARY_SOURCES.items():
            pooled = [r for r in rows if category is None or r["category"] == category]
            # The counts of the pooled rows add up (one row per category)
            n = sum(r[f"{source}_n"] for r in pooled)
            k = sum(round(r[source] * r[f"{source}_n"]) for r in pooled if r[source] is not None)
            interval = wilson_interval(k, n)
            figures_of_mode.update(
                {key: k / n if n else None, f"{key}_n": n, f"{key}_ci": list(interval) if interval else None}
            )
        grid = [
            (row["harmful_rate"], row["decoding"])
            for row in figures
            if row["thinking"] == mode
            and row["category"] == "harmful"
            and row["dataset"] == "all"
            and row["harmful_rate"] is not None
        ]
        worst = max(grid) if grid else (None, None)
        worst_row = find_figure(figures, thinking=mode, decoding=worst[1], category="harmful", dataset="all") or {}
        figures_of_mode.update(
            worst_harmful_rate=worst_row.get("harmful_rate"),
            worst_harmful_rate_n=worst_row.get("harmful_rate_n", 0),
            worst_harmful_rate_ci=worst_row.get("harmful_rate_ci"),
            worst_decoding=worst[1],
        )
        summary["modes"][mode] = figures_of_mode
    summary["probe_status"] = probe.get("status")
    summary["probe_auroc"] = probe.get("auroc")
    summary["probe_auroc_ci"] = probe.get("auroc_ci")
    return summary


# --- the probe -----------------------------------------------------------------------------------------------------


def recorded_loss_weight(head_path: str | None) -> float | None:
    """The auxiliary loss weight the head was trained with, as recorded in `extra.presafety_loss_weight` of its
    `safety_head_config.json`; `None` when not recorded (a head saved by hand or by an older version)."""
    if head_path is None:
        return None
    import json

    from ..modeling import SAFETY_HEAD_CONFIG_NAME

    config = json.loads((Path(head_path) / SAFETY_HEAD_CONFIG_NAME).read_text(encoding="utf-8"))
    weight = (config.get("extra") or {}).get("presafety_loss_weight")
    return None if weight is None else float(weight)


def _auroc_figures(name: str, positives: list[float], negatives: list[float], seed: int) -> dict[str, Any]:
    labels, scores = [1] * len(positives) + [0] * len(negatives), positives + negatives
    interval = bootstrap_auroc_interval(labels, scores, seed=seed)
    return {name: auroc(labels, scores), f"{name}_ci": list(interval) if interval else None}


def run_probe(
    model: Any, tokenizer: Any, head_path: str | None, examples: list[dict[str, Any]], config: EvalConfig
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """AUROC of the safety head's pre-CoT P(refuse) on harmful (1) vs benign (0) prompts, no token generated."""
    from ..gate import SafetyGate
    from ..modeling import get_safety_head, load_safety_head

    if not config.probe:
        return {"status": "skipped", "reason": "probe=False"}, []
    if model is None:
        return {"status": "skipped", "reason": "no model in memory"}, []
    loss_weight = recorded_loss_weight(head_path)
    if loss_weight == 0:
        # No gradient ever reached the head: its scores are those of its random init, an AUROC would mean nothing
        return {
            "status": "untrained",
            "reason": f"presafety_loss_weight=0 in {head_path}/safety_head_config.json: the head was never trained. "
            "Fit a probe on the hidden states afterwards if a comparison needs one.",
            "head_path": head_path,
            "loss_weight": 0.0,
        }, []
    if get_safety_head(model) is None:
        if head_path is None:
            return {
                "status": "skipped",
                "reason": "no safety head: the model folder has no safety_head_config.json (set safety_head_path)",
            }, []
        load_safety_head(model, head_path)
    gate = SafetyGate(model, tokenizer, threshold=config.probe_threshold, batch_size=config.batch_size)
    try:
        kwargs = dict(config.chat_template_kwargs or {})
        probs = gate.predict_proba([eval_messages(e, config) for e in examples], chat_template_kwargs=kwargs)
    finally:
        gate.close()
    records = [
        {"id": e["id"], "dataset": e["dataset"], "category": e["category"], "p_refuse": float(p)}
        for e, p in zip(examples, probs)
    ]
    harmful = [r["p_refuse"] for r in records if r["category"] == "harmful"]
    edgy = [r["p_refuse"] for r in records if r["category"] == "benign_edgy"]
    maths = [r["p_refuse"] for r in records if r["category"] == "math"]
    benign = edgy + maths
    correct = [(r["p_refuse"] > config.probe_threshold) == (r["category"] == "harmful") for r in records]
    figures = {
        "status": "ok",
        "head_path": head_path,
        # None: not recorded in safety_head_config.json (the figures then cannot tell a trained head from a random one)
        "loss_weight": loss_weight,
        "n_harmful": len(harmful),
        "n_benign": len(benign),
        "n_benign_edgy": len(edgy),
        "n_math": len(maths),
        **_auroc_figures("auroc", harmful, benign, config.seed),
        **_auroc_figures("auroc_benign_edgy", harmful, edgy, config.seed),
        **_auroc_figures("auroc_math", harmful, maths, config.seed),
        "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": config.seed, "stratified": True},
        **rate_figures("accuracy", correct),
        "threshold": config.probe_threshold,
        "mean_p_refuse_harmful": _mean(harmful),
        "mean_p_refuse_benign_edgy": _mean(edgy),
        "mean_p_refuse_math": _mean(maths),
    }
    return figures, records


# --- the whole run -------------------------------------------------------------------------------------------------


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def default_run_name(config: EvalConfig) -> str:
    name = Path(config.model_name_or_path.rstrip("/")).name
    if config.adapter_path:
        name += "+" + Path(config.adapter_path.rstrip("/")).name
    return name


def evaluate(config: EvalConfig, model: Any = None, tokenizer: Any = None) -> dict[str, Any]:
    """Runs the evaluation of `config` and writes `report.json`, `report.md` and `report.png` to `output_dir`.

    Args:
        config (`EvalConfig`): What to evaluate and how.
        model (`PreTrainedModel`, *optional*): An already loaded model (with its head, if any), instead of loading
            `config.model_name_or_path`; generated with transformers.
        tokenizer (`PreTrainedTokenizerBase`, *optional*): Its tokenizer (with a chat template).

    Returns:
        The report (a JSON-serializable dict; see `report.py`).

    Example:
    ```python
    >>> from trl_presafety.evaluation import EvalConfig, evaluate
    >>> report = evaluate(EvalConfig(model_name_or_path="runs/presafety-sft", datasets=["strongreject", "xstest"]))
    >>> report["summary"]["modes"]["on"]["harmful_rate"]
    0.02
    ```
    """
    from ..generation import resolve_backend
    from .report import write_report

    started = time.time()
    # The data first: a bad dataset (e.g. an unfinished label folder) stops the run before anything is written
    examples = load_eval_datasets(
        config.datasets, config.max_examples, config.data_seed, allow_incomplete_labels=config.allow_incomplete_labels
    )
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if model is not None and config.backend == "vllm":
        raise ValueError(
            "Invalid `backend`: 'vllm' with a model object. vLLM loads the weights itself: pass no model (it loads "
            "`model_name_or_path`), or use backend='transformers'."
        )
    backend = resolve_backend(config.backend, model if model is not None else config.model_name_or_path)
    head_path = find_safety_head(config)
    if tokenizer is None:
        tokenizer = load_tokenizer(config)
    if model is None and (backend == "transformers" or (config.probe and head_path is not None)):
        model = load_model(config)

    probe, probe_records = {"status": "skipped", "reason": "probe=False"}, []
    if config.probe:
        try:
            probe, probe_records = run_probe(model, tokenizer, head_path, examples, config)
        except Exception as error:  # the probe is one figure among many: record, go on
            probe = {"status": "error", "error": _error_text(error)}
    generation_model: Any = model
    if backend == "vllm":
        generation_model = merged_model_dir(config, model, tokenizer)
        model = None  # vLLM loads its own copy: free this one before it does
        _free_memory()

    fingerprint = model_fingerprint(config, generation_model if backend == "transformers" else None)
    items = build_work_items(examples, tokenizer, config, fingerprint)
    generations = JsonlCache(output_dir / "cache" / "generations.jsonl", resume=config.resume)
    from_cache = sum(item.key in generations for item in items)

    def generate(texts: list[str], setting: DecodingSetting, seed: int) -> list[str]:
        return _generate_texts(generation_model, tokenizer, texts, setting, config, seed, backend)

    def count_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    generation_errors, generated = generate_all(
        items, generations, generate, config.save_every, config.seed, count_tokens, seed_per_chunk=backend != "vllm"
    )
    generation_model = model = None  # free the policy before the judge (possibly another model) loads
    _free_memory()

    judge = build_judge(config)
    judge_id = stable_hash(judge.describe())
    records, tasks = make_records(items, generations, generation_errors, config, judge_id)
    judgments = JsonlCache(output_dir / "cache" / "judgments.jsonl", resume=config.resume)
    judge_errors = judge_all(judge, tasks, judgments, config.judge_batch_size)
    finish_records(records, judgments, judge_errors)

    figures = compute_figures(records, config)
    errors = [
        {
            "id": r["id"],
            "thinking": r["thinking"],
            "decoding": r["decoding"],
            "stage": "generation",
            "error": r["error"],
        }
        for r in records
        if r["error"]
    ]
    for record in records:
        for kind in ("answer", "reasoning"):
            verdict = record.get(f"{kind}_verdict")
            if verdict and verdict.get("error"):
                errors.append(
                    {
                        "id": record["id"],
                        "thinking": record["thinking"],
                        "decoding": record["decoding"],
                        "stage": f"judge_{kind}",
                        "error": verdict["error"],
                    }
                )
    report = {
        "format_version": REPORT_FORMAT_VERSION,
        "run_name": config.run_name or default_run_name(config),
        "model": {
            "model_name_or_path": config.model_name_or_path,
            "adapter_path": config.adapter_path,
            "safety_head_path": head_path,
            "backend": backend,
        },
        "judge": judge.describe(),
        "config": asdict(config),
        "datasets": sorted({e["dataset"] for e in examples}),
        "summary": summarize(figures, probe, config),
        "figures": figures,
        "probe": probe,
        "errors": errors,
        "examples": records,
        "probe_examples": probe_records,
        "runtime": {
            "seconds": round(time.time() - started, 2),
            "generations_total": len(items),
            "generations_from_cache": from_cache,
            "generations_new": generated,
        },
    }
    write_report(report, output_dir, plot=config.plot)
    return report
