# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""`trl-presafety fit-gate`: a pre-CoT safety gate for a model as it is, without training it.

Reads the hidden state at the pre-CoT anchor of each labeled prompt (a label folder written by `trl-presafety label`),
the same way the trainers and `SafetyGate` read it, and fits a linear head on them (class-balanced, L2-regularized
logistic regression; deterministic). The model's weights are neither changed nor copied: `output_dir` gets
`safety_head.safetensors` and `safety_head_config.json`, as a training run writes them, whose config names the base
model and the fingerprint of its weights, plus the tokenizer. With `calibration_dataset` (a separate labeled set), the
threshold is calibrated in the same run (see `trl-presafety calibrate-gate`).

Example (CPU, the tiny model and the bundled labeled rows; seconds):

```bash
python -m trl_presafety.tiny --output_dir runs/tiny-qwen3 --style qwen3
trl-presafety fit-gate --config recipes/tiny/fit_gate.yaml
```

The original LRM (one GPU; minutes for a few thousand prompts):

```bash
trl-presafety fit-gate --model_name_or_path Qwen/Qwen3-8B --dtype bfloat16 --dataset_name runs/qwen3-8b-labels \\
    --calibration_dataset runs/qwen3-8b-labels-dev --output_dir runs/qwen3-8b-gate
```

Then, in Python: `SafetyGate.from_pretrained("runs/qwen3-8b-gate", dtype=torch.bfloat16)`.
"""

import json
from dataclasses import dataclass, field

from trl import ModelConfig

from ..anchors import ANCHORS, check_anchor
from ..labeling.state import ALLOW_INCOMPLETE_LABELS_HELP
from ..modeling import POOLINGS
from ..validation import check_choice, check_range, fail
from .arguments import make_script_parser, parse_args_strict


@dataclass
class GateDataArguments:
    r"""
    The labeled prompts of `trl-presafety fit-gate` and `calibrate-gate`.

    dataset_name (`str`):
        Labeled prompts: a label folder (`trl-presafety label` output), a `.json`/`.jsonl`/`.parquet`/`.csv` file or a
        hub id, with a prompt column and a label column.
    dataset_split (`str`, *optional*, defaults to `"train"`):
        Split to read; a slice such as `train[:90%]` holds out the rest (for `calibration_split: train[90%:]`).
    prompt_column (`str`, *optional*, defaults to `"prompt"`):
        Column with the requests (strings or chat message lists).
    label_column (`str`, *optional*, defaults to `"safety_label"`):
        Column with the labels: `safety_label` (the safe model's decision, what `label` writes; 1 refuse, 0 comply),
        or `harmful` (the prompt's harmfulness) to gate on that instead.
    target_rate (`float`, *optional*, defaults to `0.05`):
        Largest share of comply-labeled calibration prompts the threshold may route.
    evaluation_datasets (`list[str]`, *optional*):
        The evaluation sets (specs as in `trl-presafety eval --datasets`) a report will measure the gate on: a
        calibration set sharing a prompt with them is refused.
    chat_template_kwargs (`dict` or `str`, *optional*):
        Extra arguments of `apply_chat_template` (a JSON string on the command line); the gate must be used with the
        same.
    batch_size (`int`, *optional*, defaults to `16`):
        Prompts per forward.
    allow_incomplete_labels (`bool`, *optional*, defaults to `False`):
        Read a label folder whose labeling did not finish (only its finished shards).
    """

    dataset_name: str | None = field(
        default=None, metadata={"help": "Labeled prompts: a label folder, a data file or a hub id."}
    )
    dataset_split: str = field(
        default="train", metadata={"help": "Split to read; a slice (train[:90%]) holds out the rest."}
    )
    prompt_column: str = field(default="prompt", metadata={"help": "Column with the requests."})
    label_column: str = field(
        default="safety_label",
        metadata={"help": "Label column: safety_label (the safe model's decision) or harmful (harmfulness)."},
    )
    target_rate: float = field(
        default=0.05,
        metadata={"help": "Largest share of comply-labeled calibration prompts routed by the threshold, in [0, 1)."},
    )
    evaluation_datasets: list[str] | None = field(
        default=None,
        metadata={"help": "Evaluation sets (as `eval --datasets`) a report uses: calibrating on their prompts fails."},
    )
    chat_template_kwargs: dict | str | None = field(
        default=None, metadata={"help": "Extra `apply_chat_template` arguments (JSON on the command line)."}
    )
    batch_size: int = field(default=16, metadata={"help": "Prompts per forward."})
    allow_incomplete_labels: bool = field(default=False, metadata={"help": ALLOW_INCOMPLETE_LABELS_HELP})

    def _validate_data(self, required: tuple[tuple[str, str], ...]) -> None:
        for name, fix in required:
            if not getattr(self, name):
                fail(name, getattr(self, name), f"Pass {fix}.")
        check_range("target_rate", self.target_rate, 0.0, 1.0, True, False, "Use a share in [0, 1), e.g. 0.05.")
        check_range("batch_size", self.batch_size, low=1, fix="Use a positive batch size, e.g. 16.")
        if isinstance(self.chat_template_kwargs, str):
            try:
                self.chat_template_kwargs = json.loads(self.chat_template_kwargs)
            except json.JSONDecodeError as error:
                fail("chat_template_kwargs", self.chat_template_kwargs, f"Pass a JSON object ({error}).")
        if self.chat_template_kwargs is not None and not isinstance(self.chat_template_kwargs, dict):
            fail("chat_template_kwargs", self.chat_template_kwargs, "Pass a mapping, e.g. '{\"add_bos\": false}'.")


@dataclass
class FitGateScriptArguments(GateDataArguments):
    r"""
    Arguments of `trl-presafety fit-gate` (besides the data above).

    output_dir (`str`):
        Folder of the head (`safety_head.safetensors`, `safety_head_config.json`) and the tokenizer.
    calibration_dataset (`str`, *optional*):
        A separate labeled set on which the threshold is calibrated in the same run (same columns); it may be the
        same label folder with another `calibration_split`.
    calibration_split (`str`, *optional*):
        Split of `calibration_dataset` (e.g. `train[90%:]` when `dataset_split` is `train[:90%]`); defaults to
        `dataset_split`.
    anchor (`str`, *optional*, defaults to `"prompt_end"`):
        Position the head reads (`presafety_anchor` of the trainers). `prompt_end` heads on the final hidden state can
        be exported as a sequence classifier (`trl-presafety export-gate`).
    think_token (`str`, *optional*, defaults to `"<think>"`):
        Opening think tag, for `anchor="think_end"`.
    layer (`int`, *optional*):
        Decoder layer read (Python index); `None` is the final hidden state, after the final norm.
    pooling (`str`, *optional*, defaults to `"last"`):
        `"last"` (the anchor token) or `"mean"` (the prompt span up to the anchor).
    l2 (`float`, *optional*, defaults to `1.0`):
        L2 penalty of the logistic regression on standardized states (scikit-learn's `1 / C`).
    class_balance (`bool`, *optional*, defaults to `True`):
        Weight each class by `n / (2 n_class)`, so that the rarer class counts as much.
    """

    output_dir: str | None = field(default=None, metadata={"help": "Folder of the fitted head and the tokenizer."})
    calibration_dataset: str | None = field(
        default=None, metadata={"help": "A separate labeled set to calibrate the threshold on, in the same run."}
    )
    calibration_split: str | None = field(
        default=None, metadata={"help": "Split of calibration_dataset (e.g. train[90%:]); default: dataset_split."}
    )
    anchor: str = field(default="prompt_end", metadata={"help": "Position the head reads.", "choices": list(ANCHORS)})
    think_token: str = field(default="<think>", metadata={"help": "Opening think tag (anchor='think_end')."})
    layer: int | None = field(
        default=None, metadata={"help": "Decoder layer read (Python index); None: final hidden state."}
    )
    pooling: str = field(
        default="last", metadata={"help": "'last': the anchor token; 'mean': the prompt span.", "choices": POOLINGS}
    )
    l2: float = field(default=1.0, metadata={"help": "L2 penalty on standardized states (1 / C), > 0."})
    class_balance: bool = field(default=True, metadata={"help": "Weight each class by n / (2 n_class)."})

    def __post_init__(self) -> None:
        self._validate_data(
            (
                ("dataset_name", "the labeled prompts (a `trl-presafety label` output folder or a data file)"),
                ("output_dir", "a folder for the head"),
            )
        )
        check_anchor(self.anchor, "anchor")
        check_choice("pooling", self.pooling, POOLINGS)
        check_range("l2", self.l2, low=0.0, low_inclusive=False, fix="Use a positive penalty, e.g. 1.0.")
        same_split = (self.calibration_split or self.dataset_split) == self.dataset_split
        if self.calibration_dataset is not None and self.calibration_dataset == self.dataset_name and same_split:
            fail(
                "calibration_dataset",
                self.calibration_dataset,
                "It is the fitting set, on which the head's probabilities are optimistic: pass a separate labeled set.",
            )


def evaluation_prompts(specs: list[str] | None, allow_incomplete_labels: bool = False) -> list | None:
    """The prompts of evaluation sets given as `eval --datasets` specs, or `None`."""
    if not specs:
        return None
    from ..evaluation.data import load_eval_datasets

    return [
        example["prompt"] for example in load_eval_datasets(specs, allow_incomplete_labels=allow_incomplete_labels)
    ]


def model_init_kwargs(model_args: ModelConfig) -> dict:
    kwargs = {"revision": model_args.model_revision, "dtype": model_args.dtype}
    if model_args.attn_implementation is not None:
        kwargs["attn_implementation"] = model_args.attn_implementation
    return {k: v for k, v in kwargs.items() if v is not None}


def print_gate(gate, output_dir: str) -> None:
    fit, calibration = gate.config.fit or {}, gate.config.calibration
    if fit:
        print(
            f"Fitted on {fit['n_refuse']} refuse- and {fit['n_comply']} comply-labeled prompts of {fit['source']}: "
            f"training AUROC {fit['train_auroc']:.3f}, accuracy {fit['train_accuracy']:.3f} (states "
            f"{fit['seconds_states']} s, fit {fit['seconds_fit']} s)."
        )
    if calibration:
        print(
            f"Threshold {calibration['threshold']:.6g} (P(refuse) >= threshold routes), calibrated on "
            f"{calibration['source']}: routes {calibration['comply_routed_rate']:.3f} of {calibration['n_comply']} "
            f"comply-labeled (target <= {calibration['target_comply_routed_rate']}) and "
            f"{calibration['refuse_routed_rate']:.3f} of {calibration['n_refuse']} refuse-labeled prompts."
        )
    else:
        print("No calibrated threshold (the gate uses 0.5): calibrate one with `trl-presafety calibrate-gate`.")
    print(f"Gate in {output_dir}: load it with `SafetyGate.from_pretrained({output_dir!r})`.")


def make_parser():
    return make_script_parser("fit-gate", (FitGateScriptArguments, ModelConfig))


def main(argv: list[str] | None = None):
    from ..gate_fitting import fit_safety_head

    script_args, model_args = parse_args_strict(make_parser(), argv)
    if not model_args.model_name_or_path:
        fail("model_name_or_path", model_args.model_name_or_path, "Pass the frozen model, e.g. Qwen/Qwen3-8B.")
    gate = fit_safety_head(
        model_args.model_name_or_path,
        script_args.dataset_name,
        script_args.output_dir,
        calibration_dataset=script_args.calibration_dataset,
        calibration_split=script_args.calibration_split,
        target_rate=script_args.target_rate,
        anchor=script_args.anchor,
        think_token=script_args.think_token,
        layer=script_args.layer,
        pooling=script_args.pooling,
        prompt_column=script_args.prompt_column,
        label_column=script_args.label_column,
        split=script_args.dataset_split,
        l2=script_args.l2,
        class_balance=script_args.class_balance,
        batch_size=script_args.batch_size,
        chat_template_kwargs=script_args.chat_template_kwargs,
        evaluation_prompts=evaluation_prompts(script_args.evaluation_datasets, script_args.allow_incomplete_labels),
        allow_incomplete_labels=script_args.allow_incomplete_labels,
        model_init_kwargs=model_init_kwargs(model_args),
    )
    print_gate(gate, script_args.output_dir)
    return gate


if __name__ == "__main__":
    main()
