# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset, IterableDataset
from transformers import PreTrainedTokenizerBase, ProcessorMixin
from trl import DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference
from trl.trainer.utils import global_then_local_main_first

from ..anchors import (
    MISSING_LABEL,
    MISSING_POSITION,
    AnchorSpec,
    locate_anchor,
    normalize_label,
)
from .anchoring import missing_anchor_error, prompt_boundary, report_missing_anchors
from .presafety_dpo_config import PreSafetyDPOConfig
from .presafety_mixin import PRESAFETY_BATCH_KEYS, PreSafetyTrainerMixin


POSITION_COLUMN = "presafety_position"
LABEL_COLUMN = "presafety_label"


def _anchor_column(position: int, prompt_len: int, completion_len: int, max_length: int | None, mode: str) -> int:
    """Column of the anchor in a row truncated like `DataCollatorForPreference` truncates, or -1 if cut."""
    if position < 0:
        return MISSING_POSITION
    if max_length is None:
        return position
    if mode == "keep_end":
        position -= max(0, prompt_len + completion_len - max_length)
        return position if position >= 0 else MISSING_POSITION
    return position if position < max_length else MISSING_POSITION


@dataclass
class DataCollatorForPreSafetyPreference(DataCollatorForPreference):
    """TRL's `DataCollatorForPreference` plus the anchors of the pre-CoT head.

    Chosen and rejected share the prompt, so the hidden state at a prompt anchor is the same in both halves of the
    batch: each pair gives one head prediction, read in its chosen row. Returns, besides TRL's keys,
    `"presafety_index"` (`(n, 2)`: row, column), `"presafety_labels"` (`(n,)`) and `"presafety_span_start"` (`(n,)`).
    Examples need `"presafety_position"` (anchor index in prompt + chosen, -1 if none) and `"presafety_label"`, which
    `PreSafetyDPOTrainer` adds during dataset preparation.
    """

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if POSITION_COLUMN not in examples[0] or LABEL_COLUMN not in examples[0]:
            raise KeyError(
                f"Examples have no '{POSITION_COLUMN}'/'{LABEL_COLUMN}' (keys: {sorted(examples[0])}). "
                "PreSafetyDPOTrainer adds them during dataset preparation."
            )
        output = super().torch_call(examples)
        index, labels = [], []
        for row, example in enumerate(examples):
            label = example[LABEL_COLUMN]
            column = _anchor_column(
                example[POSITION_COLUMN],
                len(example["prompt_ids"]),
                len(example["chosen_ids"]),
                self.max_length,
                self.truncation_mode,
            )
            if label == MISSING_LABEL or column == MISSING_POSITION:
                continue
            index.append((row, column))
            labels.append(label)
        output["presafety_index"] = torch.tensor(index, dtype=torch.long).reshape(-1, 2)
        output["presafety_labels"] = torch.tensor(labels, dtype=torch.float32)
        output["presafety_span_start"] = torch.zeros(len(index), dtype=torch.long)
        return output


class PreSafetyDPOTrainer(PreSafetyTrainerMixin, DPOTrainer):
    """TRL's [`~trl.DPOTrainer`] with the pre-CoT safety head.

    A drop-in replacement: every `DPOTrainer` argument works as before (`ref_model`, PEFT with the adapter disabled as
    reference, `precompute_ref_log_probs`, every `loss_type`). Each pair's safety label is predicted by the head from
    the hidden state at the prompt's pre-CoT anchor, read during the policy forward (the hook is disarmed before the
    reference forward, which under PEFT runs through the same backbone).

    For IPO pairs (https://huggingface.co/papers/2509.24393), whose prompt carries the reasoning up to the intervention
    point, use `presafety_anchor="think_end"`: the anchor is then the think tag inside the prompt, not its end.
    """

    _tag_names = ["trl", "dpo", "presafety"]
    _name = "PreSafety DPO"
    _presafety_columns = (POSITION_COLUMN, LABEL_COLUMN)

    def __init__(
        self,
        model,
        ref_model=None,
        args: PreSafetyDPOConfig | None = None,
        data_collator=None,
        train_dataset: Dataset | IterableDataset | None = None,
        eval_dataset=None,
        processing_class: PreTrainedTokenizerBase | ProcessorMixin | None = None,
        *trainer_args,
        peft_config=None,
        quantization_config=None,
        **trainer_kwargs,
    ):
        # `model_init_kwargs` stay in `args`: DPOTrainer also builds the reference model from them
        model, args, quantization_config = self._presafety_pre_init(
            model, args, PreSafetyDPOConfig, train_dataset, peft_config, quantization_config, False
        )
        super().__init__(
            model,
            ref_model,
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
        self._presafety_setup(DataCollatorForPreference, DataCollatorForPreSafetyPreference)

    def _prepare_dataset(
        self,
        dataset: Dataset | IterableDataset,
        processing_class: PreTrainedTokenizerBase | ProcessorMixin,
        args: PreSafetyDPOConfig,
        dataset_name: str,
    ) -> Dataset | IterableDataset:
        if {"prompt_ids", POSITION_COLUMN, LABEL_COLUMN} <= set(dataset.column_names or []):
            return dataset  # already prepared by this trainer
        dataset = self._presafety_check_rows(dataset, dataset_name, preference=True)
        if dataset_name != "train":
            self._presafety_check_labels(dataset, dataset_name, args)
        before = len(dataset) if isinstance(dataset, Dataset) else 0
        dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        self._presafety_check_prepared(
            dataset,
            dataset_name,
            before,
            f"every prompt fills `max_length={args.max_length}` (DPOTrainer drops them with "
            f"`truncation_mode={args.truncation_mode!r}`). Raise `max_length` (or shorten the prompts).",
        )
        spec = self._presafety_anchor_spec(processing_class, args)
        map_kwargs = {}
        if isinstance(dataset, Dataset):
            map_kwargs = {
                "num_proc": args.dataset_num_proc,
                "desc": f"Locating pre-CoT anchors in {dataset_name} dataset",
            }
        fn_kwargs = {
            "args": args,
            "spec": spec,
            "processing_class": processing_class,
            "raise_on_missing": isinstance(dataset, IterableDataset) and args.presafety_on_missing_anchor == "error",
        }
        with global_then_local_main_first():
            dataset = dataset.map(_build_presafety_anchor, fn_kwargs=fn_kwargs, with_indices=True, **map_kwargs)
        if isinstance(dataset, Dataset):
            labels = dataset[LABEL_COLUMN]
            positions = dataset[POSITION_COLUMN]
            lengths = zip(dataset["prompt_ids"], dataset["chosen_ids"], strict=True)
            merge_cut = dataset["presafety_merge_cut"]
            self._presafety_count_merges(sum(dataset["presafety_merged"]), dataset_name)
            labeled = [i for i, label in enumerate(labels) if label != MISSING_LABEL]
            not_found, cut, merged = [], [], []
            for i, (prompt_ids, chosen_ids) in enumerate(lengths):
                if labels[i] == MISSING_LABEL:
                    continue
                if positions[i] == MISSING_POSITION:
                    (merged if merge_cut[i] else not_found).append(i)
                elif (
                    _anchor_column(
                        positions[i], len(prompt_ids), len(chosen_ids), args.max_length, args.truncation_mode
                    )
                    == MISSING_POSITION
                ):
                    cut.append(i)
            report_missing_anchors(
                dataset_name,
                len(labeled),
                args.presafety_on_missing_anchor,
                args.presafety_anchor,
                args.max_length,
                not_found=not_found,
                cut=cut,
                merged=merged,
            )
        return dataset.remove_columns(["presafety_merged", "presafety_merge_cut"])

    def compute_ref_log_probs(self, model, inputs):
        # Reference log-probs (also the `precompute_ref_log_probs` pass) need no head: drop its keys before the forward
        inputs = {k: v for k, v in inputs.items() if k not in PRESAFETY_BATCH_KEYS}
        return super().compute_ref_log_probs(model, inputs)


def _build_presafety_anchor(example, index, args, spec: AnchorSpec, processing_class, raise_on_missing):
    """Map function: the anchor (in prompt + chosen coordinates) and the normalized label of one tokenized pair."""
    label = normalize_label(example.get(args.presafety_label_column), args.presafety_label_column, index)
    position, merged, merge_cut = example.get(POSITION_COLUMN), False, False
    if position is None:
        boundary, shared = prompt_boundary(example, example["prompt"], example["prompt_ids"], processing_class)
        full_ids = example["prompt_ids"] + example["chosen_ids"]
        position = locate_anchor(full_ids, boundary, spec)
        # TRL drops the prompt's merged tail: an anchor at or past it reads another token than the gate
        merged = shared < boundary.response_start
        if merged and position >= shared:
            position, merge_cut = MISSING_POSITION, True
    if raise_on_missing and label != MISSING_LABEL and position == MISSING_POSITION:
        raise missing_anchor_error(index, args.presafety_anchor, args.max_length)
    return {
        POSITION_COLUMN: position,
        LABEL_COLUMN: label,
        "presafety_merged": merged,
        "presafety_merge_cut": merge_cut,
    }
