# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""
PreSafety DPO: TRL's `trl/scripts/dpo.py` with [`PreSafetyDPOTrainer`], i.e. DPO plus the pre-CoT safety head
(https://huggingface.co/papers/2603.17368). Same arguments as `trl dpo` (`ScriptArguments`, `ModelConfig` with the
LoRA/QLoRA flags, the dataset mixture), plus the `presafety_*` fields of [`PreSafetyDPOConfig`]; a YAML recipe
(`--config`) and command-line overrides mix as in TRL. The data needs `prompt`/`chosen`/`rejected` and a safety label
column per pair.

# Full fine-tuning with DeepSpeed ZeRO-3 (8 GPUs)
```bash
accelerate launch --config_file accelerate_configs/deepspeed_zero3.yaml \
    -m trl_presafety.scripts.dpo --config recipes/DeepSeek-R1-Distill-Qwen-7B/dpo/config_presafety.yaml
```

# LoRA (the reference model is the base with the adapter disabled), through the console script
```bash
trl-presafety dpo --accelerate_config multi_gpu --config recipes/Qwen3-8B/dpo/config_presafety.yaml \
    --use_peft --lora_r 32 --lora_alpha 64 --learning_rate 5e-6
```

# Tiny recipe on CPU
```bash
python -m trl_presafety.tiny --output_dir runs/tiny-qwen3 --style qwen3
# two gloo processes on CPU (torchrun; `--cpu --num_processes 2` would start only one)
accelerate launch --multi_gpu --num_processes 2 --mixed_precision no \
    -m trl_presafety.scripts.dpo --config recipes/tiny/dpo/config_presafety.yaml
```
"""

from dataclasses import dataclass, field
from pathlib import Path

from .arguments import PreSafetyScriptArguments, make_script_parser, parse_args_strict
from .training import (
    apply_model_init_kwargs,
    check_model_name,
    check_precision,
    check_trackers,
    check_training_columns,
    check_training_inputs,
    load_training_datasets,
    train_and_save,
    training_data_names,
)


@dataclass
class DPOScriptArguments(PreSafetyScriptArguments):
    """TRL's `ScriptArguments` (with `allow_incomplete_labels`) plus `chat_template_path`, which `SFTConfig` has and
    `DPOConfig` lacks.

    DeepSeek-R1 distills ship a chat template that deletes everything up to `</think>` from assistant turns: DPO
    would then compare the answers only, and the prompt (ending in `<think>\\n`) would not be a prefix of
    prompt + completion. A training template that keeps the reasoning (TRL's `deepseek_r1_distill_training.jinja`)
    fixes both.
    """

    chat_template_path: str | None = field(
        default=None,
        metadata={
            "help": "Jinja file set as the tokenizer's chat template before the data is tokenized (and saved with "
            "the model), as `SFTConfig.chat_template_path` does for SFT."
        },
    )


def make_parser():
    """TRL's DPO parser with [`PreSafetyDPOConfig`] in place of `DPOConfig`."""
    from trl import DatasetMixtureConfig, ModelConfig

    from ..trainer import PreSafetyDPOConfig

    return make_script_parser("dpo", (DPOScriptArguments, PreSafetyDPOConfig, ModelConfig, DatasetMixtureConfig))


def train(script_args, training_args, model_args, dataset_args):
    """Builds the trainer from parsed arguments, trains, and saves the model with its head and `trainer_state.json`.

    Returns the trainer, still holding the process group (`main` ends it), so callers can inspect it.
    """
    from trl import get_peft_config, get_quantization_config

    from ..trainer import PreSafetyDPOTrainer

    model_name = check_model_name(model_args)
    check_training_inputs(script_args, dataset_args, model_args, training_args)
    check_precision(training_args)
    check_trackers(training_args)
    apply_model_init_kwargs(model_args, training_args)
    dataset = load_training_datasets(script_args, dataset_args)
    train_dataset = dataset[script_args.dataset_train_split]
    where = script_args.dataset_name or "the `datasets` mixture"
    check_training_columns(train_dataset, "dpo", f"{where} (split {script_args.dataset_train_split!r})")

    processing_class = None  # DPOTrainer loads the tokenizer of the model
    if script_args.chat_template_path is not None:
        from transformers import AutoTokenizer

        template = Path(script_args.chat_template_path)
        if not template.is_file():
            raise FileNotFoundError(f"`chat_template_path={template}` is not a file (a Jinja chat template).")
        processing_class = AutoTokenizer.from_pretrained(
            model_name, revision=model_args.model_revision, trust_remote_code=training_args.trust_remote_code
        )
        processing_class.chat_template = template.read_text(encoding="utf-8")

    # Without PEFT, DPOTrainer builds the reference model from `model_name_or_path` and `model_init_kwargs`
    trainer = PreSafetyDPOTrainer(
        model=model_name,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=dataset[script_args.dataset_test_split] if training_args.eval_strategy != "no" else None,
        processing_class=processing_class,
        quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
    )
    if script_args.ignore_bias_buffers:
        import torch

        # torch distributed hack (as in TRL's script): DDP must not broadcast the boolean mask buffers
        trainer.model._ddp_params_and_buffers_to_ignore = [
            name for name, buffer in trainer.model.named_buffers() if buffer.dtype == torch.bool
        ]
    data_names = training_data_names(script_args, dataset_args)
    train_and_save(trainer, training_args, train_dataset, data_names)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=data_names)
        trainer.accelerator.print(f"🤗 Model pushed to the Hub in https://huggingface.co/{trainer.hub_model_id}.")
    return trainer


def main(argv: list[str] | None = None):
    """Entry point of `python -m trl_presafety.scripts.dpo` and `trl-presafety dpo`; returns the trainer."""
    script_args, training_args, model_args, dataset_args = parse_args_strict(make_parser(), argv)
    trainer = train(script_args, training_args, model_args, dataset_args)
    # Finish the trackers and destroy the process group
    trainer.end()
    return trainer


if __name__ == "__main__":
    main()
