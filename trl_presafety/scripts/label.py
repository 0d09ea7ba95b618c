# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Label prompts with the safe model's decision: `safety_label`, `safety_label_prob` and `safe_response` columns.

The decision is not the harmfulness of the prompt. Input columns are kept, so a `harmful` column (1 harmful, 0 benign,
from each prompt's source: what IPO, AltTrain and the GRPO safety rewards read) passes through; `--harmful 1` (or 0)
writes it for a file whose prompts are all harmful (or all benign). Without either, a warning says so.

The safe model (the LRM with thinking disabled) answers each prompt; the safety decision classifier reads each answer.
Output: `<output_dir>/data/<split>-NNNNN-of-MMMMM.parquet` shards plus `labeling_state.json`; rerun the same command
after an interruption and only the missing shards are computed. Until every shard is done, the other commands
(`sft`, `dpo`, `eval`, ...) refuse the folder unless `allow_incomplete_labels` is set. Load the result with
`trl_presafety.labeling.load_labeled_dataset("<output_dir>")` (checked) or `datasets.load_dataset("<output_dir>")`.
Prompts that already carry labels are relabeled only with `--overwrite_labels`; how many labels changed is printed.

Example (CPU, tiny model and the bundled prompts; about a minute):

```bash
python -m trl_presafety.tiny --output_dir runs/tiny-qwen3 --style qwen3
trl-presafety train-classifier --config recipes/tiny/train_classifier.yaml
trl-presafety label --config recipes/tiny/label.yaml
```

On a GPU with vLLM installed, `backend: auto` uses vLLM:

```bash
trl-presafety label --model_name_or_path Qwen/Qwen3-8B --dtype bfloat16 --dataset_name my/prompts \\
    --classifier_name_or_path runs/refusal-classifier --output_dir runs/qwen3-8b-labels --max_new_tokens 512
```
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from trl import ModelConfig, TrlParser

from ..generation import GenerationArguments
from ..harmfulness import HARMFUL_COLUMN
from ..inputs import check_classifier_input, check_data_input, check_model_input
from ..labeling.pipeline import label_dataset, load_prompt_dataset
from ..labeling.state import ALLOW_INCOMPLETE_LABELS_HELP, STATE_FILE, check_label_folder
from ..shards import ShardWorkerArguments
from .arguments import make_script_parser, parse_args_strict


@dataclass
class LabelScriptArguments(ShardWorkerArguments):
    r"""
    Arguments of `trl-presafety label` (and, from [`~trl_presafety.shards.ShardWorkerArguments`], `num_workers`,
    `worker_index`, `claim_timeout`, `take_over_claims`: several workers, on one node or many, label one folder).

    > Data and output

    dataset_name (`str`):
        Prompts to label: a hub id, a local `.json`/`.jsonl`/`.parquet`/`.csv` file, or a folder.
    dataset_config (`str`, *optional*):
        Hub dataset configuration name.
    dataset_split (`str`, *optional*, defaults to `"train"`):
        Split to label (also the split name of the output shards).
    prompt_column (`str`, *optional*, defaults to `"prompt"`):
        Column with the requests (strings or chat message lists).
    max_samples (`int`, *optional*):
        Label only the first `max_samples` rows.
    harmful (`int`, *optional*):
        Harmfulness of every prompt of the input, from its source: `1` for a set of harmful prompts, `0` for a
        benign one. Written as the `harmful` column, which IPO, AltTrain and the GRPO safety rewards read (the
        decision `safety_label` is not harmfulness). Leave it unset when the input has a `harmful` column of its own.
    output_dir (`str`):
        Folder of the output shards and `labeling_state.json`.
    shard_size (`int`, *optional*, defaults to `256`):
        Rows per shard: the unit of resumption.
    overwrite_output_dir (`bool`, *optional*, defaults to `False`):
        Delete existing shards and start over instead of resuming.
    overwrite_labels (`bool`, *optional*, defaults to `False`):
        Relabel data that already has `safety_label` / `safety_label_prob` / `safe_response` values, replacing them;
        how many labels changed is printed and recorded in `labeling_state.json`. Without it such data is refused.
    allow_incomplete_labels (`bool`, *optional*, defaults to `False`):
        Read prompts from a label folder whose labeling did not finish (only its finished shards).

    > Safety decision

    classifier_name_or_path (`str`):
        Trained safety decision classifier (`trl-presafety train-classifier` output, or a hub id).
    threshold (`float`, *optional*, defaults to `0.5`):
        P(refusal) at or above which `safety_label` is 1.
    classifier_batch_size (`int`, *optional*, defaults to `64`):
        Answers per classifier forward pass.
    classifier_max_length (`int`, *optional*, defaults to `256`):
        Token budget of each (prompt, answer) pair; the longer text is truncated first.
    thinking (`bool`, *optional*, defaults to `False`):
        Generate the safe answers with thinking on. The method's safe model has thinking off.
    label_cut_answers (`bool`, *optional*, defaults to `True`):
        Label answers cut at `max_new_tokens` from their text (the decision shows in the first sentences); their
        `safe_response_status` is `"cut"`. `False` leaves them unlabeled. Empty and whitespace-only answers (and
        answers with stray think tags) never get a label read by the classifier (it would read the prompt instead).
    blank_answer_label (`int`, *optional*):
        Label of those empty answers: unset leaves them unlabeled (`safety_label` None: no auxiliary loss); `0` reads
        them as compliance, `1` as refusal (the tiny recipe sets 0: its random model answers only blank lines).
    """

    dataset_name: str | None = field(
        default=None, metadata={"help": "Prompts: a hub id, a local .json/.jsonl/.parquet/.csv file, or a folder."}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    dataset_split: str = field(default="train", metadata={"help": "Split to label (and of the output shards)."})
    prompt_column: str = field(
        default="prompt", metadata={"help": "Column with the requests (strings or chat message lists)."}
    )
    max_samples: int | None = field(default=None, metadata={"help": "Label only the first max_samples rows."})
    harmful: int | None = field(
        default=None,
        metadata={
            "help": "Harmfulness of every input prompt, from its source (1: a harmful set, 0: a benign set), written "
            "as the `harmful` column. Unset when the input has its own `harmful` column.",
            "choices": [0, 1],
        },
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Folder of the output shards and labeling_state.json."}
    )
    shard_size: int = field(default=256, metadata={"help": "Rows per shard: the unit of resumption."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Delete existing shards and start over instead of resuming."}
    )
    overwrite_labels: bool = field(
        default=False,
        metadata={
            "help": "Replace the labels the data already has (safety_label, safety_label_prob, safe_response); "
            "how many changed is reported. Without it such data is refused."
        },
    )
    allow_incomplete_labels: bool = field(default=False, metadata={"help": ALLOW_INCOMPLETE_LABELS_HELP})
    classifier_name_or_path: str | None = field(
        default=None, metadata={"help": "Trained safety decision classifier (train-classifier output or hub id)."}
    )
    threshold: float = field(default=0.5, metadata={"help": "P(refusal) at or above which safety_label is 1."})
    classifier_batch_size: int = field(default=64, metadata={"help": "Answers per classifier forward pass."})
    classifier_max_length: int = field(
        default=256, metadata={"help": "Token budget of each (prompt, answer) pair; the longer text is cut first."}
    )
    thinking: bool = field(
        default=False,
        metadata={"help": "Generate the safe answers with thinking on (the method's safe model has it off)."},
    )
    label_cut_answers: bool = field(
        default=True,
        metadata={
            "help": "Label answers cut at max_new_tokens from their text (status 'cut'); false leaves them unlabeled. "
            "Empty answers are never labeled by the classifier."
        },
    )
    blank_answer_label: int | None = field(
        default=None,
        metadata={
            "help": "Label of empty / whitespace-only / tag-only answers: unset = no label; 0 = compliance, 1 = "
            "refusal. Never read from the prompt.",
            "choices": [0, 1],
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, fix in (
            ("dataset_name", "the prompts to label (hub id, data file or folder)"),
            ("output_dir", "a folder for the labeled shards"),
            ("classifier_name_or_path", "a classifier trained with `trl-presafety train-classifier`"),
        ):
            if not getattr(self, name):
                raise ValueError(f"`{name}` is required, got {getattr(self, name)!r}: pass {fix}.")
        if self.shard_size < 1:
            raise ValueError(
                f"`shard_size` must be >= 1, got {self.shard_size}: it is the number of rows per output shard, e.g. "
                "256."
            )
        if self.harmful not in (None, 0, 1):
            raise ValueError(
                f"`harmful` must be 1 (every prompt is harmful) or 0 (every prompt is benign), got {self.harmful!r}: "
                "leave it unset when the input has its own `harmful` column."
            )
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"`max_samples` must be >= 1, got {self.max_samples}: leave it unset to label every row.")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(
                f"`threshold` must lie in [0, 1], got {self.threshold}: it is the P(refusal) cut-off, e.g. 0.5."
            )
        if self.classifier_batch_size < 1:
            raise ValueError(
                f"`classifier_batch_size` must be >= 1, got {self.classifier_batch_size}: e.g. 64 (lower it if the "
                "classifier runs out of memory)."
            )
        if self.classifier_max_length < 8:
            raise ValueError(
                f"`classifier_max_length` must be >= 8, got {self.classifier_max_length}: it is the token budget of "
                "a (prompt, answer) pair, e.g. 256."
            )


def make_parser() -> TrlParser:
    return make_script_parser("label", (LabelScriptArguments, GenerationArguments, ModelConfig))


def main(argv: list[str] | None = None) -> None:
    script_args, generation_args, model_args = parse_args_strict(make_parser(), argv)
    if not model_args.model_name_or_path:
        raise ValueError(
            f"`model_name_or_path` is required, got {model_args.model_name_or_path!r}: pass the safe model (the LRM "
            "whose thinking-off answers are labeled), e.g. `--model_name_or_path Qwen/Qwen3-8B`."
        )
    # Every local input first: a missing classifier would otherwise fail after the whole generation, on the network
    check_data_input(script_args.dataset_name)
    check_label_folder(script_args.dataset_name, script_args.allow_incomplete_labels)
    check_model_input(model_args.model_name_or_path)
    check_classifier_input(script_args.classifier_name_or_path)
    dataset = load_prompt_dataset(
        script_args.dataset_name,
        script_args.dataset_config,
        script_args.dataset_split,
        allow_incomplete_labels=script_args.allow_incomplete_labels,
    )
    if script_args.max_samples is not None:
        dataset = dataset.select(range(min(script_args.max_samples, len(dataset))))
    if script_args.harmful is not None:
        if HARMFUL_COLUMN in dataset.column_names:
            raise ValueError(
                f"`harmful={script_args.harmful}` would replace the input's own '{HARMFUL_COLUMN}' column. Drop "
                "`--harmful` to keep the column, or remove the column from the input."
            )
        dataset = dataset.add_column(HARMFUL_COLUMN, [script_args.harmful] * len(dataset))
    model_init_kwargs = {"revision": model_args.model_revision, "dtype": model_args.dtype}
    if model_args.attn_implementation is not None:
        model_init_kwargs["attn_implementation"] = model_args.attn_implementation
    labeled = label_dataset(
        dataset,
        model_args.model_name_or_path,
        None,
        script_args.classifier_name_or_path,
        prompt_column=script_args.prompt_column,
        output_dir=script_args.output_dir,
        shard_size=script_args.shard_size,
        split=script_args.dataset_split,
        threshold=script_args.threshold,
        thinking=script_args.thinking,
        generation=generation_args,
        classifier_batch_size=script_args.classifier_batch_size,
        classifier_max_length=script_args.classifier_max_length,
        overwrite_output_dir=script_args.overwrite_output_dir,
        overwrite_labels=script_args.overwrite_labels,
        label_cut_answers=script_args.label_cut_answers,
        blank_answer_label=script_args.blank_answer_label,
        model_init_kwargs=model_init_kwargs,
        # vLLM loads the model with the same dtype / revision as transformers would
        vllm_kwargs={k: v for k, v in model_init_kwargs.items() if k in ("dtype", "revision") and v is not None},
        **script_args.worker_kwargs(),
    )
    if labeled is None:  # a worker that ended before the others: its part is on disk, the folder not complete yet
        print(
            f"Worker {script_args.worker_index} of {script_args.num_workers}: its shards are in "
            f"{script_args.output_dir}/data; the folder is complete when every worker has ended (see the log above)."
        )
        return
    summary = json.loads((Path(script_args.output_dir) / STATE_FILE).read_text(encoding="utf-8"))
    rate = summary.get("refusal_rate")
    statuses = summary.get("response_status") or {}
    print(
        f"Labeled {summary.get('num_labeled', len(labeled))} of {len(labeled)} prompts: refusal rate "
        f"{'–' if rate is None else f'{rate:.3f}'}. Shards in {script_args.output_dir}/data (load with "
        f"datasets.load_dataset({script_args.output_dir!r}))."
    )
    blank = statuses.get("empty", 0) + statuses.get("repeated_tags", 0)
    if script_args.blank_answer_label is not None and blank:
        print(
            f"  {blank} blank answers ({statuses.get('empty', 0)} empty, {statuses.get('repeated_tags', 0)} with stray "
            f"think tags) got the label blank_answer_label={script_args.blank_answer_label}, not the classifier's."
        )
    if summary.get("num_unlabeled"):
        reasons = [] if script_args.blank_answer_label is not None else [f"{blank} blank answers"]
        if not script_args.label_cut_answers:
            reasons.append(f"{statuses.get('cut', 0)} answers cut at max_new_tokens")
        print(
            f"  {summary['num_unlabeled']} unlabeled (safety_label None: no auxiliary loss): {', '.join(reasons)}. "
            f"Counts in {STATE_FILE} (`num_unlabeled`, `response_status`)."
        )
    if script_args.label_cut_answers and statuses.get("cut"):
        print(
            f"  {statuses['cut']} answers were cut at max_new_tokens and labeled from their text "
            "(`safe_response_status` 'cut'); raise max_new_tokens if many are."
        )
    relabel = json.loads((Path(script_args.output_dir) / STATE_FILE).read_text(encoding="utf-8")).get("relabel")
    if relabel is not None:
        print(
            f"Relabeled: {relabel['labels_changed']} of the {relabel['rows_with_labels']} existing labels changed "
            f"({relabel['changed_to_refusal']} to refusal, {relabel['changed_to_compliance']} to compliance); "
            f"{relabel['newly_labeled']} rows had no label. Recorded under `relabel` in {STATE_FILE}."
        )


if __name__ == "__main__":
    main()
