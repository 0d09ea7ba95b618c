# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""
PreSafety SFT: TRL's `trl/scripts/sft.py` with [`PreSafetySFTTrainer`], i.e. SFT plus the pre-CoT safety head
(https://huggingface.co/papers/2603.17368). Same arguments as `trl sft` (`ScriptArguments`, `ModelConfig` with the
LoRA/QLoRA flags, the dataset mixture), plus the `presafety_*` fields of [`PreSafetySFTConfig`] and
`allow_incomplete_labels`; a YAML recipe (`--config`) and command-line overrides mix as in TRL.

# Full fine-tuning with DeepSpeed ZeRO-3 (8 GPUs)
```bash
accelerate launch --config_file accelerate_configs/deepspeed_zero3.yaml \
    -m trl_presafety.scripts.sft --config recipes/Qwen3-8B/sft/config_presafety.yaml
```

# The same through the console script (packaged accelerate config)
```bash
trl-presafety sft --accelerate_config zero3 --config recipes/Qwen3-8B/sft/config_presafety.yaml
```

# LoRA, overriding the recipe from the command line
```bash
accelerate launch --config_file accelerate_configs/multi_gpu.yaml \
    -m trl_presafety.scripts.sft --config recipes/Qwen3-8B/sft/config_presafety.yaml \
    --use_peft --lora_r 32 --lora_alpha 64 --learning_rate 1e-5 --presafety_loss_weight 0.5
```

# Tiny recipe on CPU (about a minute, what `make demo` runs)
```bash
python -m trl_presafety.tiny --output_dir runs/tiny-qwen3 --style qwen3
# two gloo processes on CPU (torchrun; `--cpu --num_processes 2` would start only one)
accelerate launch --multi_gpu --num_processes 2 --mixed_precision no \
    -m trl_presafety.scripts.sft --config recipes/tiny/sft/config_presafety.yaml
```
"""

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


def make_parser():
    """TRL's SFT parser with [`PreSafetySFTConfig`] in place of `SFTConfig`."""
    from trl import DatasetMixtureConfig, ModelConfig

    from ..trainer import PreSafetySFTConfig

    dataclass_types = (PreSafetyScriptArguments, PreSafetySFTConfig, ModelConfig, DatasetMixtureConfig)
    return make_script_parser("sft", dataclass_types)


def train(script_args, training_args, model_args, dataset_args):
    """Builds the trainer from parsed arguments, trains, and saves the model with its head and `trainer_state.json`.

    Returns the trainer, still holding the process group (`main` ends it), so callers can inspect it.
    """
    from trl import get_peft_config, get_quantization_config

    from ..trainer import PreSafetySFTTrainer

    model_name = check_model_name(model_args)
    check_training_inputs(script_args, dataset_args, model_args, training_args)
    check_precision(training_args)
    check_trackers(training_args)
    apply_model_init_kwargs(model_args, training_args)
    dataset = load_training_datasets(script_args, dataset_args)
    train_dataset = dataset[script_args.dataset_train_split]
    where = script_args.dataset_name or "the `datasets` mixture"
    check_training_columns(train_dataset, "sft", f"{where} (split {script_args.dataset_train_split!r})")

    trainer = PreSafetySFTTrainer(
        model=model_name,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=dataset[script_args.dataset_test_split] if training_args.eval_strategy != "no" else None,
        quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
    )
    data_names = training_data_names(script_args, dataset_args)
    train_and_save(trainer, training_args, train_dataset, data_names)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=data_names)
        trainer.accelerator.print(f"🤗 Model pushed to the Hub in https://huggingface.co/{trainer.hub_model_id}.")
    return trainer


def main(argv: list[str] | None = None):
    """Entry point of `python -m trl_presafety.scripts.sft` and `trl-presafety sft`; returns the trainer."""
    script_args, training_args, model_args, dataset_args = parse_args_strict(make_parser(), argv)
    trainer = train(script_args, training_args, model_args, dataset_args)
    # Finish the trackers and destroy the process group
    trainer.end()
    return trainer


if __name__ == "__main__":
    main()
