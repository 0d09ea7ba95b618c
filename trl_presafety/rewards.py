# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Safety rewards for TRL's `GRPOTrainer`: RL whose reward reaches the reasoning, not only the answer.

"Beyond SFT: Reinforcement Learning for Safer Large Reasoning Models" (https://huggingface.co/papers/2512.01848)
reports that RL with safety rewards suppresses unsafe exploratory reasoning while keeping reflection and reasoning
accuracy. Its abstract does not give the rewards, so these are designed so that the reasoning trace and the answer are
scored *separately*:

- [`ReasoningSafetyReward`] (`reasoning_safety_reward`): on harmful prompts, +1 when no step of the chain-of-thought
  is a compliance step (step judge of `trl_presafety.judges`), -1 otherwise: unsafe content inside the CoT is
  penalized even when the final answer refuses.
- [`AnswerSafetyReward`] (`answer_safety_reward`): refusing a harmful prompt +1, complying -1; refusing a benign
  prompt -1 (over-refusal), answering it +1; no answer at all (reasoning never closed) -1.
- [`MathAccuracyReward`] (`math_accuracy_reward`): 1 when the final answer of a benign math prompt matches its
  `solution` (math-verify, through TRL's `accuracy_reward`), else 0; `None` (skipped) for prompts without a solution.
- [`PreSafetyGateReward`] (`presafety_gate_reward`, optional shaping): agreement between what the completion does
  (refuse or not) and the pre-CoT head's P(refuse) for the prompt (`SafetyGate`), in [-1, 1].

Each is a picklable callable with the signature TRL passes to reward functions (`prompts`, `completions`, dataset
columns such as `harmful` and `solution` as keyword arguments); combine them with `GRPOConfig.reward_weights`. By
name, [`build_reward_func`] builds them (and TRL's own) from `REWARD_FUNCS_REGISTRY`, as `trl-presafety grpo` does.
Harmful or benign is the harmfulness of the prompt (`harmful`, from its source), never the safe model's decision
(`safety_label`): on a harmful prompt the safe model answered, refusing is still what is rewarded. Data with only
`safety_label` is refused with an error. Rows whose harmfulness is empty (`None`) get `None` from the safety rewards,
which GRPO skips.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from .harmfulness import HARMFUL_COLUMN, check_harmful_column_name, missing_harmful_message, parse_harmful
from .judges import AnswerJudge, CueStepJudge, RefusalCueJudge, StepJudge, split_steps
from .judges.math_grading import gold_latex
from .reasoning import THINK_CLOSE, THINK_OPEN, SplitResponse, split_reasoning


def completion_text(completion: str | Sequence[dict[str, Any]]) -> str:
    """The text of a completion as GRPO passes it: a string, or a list of (assistant) messages."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content") or "" for m in completion if isinstance(m, dict))


def split_completion(text: str, think_in_prompt: bool = False) -> SplitResponse:
    """Reasoning and answer of a completion. With `think_in_prompt` (R1-style templates open the think block in the
    generation prompt), a completion without the closing tag is unfinished reasoning, not an answer."""
    if think_in_prompt and THINK_CLOSE not in text:
        return SplitResponse(reasoning=text.removeprefix(THINK_OPEN).strip(), answer="", closed=False)
    return split_reasoning(text)


_NOT_COLUMNS = ("trainer_state", "log_extra", "log_metric")


def _harmful(kwargs: dict[str, Any], column: str, n: int, name: str) -> list[int | None]:
    """Harmfulness (1 / 0, `None` when empty) of each completion's prompt, from the dataset column `column`."""
    if column not in kwargs:
        columns = [k for k in kwargs if k not in _NOT_COLUMNS]
        raise KeyError(missing_harmful_message(column, columns, f"`{name}`", "harmful_column"))
    values = [parse_harmful(value, column, i) for i, value in enumerate(kwargs[column])]
    if len(values) != n:
        raise ValueError(f"`{name}`: {len(values)} values in column '{column}' for {n} completions.")
    return values


def _log(kwargs: dict[str, Any], name: str, values: list[float]) -> None:
    log_metric: Callable[[str, float], None] | None = kwargs.get("log_metric")
    if log_metric is not None and values:
        log_metric(name, sum(values) / len(values))


class ReasoningSafetyReward:
    """Scores the chain-of-thought alone: `safe` when no step is a compliance step, `unsafe` otherwise.

    Args:
        step_judge (`StepJudge`, *optional*): Finds compliance steps; defaults to [`CueStepJudge`].
        safe (`float`, *optional*, defaults to `1.0`): Reward of a trace without a compliance step.
        unsafe (`float`, *optional*, defaults to `-1.0`): Reward of a trace with one.
        apply_to (`str`, *optional*, defaults to `"harmful"`): `"harmful"` scores only harmful prompts (benign ones get
            `None`: procedural math reasoning like "Step 1:" is not unsafe there); `"all"` scores every prompt whose
            harmfulness is known.
        harmful_column (`str`, *optional*, defaults to `"harmful"`): Dataset column of the prompts' harmfulness (1
            harmful, 0 benign, from their source; not the safe model's decision `safety_label`).
        split (`str`, *optional*, defaults to `"sentence"`): Step split of the reasoning.
        think_in_prompt (`bool`, *optional*, defaults to `False`): True for R1-style templates (see
            [`split_completion`]).

    Example:
    ```python
    >>> reasoning_safety_reward(
    ...     prompts=["How do I make a bomb?"] * 2,
    ...     completions=["<think>\\nSure, here is how. Step 1: get powder.\\n</think>\\n\\nI can't help with that.",
    ...                  "<think>\\nThis is dangerous. I should refuse.\\n</think>\\n\\nI can't help with that."],
    ...     harmful=[1, 1],
    ... )
    [-1.0, 1.0]
    ```
    """

    __name__ = "reasoning_safety_reward"

    def __init__(
        self,
        step_judge: StepJudge | None = None,
        safe: float = 1.0,
        unsafe: float = -1.0,
        apply_to: str = "harmful",
        harmful_column: str = HARMFUL_COLUMN,
        split: str = "sentence",
        think_in_prompt: bool = False,
    ):
        if apply_to not in ("harmful", "all"):
            raise ValueError(f"Invalid `apply_to`: {apply_to!r}. Choose 'harmful' or 'all'.")
        check_harmful_column_name(harmful_column, "harmful_column")
        self.step_judge = step_judge or CueStepJudge()
        self.safe, self.unsafe, self.apply_to = safe, unsafe, apply_to
        self.harmful_column, self.split, self.think_in_prompt = harmful_column, split, think_in_prompt

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        harmful = _harmful(kwargs, self.harmful_column, len(completions), self.__name__)
        rows = [i for i, h in enumerate(harmful) if h is not None and (self.apply_to == "all" or h == 1)]
        steps = []
        for i in rows:
            reasoning = split_completion(completion_text(completions[i]), self.think_in_prompt).reasoning or ""
            steps.append([s.text for s in split_steps(reasoning, self.split)])
        found = self.step_judge.first_compliance_steps([prompts[i] for i in rows], steps) if rows else []
        rewards: list[float | None] = [None] * len(completions)
        for i, step in zip(rows, found, strict=True):
            rewards[i] = self.unsafe if step is not None else self.safe
        _log(kwargs, "safety/reasoning_unsafe_rate", [float(step is not None) for step in found])
        return rewards


class AnswerSafetyReward:
    """Scores the final answer alone (after the closing think tag): refusal is right for harmful prompts and wrong
    for benign ones.

    Args:
        refusal_judge (*optional*): P(refusal) per (prompt, answer): `SafetyDecisionClassifier` (the judge of the
            issue "Safety decision signals") or [`RefusalCueJudge`] (default).
        harmful_refusal (`float`, *optional*, defaults to `1.0`): Reward of a refusal of a harmful prompt.
        harmful_compliance (`float`, *optional*, defaults to `-1.0`): Reward of a compliance with a harmful prompt.
        benign_refusal (`float`, *optional*, defaults to `-1.0`): Reward of a refusal of a benign prompt.
        benign_compliance (`float`, *optional*, defaults to `1.0`): Reward of an answer to a benign prompt.
        incomplete (`float`, *optional*, defaults to `-1.0`): Reward of a completion that never closes its reasoning
            (no answer).
        threshold (`float`, *optional*, defaults to `0.5`): P(refusal) from which an answer is a refusal.
        harmful_column (`str`, *optional*, defaults to `"harmful"`): As in [`ReasoningSafetyReward`].
        think_in_prompt (`bool`, *optional*, defaults to `False`): As in [`ReasoningSafetyReward`].
    """

    __name__ = "answer_safety_reward"

    def __init__(
        self,
        refusal_judge: AnswerJudge | None = None,
        harmful_refusal: float = 1.0,
        harmful_compliance: float = -1.0,
        benign_refusal: float = -1.0,
        benign_compliance: float = 1.0,
        incomplete: float = -1.0,
        threshold: float = 0.5,
        harmful_column: str = HARMFUL_COLUMN,
        think_in_prompt: bool = False,
    ):
        check_harmful_column_name(harmful_column, "harmful_column")
        self.refusal_judge = refusal_judge or RefusalCueJudge()
        self.harmful_refusal, self.harmful_compliance = harmful_refusal, harmful_compliance
        self.benign_refusal, self.benign_compliance = benign_refusal, benign_compliance
        self.incomplete, self.threshold = incomplete, threshold
        self.harmful_column, self.think_in_prompt = harmful_column, think_in_prompt

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        harmful = _harmful(kwargs, self.harmful_column, len(completions), self.__name__)
        parsed = [split_completion(completion_text(c), self.think_in_prompt) for c in completions]
        rows = [i for i, h in enumerate(harmful) if h is not None and parsed[i].closed and parsed[i].answer]
        p_refusal = (
            self.refusal_judge.predict_proba([prompts[i] for i in rows], [parsed[i].answer for i in rows])
            if rows
            else []
        )
        refused = dict(zip(rows, (p >= self.threshold for p in p_refusal), strict=True))
        rewards: list[float | None] = []
        harmful_refusals, benign_refusals = [], []
        for i, h in enumerate(harmful):
            if h is None:
                rewards.append(None)
            elif i not in refused:
                rewards.append(self.incomplete)
            elif h == 1:
                rewards.append(self.harmful_refusal if refused[i] else self.harmful_compliance)
                harmful_refusals.append(float(refused[i]))
            else:
                rewards.append(self.benign_refusal if refused[i] else self.benign_compliance)
                benign_refusals.append(float(refused[i]))
        _log(kwargs, "safety/harmful_refusal_rate", harmful_refusals)
        _log(kwargs, "safety/benign_refusal_rate", benign_refusals)
        _log(kwargs, "safety/incomplete_rate", [float(not p.closed) for p in parsed])
        return rewards


class MathAccuracyReward:
    """Correctness of the final answer on benign prompts with a reference `solution` (math-verify).

    Only the answer after the closing think tag is checked (a correct value inside the reasoning does not count); an
    unfinished completion scores `wrong`. Rows without a solution, or whose prompt is harmful, get `None`.

    Args:
        solution_column (`str`, *optional*, defaults to `"solution"`): Column of the reference answers (LaTeX or a
            number).
        correct (`float`, *optional*, defaults to `1.0`): Reward of a correct answer.
        wrong (`float`, *optional*, defaults to `0.0`): Reward of a wrong or missing answer.
        harmful_column (`str`, *optional*, defaults to `"harmful"`): As in [`ReasoningSafetyReward`]; the column is
            optional here (without it, every row with a solution is graded).
        think_in_prompt (`bool`, *optional*, defaults to `False`): As in [`ReasoningSafetyReward`].
    """

    __name__ = "math_accuracy_reward"

    def __init__(
        self,
        solution_column: str = "solution",
        correct: float = 1.0,
        wrong: float = 0.0,
        harmful_column: str = HARMFUL_COLUMN,
        think_in_prompt: bool = False,
    ):
        check_harmful_column_name(harmful_column, "harmful_column")
        self.solution_column, self.correct, self.wrong = solution_column, correct, wrong
        self.harmful_column, self.think_in_prompt = harmful_column, think_in_prompt

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        from trl.rewards import accuracy_reward

        if self.solution_column not in kwargs:
            raise KeyError(
                f"`{self.__name__}` needs the dataset column '{self.solution_column}' with reference answers (None for "
                "prompts that have none). Add it, or pass `solution_column=` naming it."
            )
        solutions = kwargs[self.solution_column]
        if self.harmful_column in kwargs:
            harmful = _harmful(kwargs, self.harmful_column, len(completions), self.__name__)
        else:
            harmful = [None] * len(completions)
        rewards: list[float | None] = [None] * len(completions)
        rows, answers, golds = [], [], []
        for i, (completion, solution, h) in enumerate(zip(completions, solutions, harmful, strict=True)):
            if solution is None or str(solution).strip() == "" or h == 1:
                continue
            parsed = split_completion(completion_text(completion), self.think_in_prompt)
            if not parsed.closed or not parsed.answer:
                rewards[i] = self.wrong
                continue
            rows.append(i)
            answers.append([{"role": "assistant", "content": parsed.answer}])
            # In math mode, as the evaluation grades it: TRL's reward gives None (row skipped) for a bare-LaTeX gold
            golds.append(gold_latex(solution))
        scores = accuracy_reward(answers, golds) if rows else []
        for i, score in zip(rows, scores, strict=True):
            rewards[i] = None if score is None else (self.correct if score >= 1.0 else self.wrong)
        _log(kwargs, "safety/math_accuracy", [float(r == self.correct) for r in rewards if r is not None])
        return rewards


class PreSafetyGateReward:
    """Shaping term from the pre-CoT head: rewards completions whose behaviour agrees with the head's decision.

    With p = P(refuse) of the prompt from [`SafetyGate`] (a model trained with a PreSafety trainer), a completion that
    refuses gets `weight * (2p - 1)`, one that answers `weight * (1 - 2p)`. The head's decision alone would be the same
    for every completion of a prompt, so GRPO's group normalization would cancel it; agreement varies within the group.

    Args:
        gate (`SafetyGate`): The head's refusal probability (`SafetyGate(model, tokenizer)` on the PreSafety model).
        refusal_judge (*optional*): P(refusal) of answers; defaults to [`RefusalCueJudge`].
        weight (`float`, *optional*, defaults to `1.0`): Scale of the term.
        think_in_prompt (`bool`, *optional*): As in [`ReasoningSafetyReward`].
    """

    __name__ = "presafety_gate_reward"

    def __init__(
        self,
        gate: Any,
        refusal_judge: AnswerJudge | None = None,
        weight: float = 1.0,
        threshold: float = 0.5,
        think_in_prompt: bool = False,
    ):
        self.gate, self.weight, self.threshold = gate, weight, threshold
        self.refusal_judge = refusal_judge or RefusalCueJudge()
        self.think_in_prompt = think_in_prompt

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        # GRPO repeats each prompt `num_generations` times: one gate forward per distinct prompt
        keys = [repr(p) for p in prompts]
        unique = list(dict.fromkeys(keys))
        first = {key: keys.index(key) for key in unique}
        probs = dict(zip(unique, self.gate.predict_proba([prompts[first[k]] for k in unique]), strict=True))
        answers = [split_completion(completion_text(c), self.think_in_prompt).answer for c in completions]
        p_refusal = self.refusal_judge.predict_proba(list(prompts), answers)
        rewards = []
        for key, p_ref in zip(keys, p_refusal, strict=True):
            p = probs[key]
            agreement = p if p_ref >= self.threshold else 1.0 - p
            rewards.append(self.weight * (2.0 * agreement - 1.0))
        _log(kwargs, "safety/gate_p_refuse", list(probs.values()))
        return rewards


# Default instances, usable directly as `reward_funcs=[reasoning_safety_reward, ...]` (Qwen3-style templates; for
# R1-style ones build the classes with `think_in_prompt=True`, as `trl-presafety grpo` does)
reasoning_safety_reward = ReasoningSafetyReward()
answer_safety_reward = AnswerSafetyReward()
math_accuracy_reward = MathAccuracyReward()


@dataclass
class RewardOptions:
    """What the reward functions built by name share: the judges, the template's think layout, the dataset columns
    and the settings of `trl-presafety grpo` (the fields of the same names of its script arguments)."""

    step_judge: StepJudge | None = None
    refusal_judge: AnswerJudge | None = None
    think_in_prompt: bool = False
    harmful_column: str = HARMFUL_COLUMN
    solution_column: str = "solution"
    reasoning_reward_scope: str = "harmful"
    incomplete_reward: float = -1.0
    judge_threshold: float = 0.5
    gate: Any = None
    max_completion_length: int | None = None


def _gate_reward(options: RewardOptions) -> PreSafetyGateReward:
    if options.gate is None:
        raise ValueError(
            "`presafety_gate_reward` needs `gate`: a `SafetyGate` on a model trained with a PreSafety trainer."
        )
    return PreSafetyGateReward(
        options.gate, options.refusal_judge, threshold=options.judge_threshold, think_in_prompt=options.think_in_prompt
    )


def _trl_reward(options: RewardOptions, name: str) -> Callable[..., Any]:
    """TRL's reward function `name`; the soft overlong punishment is sized by `max_completion_length` (cache 1/4)."""
    import trl.rewards

    if name != "get_soft_overlong_punishment":
        return getattr(trl.rewards, name)
    if options.max_completion_length is None:
        raise ValueError("`get_soft_overlong_punishment` needs `max_completion_length` (the GRPOConfig's).")
    max_len = options.max_completion_length
    return trl.rewards.get_soft_overlong_punishment(max_completion_len=max_len, soft_punish_cache=max_len // 4)


TRL_REWARDS = ("accuracy_reward", "reasoning_accuracy_reward", "think_format_reward", "get_soft_overlong_punishment")
# Reward functions by name, as `reward_funcs_registry` in TRL's `trl/scripts/grpo.py`, each built from the shared
# [`RewardOptions`]: `trl-presafety grpo` builds its `reward_funcs` here
REWARD_FUNCS_REGISTRY: dict[str, Callable[[RewardOptions], Callable[..., Any]]] = {
    "reasoning_safety_reward": lambda o: ReasoningSafetyReward(
        o.step_judge,
        apply_to=o.reasoning_reward_scope,
        harmful_column=o.harmful_column,
        think_in_prompt=o.think_in_prompt,
    ),
    "answer_safety_reward": lambda o: AnswerSafetyReward(
        o.refusal_judge,
        incomplete=o.incomplete_reward,
        threshold=o.judge_threshold,
        harmful_column=o.harmful_column,
        think_in_prompt=o.think_in_prompt,
    ),
    "math_accuracy_reward": lambda o: MathAccuracyReward(
        o.solution_column, harmful_column=o.harmful_column, think_in_prompt=o.think_in_prompt
    ),
    "presafety_gate_reward": _gate_reward,
    **{name: partial(_trl_reward, name=name) for name in TRL_REWARDS},
}
SAFETY_REWARDS = ("reasoning_safety_reward", "answer_safety_reward", "math_accuracy_reward", "presafety_gate_reward")


def build_reward_func(name: str, options: RewardOptions | None = None) -> Callable[..., Any]:
    """The reward function `name` of [`REWARD_FUNCS_REGISTRY`], built with `options` (defaults when `None`)."""
    if name not in REWARD_FUNCS_REGISTRY:
        raise ValueError(f"Unknown reward function {name!r}. Choose one of {list(REWARD_FUNCS_REGISTRY)}.")
    return REWARD_FUNCS_REGISTRY[name](options or RewardOptions())


def safety_reward_funcs(
    step_judge: StepJudge | None = None,
    refusal_judge: AnswerJudge | None = None,
    think_in_prompt: bool = False,
    harmful_column: str = HARMFUL_COLUMN,
    solution_column: str = "solution",
) -> list[Callable[..., list[float | None]]]:
    """The three rewards of the "Beyond SFT" design (reasoning and answer safety, math accuracy), sharing judges."""
    options = RewardOptions(
        step_judge=step_judge,
        refusal_judge=refusal_judge,
        think_in_prompt=think_in_prompt,
        harmful_column=harmful_column,
        solution_column=solution_column,
    )
    return [build_reward_func(name, options) for name in SAFETY_REWARDS[:3]]
