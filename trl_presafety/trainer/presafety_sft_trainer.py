# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
import copy
from dataclasses import dataclass
from typing import Any

import torch
from accelerate.logging import get_logger
from datasets import Dataset, IterableDataset
from transformers import PreTrainedTokenizerBase, ProcessorMixin
from trl import SFTTrainer
from trl.data_utils import is_conversational, pack_dataset
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling
from trl.trainer.utils import global_then_local_main_first

from ..anchors import (
    MISSING_LABEL,
    MISSING_POSITION,
    AnchorSpec,
    Boundary,
    describe_indices,
    locate_anchor,
    normalize_label,
)
from .anchoring import missing_anchor_error, prompt_boundary, prompt_is_text_prefix, report_missing_anchors
from .presafety_mixin import PreSafetyTrainerMixin
from .presafety_sft_config import PreSafetySFTConfig


logger = get_logger(__name__)

# Per-token column carrying the safety label at the anchor token and -100 elsewhere. Being per-token, it follows the
# tokens through truncation, packing and padding-free flattening, which gives every example its offset for free.
TARGETS_COLUMN = "presafety_labels"
# What the prepared dataset stores: the anchors of each (packed) row and their labels. The per-token column above
# follows the tokens through truncation and packing, then is compacted: a per-token float column costs the data loader
# a list conversion of every token at each step, which showed as ~4 ms per step on an H100 host (benchmarks/).
POSITIONS_COLUMN = "presafety_anchor_positions"
ANCHOR_LABELS_COLUMN = "presafety_anchor_labels"
# Outcome of the anchor search per example, for the missing-anchor report
_OK, _UNLABELED, _NO_ANCHOR, _TRUNCATED, _DROPPED, _MERGED, _NOT_PREFIX = 0, 1, 2, 3, 4, 5, 6


@dataclass
class DataCollatorForPreSafetyLanguageModeling(DataCollatorForLanguageModeling):
    """TRL's `DataCollatorForLanguageModeling` plus the anchors of the pre-CoT head.

    Besides TRL's keys, returns:
    - `"presafety_index"` (`(n, 2)` long): `(row, column)` of each labeled anchor in `input_ids`; with padding-free
      (and so with BFD packing), the row is 0 and the column includes the example's offset in the flattened row;
    - `"presafety_labels"` (`(n,)` float): their labels, hard or soft;
    - `"presafety_span_start"` (`(n,)` long): first column of each anchor's sequence (for `pooling="mean"`).

    Each example carries its anchors as `"presafety_anchor_positions"` (token positions in `input_ids`) and
    `"presafety_anchor_labels"` (their labels), which `PreSafetySFTTrainer` builds during dataset preparation; a
    per-token `"presafety_labels"` list (the label at the anchor token, -100 elsewhere) is accepted too.
    """

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        compact = POSITIONS_COLUMN in examples[0]
        if not compact and TARGETS_COLUMN not in examples[0]:
            raise KeyError(
                f"Examples have no '{POSITIONS_COLUMN}' or '{TARGETS_COLUMN}' column (keys: {sorted(examples[0])}). "
                "PreSafetySFTTrainer builds them from the safety label column during dataset preparation; with "
                f"`skip_prepare_dataset=True`, add '{POSITIONS_COLUMN}' (anchor token positions) and "
                f"'{ANCHOR_LABELS_COLUMN}' (their labels), or a per-token '{TARGETS_COLUMN}' list with the label at "
                "the anchor token and -100 elsewhere."
            )
        output = super().torch_call(examples)
        rows, cols, values, offset = [], [], [], 0
        for row, example in enumerate(examples):
            positions, labels = (
                (example[POSITIONS_COLUMN], example[ANCHOR_LABELS_COLUMN])
                if compact
                else _anchors_of(example[TARGETS_COLUMN])
            )
            # Padding-free concatenates the examples in one row; padding is on the right, so columns stay
            rows.extend([0 if self.padding_free else row] * len(positions))
            cols.extend(offset + p for p in positions)
            values.extend(labels)
            if self.padding_free:
                offset += len(example["input_ids"])
        rows = torch.tensor(rows, dtype=torch.long)
        cols = torch.tensor(cols, dtype=torch.long)
        output["presafety_labels"] = torch.tensor(values, dtype=torch.float32)
        output["presafety_index"] = torch.stack([rows, cols], dim=1)
        if "position_ids" in output:
            output["presafety_span_start"] = cols - output["position_ids"][rows, cols]
        else:  # right padding: every sequence starts at column 0
            output["presafety_span_start"] = torch.zeros_like(cols)
        return output


class PreSafetySFTTrainer(PreSafetyTrainerMixin, SFTTrainer):
    """TRL's [`~trl.SFTTrainer`] with the pre-CoT safety head.

    A drop-in replacement: every `SFTTrainer` argument works as before. Besides the SFT loss, a small head reads the
    hidden state at the pre-CoT anchor of each example (`presafety_anchor`) and predicts its safety label
    (`presafety_label_column`); `presafety_loss_weight` times its BCE is added to the loss. The hidden state comes from
    the forward TRL already runs (a hook on the decoder backbone), so no forward pass is added.

    Data: prompt-completion (standard or conversational) and conversational language modeling ("messages", where the
    prompt is everything before the last assistant turn) datasets, padded, padding-free or packed (`bfd`,
    `bfd_split`), each with a safety label column. Already tokenized datasets give the prompt length through their
    `completion_mask` or `labels` (or an explicit `presafety_position` column).

    Example:
    ```python
    >>> from trl_presafety import PreSafetySFTConfig, PreSafetySFTTrainer

    >>> trainer = PreSafetySFTTrainer(
    ...     model="Qwen/Qwen3-0.6B",
    ...     args=PreSafetySFTConfig(output_dir="qwen3-presafety", presafety_loss_weight=1.0),
    ...     train_dataset=load_dataset("json", data_files="labeled.jsonl", split="train"),
    ... )
    >>> trainer.train()
    ```
    """

    _tag_names = ["trl", "sft", "presafety"]
    _name = "PreSafety SFT"
    _presafety_columns = (TARGETS_COLUMN, POSITIONS_COLUMN, ANCHOR_LABELS_COLUMN)

    def __init__(
        self,
        model,
        args: PreSafetySFTConfig | None = None,
        data_collator=None,
        train_dataset: Dataset | IterableDataset | None = None,
        eval_dataset=None,
        processing_class: PreTrainedTokenizerBase | ProcessorMixin | None = None,
        *trainer_args,
        peft_config=None,
        quantization_config=None,
        **trainer_kwargs,
    ):
        model, args, quantization_config = self._presafety_pre_init(
            model, args, PreSafetySFTConfig, train_dataset, peft_config, quantization_config, True
        )
        super().__init__(
            model,
            args,
            data_collator,
            train_dataset,
            eval_dataset,
            processing_class,
            *trainer_args,
            peft_config=peft_config,
            quantization_config=quantization_config,
            **trainer_kwargs,
        )
        self._presafety_setup(DataCollatorForLanguageModeling, DataCollatorForPreSafetyLanguageModeling)

    def _prepare_dataset(
        self,
        dataset: Dataset | IterableDataset,
        processing_class: PreTrainedTokenizerBase | ProcessorMixin,
        args: PreSafetySFTConfig,
        packing: bool,
        formatting_func,
        dataset_name: str,
    ) -> Dataset | IterableDataset:
        column_names = dataset.column_names or []
        if POSITIONS_COLUMN in column_names or TARGETS_COLUMN in column_names:
            return dataset  # already prepared (by this trainer, or by the user)
        dataset = self._presafety_check_rows(dataset, dataset_name, preference=False)
        if dataset_name != "train":
            self._presafety_check_labels(dataset, dataset_name, args)

        # TRL tokenizes; truncation and packing are done below so that the per-token targets follow the tokens
        tokenize_args = copy.copy(args)
        tokenize_args.max_length = None
        tokenize_args.shuffle_dataset = False
        dataset = super()._prepare_dataset(
            dataset, processing_class, tokenize_args, False, formatting_func, dataset_name
        )

        spec = self._presafety_anchor_spec(processing_class, args)
        truncate = args.max_length if (args.max_length is not None) else None
        map_kwargs = {}
        if isinstance(dataset, Dataset):
            map_kwargs = {
                "num_proc": args.dataset_num_proc,
                "desc": f"Locating pre-CoT anchors in {dataset_name} dataset",
            }
        fn_kwargs = {
            "processing_class": processing_class,
            "args": args,
            "spec": spec,
            "max_length": truncate,
            "packing": packing,
            "chat_template": self.chat_template,
            # A streamed dataset cannot be scanned up front, so the "error" policy applies per example
            "raise_on_missing": isinstance(dataset, IterableDataset) and args.presafety_on_missing_anchor == "error",
        }
        with global_then_local_main_first():
            dataset = dataset.map(_build_presafety_targets, fn_kwargs=fn_kwargs, with_indices=True, **map_kwargs)

            if isinstance(dataset, Dataset):
                status = dataset["presafety_status"]
                labeled = [i for i, s in enumerate(status) if s not in (_UNLABELED, _DROPPED)]
                dropped = [i for i, s in enumerate(status) if s == _DROPPED]
                if dropped:
                    logger.warning(
                        f"{len(dropped)} examples of the {dataset_name} dataset lose their whole completion to "
                        f"max_length={args.max_length} and are dropped (as SFTTrainer does); indices "
                        f"{describe_indices(dropped)}."
                    )
                self._presafety_count_merges(sum(dataset["presafety_merged"]), dataset_name)
                report_missing_anchors(
                    dataset_name,
                    len(labeled),
                    args.presafety_on_missing_anchor,
                    args.presafety_anchor,
                    args.max_length,
                    not_found=[i for i, s in enumerate(status) if s == _NO_ANCHOR],
                    cut=[i for i, s in enumerate(status) if s == _TRUNCATED],
                    merged=[i for i, s in enumerate(status) if s == _MERGED],
                    not_prefix=[i for i, s in enumerate(status) if s == _NOT_PREFIX],
                )
            dataset = dataset.remove_columns(["presafety_status", "presafety_merged"])

            # Same as TRL: drop examples that truncation left without any trainable token
            if args.max_length is not None and not packing:
                before = len(dataset) if isinstance(dataset, Dataset) else 0
                if isinstance(dataset, Dataset):
                    map_kwargs["desc"] = f"Dropping fully masked examples from {dataset_name} dataset"
                dataset = dataset.filter(
                    lambda example: any(label != -100 for label in example["labels"]), **map_kwargs
                )
                self._presafety_check_prepared(
                    dataset,
                    dataset_name,
                    before,
                    f"with `truncation_mode={args.truncation_mode!r}` and `max_length={args.max_length}` no completion "
                    "token is left to train on. Raise `max_length` (or shorten the prompts).",
                )

            if packing:
                if args.max_length is None:
                    raise ValueError("When packing is enabled, `max_length` can't be `None`.")
                if isinstance(dataset, Dataset):
                    map_kwargs["desc"] = f"Packing {dataset_name} dataset"
                dataset = dataset.select_columns(["input_ids", "labels", TARGETS_COLUMN])
                if args.shuffle_dataset:
                    dataset = dataset.shuffle(seed=args.seed)
                dataset = pack_dataset(dataset, args.max_length, args.packing_strategy, map_kwargs)

            if isinstance(dataset, Dataset):
                map_kwargs["desc"] = f"Compacting pre-CoT anchors of {dataset_name} dataset"
            dataset = dataset.map(
                _compact_presafety_targets, batched=True, remove_columns=[TARGETS_COLUMN], **map_kwargs
            )
        if args.shuffle_dataset:
            dataset = dataset.shuffle(seed=args.seed)
        return dataset

    @staticmethod
    def _presafety_boundary(
        example: dict[str, Any], input_ids: list[int], processing_class, chat_template: str | None
    ) -> tuple[Boundary | None, int | None]:
        """Where the model's output starts in `input_ids` (and the template's generation prompt, for conversations),
        and how many leading tokens the prompt tokenized alone shares with `input_ids` (`None` when unknown).

        Found from the template's structure ([`prompt_boundary`], shared with the DPO trainer), never from the text.
        """
        prompt = _example_prompt(example)
        if prompt is None and example.get("messages"):
            return None, None
        if prompt is not None:
            return prompt_boundary(example, prompt, input_ids, processing_class, chat_template)
        # Already tokenized data: the completion starts at the first trained token
        if example.get("completion_mask") is not None and 1 in example["completion_mask"]:
            return Boundary(example["completion_mask"].index(1)), None
        return None, None


def _example_prompt(example: dict[str, Any]) -> Any:
    """The prompt of an SFT row: `prompt`, or the messages before the last assistant turn of `messages`."""
    prompt = example.get("prompt")
    if prompt is None and example.get("messages"):
        messages = example["messages"]
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
        prompt = messages[:last] if last not in (None, 0) else None
    return prompt


def _anchors_of(targets: list[float]) -> tuple[list[int], list[float]]:
    """The anchor positions of a per-token target list (-100 elsewhere) and their labels."""
    positions = [i for i, t in enumerate(targets) if t != MISSING_LABEL]
    return positions, [targets[i] for i in positions]


def _compact_presafety_targets(batch: dict[str, list]) -> dict[str, list]:
    """Batched map: the per-token targets of each (packed) row to its anchor positions and labels."""
    anchors = [_anchors_of(targets) for targets in batch[TARGETS_COLUMN]]
    return {POSITIONS_COLUMN: [a[0] for a in anchors], ANCHOR_LABELS_COLUMN: [a[1] for a in anchors]}


def _build_presafety_targets(
    example, index, processing_class, args, spec: AnchorSpec, max_length, packing, chat_template, raise_on_missing
):
    """Map function: the per-token target column of one tokenized example, truncated like SFTTrainer truncates."""
    input_ids = example["input_ids"]
    labels = example["labels"]
    label = normalize_label(example.get(args.presafety_label_column), args.presafety_label_column, index)
    position, shared, boundary = example.get("presafety_position"), None, None
    if position is None:
        boundary, shared = PreSafetySFTTrainer._presafety_boundary(example, input_ids, processing_class, chat_template)
        if boundary is None and "completion_mask" not in example and not is_conversational(example):
            # Tokenized data without a completion mask: the first trained label marks the completion
            first = next((i for i, t in enumerate(labels) if t != -100), None)
            if first not in (None, 0) and any(t == -100 for t in labels):
                boundary = Boundary(first)
        position = MISSING_POSITION if boundary is None else locate_anchor(input_ids, boundary, spec)
    merged = shared is not None and boundary is not None and shared < boundary.response_start
    # Not a token merge when the texts differ too: the template renders the assistant turn without what its
    # generation prompt ends with (the stock DeepSeek-R1 template drops `<think>`)
    not_prefix = merged and not prompt_is_text_prefix(
        example, _example_prompt(example), input_ids, processing_class, chat_template
    )
    merged = merged and not not_prefix
    targets = [MISSING_LABEL] * len(input_ids)
    status = _UNLABELED if label == MISSING_LABEL else _OK
    if status == _OK:
        if not_prefix:
            status = _NOT_PREFIX
        elif position == MISSING_POSITION or position >= len(input_ids):
            status = _NO_ANCHOR
        elif merged and position >= shared:
            status = _MERGED  # the token at the anchor is not the one the prompt alone (the gate's input) has there
        else:
            targets[position] = label
    output = {TARGETS_COLUMN: targets}
    if max_length is not None and len(input_ids) > max_length:
        if packing:  # BFD truncates (or splits off) everything past max_length
            if status == _OK and position >= max_length:
                status, targets[position] = _TRUNCATED, MISSING_LABEL
        else:
            if args.truncation_mode == "keep_start":
                sl = slice(None, max_length)
            elif args.truncation_mode == "keep_end":
                sl = slice(-max_length, None)
            else:
                raise ValueError(
                    f"Unsupported truncation mode: {args.truncation_mode}, expected 'keep_start' or 'keep_end'"
                )
            output = {"input_ids": input_ids[sl], "labels": labels[sl], TARGETS_COLUMN: targets[sl]}
            if status == _OK and all(t == MISSING_LABEL for t in output[TARGETS_COLUMN]):
                status = _TRUNCATED
            if all(t == -100 for t in output["labels"]):
                status = _DROPPED  # TRL drops it below: no trainable token left
    if raise_on_missing and status in (_NO_ANCHOR, _TRUNCATED, _MERGED, _NOT_PREFIX):
        raise missing_anchor_error(index, args.presafety_anchor, max_length)
    output["presafety_status"] = status
    output["presafety_merged"] = merged
    return output
