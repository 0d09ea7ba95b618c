# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""What both PreSafety trainers share: the head, the hook that reads the anchor during TRL's own forward, the loss
normalization that makes gradient accumulation exact, and the metrics."""

import copy
import dataclasses
from typing import Any

import torch
from accelerate.logging import get_logger
from torch import nn
from transformers import TrainingArguments

from ..anchors import MISSING_LABEL, describe_indices, normalize_label
from ..callbacks import PreSafetyCallback
from ..modeling import (
    SAFETY_HEAD_ATTR,
    attach_safety_head,
    gather_anchor_states,
    get_base_causal_lm,
    get_safety_head,
    head_config_from_args,
    presafety_bce,
)
from .utils import load_model_like_trl


logger = get_logger(__name__)

PRESAFETY_BATCH_KEYS = ("presafety_index", "presafety_labels", "presafety_span_start")


class _TieToOutput(torch.autograd.Function):
    """Returns `hidden` unchanged (a view, no copy) while making `logits` part of its graph.

    DDP with `find_unused_parameters=True` walks the graph back from the model's outputs to find the parameters in use.
    The head's logits leave the forward through the hook, not the outputs, so without this tie DDP would mark the head
    unused and then fail when its gradient arrives ("marked as ready twice"). The tie sends a zero gradient.
    """

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        ctx.logits_shape, ctx.logits_dtype = logits.shape, logits.dtype
        return hidden.view_as(hidden)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, grad.new_zeros(ctx.logits_shape, dtype=ctx.logits_dtype)


class AnchorCapture:
    """Reads the head's input inside the policy forward that TRL already runs (no extra forward pass).

    TRL 1.16's fused LM head returns no hidden states, so a forward hook on the decoder backbone takes them. The hook
    is armed by `compute_loss` just before TRL's forward and disarms itself on first use, so a second forward through
    the same backbone (the reference forward of DPO with PEFT, where the adapter is disabled) cannot overwrite it.
    The head runs inside the hook, i.e. inside the model's (or DeepSpeed engine's) forward, where ZeRO-3 gathers its
    parameters. For an intermediate `layer`, a hook on that layer only keeps a reference to its output; the head still
    runs in the backbone hook, outside any gradient-checkpointed region.
    """

    def __init__(self, model: nn.Module, layer: int | None, pooling: str):
        self.base = get_base_causal_lm(model)
        self.layer = layer
        self.pooling = pooling
        backbone = self.base.get_decoder()
        self.handles = [backbone.register_forward_hook(self._backbone_hook)]
        if layer is not None:
            layers = getattr(backbone, "layers", None)
            if not isinstance(layers, nn.ModuleList):
                raise ValueError(
                    f"`presafety_layer={layer}` needs a backbone with a `layers` ModuleList, but "
                    f"{type(backbone).__name__} has none. Leave `presafety_layer` unset to read the final hidden state."
                )
            if not -len(layers) <= layer < len(layers):
                raise ValueError(
                    f"`presafety_layer={layer}` is out of range for a model with {len(layers)} decoder layers. Use an "
                    f"index in [{-len(layers)}, {len(layers) - 1}], or None for the final hidden state."
                )
            self.handles.append(layers[layer].register_forward_hook(self._layer_hook))
        self._armed = False
        self._index: torch.Tensor | None = None
        self._span_start: torch.Tensor | None = None
        self._layer_output: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None
        self.forward_calls = 0  # backbone forwards seen, armed or not (for tests and benchmarks)

    def arm(self, index: torch.Tensor, span_start: torch.Tensor | None) -> None:
        self._armed, self._index, self._span_start, self.logits = True, index, span_start, None
        self._layer_output = None

    def disarm(self) -> torch.Tensor | None:
        logits, self.logits = self.logits, None
        self._armed, self._index, self._span_start, self._layer_output = False, None, None, None
        return logits

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def _layer_hook(self, module, args, output):
        if self._armed and self._layer_output is None:
            self._layer_output = output[0] if isinstance(output, tuple) else output

    def _backbone_hook(self, module, args, output):
        self.forward_calls += 1
        if not self._armed:
            return
        self._armed = False
        if self.layer is None:
            hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        else:
            hidden = self._layer_output
            self._layer_output = None
        head = getattr(self.base, SAFETY_HEAD_ATTR)
        index = self._index.to(hidden.device)
        span_start = None if self._span_start is None else self._span_start.to(hidden.device)
        self.logits = head(gather_anchor_states(hidden, index, self.pooling, span_start))
        if self.logits.requires_grad and hasattr(output, "last_hidden_state"):
            output.last_hidden_state = _TieToOutput.apply(output.last_hidden_state, self.logits)
            return output


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

        The head must exist before TRL wraps the model with PEFT (so `modules_to_save` covers it), so a model given by
        name is loaded here, the way TRL loads it.
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
            modules = set(peft_config.modules_to_save or [])
            modules.add(SAFETY_HEAD_ATTR)
            peft_config.modules_to_save = sorted(modules)
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
        self._presafety_capture = AnchorCapture(self.model, args.presafety_layer, args.presafety_pooling)
        callback = next((cb for cb in self.callback_handler.callbacks if isinstance(cb, PreSafetyCallback)), None)
        if callback is None:
            callback = PreSafetyCallback.from_args(args)
            self.add_callback(callback)
        self.presafety_callback = callback
        self._presafety_num_items: int | None = None
        head = get_safety_head(self.model)
        self._presafety_head_config = head_config_from_args(
            args, get_base_causal_lm(self.model).config.get_text_config().hidden_size
        )
        if head is None:
            raise RuntimeError("The safety head is missing after the trainer set-up; this is a bug.")

    def _presafety_check_labels(self, dataset: Any, name: str, args: Any) -> None:
        """Fails early on a missing label column or a dataset without a single label (map-style datasets)."""
        column = args.presafety_label_column
        from datasets import Dataset

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

    def _presafety_report_missing(
        self, missing: list[int], total: int, name: str, reason: str, policy: str | None = None
    ) -> None:
        if not missing:
            return
        message = (
            f"{len(missing)} of {total} labeled examples of the {name} dataset have no usable pre-CoT anchor "
            f"({reason}); indices {describe_indices(missing)}."
        )
        if (policy or self.args.presafety_on_missing_anchor) == "error":
            raise ValueError(
                f"{message} Set `presafety_on_missing_anchor='skip'` to train them without the auxiliary loss, or fix "
                "the data (check the chat template, `presafety_anchor`, `presafety_think_token` and `max_length`)."
            )
        logger.warning(
            f"{message} They are trained without the auxiliary loss (`presafety_on_missing_anchor='skip'`)."
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
        return (loss, outputs) if return_outputs else loss

    def _presafety_scale(self, num_items_in_batch: Any, local_count: int, mode: str) -> float:
        """Factor turning the summed BCE of this micro-batch into its share of the large-batch mean."""
        if mode != "train" or self._presafety_num_items is None:
            return 1.0 / max(local_count, 1)
        scale = 1.0 / max(self._presafety_num_items, 1)
        if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
            scale *= self.accelerator.num_processes  # DDP averages gradients across processes
        # Same rule as `Trainer.training_step`: a loss not normalized for GA is divided by the number of steps later
        if self.loss_is_scaled_for_ga is not None:
            scaled = self.loss_is_scaled_for_ga
        else:
            scaled = (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or (
                self.compute_loss_func is not None
            )
        if not scaled:
            scale *= self.current_gradient_accumulation_steps
        return scale

    # --- logging and saving -------------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        self.presafety_callback.finalize(self._metrics, mode)
        super().log(logs, start_time)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        super().save_model(output_dir, _internal_call)
        # The head's architecture and read-out travel with its weights, for `load_safety_head` and `SafetyGate`
        if self.args.should_save:
            self._presafety_head_config.save(output_dir or self.args.output_dir)
