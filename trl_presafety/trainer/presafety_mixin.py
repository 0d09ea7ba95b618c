# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""What both PreSafety trainers share: the head, the hook that reads the anchor during TRL's own forward, the loss
normalization that makes gradient accumulation exact, and the metrics."""

import copy
import dataclasses
import os
import shutil
from typing import Any

import torch
from accelerate.logging import get_logger
from accelerate.utils import is_peft_model
from torch import nn
from transformers import PreTrainedModel, TrainingArguments, set_seed
from transformers.trainer_utils import HubStrategy
from trl.trainer.utils import create_model_from_path

from ..anchors import (
    MISSING_LABEL,
    AnchorSpec,
    detect_template_family,
    normalize_label,
    think_close_token_id,
)
from ..head_io import (
    check_head_tensors,
    check_usable_head,
    read_safety_head_state,
    safety_head_detached,
    save_safety_head,
    split_safety_head_state,
)
from ..modeling import (
    SAFETY_HEAD_ATTR,
    SAFETY_HEAD_CONFIG_NAME,
    SAFETY_HEAD_WEIGHTS_NAME,
    TIED_HEAD,
    AnchorCapture,
    SafetyHeadConfig,
    attach_safety_head,
    get_base_causal_lm,
    get_safety_head,
    head_config_from_args,
    presafety_bce,
)
from .callbacks import PreSafetyCallback


logger = get_logger(__name__)

PRESAFETY_BATCH_KEYS = ("presafety_index", "presafety_labels", "presafety_span_start")


def exclude_safety_head_from_adapters(peft_config: Any, head: nn.Module | None) -> None:
    """Keeps LoRA off the safety head: `target_modules="all-linear"` (or a name such as `proj`) would otherwise wrap the
    head's own layers, which then save as adapter weights that `load_safety_head` cannot read. The head trains in
    full, on its own, beside the adapter (see `_presafety_setup`)."""
    if head is None or not hasattr(peft_config, "exclude_modules"):
        return
    names = [SAFETY_HEAD_ATTR] + [f"{SAFETY_HEAD_ATTR}.{name}" for name, _ in head.named_modules() if name]
    excluded = peft_config.exclude_modules
    if isinstance(excluded, str):
        peft_config.exclude_modules = rf"(?:{excluded})|(?:(?:.*\.)?{SAFETY_HEAD_ATTR}(?:\..*)?)"
    else:
        peft_config.exclude_modules = sorted(set(excluded or ()) | set(names))


class PreSafetyTrainerMixin:
    """Shared by `PreSafetySFTTrainer` and `PreSafetyDPOTrainer`; see their docstrings."""

    _presafety_columns: tuple[str, ...] = ()

    # --- set-up -------------------------------------------------------------------------------------------------
    def _presafety_pre_init(
        self,
        model: str | nn.Module,
        args: Any,
        config_cls: type,
        train_dataset: Any,
        peft_config: Any,
        quantization_config: Any,
        consumes_model_init_kwargs: bool,
    ) -> tuple[nn.Module, Any, Any]:
        """What runs before TRL's `__init__`: the config, an early label check, the model and its head.

        The head is attached before TRL wraps the model (PEFT, DeepSpeed), so a model given by name is loaded here,
        the way TRL loads it.
        """
        if args is None:
            name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "") or "model"
            args = config_cls(f"{name.split('/')[-1]}-{config_cls.__name__.removesuffix('Config')}")
        elif not isinstance(args, config_cls):
            if not isinstance(args, TrainingArguments):
                raise TypeError(f"`args` must be a {config_cls.__name__}, got {type(args).__name__}.")
            # A plain SFTConfig/DPOConfig keeps working: copy its fields (not `to_dict`, which masks `*_token` values)
            logger.warning(
                f"`args` is a {type(args).__name__}; converting it to {config_cls.__name__} with the default "
                f"`presafety_*` values. Use a {config_cls.__name__} to set them."
            )
            values = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init}
            args = config_cls(
                **{k: v for k, v in values.items() if k in {f.name for f in dataclasses.fields(config_cls)}}
            )
        if train_dataset is not None:
            self._presafety_check_labels(train_dataset, "train", args)
        if isinstance(model, str):
            model = load_model_like_trl(model, args, quantization_config)
            quantization_config = None
            if consumes_model_init_kwargs:
                args = copy.copy(args)
                args.model_init_kwargs = None  # consumed above, and TRL would warn that they are ignored
        if get_safety_head(model) is None:
            attach_safety_head(model, args, seed=args.seed)
        if peft_config is not None:
            exclude_safety_head_from_adapters(peft_config, get_safety_head(model))
        return model, args, quantization_config

    def _presafety_setup(self, base_collator_cls: type, collator_cls: type) -> None:
        """Called at the end of `__init__`: collator, hook, callback, and checks that need the built trainer."""
        args = self.args
        if type(self.data_collator) is base_collator_cls:
            # TRL builds its collator in `__init__` (and refuses custom ones with padding-free): extend it in place
            fields = {k: getattr(self.data_collator, k) for k in self.data_collator.__dataclass_fields__}
            self.data_collator = collator_cls(**fields)
        gc_kwargs = args.gradient_checkpointing_kwargs or {}
        if args.presafety_layer is not None and args.gradient_checkpointing and gc_kwargs.get("use_reentrant"):
            raise ValueError(
                f"`presafety_layer={args.presafety_layer}` reads an intermediate layer, whose output is detached from "
                "the graph under reentrant gradient checkpointing. Set `gradient_checkpointing_kwargs="
                "{'use_reentrant': False}` (the default), or leave `presafety_layer` unset to read the final hidden "
                "state."
            )
        self._presafety_capture = AnchorCapture(
            self.model, args.presafety_layer, args.presafety_pooling, detach=args.presafety_detach_head
        )
        if args.presafety_detach_head and args.max_grad_norm > 0 and not self._presafety_clips_apart():
            logger.warning(
                f"`presafety_detach_head=True` under {self.accelerator.distributed_type}: the engine clips gradients "
                "by one global norm, which includes the head's gradient, so the model's update can differ from plain "
                "TRL's when clipping is active. No auxiliary gradient reaches the model either way."
            )
        callback = next((cb for cb in self.callback_handler.callbacks if isinstance(cb, PreSafetyCallback)), None)
        if callback is None:
            callback = PreSafetyCallback.from_args(args)
            self.add_callback(callback)
        self.presafety_callback = callback
        self._presafety_num_items: int | None = None
        head = get_safety_head(self.model)
        if head is None:
            raise RuntimeError("The safety head is missing after the trainer set-up; this is a bug.")
        # PEFT freezes every weight that is not an adapter's, the head too: it is trained (and saved) on its own
        head.requires_grad_(True)
        if head.config.head_type == TIED_HEAD:
            head.config.close_token_id = self._presafety_close_token_id()
            head.bind(self.model)
        self._presafety_head_config = self._presafety_describe_head()

    def _presafety_close_token_id(self) -> int:
        """The id of the closing think tag, the token whose probability the tied head reads; checked against the
        model's output vocabulary."""
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        if tokenizer is None:
            raise ValueError(
                "`presafety_head='tied'` needs the tokenizer to find the closing think tag's id; pass "
                "`processing_class`."
            )
        token_id = think_close_token_id(tokenizer, self.args.presafety_think_token)
        output_embeddings = get_base_causal_lm(self.model).get_output_embeddings()
        if output_embeddings is None:
            raise ValueError(
                f"`presafety_head='tied'` reads the model's LM head, but {type(self.model).__name__} has no output "
                "embeddings (`get_output_embeddings()` is None). Use a causal LM, or a 'linear' head."
            )
        parallelism = getattr(self.accelerator, "parallelism_config", None)
        if parallelism is not None and getattr(parallelism, "tp_enabled", False):
            raise ValueError(
                "`presafety_head='tied'` computes the LM head's logits at the anchor over the whole vocabulary, which "
                "tensor parallelism shards across ranks (`tp_size > 1`). Train the tied head without tensor "
                "parallelism (DDP, ZeRO or FSDP), or use a 'linear' head."
            )
        vocab = output_embeddings.weight.shape[0]
        if token_id >= vocab:
            raise ValueError(
                f"The closing think tag has id {token_id}, outside the model's output vocabulary of {vocab}: the "
                "tokenizer was extended without resizing the model's embeddings (`model.resize_token_embeddings`)."
            )
        return token_id

    def _presafety_anchor_spec(self, processing_class: Any, args: Any) -> AnchorSpec:
        """The anchor kind and the tokenizer's tag ids, built once (dataset preparation runs per dataset)."""
        spec = getattr(self, "_presafety_spec", None)
        if spec is None:
            tokenizer = getattr(processing_class, "tokenizer", processing_class)
            spec = AnchorSpec.from_tokenizer(tokenizer, args.presafety_anchor, args.presafety_think_token)
            self._presafety_spec = spec
        return spec

    def _presafety_count_merges(self, count: int, name: str) -> None:
        """Counts (and reports) examples whose prompt and completion tokens merged at their boundary."""
        if name == "train":
            self._presafety_merges = getattr(self, "_presafety_merges", 0) + count
        if count:
            logger.warning(
                f"{count} examples of the {name} dataset merge tokens across the prompt/completion boundary (e.g. a "
                "generation prompt ending in '\\n' followed by a completion starting with '\\n'). The anchor is read "
                "only where training sees the same token as inference (`SafetyGate`); see the missing-anchor report."
            )

    def _presafety_describe_head(self):
        """The head's saved config: its shape, the model it belongs to, and where (which token) it reads."""
        from ..anchors import MISSING_POSITION, inference_anchor

        config = head_config_from_args(self.args, self.model)
        config.boundary_merges = getattr(self, "_presafety_merges", None)
        config.close_token_id = get_safety_head(self.model).config.close_token_id
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        if tokenizer is not None and getattr(tokenizer, "chat_template", None) is not None:
            spec = self._presafety_anchor_spec(tokenizer, self.args)
            family = detect_template_family(tokenizer, self.args.presafety_think_token)
            ids, position = inference_anchor(tokenizer, [{"role": "user", "content": "Hello"}], spec, family)
            config.template_family = family
            config.anchor_token_id = ids[position] if position != MISSING_POSITION else None
        return config

    def _presafety_check_rows(self, dataset: Any, name: str, preference: bool) -> Any:
        """Checks every row's shape before TRL tokenizes (a string where messages are expected, a message without a
        role or with `content: None`, a string prompt with message completions), naming the row and the accepted
        shapes; ShareGPT rows (`from`/`value`, `conversations`) are converted as TRL converts them."""
        from datasets import Dataset

        from ..conversations import check_training_row, convert_sharegpt_example, is_sharegpt_example

        if not isinstance(dataset, Dataset):  # a streamed dataset: converted lazily, checked by TRL as it goes
            first = next(iter(dataset), None) if dataset is not None else None
            if first is not None and is_sharegpt_example(first):
                dataset = dataset.map(convert_sharegpt_example)
            return dataset
        if len(dataset) and is_sharegpt_example(dataset[0]):
            columns = [c for c in ("conversations",) if c in dataset.column_names]
            dataset = dataset.map(convert_sharegpt_example, remove_columns=columns, desc=f"Converting {name} dataset")
        columns = [c for c in ("messages", "prompt", "completion", "chosen", "rejected") if c in dataset.column_names]
        if columns:
            values = {c: dataset[c] for c in columns}
            for index in range(len(dataset)):
                try:
                    check_training_row({c: values[c][index] for c in columns}, index, preference)
                except (TypeError, ValueError) as error:
                    raise type(error)(f"The {name} dataset: {error}") from None
        return dataset

    def _presafety_check_labels(self, dataset: Any, name: str, args: Any) -> None:
        """Fails early on a missing label column or a dataset without a single label (map-style datasets)."""
        column = args.presafety_label_column
        from datasets import Dataset

        if isinstance(dataset, Dataset) and len(dataset) == 0:
            raise ValueError(
                f"The {name} dataset is empty (0 rows). Check `dataset_name`, `dataset_config` and the split, and that "
                "a label folder was written completely (`trl-presafety label` resumes an interrupted run)."
            )
        columns = dataset.column_names if hasattr(dataset, "column_names") else None
        if columns is not None and column not in columns:
            raise ValueError(
                f"The {name} dataset has no safety label column '{column}' (columns: {columns}). Add it with "
                "`trl-presafety label` (it writes 'safety_label'), or set `presafety_label_column` to the column "
                "holding the labels."
            )
        if isinstance(dataset, Dataset):
            values = dataset[column]
            normalized = [normalize_label(v, column, i) for i, v in enumerate(values)]
            # With weight 0 the head only probes, so unlabeled data is fine
            if len(normalized) > 0 and all(v == MISSING_LABEL for v in normalized) and args.presafety_loss_weight > 0:
                raise ValueError(
                    f"Every example of the {name} dataset has a missing safety label in column '{column}' "
                    f"({len(normalized)} examples), so the safety head would never be trained. Label the data with "
                    "`trl-presafety label`, or set `presafety_loss_weight=0` to train without the auxiliary loss."
                )

    def _presafety_check_prepared(self, dataset: Any, name: str, before: int, fix: str) -> None:
        """Fails when preparation (truncation) removed every example, instead of a sampler error later."""
        from datasets import Dataset

        if isinstance(dataset, Dataset) and before > 0 and len(dataset) == 0:
            raise ValueError(
                f"Every example of the {name} dataset ({before} rows) was removed during preparation: {fix}"
            )

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        # Without this, `remove_unused_columns=True` silently drops the safety columns before the collator
        self._signature_columns = list(self._signature_columns) + [
            c for c in self._presafety_columns if c not in self._signature_columns
        ]

    # --- loss ---------------------------------------------------------------------------------------------------
    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        # Labeled anchors in the whole accumulation window (and across processes, like `num_items_in_batch`), so that
        # the head loss of GA micro-batches sums to the mean over the large batch
        count = sum(int(batch["presafety_labels"].numel()) for batch in batch_samples if "presafety_labels" in batch)
        if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
            # The only host-device sync of the PreSafety path, and only when distributed
            count = int(self.accelerator.gather(torch.tensor(count, device=device)).sum().item())
        self._presafety_num_items = count
        return batch_samples, num_items_in_batch

    def _presafety_pop_inputs(self, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        missing = [k for k in ("presafety_index", "presafety_labels") if k not in inputs]
        if missing:
            raise KeyError(
                f"The batch has no {missing}: the PreSafety trainers need their collator "
                f"({type(self).__name__} builds it when `data_collator=None`). If you pass a custom collator, wrap it "
                "with the PreSafety collator of this trainer or make it return these keys."
            )
        index = inputs.pop("presafety_index")
        labels = inputs.pop("presafety_labels")
        span_start = inputs.pop("presafety_span_start", None)
        return index, labels, span_start

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        index, labels, span_start = self._presafety_pop_inputs(inputs)
        has_labels = labels.numel() > 0
        if not has_labels:
            # The head must still run on every process and step (DDP/ZeRO expect its gradients): read row 0,
            # column 0 and multiply the loss by zero below
            index = torch.zeros((1, 2), dtype=torch.long, device=labels.device)
            span_start = None if span_start is None else torch.zeros(1, dtype=torch.long, device=labels.device)
        self._presafety_capture.arm(index, span_start)
        try:
            result = super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        finally:
            logits = self._presafety_capture.disarm()
        if logits is None:
            raise RuntimeError(
                "The safety head did not run during the model's forward: the decoder backbone hook was not called. "
                "Is the model wrapped in a way that bypasses `get_decoder()`?"
            )
        loss, outputs = result if return_outputs else (result, None)

        if has_labels:
            labels = labels.to(logits.device)
            per_example = presafety_bce(logits, labels, self.args.presafety_pos_weight)
            aux_loss = per_example.sum() * self._presafety_scale(num_items_in_batch, labels.numel(), mode)
        else:
            per_example = logits.new_zeros(0, dtype=torch.float32)
            aux_loss = logits.float().sum() * 0.0
        weight = self.presafety_callback.current_weight if mode == "train" else self.args.presafety_loss_weight
        # TRL's own loss, as the plain trainer would log it (so the two runs' curves can be put side by side)
        alignment = loss.detach() * (self._presafety_ga_factor(num_items_in_batch) if mode == "train" else 1.0)
        loss = loss + weight * aux_loss.to(loss.dtype)

        # Metrics: gather the (uneven) per-process predictions by padding them. On one process there is nothing to
        # pad, and skipping the mask filter avoids a host-device sync per micro-batch
        with torch.no_grad():
            probs = torch.sigmoid(logits.detach().float()) if has_labels else per_example
            target = labels.float() if has_labels else per_example
            stacked = torch.stack([probs, target, per_example.detach()], dim=1)
            if self.accelerator.num_processes > 1:
                stacked = self.accelerator.pad_across_processes(stacked, dim=0, pad_index=-1.0)
                stacked = self.accelerator.gather(stacked)
                stacked = stacked[stacked[:, 1] >= 0]
        self.presafety_callback.record(self._metrics, mode, stacked[:, 2], stacked[:, 0], stacked[:, 1])
        if self.accelerator.num_processes > 1:
            alignment = self.accelerator.gather(alignment.float().reshape(1)).mean()
        self.presafety_callback.record_alignment_loss(mode, alignment)
        return (loss, outputs) if return_outputs else loss

    def _presafety_clips_apart(self) -> bool:
        """Whether the head's gradient can be clipped apart from the model's: not under DeepSpeed or FSDP, whose
        engines clip all parameters by one norm."""
        from accelerate.utils import DistributedType

        return self.accelerator.distributed_type not in (DistributedType.DEEPSPEED, DistributedType.FSDP)

    def _clip_grad_norm(self, model):
        # A detached head must leave the model's update exactly plain TRL's: clipping by a norm that counts the head's
        # gradient would scale the model's gradients differently. The model is clipped (and its norm logged) as plain
        # TRL does, the head by its own norm.
        if (
            not self.args.presafety_detach_head
            or not self._presafety_clips_apart()
            or self._has_mixed_mesh_grads(model)
        ):
            return super()._clip_grad_norm(model)
        head = get_safety_head(model)
        head_params = list(head.parameters())
        ids = {id(p) for p in head_params}
        norm = self.accelerator.clip_grad_norm_(
            [p for p in model.parameters() if id(p) not in ids], self.args.max_grad_norm
        )
        torch.nn.utils.clip_grad_norm_(head_params, self.args.max_grad_norm)
        return norm

    def _presafety_loss_is_scaled(self, num_items_in_batch: Any) -> bool:
        """Same rule as `Trainer.training_step`: whether the loss is already normalized for gradient accumulation."""
        if self.loss_is_scaled_for_ga is not None:
            return self.loss_is_scaled_for_ga
        return (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or (
            self.compute_loss_func is not None
        )

    def _presafety_ga_factor(self, num_items_in_batch: Any) -> float:
        """Turns a micro-batch's loss into the value whose mean over the logging window is the logged `loss`."""
        scaled = self._presafety_loss_is_scaled(num_items_in_batch)
        return float(self.current_gradient_accumulation_steps) if scaled else 1.0

    def _presafety_scale(self, num_items_in_batch: Any, local_count: int, mode: str) -> float:
        """Factor turning the summed BCE of this micro-batch into its share of the large-batch mean."""
        if mode != "train" or self._presafety_num_items is None:
            return 1.0 / max(local_count, 1)
        scale = 1.0 / max(self._presafety_num_items, 1)
        if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
            scale *= self.accelerator.num_processes  # DDP averages gradients across processes
        # A loss not normalized for GA is divided by the number of steps later, in `Trainer.training_step`
        if not self._presafety_loss_is_scaled(num_items_in_batch):
            scale *= self.current_gradient_accumulation_steps
        return scale

    # --- logging and saving -------------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        self.presafety_callback.finalize(self._metrics, mode)
        super().log(logs, start_time)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        # Every save goes through here (final output, `checkpoint-N`, DeepSpeed/FSDP consolidated state dicts). The
        # model is saved as a plain TRL run saves it, the head in its own file beside it (`safety_head.safetensors`
        # and `safety_head_config.json`), so `from_pretrained`, PEFT and vLLM load the folder unchanged.
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        head_state = None
        if state_dict is not None:
            state_dict, head_state = split_safety_head_state(state_dict)
        with safety_head_detached(self.model) as head:
            super()._save(output_dir, state_dict=state_dict)
        if not self.args.should_save:
            return
        if head_state is None:
            head_state = head.state_dict()
        if self._presafety_head_config.head_type == TIED_HEAD:
            head_state = {}  # no weights of its own: the config says "tied", the model's LM head is the head
        elif not head_state or any(t.numel() == 0 for t in head_state.values()):
            # ZeRO-3 without `stage3_gather_16bit_weights_on_model_save`: only the DeepSpeed checkpoint has the head
            logger.warning(
                f"The safety head was not gathered for saving, so {output_dir} has no {SAFETY_HEAD_WEIGHTS_NAME}. Set "
                "`stage3_gather_16bit_weights_on_model_save: true` in the DeepSpeed config to save it."
            )
            return
        # Bound to the weights saved beside it: the state dict being written (ZeRO-3, FSDP) or the model in memory
        backbone = state_dict if state_dict else self.model
        save_safety_head(output_dir, head_state, self._presafety_head_config, backbone=backbone)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        # Checkpoints (`_save_checkpoint`, whose card TRL writes) and `push_to_hub` (which writes it after saving) are
        # internal calls; every other save gets its card beside the weights and the head
        if not _internal_call:
            self.create_model_card(output_dir=output_dir)

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | list[str] | None = None,
        tags: str | list[str] | None = None,
        output_dir: str | None = None,
    ) -> None:
        """Writes the model card (`README.md`): TRL's card, completed with the PreSafety parts.

        TRL's card (metadata, tags, tracker links, framework versions, citations) is kept; the opening sentence names
        the base model and the data even when they are local folders (TRL writes `[None]`), the quick start shows the
        saved layout and how to load the head (`load_safety_head`, `SafetyGate`), and a `## PreSafety` section lists
        the `presafety_*` settings, the head's config and the final `presafety/*` metrics.

        Args:
            model_name (`str`, *optional*): Name of the model; defaults to the Hub repository's or the folder's name.
            dataset_name (`str` or `list[str]`, *optional*): Hub id(s) or local path(s) of the training data. Only Hub
                ids go into the card's metadata.
            tags (`str` or `list[str]`, *optional*): Tags added to the trainer's.
            output_dir (`str`, *optional*): Folder the card is written to; defaults to `args.output_dir`.
        """
        from huggingface_hub import ModelCard
        from trl.trainer.utils import get_config_model_id

        from .model_card import complete_model_card, final_presafety_metrics, is_local, presafety_section, quick_start

        folder = output_dir if output_dir is not None else self.args.output_dir
        if model_name is None:
            model_name = (self.args.hub_model_id or os.path.abspath(folder)).rstrip("/").split("/")[-1]
        names = [dataset_name] if isinstance(dataset_name, str) else list(dataset_name or [])
        hub_datasets = [name for name in names if not is_local(name)]
        # TRL writes the card into `args.output_dir`: point it at `folder` for the call
        saved_output_dir = self.args.output_dir
        self.args.output_dir = folder
        try:
            super().create_model_card(model_name=model_name, tags=tags)  # the data are named below
        finally:
            self.args.output_dir = saved_output_dir
        if not self.is_world_process_zero():
            return
        path = os.path.join(folder, "README.md")
        card = ModelCard.load(path)
        card.data.datasets = hub_datasets or None
        base_model = get_config_model_id(self.model.config) or None
        settings = {
            f.name: getattr(self.args, f.name)
            for f in dataclasses.fields(self.args)
            if f.name.startswith("presafety_")
        }
        head_config = dataclasses.asdict(self._presafety_head_config)
        card.text = complete_model_card(
            card.text,
            base_model=base_model,
            dataset_name=names,
            quick_start_text=quick_start(folder, self.hub_model_id, base_model, is_peft_model(self.model)),
            section=presafety_section(
                self._name, settings, head_config, final_presafety_metrics(self.state.log_history)
            ),
        )
        card.save(path)

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        # Before uploading `output_dir`, the Trainer copies a fixed list of weight files into it from the checkpoint;
        # the head's files are not on that list, so the push would carry a stale head or none. Copy them when the
        # push goes ahead (the Trainer's own conditions).
        push = (
            self.is_world_process_zero()
            and self.args.hub_strategy != HubStrategy.END
            and (self.args.hub_always_push or self.push_in_progress is None or self.push_in_progress.is_done())
        )
        if push:
            for name in (SAFETY_HEAD_WEIGHTS_NAME, SAFETY_HEAD_CONFIG_NAME):
                if os.path.isfile(os.path.join(checkpoint_folder, name)):
                    shutil.copy(os.path.join(checkpoint_folder, name), os.path.join(self.args.output_dir, name))
        super()._push_from_checkpoint(checkpoint_folder)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        # The checkpoint's weights are those of the plain model: load them without the head, then the head's own file
        with safety_head_detached(model if model is not None else self.model):
            super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._presafety_load_head(resume_from_checkpoint, model)

    def _load_best_model(self) -> None:
        with safety_head_detached(self.model):
            super()._load_best_model()
        self._presafety_load_head(self.state.best_model_checkpoint)

    def _presafety_load_head(self, folder: str, model: nn.Module | None = None) -> None:
        head = get_safety_head(model if model is not None else self.model)
        saved = SafetyHeadConfig.load(folder)
        if (saved.head_type, saved.hidden_size, saved.mlp_hidden_size) != (
            head.config.head_type,
            head.config.hidden_size,
            head.config.mlp_hidden_size,
        ):
            raise ValueError(
                f"The safety head in {folder} ({saved.head_type}, hidden {saved.hidden_size}) does not match this "
                f"run's head ({head.config.head_type}, hidden {head.config.hidden_size}). Resume with the "
                "`presafety_head*` settings of the run that wrote the checkpoint."
            )
        if saved.head_type == TIED_HEAD:
            return  # nothing to load: the tied head is the model's own LM head, restored with the weights
        tensors = read_safety_head_state(folder)
        check_head_tensors(tensors, head, folder)
        head.load_state_dict(tensors)  # copies into the parameters, in their dtype
        check_usable_head(head, folder)


def load_model_like_trl(model_id: str, args: Any, quantization_config: Any = None) -> PreTrainedModel:
    """Loads `model_id` exactly as TRL's SFT/DPO trainers do when given a model name.

    The PreSafety trainers load the model themselves so that the safety head can be attached before TRL wraps the
    model (PEFT, DeepSpeed); the head is trained beside the adapter and saved in its own file.
    """
    # PEFT initializes adapters randomly: TRL seeds before creating the model, so do we
    set_seed(args.seed)
    model_init_kwargs = dict(args.model_init_kwargs or {})
    if quantization_config is not None:
        if "quantization_config" in model_init_kwargs:
            raise ValueError(
                "You set `quantization_config` both as a trainer argument and in `args.model_init_kwargs`. "
                "Please set it in only one place, preferably as a trainer argument."
            )
        model_init_kwargs["quantization_config"] = quantization_config
    # Distributed training requires device_map=None ("auto" fails)
    if args.distributed_state.distributed_type in ["MULTI_GPU", "DEEPSPEED"]:
        model_init_kwargs["device_map"] = None
    model_init_kwargs.setdefault("trust_remote_code", args.trust_remote_code)
    return create_model_from_path(model_id, **model_init_kwargs)
