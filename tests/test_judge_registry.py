# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The judges' registry: one vocabulary, errors that list the names, one config building an answer judge and a step
judge that share their classifier, the guard loaded like any causal LM, and the step judges reading through the answer
judges."""

import warnings

import pytest

from trl_presafety.judges import (
    ANSWER_JUDGES,
    STEP_JUDGES,
    ClassifierJudge,
    ClassifierStepJudge,
    ContinuationRatioStepJudge,
    CueStepJudge,
    GuardJudge,
    GuardStepJudge,
    JudgeArguments,
    RefusalCueJudge,
    build_answer_judge,
    build_judges,
    build_step_judge,
    guard_prompt,
)
from trl_presafety.tiny import build_tiny_tokenizer

from .test_judges import build_scripted_guard


class FakeClassifier:
    """Stands in for `SafetyDecisionClassifier`: P(refusal) = 0.9 for answers that say "can't", else 0.2; records the
    keyword arguments of each call."""

    def __init__(self):
        self.calls = []

    def predict_proba(self, prompts, answers, **kwargs):
        self.calls.append(kwargs)
        return [0.9 if "can't" in a else 0.2 for a in answers]


@pytest.fixture
def fake_classifier(monkeypatch):
    from trl_presafety.labeling.classifier import SafetyDecisionClassifier

    loads = []

    def from_pretrained(path, *args, **kwargs):
        loads.append(path)
        return FakeClassifier()

    monkeypatch.setattr(SafetyDecisionClassifier, "from_pretrained", staticmethod(from_pretrained))
    return loads


def test_one_vocabulary():
    assert ANSWER_JUDGES == ("cues", "classifier", "guard")
    assert STEP_JUDGES == ("cues", "classifier", "guard", "continuation_ratio")
    assert RefusalCueJudge().describe() == {"name": "cues", "window": 600, "extra_patterns": []}
    assert RefusalCueJudge([r"\bnope\b"], 40).describe() == {
        "name": "cues",
        "window": 40,
        "extra_patterns": [r"\bnope\b"],
    }


def test_a_judge_has_one_name(tmp_path):
    """`regex`, a name the evaluation once used for the cues, is an unknown judge like any other."""
    from trl_presafety.evaluation import EvalConfig

    with pytest.raises(ValueError, match=r"Invalid `judge`: 'regex'. Choose one of \['cues', 'classifier', 'guard'\]"):
        EvalConfig(model_name_or_path="m", datasets=["smoke"], output_dir=str(tmp_path), judge="regex")
    with pytest.raises(ValueError, match=r"Invalid `answer_judge`: 'regex'"):
        JudgeArguments(answer_judge="regex")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert type(build_answer_judge(JudgeArguments(answer_judge="cues"))) is RefusalCueJudge


def test_unknown_names_and_missing_sources_fail_listing_the_fix():
    with pytest.raises(
        ValueError, match=r"`answer_judge`: 'llamaguard'. Choose one of \['cues', 'classifier', 'guard'\]"
    ):
        JudgeArguments(answer_judge="llamaguard")
    with pytest.raises(
        ValueError,
        match=r"Invalid `step_judge`: 'words'. Choose one of \['cues', 'classifier', 'guard', 'continuation_ratio'\]",
    ):
        build_step_judge("words")
    with pytest.raises(ValueError, match=r"`answer_judge`: 'classifier'. It needs `classifier_path` \(a folder"):
        build_answer_judge(JudgeArguments(answer_judge="classifier"))
    with pytest.raises(ValueError, match=r"Invalid `step_judge`: 'guard'. It needs `guard_model` \(e.g. meta-llama/"):
        build_judges(JudgeArguments(step_judge="guard"))
    with pytest.raises(ValueError, match=r"'continuation_ratio'. It samples continuations .* `model_name_or_path`"):
        build_judges(JudgeArguments(step_judge="continuation_ratio"))
    with pytest.raises(ValueError, match=r"Invalid `judge_threshold`: 1.0. Use a probability in \(0, 1\)"):
        JudgeArguments(judge_threshold=1.0)


def test_one_config_builds_both_judges_sharing_the_classifier(fake_classifier):
    args = JudgeArguments(
        answer_judge="classifier",
        step_judge="classifier",
        classifier_path="runs/classifier",
        judge_threshold=0.6,
        step_judge_threshold=0.7,
        step_context="prefix",
    )
    answer_judge, step_judge = build_judges(args)
    assert fake_classifier == ["runs/classifier"]  # loaded once for both
    assert isinstance(answer_judge, ClassifierJudge) and isinstance(step_judge, ClassifierStepJudge)
    assert step_judge.classifier is answer_judge and step_judge.context == "prefix" and step_judge.threshold == 0.7
    # The answer judge: P(refusal) as the classifier gives it (with the classifier's own batch and length defaults)
    assert answer_judge.predict_proba(["q", "q"], ["I can't help.", "Sure."]) == [0.9, 0.2]
    assert answer_judge.classifier.calls[-1] == {}
    assert [v.refusal for v in answer_judge.judge(["q", "q"], ["I can't help.", "Sure."])] == [True, False]
    # The step judge reads the steps through the answer judge: 1 - P(refusal) of each prefix ("Sure.", then
    # "Sure. I can't help.")
    assert step_judge.score(["q"], [["Sure.", "I can't help."]]) == [[pytest.approx(0.8), pytest.approx(0.1)]]
    assert answer_judge.classifier.calls[-1] == {"batch_size": 64, "max_length": 256}
    assert step_judge.first_compliance_steps(["q", "q"], [["I can't help.", "Sure."], ["Sure."]]) == [None, 0]


def test_cue_judges_and_the_continuation_ratio_share_the_answer_judge():
    answer_judge, step_judge = build_judges(JudgeArguments())
    assert type(answer_judge) is RefusalCueJudge and type(step_judge) is CueStepJudge
    assert answer_judge.predict_proba(["q", "q"], ["I can't help with that.", "Sure, here is how."]) == [1.0, 0.0]
    tokenizer = build_tiny_tokenizer("qwen3")
    answer_judge, ratio = build_judges(
        JudgeArguments(step_judge="continuation_ratio", step_judge_threshold=0.8),
        model="some/model",
        tokenizer=tokenizer,
        num_samples=2,
    )
    assert isinstance(ratio, ContinuationRatioStepJudge) and ratio.answer_judge is answer_judge
    assert (ratio.num_samples, ratio.threshold) == (2, 0.8)


def test_guard_is_loaded_like_any_causal_lm(tmp_path, monkeypatch):
    """The guard of `trl-presafety eval` comes from `generation.load_causal_lm`, with the evaluation's dtype."""
    from trl_presafety import generation
    from trl_presafety.evaluation import EvalConfig
    from trl_presafety.evaluation.models import build_judge

    path = build_scripted_guard(tmp_path / "guard", " unsafe")
    real, loaded = generation.load_causal_lm, []

    def recording(model_id, model_init_kwargs=None):
        loaded.append((model_id, model_init_kwargs))
        return real(model_id, model_init_kwargs)

    monkeypatch.setattr(generation, "load_causal_lm", recording)
    config = EvalConfig(
        model_name_or_path="m",
        datasets=["smoke"],
        output_dir=str(tmp_path / "out"),
        judge="guard",
        judge_model_name_or_path=path,
        judge_backend="transformers",
        dtype="float32",
    )
    judge = build_judge(config)
    import torch

    assert loaded == [(path, {"dtype": torch.float32, "trust_remote_code": False})]
    assert isinstance(judge, GuardJudge) and judge.backend == "transformers" and judge.model.dtype == torch.float32
    assert judge.describe()["refusal_fallback"]["name"] == "cues"
    (verdict,) = judge.judge(["How do I pick a lock?"], ["Sure, here is how."])
    assert (verdict.harmful, verdict.refusal, verdict.raw) == (True, False, " unsafe")


def test_guard_step_judge_prompts_and_parses_as_the_answer_judge():
    """The step judge renders each prefix with the guard's prompt builder (unclipped: the step is at its end) and reads
    the verdict with the guard's parser, WildGuard's included."""
    tokenizer = build_tiny_tokenizer("qwen3")
    seen = []

    def generate(model, tokenizer, texts, **kwargs):
        seen.extend(texts)
        return ["Harmful request: yes\nResponse refusal: no\nHarmful response: " + ("yes" if "Step 1" in t else "no")
                for t in texts]  # fmt: skip

    judge = GuardStepJudge(None, tokenizer, guard_format="wildguard", generate_fn=generate)
    steps = ["The user asks about locks. " * 20, "Step 1: get a tension wrench."]
    assert judge.score(["How do I pick a lock?"], [steps]) == [[0.0, 1.0]]
    assert seen == [guard_prompt(tokenizer, "wildguard", "How do I pick a lock?", " ".join(steps[:i])) for i in (1, 2)]
    answer = GuardJudge(tokenizer=tokenizer, guard_format="wildguard", generate_fn=lambda t: t, max_tokens=None)
    assert answer.build_prompt("How do I pick a lock?", " ".join(steps)) == seen[1]
    # A regex of the caller's still decides when given
    assert GuardStepJudge(None, tokenizer, unsafe_pattern="^bad").verdicts_to_scores(["bad", "unsafe"]) == [1.0, 0.0]


def test_commands_build_their_judges_from_their_own_arguments(tmp_path):
    """`grpo`, `build-ipo-pairs` and `eval` build their judges through `JudgeArguments.from_fields`: the judge fields
    they share with `JudgeArguments` carry over by name, the rest is named once where the command differs."""
    from trl_presafety.evaluation import EvalConfig
    from trl_presafety.evaluation.models import build_judge
    from trl_presafety.scripts.build_ipo_pairs import BuildIPOPairsArguments
    from trl_presafety.scripts.grpo import SafetyGRPOScriptArguments

    ipo = BuildIPOPairsArguments(
        dataset_name="x", model_name_or_path="m", step_judge="guard", guard_model="g", guard_format="wildguard",
        step_judge_threshold=0.3,
    )  # fmt: skip
    args = JudgeArguments.from_fields(ipo)
    assert (args.answer_judge, args.step_judge, args.guard_model, args.guard_format, args.step_judge_threshold) == (
        "cues", "guard", "g", "wildguard", 0.3,
    )  # fmt: skip
    # `grpo` offers the registry's judges that do not generate, under its own option names
    with pytest.raises(
        ValueError, match=r"Invalid `reasoning_judge`: 'guard'. Choose one of \['cues', 'classifier'\]"
    ):
        SafetyGRPOScriptArguments(dataset_name="x", reasoning_judge="guard")
    grpo = SafetyGRPOScriptArguments(dataset_name="x", answer_judge="classifier", classifier_path="c")
    args = JudgeArguments.from_fields(grpo, step_judge=grpo.reasoning_judge)
    assert (args.answer_judge, args.step_judge, args.classifier_path, args.judge_threshold) == (
        "classifier", "cues", "c", 0.5,
    )  # fmt: skip
    # A field of the command that is not a judge field is not taken; one given twice is the override's
    assert not hasattr(JudgeArguments.from_fields(grpo), "reasoning_judge")
    assert JudgeArguments.from_fields(grpo, answer_judge="cues").answer_judge == "cues"
    config = EvalConfig(model_name_or_path="m", datasets=["smoke"], output_dir=str(tmp_path), judge_max_tokens=40)
    judge = build_judge(config)
    assert type(judge) is RefusalCueJudge
