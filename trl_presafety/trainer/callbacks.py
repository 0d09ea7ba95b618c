# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
import math
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments


class PreSafetyCallback(TrainerCallback):
    """Schedules the weight of the pre-CoT loss and turns the head's predictions into `presafety/*` metrics.

    The PreSafety trainers add one automatically (pass your own instance in `callbacks=` to replace it). Metrics go
    through TRL's `self._metrics[mode]`, so they are averaged over the logging window like TRL's own and get the
    `eval_` prefix in evaluation:

    - `presafety/loss`: mean BCE of the head over labeled examples;
    - `presafety/accuracy`: share of examples where `P(refuse) > threshold` matches the (binarized) label;
    - `presafety/auroc`: AUROC of `P(refuse)` over the whole logging window (or evaluation set), when both classes
      are present;
    - `presafety/weight`: the scheduled weight (train);
    - `presafety/alignment_loss`: the SFT/DPO loss alone, without the auxiliary term, on the scale of the logged
      `loss` (which is `alignment_loss + weight * head loss`), to compare with a plain TRL run.

    Schedules (`presafety_weight_schedule`): `"constant"`; `"linear_warmup"` (0 to the weight over
    `warmup_ratio` of the steps); `"last_epochs"` (the weight only in the last `last_epochs` epochs, as SafeKey
    switches its head loss on in the last 2 of 5 epochs).

    Args:
        weight (`float`, *optional*, defaults to `1.0`): The auxiliary loss weight.
        schedule (`str`, *optional*, defaults to `"constant"`): `"constant"`, `"linear_warmup"` or `"last_epochs"`.
        warmup_ratio (`float`, *optional*, defaults to `0.1`): Warm-up fraction of the steps, for `"linear_warmup"`.
        last_epochs (`int`, *optional*, defaults to `1`): Epochs with the loss on, for `"last_epochs"`.
        threshold (`float`, *optional*, defaults to `0.5`): Decision threshold on `P(refuse)`.
    """

    def __init__(
        self,
        weight: float = 1.0,
        schedule: str = "constant",
        warmup_ratio: float = 0.1,
        last_epochs: int = 1,
        threshold: float = 0.5,
    ):
        self.weight = weight
        self.schedule = schedule
        self.warmup_ratio = warmup_ratio
        self.last_epochs = last_epochs
        self.threshold = threshold
        self.current_weight = weight if schedule == "constant" else 0.0
        self._scores: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {"train": ([], []), "eval": ([], [])}
        # Per-micro-batch (loss, accuracy), kept on the device until logging: no host-device sync per step
        self._pending: dict[str, list[torch.Tensor]] = {"train": [], "eval": []}
        self._alignment: dict[str, list[torch.Tensor]] = {"train": [], "eval": []}

    @classmethod
    def from_args(cls, args: Any) -> "PreSafetyCallback":
        return cls(
            weight=args.presafety_loss_weight,
            schedule=args.presafety_weight_schedule,
            warmup_ratio=args.presafety_warmup_ratio,
            last_epochs=args.presafety_last_epochs,
            threshold=args.presafety_threshold,
        )

    def weight_at(self, args: TrainingArguments, state: TrainerState) -> float:
        """The scheduled weight for the step about to run (`state.global_step` steps done)."""
        if self.schedule == "constant":
            return self.weight
        if self.schedule == "linear_warmup":
            warmup_steps = max(1, math.ceil(self.warmup_ratio * max(state.max_steps, 1)))
            return self.weight * min(1.0, (state.global_step + 1) / warmup_steps)
        if self.schedule == "last_epochs":
            num_epochs = args.num_train_epochs
            if state.max_steps > 0 and state.num_train_epochs:
                num_epochs = state.num_train_epochs
            first_epoch_on = max(0.0, num_epochs - self.last_epochs)
            # `state.epoch` is the fractional progress; the step about to run belongs to epoch floor(progress)
            return self.weight if math.floor((state.epoch or 0.0) + 1e-9) >= first_epoch_on else 0.0
        raise ValueError(f"Unknown presafety_weight_schedule {self.schedule!r}.")

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self.current_weight = self.weight_at(args, state)

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self.current_weight = self.weight_at(args, state)

    def record(
        self,
        metrics: dict[str, list],
        mode: str,
        losses: torch.Tensor,
        probs: torch.Tensor,
        labels: torch.Tensor,
    ) -> None:
        """Adds one micro-batch (already gathered across processes) to the metrics of `mode`.

        Values stay on the device until `finalize` (one transfer per logging step instead of four per micro-batch).
        """
        if labels.numel() == 0:  # a shape, known on the host: no sync
            return
        predicted = probs > self.threshold
        target = labels > self.threshold
        self._pending[mode].append(torch.stack([losses.float().mean(), (predicted == target).float().mean()]))
        scores, targets = self._scores[mode]
        scores.append(probs.detach().float())
        targets.append(target)

    def record_alignment_loss(self, mode: str, value: torch.Tensor) -> None:
        """Adds one micro-batch's alignment loss (kept on the device until `finalize`)."""
        self._alignment[mode].append(value.detach().float().reshape(()))

    def finalize(self, metrics: dict[str, list], mode: str) -> None:
        """Writes the window's AUROC (and the current weight) into the metrics, right before the trainer logs them."""
        from sklearn.metrics import roc_auc_score

        pending = self._pending[mode]
        if pending:
            for loss, accuracy in torch.stack(pending).cpu().tolist():
                metrics[mode]["presafety/loss"].append(loss)
                metrics[mode]["presafety/accuracy"].append(accuracy)
            pending.clear()
        if self._alignment[mode]:
            metrics[mode]["presafety/alignment_loss"].extend(torch.stack(self._alignment[mode]).cpu().tolist())
            self._alignment[mode].clear()
        scores, targets = self._scores[mode]
        if scores:
            y_score = torch.cat(scores).cpu().numpy()
            y_true = torch.cat(targets).cpu().numpy()
            if 0 < y_true.sum() < len(y_true):
                metrics[mode]["presafety/auroc"] = [float(roc_auc_score(y_true, y_score))]
        if scores and mode == "train":
            metrics[mode]["presafety/weight"] = [self.current_weight]
        scores.clear()
        targets.clear()
