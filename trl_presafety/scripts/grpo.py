# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""
Safety RL with GRPO: TRL's `trl/scripts/grpo.py` with the safety rewards of `trl_presafety.rewards`, which score the
reasoning trace and the final answer separately ("Beyond SFT: Reinforcement Learning for Safer Large Reasoning Models",
https://huggingface.co/papers/2512.01848), plus math correctness on benign prompts and, optionally, the pre-CoT head's
decision as a shaping term (`presafety_gate_reward` with `presafety_gate_model`).

The data needs a conversational (or text) `prompt`, a `harmful` column (the prompt's harmfulness from its source: 1
harmful, 0 benign; not `safety_label`, the safe model's decision) and a `solution` column (reference answer of math
prompts, null elsewhere). Rewards are combined with `reward_weights`.

# 8 GPUs: 7 train with ZeRO-3, 1 serves vLLM generations (`trl vllm-serve --model ...` on it first)
```bash
accelerate launch --config_file accelerate_configs/deepspeed_zero3.yaml --num_processes 7 \
    -m trl_presafety.scripts.grpo --config recipes/Qwen3-8B/grpo/config_safety_rl.yaml
```

# Tiny recipe on CPU (a few steps)
```bash
python -m trl_presafety.tiny --output_dir runs/tiny-qwen3 --style qwen3
trl-presafety grpo --config recipes/tiny/grpo/config_safety_rl.yaml
```
"""

import importlib
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from ..harmfulness import HARMFUL_COLUMN, check_harmful_column, check_harmful_column_name
from ..judges import ANSWER_JUDGES, GENERATING_JUDGES
from ..rewards import REWARD_FUNCS_REGISTRY, RewardOptions, build_reward_func
from ..validation import check_choice, check_range
from .arguments import PreSafetyScriptArguments


# The rewards that read the prompts' harmfulness (`math_accuracy_reward` reads it only when present)
HARMFUL_REWARDS = ("reasoning_safety_reward", "answer_safety_reward")


def _training_loop_judges() -> tuple[str, ...]:
    """The judges of the judges' registry that `grpo` offers: those that run at every step without generating."""
    return tuple(name for name in ANSWER_JUDGES if name not in GENERATING_JUDGES)


@dataclass
class SafetyGRPOScriptArguments(PreSafetyScriptArguments):
    r"""
    Script arguments of `trl-presafety grpo`: TRL's `ScriptArguments` (data, with `allow_incomplete_labels`) plus the
    reward functions and judges.

    reward_funcs (`list[str]`, *optional*, defaults to the three safety rewards):
        Reward functions, combined with `GRPOConfig.reward_weights` (same order): `reasoning_safety_reward`,
        `answer_safety_reward`, `math_accuracy_reward`, `presafety_gate_reward` (needs `presafety_gate_model`), TRL's
        `accuracy_reward`, `reasoning_accuracy_reward`, `think_format_reward`, `get_soft_overlong_punishment`, or a
        dotted import path (`my_lib.rewards.my_reward`).
    reward_model_name_or_path (`str`, *optional*):
        A reward model, added before the functions (as in TRL's script).
    harmful_column (`str`, *optional*, defaults to `"harmful"`):
        Column of the prompts' harmfulness, from their source (1 harmful, 0 benign, null unknown: skipped). Not
        `safety_label`, the safe model's decision.
    solution_column (`str`, *optional*, defaults to `"solution"`):
        Column of the reference answers of math prompts.
    reasoning_judge (`str`, *optional*, defaults to `"cues"`):
        Judge of compliance steps in the CoT: `"cues"` (regexes) or `"classifier"` (refusal classifier on each
        reasoning prefix).
    answer_judge (`str`, *optional*, defaults to `"cues"`):
        Judge of refusals in the answer: `"cues"` (refusal cues, as the evaluation's `cues` judge) or `"classifier"`.
    classifier_path (`str`, *optional*):
        Refusal classifier (`trl-presafety train-classifier` output) for the `"classifier"` judges.
    judge_threshold (`float`, *optional*, defaults to `0.5`):
        Classifier P(refusal) from which an answer is a refusal; a CoT step is compliant from 1 - P(refusal) >= it.
    reasoning_reward_scope (`str`, *optional*, defaults to `"harmful"`):
        Prompts whose CoT is scored: `"harmful"` or `"all"` labeled ones.
    incomplete_reward (`float`, *optional*, defaults to `-1.0`):
        `answer_safety_reward` of a completion that never closes its reasoning.
    presafety_gate_model (`str`, *optional*):
        A model trained with a PreSafety trainer (its folder holds the safety head): its head's P(refuse) is the
        shaping term of `presafety_gate_reward`.
    think_in_prompt (`bool`, *optional*):
        Whether the generation prompt opens the think block (R1-style). Detected from the chat template when unset.
    """

    reward_funcs: list[str] = field(
        default_factory=lambda: ["reasoning_safety_reward", "answer_safety_reward", "math_accuracy_reward"],
        metadata={
            "help": "Reward functions (weights in reward_weights): "
            f"{', '.join(REWARD_FUNCS_REGISTRY)}, or a dotted import path."
        },
    )
    reward_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Reward model, added before the reward functions."}
    )
    harmful_column: str = field(
        default=HARMFUL_COLUMN,
        metadata={
            "help": "Column of the prompts' harmfulness from their source (1 harmful, 0 benign), not safety_label."
        },
    )
    solution_column: str = field(default="solution", metadata={"help": "Column of math reference answers."})
    reasoning_judge: str = field(
        default="cues",
        metadata={"help": "Judge of compliance steps in the CoT.", "choices": list(_training_loop_judges())},
    )
    answer_judge: str = field(
        default="cues",
        metadata={"help": "Judge of refusals in the answer.", "choices": list(_training_loop_judges())},
    )
    classifier_path: str | None = field(
        default=None, metadata={"help": "Refusal classifier folder for the 'classifier' judges."}
    )
    judge_threshold: float = field(
        default=0.5, metadata={"help": "Classifier P(refusal) threshold of the 'classifier' judges, in (0, 1)."}
    )
    reasoning_reward_scope: str = field(
        default="harmful",
        metadata={"help": "Prompts whose CoT is scored.", "choices": ["harmful", "all"]},
    )
    incomplete_reward: float = field(
        default=-1.0, metadata={"help": "answer_safety_reward of a completion that never closes its reasoning."}
    )
    presafety_gate_model: str | None = field(
        default=None, metadata={"help": "PreSafety-trained model whose head shapes presafety_gate_reward."}
    )
    think_in_prompt: bool | None = field(
        default=None, metadata={"help": "Generation prompt opens the think block (R1 style); detected when unset."}
    )

    def __post_init__(self):
        if isinstance(self.reward_funcs, str):
            self.reward_funcs = [self.reward_funcs]
        for name, value, allowed in (
            ("reasoning_judge", self.reasoning_judge, _training_loop_judges()),
            ("answer_judge", self.answer_judge, _training_loop_judges()),
            ("reasoning_reward_scope", self.reasoning_reward_scope, ("harmful", "all")),
        ):
            check_choice(name, value, allowed)
        check_harmful_column_name(self.harmful_column, "harmful_column")
        check_range("judge_threshold", self.judge_threshold, 0, 1, False, False, "Use a probability in (0, 1).")
        uses_classifier = "classifier" in (self.reasoning_judge, self.answer_judge)
        if uses_classifier and not self.classifier_path:
            raise ValueError(
                "Invalid `classifier_path`: None, but a judge is 'classifier'. Set it to a folder written by "
                "`trl-presafety train-classifier`, or use the 'cues' judges."
            )
        if "presafety_gate_reward" in self.reward_funcs and not self.presafety_gate_model:
            raise ValueError(
                "Invalid `presafety_gate_model`: None, but `reward_funcs` has 'presafety_gate_reward'. Set it to a "
                "model trained with `trl-presafety sft`/`dpo` (its folder holds the safety head), or drop the reward."
            )
        unknown = [f for f in self.reward_funcs if f not in REWARD_FUNCS_REGISTRY and "." not in f]
        if unknown:
            raise ValueError(
                f"Invalid `reward_funcs`: {unknown}. Choose from {list(REWARD_FUNCS_REGISTRY)}, or give a dotted "
                "import path (e.g. 'my_lib.rewards.my_reward')."
            )


def make_parser():
    """TRL's GRPO parser with [`SafetyGRPOScriptArguments`]."""
    from trl import DatasetMixtureConfig, GRPOConfig, ModelConfig

    from .arguments import make_script_parser

    return make_script_parser("grpo", (SafetyGRPOScriptArguments, GRPOConfig, ModelConfig, DatasetMixtureConfig))


def detect_think_in_prompt(tokenizer: Any, chat_template_kwargs: dict[str, Any] | None = None) -> bool:
    """Whether the template's thinking generation prompt ends with the opening think tag (R1 style)."""
    from ..reasoning import THINK_OPEN, build_prompt

    text = build_prompt(tokenizer, "x", thinking=True, chat_template_kwargs=chat_template_kwargs)
    return text.rstrip().endswith(THINK_OPEN)


def build_reward_funcs(script_args: SafetyGRPOScriptArguments, training_args: Any, tokenizer: Any) -> list[Any]:
    """The reward functions named in `script_args.reward_funcs`, sharing judges and the template's think layout."""
    from ..judges import JudgeArguments, build_judges

    think_in_prompt = script_args.think_in_prompt
    if think_in_prompt is None:
        think_in_prompt = detect_think_in_prompt(tokenizer, training_args.chat_template_kwargs)
    # One classifier load for both judges; on a reasoning prefix, the classifier reads the steps in their context
    judge_args = JudgeArguments.from_fields(
        script_args,
        step_judge=script_args.reasoning_judge,
        step_judge_threshold=script_args.judge_threshold,
        step_context="prefix",
    )
    refusal_judge, step_judge = build_judges(judge_args)
    gate = load_gate(script_args.presafety_gate_model) if "presafety_gate_reward" in script_args.reward_funcs else None
    options = RewardOptions(
        step_judge=step_judge,
        refusal_judge=refusal_judge,
        think_in_prompt=think_in_prompt,
        harmful_column=script_args.harmful_column,
        solution_column=script_args.solution_column,
        reasoning_reward_scope=script_args.reasoning_reward_scope,
        incomplete_reward=script_args.incomplete_reward,
        judge_threshold=script_args.judge_threshold,
        gate=gate,
        max_completion_length=training_args.max_completion_length,
    )
    funcs = []
    for name in script_args.reward_funcs:
        if name in REWARD_FUNCS_REGISTRY:
            funcs.append(build_reward_func(name, options))
        else:  # dotted import path, as in TRL's script
            module_path, func_name = name.rsplit(".", 1)
            sys.path.insert(0, os.getcwd())
            funcs.append(getattr(importlib.import_module(module_path), func_name))
    return funcs


def load_gate(path: str) -> Any:
    """A frozen `SafetyGate` on a PreSafety-trained model (the head re-attached from its folder)."""
    from accelerate import PartialState
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..gate import SafetyGate
    from ..head_io import load_safety_head

    model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
    load_safety_head(model, path)
    model.to(PartialState().device).eval().requires_grad_(False)
    return SafetyGate(model, AutoTokenizer.from_pretrained(path))


def train(script_args, training_args, model_args, dataset_args):
    """Builds the GRPO trainer with the safety rewards, trains and saves; returns the trainer."""
    from transformers import AutoTokenizer
    from trl import GRPOTrainer, get_peft_config, get_quantization_config

    from .training import (
        apply_model_init_kwargs,
        check_model_name,
        check_precision,
        check_trackers,
        check_training_inputs,
        load_training_datasets,
    )

    model_name = check_model_name(model_args)
    check_training_inputs(script_args, dataset_args, model_args, training_args)
    check_precision(training_args)
    check_trackers(training_args)
    apply_model_init_kwargs(model_args, training_args)
    dataset = load_training_datasets(script_args, dataset_args)
    train_dataset = dataset[script_args.dataset_train_split]
    # Fail before the model loads, not at the first reward call (a streamed dataset may not list its columns)
    if any(name in HARMFUL_REWARDS for name in script_args.reward_funcs) and train_dataset.column_names is not None:
        check_harmful_column(
            train_dataset.column_names, script_args.harmful_column, "`trl-presafety grpo`", "harmful_column"
        )
    tokenizer = AutoTokenizer.from_pretrained(model_name, trust_remote_code=training_args.trust_remote_code)
    reward_funcs = build_reward_funcs(script_args, training_args, tokenizer)
    if script_args.reward_model_name_or_path:
        reward_funcs.insert(0, script_args.reward_model_name_or_path)
    trainer = GRPOTrainer(
        model=model_name,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=dataset[script_args.dataset_test_split] if training_args.eval_strategy != "no" else None,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
    )
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    metrics = dict(result.metrics)
    metrics["train_samples"] = len(train_dataset) if hasattr(train_dataset, "__len__") else -1
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(f"💾 Model saved to {training_args.output_dir}.")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    return trainer


def main(argv: list[str] | None = None):
    """Entry point of `python -m trl_presafety.scripts.grpo` and `trl-presafety grpo`; returns the trainer."""
    from .arguments import parse_args_strict

    script_args, training_args, model_args, dataset_args = parse_args_strict(make_parser(), argv)
    trainer = train(script_args, training_args, model_args, dataset_args)
    trainer.end()  # finish the trackers and destroy the process group
    return trainer


if __name__ == "__main__":
    main()
