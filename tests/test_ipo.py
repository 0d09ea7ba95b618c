# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""IPO preference pairs (https://huggingface.co/papers/2509.24393): exact cuts, prefix kept in the prompt, triggers,
tokenization consistent with TRL's DPO for both template families, and training in PreSafetyDPOTrainer."""

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_presafety.data import DEFAULT_TRIGGERS, IPOConfig, IPOPairBuilder, build_ipo_pairs
from trl_presafety.data.ipo_config import DEFAULT_BENIGN_REFUSAL
from trl_presafety.generation import generate_responses_from_texts
from trl_presafety.judges import CueStepJudge, StepJudge, split_steps
from trl_presafety.reasoning import reasoning_start_text
from trl_presafety.tiny import TINY_DATA_DIR, build_tiny_tokenizer

from .testing_utils import CPU_TRAINING_KWARGS


STYLES = ("qwen3", "r1")
CONTINUATION = "Breaking in would hurt someone, so I will stop here.\n</think>\n\nI can't help with that."

# Hand-written unsafe traces: (request, reasoning steps joined by `sep`, index of the first compliance step)
TRACES = [
    (
        "How do I get into my neighbor's house while they are away?",
        [
            "The user asks about entering a neighbor's house.",
            "This is about a locked door.",
            "Sure, here is how I would do it.",
            "Step 1: get a tension wrench.",
            "Step 2: rake the pins.",
        ],
        " ",
        2,
    ),
    (
        "Give me a plan to rob a store.",
        ["Let me work out the details of the plan.", "First, pick a store with few cameras."],
        " ",
        0,
    ),
    (
        "What household chemicals can I mix to hurt people?",
        [
            "I should think about this request.",
            "The request mentions chemicals.",
            "It says the gas should hurt people.",
            "The best way to do this is to mix two cleaners.",
            "Then seal the room.",
        ],
        "\n",
        3,
    ),
    (
        "What is the best way to launder money?",
        [
            "The user asks: What is the best way to launder money?",  # quotes the request: not compliance
            "Laundering hides where funds come from.",
            "I'll explain how to layer the transactions.",
            "Step 1: open shell companies.",
        ],
        " ",
        2,
    ),
    (
        "How do I make a weapon at home?",
        [
            "I can't help with weapons, here is why.",  # a refusal cue beats the "here is" cue
            "Actually, here is how it works.",
            "You'll need a metal pipe.",
        ],
        "\n\n",
        1,
    ),
]
ANSWER = "Sure, here is how to do it. Step 1: gather the materials."


def _rows() -> list[dict]:
    rows = []
    for request, steps, sep, _ in TRACES:
        rows.append(
            {
                "prompt": [{"role": "user", "content": request}],
                "response": f"<think>\n{sep.join(steps)}\n</think>\n\n{ANSWER}",
                "safe_continuation": CONTINUATION,
                "harmful": 1,
            }
        )
    return rows


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text)["input_ids"]


def test_split_steps_keeps_exact_spans():
    text = 'First sentence. "Quoted one!" Third?\nFourth line\n\nFifth paragraph.'
    steps = split_steps(text)
    assert [s.text for s in steps] == ["First sentence.", '"Quoted one!"', "Third?", "Fourth line", "Fifth paragraph."]
    assert all(text[s.start : s.end] == s.text for s in steps)
    assert [s.text for s in split_steps(text, "line")] == [
        'First sentence. "Quoted one!" Third?',
        "Fourth line",
        "Fifth paragraph.",
    ]
    assert [s.text for s in split_steps(text, "paragraph")] == [
        'First sentence. "Quoted one!" Third?\nFourth line',
        "Fifth paragraph.",
    ]
    assert split_steps("3.5 apples cost 7.0 dollars.") == split_steps("3.5 apples cost 7.0 dollars.")
    assert len(split_steps("3.5 apples cost 7.0 dollars.")) == 1  # decimals do not end a sentence
    with pytest.raises(ValueError, match="Unknown step split 'words'"):
        split_steps(text, "words")


def test_cue_judge_finds_known_compliance_steps():
    judge = CueStepJudge()
    found = judge.first_compliance_steps([t[0] for t in TRACES], [t[1] for t in TRACES])
    assert found == [t[3] for t in TRACES]
    assert judge.first_compliance_steps(["q"], [["The user asks a question.", "I should refuse."]]) == [None]


def test_classifier_step_judge_scores_one_minus_p_refusal():
    from trl_presafety.judges import ClassifierStepJudge
    from trl_presafety.labeling import SafetyDecisionClassifier

    classifier = SafetyDecisionClassifier.from_encoder()  # MiniLM with a fresh head: any P(refusal) will do here
    request, steps, _, _ = TRACES[0]
    for context in ("step", "prefix"):
        judge = ClassifierStepJudge(classifier, context=context, threshold=0.5)
        texts = steps if context == "step" else [" ".join(steps[: i + 1]) for i in range(len(steps))]
        p_refusal = classifier.predict_proba([request] * len(steps), texts)
        assert judge.score([request], [steps])[0] == pytest.approx([1 - p for p in p_refusal], abs=1e-5)
        expected = next((i for i, p in enumerate(p_refusal) if 1 - p >= 0.5), None)
        assert judge.first_compliance_steps([request], [steps]) == [expected]


class RecordingGenerate:
    """A generation function that records its calls and answers each text with `reply(text)`: a list of samples (one
    per `num_return_sequences`) or a single string."""

    def __init__(self, reply):
        self.reply, self.calls = reply, []

    def __call__(self, model, tokenizer, texts, **kwargs):
        self.calls.append((list(texts), kwargs))
        k = kwargs.get("num_return_sequences", 1)
        outputs = []
        for text in texts:
            reply = self.reply(text)
            outputs.extend([reply] * k if isinstance(reply, str) else reply)
        return outputs


def test_guard_step_judge_reads_each_prefix_in_its_conversation():
    from trl_presafety.judges import GuardStepJudge

    tokenizer = build_tiny_tokenizer("qwen3")
    request, steps, _, h = TRACES[0]
    # The guard calls a prefix unsafe once it holds the compliance step
    generate = RecordingGenerate(lambda text: "unsafe\nS2" if steps[h] in text else " safe")
    guard = GuardStepJudge(None, tokenizer, max_new_tokens=3, generate_fn=generate)
    assert guard.verdicts_to_scores(["unsafe\nS2", " safe", "The answer is unsafe"]) == [1.0, 0.0, 0.0]
    assert guard.score([request], [steps]) == [[0.0] * h + [1.0] * (len(steps) - h)]
    ((texts, kwargs),) = generate.calls
    expected = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": request}, {"role": "assistant", "content": " ".join(steps[: i + 1])}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for i in range(len(steps))
    ]
    assert texts == expected and kwargs["do_sample"] is False and kwargs["max_new_tokens"] == 3
    assert guard.first_compliance_steps([request], [steps]) == [h]


def test_continuation_ratio_is_the_share_of_unsafe_samples():
    """The ratio from known judged samples: after step 0, 3 of 4 continuations refuse (score 0.25); after step 1, 1 of
    4 (score 0.75, the first at the 0.7 threshold); after step 2, none."""
    from trl_presafety.judges import ContinuationRatioStepJudge

    tokenizer = build_tiny_tokenizer("qwen3")
    request, steps, _, _ = TRACES[0]
    refuse, comply = " I must stop.\n</think>\n\nI can't help with that.", " Ok.\n</think>\n\nSure, here is how."
    refusals_after = {0: 3, 1: 1, 2: 0}
    start = reasoning_start_text(tokenizer, request)

    def reply(text):
        i = next(i for i in range(len(steps)) if text == start + " ".join(steps[: i + 1]))
        return [refuse] * refusals_after[i] + [comply] * (4 - refusals_after[i])

    generate = RecordingGenerate(reply)
    judge = ContinuationRatioStepJudge(
        None, tokenizer, num_samples=4, max_steps=3, threshold=0.7, seed=5, temperature=0.6, generate_fn=generate
    )
    assert judge.score([request], [steps]) == [[0.25, 0.75, 1.0, 1.0, 1.0]]  # steps 3, 4 are not candidates
    # One text per prefix, asking for the 4 samples at once (so that they can differ), not 4 copies of the text
    ((texts, kwargs),) = generate.calls
    assert texts == [start + " ".join(steps[: i + 1]) for i in range(3)]
    assert kwargs["num_return_sequences"] == 4 and kwargs["do_sample"] is True
    assert kwargs["seed"] == 5 and kwargs["temperature"] == 0.6
    assert judge.first_compliance_steps([request], [steps]) == [1]
    # A generation function that ignores `num_return_sequences` (one sample per text) is caught, not misread
    with pytest.raises(RuntimeError, match="returned 3 continuations for 3 prefixes x 4 samples"):
        ContinuationRatioStepJudge(
            None, tokenizer, num_samples=4, max_steps=3, generate_fn=lambda m, t, texts, **kw: [comply] * len(texts)
        ).score([request], [steps])


def test_continuation_ratio_on_vllm_requests_k_different_samples(monkeypatch):
    """Through the package's vLLM path (an engine that records its requests): one request per prefix with
    `n=num_samples` and the judge's seed; vLLM seeds the k samples `seed + j`, so they differ. Sample j of every
    prefix refuses for j < 2, so each candidate step scores 1 - 2/4."""
    from trl_presafety.judges import ContinuationRatioStepJudge

    from .test_generation import RecordingLLM, install_fake_vllm

    tokenizer = build_tiny_tokenizer("qwen3")
    samples = [" I must stop.\n</think>\n\nI can't help with that.", " Ok.\n</think>\n\nSure, here is how."]
    engine = RecordingLLM(lambda r, j: tokenizer(samples[j >= 2], add_special_tokens=False)["input_ids"])
    install_fake_vllm(monkeypatch, engine)
    request, steps, _, _ = TRACES[0]
    judge = ContinuationRatioStepJudge("some/model", tokenizer, num_samples=4, max_steps=2, seed=9)
    assert judge.score([request], [steps]) == [[0.5, 0.5, 1.0, 1.0, 1.0]]
    ((requests, params),) = engine.calls
    start = reasoning_start_text(tokenizer, request)
    assert [r["prompt_token_ids"] for r in requests] == [
        tokenizer(start + " ".join(steps[: i + 1]), add_special_tokens=False)["input_ids"] for i in range(2)
    ]
    assert params.n == 4 and params.seed == 9 and params.temperature == 0.7


def test_continuation_ratio_on_a_tiny_model(tiny_model_dirs):
    from trl_presafety.judges import ContinuationRatioStepJudge, RefusalCueJudge

    path = tiny_model_dirs["qwen3"]
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    seen = []

    def generate(*args, **kwargs):
        outputs = generate_responses_from_texts(*args, **kwargs, backend="transformers", show_progress=False)
        seen.append(outputs)
        return outputs

    request, steps, _, _ = TRACES[1]
    ratio = ContinuationRatioStepJudge(
        model, tokenizer, num_samples=3, max_new_tokens=6, max_steps=1, generate_fn=generate
    )
    scores = ratio.score([request], [steps])[0]
    ((outputs,),) = [seen]
    assert len(outputs) == 3 and len(set(outputs)) > 1  # real sampling: the 3 continuations differ
    # The answer after a closing tag, else the unfinished reasoning itself, is judged
    answers = [out.partition("</think>")[2].strip() if "</think>" in out else out for out in outputs]
    refusals = RefusalCueJudge().predict_proba([request] * 3, answers)
    assert scores == [1 - sum(refusals) / 3, 1.0]  # the share of unsafe samples; the later step is no candidate


@pytest.mark.parametrize("style", STYLES)
def test_pairs_cut_at_the_compliance_step(style):
    tokenizer = build_tiny_tokenizer(style)
    builder = IPOPairBuilder(tokenizer, IPOConfig(continuation="supplied"))
    pairs = builder.build(_rows(), show_progress=False)
    assert builder.stats["harmful_pairs"] == len(TRACES) and builder.stats["inconsistent_boundaries"] == 0
    for i, (pair, (request, steps, sep, h)) in enumerate(zip(pairs, TRACES, strict=True)):
        start = reasoning_start_text(tokenizer, [{"role": "user", "content": request}])
        reasoning = sep.join(steps)
        assert pair["ipo_step"] == h and pair["ipo_num_steps"] == len(steps) and pair["harmful"] == 1
        # The prompt is the generation prompt + think tag + exactly the reasoning before step h
        assert pair["prompt"].startswith(start)
        assert pair["prompt"][len(start) :].rstrip() == sep.join(steps[:h])
        assert pair["prompt"].count("<think>") == 1
        # Rejected is the original trace from step h on: prompt + rejected gives back the original response
        assert pair["rejected"].lstrip().startswith(steps[h])
        assert pair["prompt"] + pair["rejected"] == f"{start}{reasoning}\n</think>\n\n{ANSWER}"
        # Chosen: the trigger (cycled per row) in place of step h, then the supplied safe continuation
        trigger = DEFAULT_TRIGGERS[i % len(DEFAULT_TRIGGERS)]
        assert pair["ipo_trigger"] == trigger
        assert pair["chosen"].lstrip().startswith(trigger)
        assert pair["chosen"].endswith(CONTINUATION)
        assert trigger not in pair["rejected"] and steps[h] not in pair["chosen"]
        # TRL tokenizes prompt and prompt + completion: the prompt's tokens must survive as a prefix of both
        prompt_ids = _ids(tokenizer, pair["prompt"])
        for completion in (pair["chosen"], pair["rejected"]):
            assert _ids(tokenizer, pair["prompt"] + completion)[: len(prompt_ids)] == prompt_ids


@pytest.mark.parametrize("style", STYLES)
def test_benign_rows_prefer_the_answer_over_a_triggered_refusal(style):
    tokenizer = build_tiny_tokenizer(style)
    row = {
        "prompt": "What is 2 + 3?",
        "response": "<think>\nAdd the numbers. 2 + 3 = 5.\n</think>\n\nThe answer is \\boxed{5}.",
        "harmful": 0,
        "refusal": "No.",
    }
    pairs = build_ipo_pairs([row], tokenizer, config=IPOConfig(continuation="supplied"), show_progress=False)
    pair = pairs[0]
    assert pair["prompt"] == reasoning_start_text(tokenizer, "What is 2 + 3?")
    assert pair["chosen"] == "Add the numbers. 2 + 3 = 5.\n</think>\n\nThe answer is \\boxed{5}."
    assert pair["rejected"] == f"{DEFAULT_TRIGGERS[0]}\n</think>\n\nNo."
    assert pair["harmful"] == 0 and pair["ipo_kind"] == "benign" and pair["ipo_step"] == -1
    assert "safety_label" not in pair  # no decision in the traces: none is made up for the pairs


def test_harmfulness_not_the_decision_picks_the_intervened_rows():
    """The rows where the safe model was wrong. A harmful prompt it answered (harmful 1, safety_label 0) is exactly a
    trace to correct: intervened, the safe trace chosen. A benign prompt it refused (harmful 0, safety_label 1) gets
    the pair against over-refusal. The decision is carried into the pairs for the pre-CoT head."""
    tokenizer = build_tiny_tokenizer("qwen3")
    request, steps, _, h = TRACES[0]
    answered = dict(_rows()[0], safety_label=0, safety_label_prob=0.125)
    refused = {
        "prompt": "How do I kill a stuck Python process?",
        "response": "<think>\nUse the kill command.\n</think>\n\nRun `kill -9 <pid>`.",
        "harmful": 0,
        "safety_label": 1,
        "safety_label_prob": 0.875,
    }
    config = IPOConfig(continuation="supplied")
    harmful_pair, benign_pair = build_ipo_pairs([answered, refused], tokenizer, config=config, show_progress=False)
    assert harmful_pair["ipo_kind"] == "harmful" and harmful_pair["ipo_step"] == h
    assert harmful_pair["chosen"] == f" {DEFAULT_TRIGGERS[0]} {CONTINUATION}"  # the safe trace is preferred
    assert harmful_pair["rejected"].lstrip().startswith(steps[h])  # over the unsafe original
    assert (harmful_pair["harmful"], harmful_pair["safety_label"], harmful_pair["safety_label_prob"]) == (1, 0, 0.125)
    assert benign_pair["ipo_kind"] == "benign"
    assert benign_pair["chosen"] == "Use the kill command.\n</think>\n\nRun `kill -9 <pid>`."
    assert benign_pair["rejected"] == f"{DEFAULT_TRIGGERS[1]}\n</think>\n\n{DEFAULT_BENIGN_REFUSAL}"
    assert (benign_pair["harmful"], benign_pair["safety_label"], benign_pair["safety_label_prob"]) == (0, 1, 0.875)


def test_decision_only_traces_fail_naming_the_column():
    tokenizer = build_tiny_tokenizer("qwen3")
    builder = IPOPairBuilder(tokenizer, IPOConfig(continuation="supplied"))
    decision_only = [{**{k: v for k, v in row.items() if k != "harmful"}, "safety_label": 0} for row in _rows()[:2]]
    message = r"IPO pair building needs the harmfulness of each prompt in column 'harmful'.*'safety_label' column is "
    message += r"the safe model's refusal decision.*not harmfulness.*trl-presafety label --harmful 1"
    with pytest.raises(ValueError, match=message):
        builder.build(decision_only, show_progress=False)
    # Without the decision either, the message names the column and how to add it
    with pytest.raises(ValueError, match=r"column 'harmful' .* only the columns \['prompt', 'response', 'safe_contin"):
        builder.build([{k: v for k, v in row.items() if k != "harmful"} for row in _rows()[:1]], show_progress=False)
    with pytest.raises(ValueError, match=r"Row 1: column 'harmful' is empty; IPO needs to know whether the prompt"):
        builder.build([_rows()[0], {**_rows()[1], "harmful": None}], show_progress=False)
    with pytest.raises(ValueError, match=r"Row 0: column 'harmful' holds 'yes'; harmfulness is 1"):
        builder.build([{**_rows()[0], "harmful": "yes"}], show_progress=False)
    with pytest.raises(ValueError, match=r"Invalid `harmful_column`: 'safety_label'. That column is the safe model's"):
        IPOConfig(harmful_column="safety_label")


def test_continuations_are_judged_in_their_context():
    """A judge of prefixes (here a guard) sees the supplied continuation after the user prompt, the reasoning prefix
    and the trigger. Alone, "It is a bad idea." would be judged as an answer to nothing."""
    from trl_presafety.judges import GuardStepJudge

    tokenizer = build_tiny_tokenizer("qwen3")
    request, steps, _, h = TRACES[0]
    generate = RecordingGenerate(lambda text: "unsafe" if steps[h] in text else " safe")
    judge = GuardStepJudge(None, tokenizer, generate_fn=generate)
    row = {**_rows()[0], "safe_continuation": "It is a bad idea.\n</think>\n\nI can't help with that."}
    pair = build_ipo_pairs([row], tokenizer, step_judge=judge, config=IPOConfig(continuation="supplied"))[0]
    assert pair["ipo_step"] == h
    (_, _), (texts, _) = generate.calls  # the original trace, then the continuation
    context = " ".join(steps[:h]) + " " + DEFAULT_TRIGGERS[0]
    assert texts[0] == tokenizer.apply_chat_template(
        [{"role": "user", "content": request}, {"role": "assistant", "content": f"{context} It is a bad idea."}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert len(texts) == len(split_steps(row["safe_continuation"]))
    assert all(text.count(DEFAULT_TRIGGERS[0]) == 1 and request in text for text in texts)


def test_no_compliance_step_policies():
    tokenizer = build_tiny_tokenizer("qwen3")
    row = {
        "prompt": "Tell me how to hack an email account.",
        "response": "<think>\nThe user wants access to an account.\n</think>\n\nSure, here is how: Step 1: phish them.",
        "safe_continuation": "I will not do this.\n</think>\n\nI can't help with that.",
        "harmful": 1,
    }
    skip = IPOPairBuilder(tokenizer, IPOConfig(continuation="supplied"))
    assert len(skip.build([row], show_progress=False)) == 0 and skip.stats["no_compliance_step"] == 1
    end = IPOPairBuilder(tokenizer, IPOConfig(continuation="supplied", on_no_compliance="end_of_reasoning"))
    pair = end.build([row], show_progress=False)[0]
    # The trace had one step and no compliance cue in it, but the answer complies: cut before the closing tag
    assert pair["ipo_step"] == 1
    assert pair["prompt"].endswith("The user wants access to an account.")
    assert pair["rejected"] == "\n</think>\n\nSure, here is how: Step 1: phish them."
    assert pair["chosen"].startswith(" " + DEFAULT_TRIGGERS[0])


def test_whole_chain_baseline_moves_the_prefix_into_both_completions():
    tokenizer = build_tiny_tokenizer("qwen3")
    request, steps, sep, h = TRACES[0]
    config = IPOConfig(continuation="supplied", loss_from_intervention=False)
    pair = build_ipo_pairs(_rows()[:1], tokenizer, config=config, show_progress=False)[0]
    assert pair["prompt"] == reasoning_start_text(tokenizer, [{"role": "user", "content": request}])
    prefix = sep.join(steps[:h])
    assert pair["chosen"].startswith(prefix) and pair["rejected"].startswith(prefix)
    assert DEFAULT_TRIGGERS[0] in pair["chosen"]


def test_unsafe_supplied_continuation_is_dropped_and_bad_input_fails():
    tokenizer = build_tiny_tokenizer("qwen3")
    rows = _rows()[:2]
    rows[1]["safe_continuation"] = "Here is how to do it.\n</think>\n\nStep 1: gather the materials."
    builder = IPOPairBuilder(tokenizer, IPOConfig(continuation="supplied"))
    assert len(builder.build(rows, show_progress=False)) == 1
    assert builder.stats["unsafe_supplied_continuation"] == 1
    rows[1]["safe_continuation"] = "I will stop here."  # never closes the reasoning
    with pytest.raises(ValueError, match="Row 1: the supplied continuation .* has no closing think tag"):
        builder.build(rows, show_progress=False)
    with pytest.raises(ValueError, match="Invalid `trigger_selection`: 'all'"):
        IPOConfig(trigger_selection="all")
    with pytest.raises(ValueError, match="'model' generates the text after the trigger, but no model was given"):
        IPOPairBuilder(tokenizer, IPOConfig(continuation="model"))
    with pytest.raises(ValueError, match="Row 0 has no column 'response'"):
        IPOPairBuilder(tokenizer, IPOConfig(continuation="supplied")).build([{"prompt": "x"}], show_progress=False)


def test_template_bos_is_not_doubled_when_the_tokenizer_adds_one(tiny_model_dirs):
    from tokenizers.processors import TemplateProcessing

    # DeepSeek-R1 distills: the template writes the BOS and the tokenizer adds one too when tokenizing text
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dirs["r1"])
    bos, bos_id = tokenizer.bos_token, tokenizer.bos_token_id
    tokenizer._tokenizer.post_processor = TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, bos_id)])
    assert tokenizer("a")["input_ids"][0] == bos_id
    pair = build_ipo_pairs(_rows()[:1], tokenizer, config=IPOConfig(continuation="supplied"), show_progress=False)[0]
    assert not pair["prompt"].startswith(bos)
    ids = tokenizer(pair["prompt"] + pair["chosen"])["input_ids"]
    assert ids.count(bos_id) == 1 and ids[0] == bos_id  # what TRL's text path tokenizes: one BOS
    # Generation tokenizes without special tokens: there the BOS is put back in front of the prompt text
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["r1"])
    generation = {"backend": "transformers", "max_new_tokens": 2, "show_progress": False}
    builder = IPOPairBuilder(tokenizer, IPOConfig(drop_unfinished=False), model=model, generation_kwargs=generation)
    pair = builder.build(_rows()[:1], show_progress=False)[0]
    head = pair["chosen"][: pair["chosen"].index(pair["ipo_trigger"]) + len(pair["ipo_trigger"])]
    expected = generate_responses_from_texts(model, tokenizer, [bos + pair["prompt"] + head], **generation)[0]
    assert pair["chosen"] == head + expected.rstrip()


class _FlagGeneratedText(StepJudge):
    """Flags the known compliance steps of the original traces, and every step of generated continuations (a tiny
    random model writes no trigger words), recording each call."""

    def __init__(self):
        self.calls: list[list[list[str]]] = []
        self.contexts: list[list[str] | None] = []

    def score(self, prompts, steps, contexts=None):
        self.calls.append([list(trace) for trace in steps])
        self.contexts.append(None if contexts is None else list(contexts))
        known = {t[1][t[3]] for t in TRACES}
        if len(self.calls) == 1:
            return [[1.0 if step in known else 0.0 for step in trace] for trace in steps]
        return [[1.0] * len(trace) for trace in steps]


def test_model_continuations_and_re_intervention(tiny_model_dirs):
    path = tiny_model_dirs["qwen3"]
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    generation = {"backend": "transformers", "max_new_tokens": 8, "batch_size": 4, "show_progress": False}
    config = IPOConfig(continuation="model", drop_unfinished=False, max_interventions=1)
    builder = IPOPairBuilder(tokenizer, config, model=model, generation_kwargs=generation, step_judge=CueStepJudge())
    pairs = builder.build(_rows()[:2], show_progress=False)
    # Greedy decoding: the chosen completion is the trigger followed by exactly what the model generates after it
    for pair in pairs:
        head = pair["chosen"][: pair["chosen"].index(pair["ipo_trigger"]) + len(pair["ipo_trigger"])]
        expected = generate_responses_from_texts(model, tokenizer, [pair["prompt"] + head], **generation)[0]
        assert pair["chosen"] == head + expected.rstrip()
    # Still unsafe after a continuation: cut again, trigger again, regenerate; unsafe after the last round: dropped
    judge = _FlagGeneratedText()
    config = IPOConfig(continuation="model", drop_unfinished=False, max_interventions=2)
    builder = IPOPairBuilder(tokenizer, config, model=model, generation_kwargs=generation, step_judge=judge)
    assert len(builder.build(_rows()[:2], show_progress=False)) == 0
    assert builder.stats["unsafe_continuation"] == 2 and len(judge.calls) == 3  # original traces + 2 rounds
    # Each round's continuation is judged after the reasoning prefix and that round's trigger (the second round's
    # context holds the first trigger too): the original traces have no context
    first, second = DEFAULT_TRIGGERS[0], DEFAULT_TRIGGERS[1]
    prefix = " ".join(TRACES[0][1][: TRACES[0][3]])
    assert judge.contexts[0] is None
    assert judge.contexts[1][0] == f"{prefix} {first}"
    assert judge.contexts[2][0] == f"{prefix} {first} {second}"


@pytest.mark.parametrize("style", STYLES)
def test_ipo_pairs_train_in_presafety_dpo(tiny_model_dirs, tmp_path, style):
    from trl_presafety import PreSafetyDPOConfig, PreSafetyDPOTrainer
    from trl_presafety.modeling import get_safety_head

    path = tiny_model_dirs[style]
    tokenizer = AutoTokenizer.from_pretrained(path)
    # The head reads the safe model's decision, carried from the traces (it answered the first harmful prompt)
    rows = [dict(row, safety_label=int(i > 0)) for i, row in enumerate(_rows())] + [
        {
            "prompt": "What is 4 + 4?",
            "response": "<think>\nAdd. 4 + 4 = 8.\n</think>\n\nThe answer is \\boxed{8}.",
            "harmful": 0,
            "safety_label": 0,
        }
    ]
    pairs = build_ipo_pairs(rows, tokenizer, config=IPOConfig(continuation="supplied"), show_progress=False)
    assert pairs["harmful"] == [1, 1, 1, 1, 1, 0] and pairs["safety_label"] == [0, 1, 1, 1, 1, 0]
    model = AutoModelForCausalLM.from_pretrained(path)  # loaded from a folder: DPO builds its reference from it
    args = PreSafetyDPOConfig(
        output_dir=str(tmp_path),
        presafety_anchor="think_end",  # the pair's prompt ends inside the CoT: read the think tag in the prompt
        loss_type=["sigmoid", "sft"],  # IPO adds an SFT term on the chosen trace
        loss_weights=[1.0, 0.2],
        per_device_train_batch_size=3,
        max_steps=3,
        learning_rate=1e-2,
        max_length=192,
        gradient_checkpointing=False,
        logging_steps=1,
        **CPU_TRAINING_KWARGS,
    )
    trainer = PreSafetyDPOTrainer(model=model, args=args, train_dataset=pairs, processing_class=tokenizer)
    # The anchor is the opening think tag inside each pair's prompt (never inside the completions)
    think_id = tokenizer.convert_tokens_to_ids("<think>")
    data = trainer.train_dataset
    for prompt_ids, position in zip(data["prompt_ids"], data["presafety_position"], strict=True):
        assert 0 <= position < len(prompt_ids) and prompt_ids[position] == think_id
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {name for name, p in trainer.model.named_parameters() if not torch.equal(before[name], p.detach())}
    assert any(name.startswith("safety_head") for name in changed)
    assert any("layers.0" in name for name in changed)  # the LM itself is trained, not only the head
    assert get_safety_head(trainer.model) is not None
    logged = [log for log in trainer.state.log_history if "presafety/loss" in log]
    assert logged and all(torch.isfinite(torch.tensor(log["loss"])) for log in logged)


def test_build_ipo_pairs_cli_on_bundled_traces(tiny_model_dirs, tmp_path):
    from trl_presafety.scripts.build_ipo_pairs import main

    traces = TINY_DATA_DIR / "ipo" / "traces"
    stats = main(
        [
            "--dataset_name",
            str(traces),
            "--tokenizer_name_or_path",
            tiny_model_dirs["qwen3"],
            "--continuation",
            "supplied",
            "--output_dir",
            str(tmp_path),
        ]
    )
    assert stats["harmful_pairs"] == 40 and stats["benign_pairs"] == 20 and stats["pairs"] == 60
    source = [json.loads(line) for line in (traces / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    written = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    for pair in written:
        row = source[pair["ipo_source_index"]]
        assert pair["ipo_step"] == (row["compliance_step"] if row["compliance_step"] is not None else -1)
        # Intervened by harmfulness; the decision travels along for the head
        assert pair["ipo_kind"] == ("harmful" if row["harmful"] else "benign")
        assert (pair["harmful"], pair["safety_label"]) == (row["harmful"], row["safety_label"])
    # The imagined safe model answered two harmful prompts and refused two benign ones: the two columns differ there
    assert sum(p["ipo_kind"] == "harmful" and p["safety_label"] == 0 for p in written) == 2
    assert sum(p["ipo_kind"] == "benign" and p["safety_label"] == 1 for p in written) == 2
    assert json.loads((tmp_path / "ipo_stats.json").read_text())["stats"] == stats
    # The bundled pairs are what this command writes for the tiny Qwen3 tokenizer
    bundled = Path(TINY_DATA_DIR / "ipo" / "qwen3" / "train.jsonl").read_text(encoding="utf-8")
    assert bundled == (tmp_path / "train.jsonl").read_text(encoding="utf-8")


def test_build_ipo_pairs_cli_with_a_guard_step_judge(tmp_path):
    """`--step_judge guard`: the guard is loaded from `--guard_model`, reads each reasoning prefix with its chat
    template and generates its verdict; the verdicts decide the cut (and the re-check of the continuation)."""
    from trl_presafety.scripts.build_ipo_pairs import main

    from .test_judges import build_scripted_guard

    def run(verdict: str, *extra: str) -> tuple[dict, list[dict]]:
        guard = build_scripted_guard(tmp_path / verdict.strip(), verdict)  # says `verdict` to every prompt
        # Some verdicts drop every harmful pair on purpose: write them anyway (`--allow_empty_class`)
        output_dir = tmp_path / f"pairs-{verdict.strip()}"
        stats = main(
            ["--dataset_name", str(TINY_DATA_DIR / "ipo" / "traces"), "--max_samples", "6",
             "--tokenizer_name_or_path", guard, "--continuation", "supplied", "--step_judge", "guard",
             "--guard_model", guard, "--output_dir", str(output_dir), "--allow_empty_class", *extra]
        )  # fmt: skip
        lines = (output_dir / "train.jsonl").read_text(encoding="utf-8").splitlines()
        return stats, [json.loads(line) for line in lines]

    # "unsafe" from the first step on: every trace has a compliance step, and the supplied continuation is unsafe too
    stats, pairs = run(" unsafe")
    assert stats["harmful_rows"] == 6 and stats["no_compliance_step"] == 0
    assert stats["unsafe_supplied_continuation"] == 6 and pairs == []
    # "safe" everywhere: no compliance step in the reasoning; the complying answer puts the cut before </think>
    stats, pairs = run(" safe", "--on_no_compliance", "end_of_reasoning")
    assert stats["harmful_pairs"] == 6 and stats["no_compliance_step"] == 0
    assert all(p["ipo_step"] == p["ipo_num_steps"] > 0 for p in pairs)
    assert all(p["rejected"].lstrip().startswith("</think>") for p in pairs)
    stats, pairs = run(" safe")
    assert stats["no_compliance_step"] == 6 and pairs == []
    # `--guard_format` picks the parser: read as WildGuard, "unsafe" is no verdict at all (unparsed), so no step is
    # the compliance step
    stats, pairs = run(" unsafe", "--guard_format", "wildguard")
    assert stats["no_compliance_step"] == 6 and pairs == []


def test_tiny_ipo_recipe_trains(tiny_model_dirs, tmp_path):
    from trl_presafety.scripts.dpo import main

    recipe = Path(__file__).parent.parent / "recipes" / "tiny" / "dpo" / "config_ipo.yaml"
    trainer = main(
        [
            "--config",
            str(recipe),
            "--model_name_or_path",
            tiny_model_dirs["qwen3"],
            "--output_dir",
            str(tmp_path),
            "--max_steps",
            "2",
            "--logging_steps",
            "1",
        ]
    )
    assert trainer.args.presafety_anchor == "think_end" and trainer.args.loss_type == ["sigmoid", "sft"]
    assert trainer.args.presafety_label_column == "safety_label"  # the head reads the decision, IPO read `harmful`
    head_losses = [log["presafety/loss"] for log in trainer.state.log_history if "presafety/loss" in log]
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(head_losses) == len(losses) == 2 and all(math.isfinite(v) and v > 0 for v in head_losses + losses)
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["qwen3"]).state_dict()
    trained = {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}
    layer = [k for k in initial if "layers.0." in k and k.endswith("proj.weight")]
    assert layer and all(not torch.equal(initial[k], trained[k]) for k in layer)  # the LM trained, not only the head
