# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""`trl-presafety calibrate-gate`: choose a gate's threshold on labeled prompts and record it in its head folder.

The threshold is the lowest P(refuse) at which at most `target_rate` (default 5%) of the comply-labeled prompts
(`safety_label` 0) are routed (a prompt routes when P(refuse) >= threshold). It is written, with the calibration set's
n per class, the achieved routed shares and the set's fingerprint, into `safety_head_config.json` of the head folder
(a training run's output, or `fit-gate`'s); `SafetyGate` and routed generation then use it by default. Calibrate on a
dev split: never on the prompts a report evaluates (`--evaluation_datasets` refuses them where it can see them).
The model is the one saved with the head (a training run's output) or named in its config (`fit-gate`);
`--model_name_or_path` says where that base model is now if it moved (its weights must be those the head read).

```bash
trl-presafety calibrate-gate --head_path runs/tiny-gate --dataset_name runs/tiny-labels-dev
trl-presafety calibrate-gate --head_path runs/qwen3-8b-presafety-sft --dataset_name runs/qwen3-8b-labels-dev \\
    --dtype bfloat16 --evaluation_datasets strongreject xstest
```
"""

from dataclasses import dataclass, field

from trl import ModelConfig

from .arguments import make_script_parser, parse_args_strict
from .fit_gate import GateDataArguments, evaluation_prompts, model_init_kwargs, print_gate


@dataclass
class CalibrateGateScriptArguments(GateDataArguments):
    r"""
    Arguments of `trl-presafety calibrate-gate` (besides the data above).

    head_path (`str`):
        Folder with `safety_head.safetensors` and `safety_head_config.json`: the output of a PreSafety training run or
        of `trl-presafety fit-gate`. The threshold is written into its config, unless `output_dir` is set.
    output_dir (`str`, *optional*):
        Write the calibrated head (weights, config) here instead of into `head_path`.
    """

    head_path: str | None = field(
        default=None, metadata={"help": "Head folder (a training run's output or fit-gate's); updated in place."}
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Write the calibrated head here instead of into head_path."}
    )

    def __post_init__(self) -> None:
        self._validate_data(
            (
                ("head_path", "the head folder (a training run's output or `trl-presafety fit-gate`'s)"),
                ("dataset_name", "labeled dev prompts (a `trl-presafety label` output folder or a data file)"),
            )
        )


def make_parser():
    return make_script_parser("calibrate-gate", (CalibrateGateScriptArguments, ModelConfig))


def main(argv: list[str] | None = None) -> dict:
    from ..gate import SafetyGate
    from ..gate_calibration import calibrate_safety_head

    script_args, model_args = parse_args_strict(make_parser(), argv)
    kwargs = model_init_kwargs(model_args)
    kwargs.pop("revision", None)  # the head folder names its own base model
    # `model_name_or_path`: where a fitted head's base model is now, if it moved (its weights are checked)
    gate = SafetyGate.from_pretrained(
        script_args.head_path, batch_size=script_args.batch_size, base_model=model_args.model_name_or_path, **kwargs
    )
    output_dir = script_args.output_dir or script_args.head_path
    record = calibrate_safety_head(
        gate,
        script_args.dataset_name,
        target_rate=script_args.target_rate,
        prompt_column=script_args.prompt_column,
        label_column=script_args.label_column,
        split=script_args.dataset_split,
        chat_template_kwargs=script_args.chat_template_kwargs,
        evaluation_prompts=evaluation_prompts(script_args.evaluation_datasets, script_args.allow_incomplete_labels),
        output_dir=output_dir,
        allow_incomplete_labels=script_args.allow_incomplete_labels,
    )
    print_gate(gate, output_dir)
    return record


if __name__ == "__main__":
    main()
