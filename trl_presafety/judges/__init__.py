# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Judges of responses and of reasoning steps, shared by the evaluation, the data builders (IPO, AltTrain) and the GRPO
rewards.

- Answer judges ([`Judge`]): `judge(prompts, texts)` -> a [`Verdict`] per text (refusal, harmfulness, score, error);
  `predict_proba(prompts, answers)` -> P(refusal) per answer.
- Step judges ([`StepJudge`]): a compliance score per reasoning step; `first_compliance_steps` gives the first step
  whose score reaches the judge's threshold.

One vocabulary names them: `cues` (regular expressions), `classifier` (the repository's refusal classifier), `guard` (a
guard model, in one of the formats of `guard_formats.py`: Llama Guard 3/4, Qwen3Guard, WildGuard), and for steps also
`continuation_ratio` (IPO's sampled continuations). The step judges reuse the answer judges: the refusal cues, the
classifier's P(refusal), the guard's prompt and parser. [`build_judges`] builds an answer
judge and a step judge by name from one [`JudgeArguments`]; the evaluation, `build-ipo-pairs` and `grpo` build theirs
through it.
"""

from .base import AnswerJudge, Judge, StepJudge, Verdict, fit_joined, join_reasoning_answer, split_joined
from .classifier import ClassifierJudge, ClassifierStepJudge
from .continuation import ContinuationRatioStepJudge
from .cues import (
    COMPLIANCE_CUES,
    REASONING_REFUSAL_CUES,
    REFUSAL_CUES,
    CueStepJudge,
    RefusalCueJudge,
)
from .guard import GuardJudge, GuardStepJudge, guard_prompt
from .guard_formats import (
    CONTROVERSIAL_POLICIES,
    GUARD_FORMAT_REGISTRY,
    GUARD_FORMATS,
    GUARD_TARGETS,
    GuardFormat,
    detect_guard_format,
    llama_guard_categories,
    parse_llama_guard,
    parse_qwen3guard,
    parse_wildguard,
    resolve_guard_format,
)
from .math_grading import grade_math
from .registry import (
    ANSWER_JUDGE_REGISTRY,
    ANSWER_JUDGES,
    GENERATING_JUDGES,
    STEP_JUDGE_REGISTRY,
    STEP_JUDGES,
    JudgeArguments,
    build_answer_judge,
    build_judges,
    build_step_judge,
)
from .steps import STEP_SPLITS, Step, prefix_text, split_steps, user_text


__all__ = [
    "ANSWER_JUDGES",
    "ANSWER_JUDGE_REGISTRY",
    "COMPLIANCE_CUES",
    "CONTROVERSIAL_POLICIES",
    "GUARD_FORMATS",
    "GUARD_FORMAT_REGISTRY",
    "GUARD_TARGETS",
    "REASONING_REFUSAL_CUES",
    "REFUSAL_CUES",
    "GENERATING_JUDGES",
    "STEP_JUDGES",
    "STEP_JUDGE_REGISTRY",
    "STEP_SPLITS",
    "AnswerJudge",
    "ClassifierJudge",
    "ClassifierStepJudge",
    "ContinuationRatioStepJudge",
    "CueStepJudge",
    "GuardFormat",
    "GuardJudge",
    "GuardStepJudge",
    "Judge",
    "JudgeArguments",
    "RefusalCueJudge",
    "Step",
    "StepJudge",
    "Verdict",
    "build_answer_judge",
    "build_judges",
    "build_step_judge",
    "detect_guard_format",
    "fit_joined",
    "grade_math",
    "guard_prompt",
    "join_reasoning_answer",
    "llama_guard_categories",
    "parse_llama_guard",
    "parse_qwen3guard",
    "parse_wildguard",
    "prefix_text",
    "resolve_guard_format",
    "split_joined",
    "split_steps",
    "user_text",
]
