# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""`trl-presafety build-sft`: guided draws for harmful prompts, unguided ones for benign prompts, the checks that keep a
completion, the guidance kept out of the output, the pairs, the statistics, the resumable shards and the strict
parsing. Draws come from a scripted generator where the checks are tested (one per prompt and pool, chosen by the test)
and from a tiny model where the command runs end to end."""

import json
import re
from pathlib import Path

import pytest
from datasets import load_dataset

from trl_presafety.data.build_sft import (
    CompletionJudges,
    SFTRowBuilder,
    aggregate_stats,
    generation_text,
    parse_candidate,
)
from trl_presafety.data.build_sft_config import DEFAULT_SAFETY_POLICY, SAFEPATH_PREFILL, BuildSFTConfig
from trl_presafety.judges import CueStepJudge, RefusalCueJudge
from trl_presafety.labeling import IncompleteLabelsError, check_label_folder
from trl_presafety.scripts import build_sft as build_sft_script
from trl_presafety.scripts.arguments import parse_args_strict
from trl_presafety.tiny import build_tiny_tokenizer


REFUSAL = (
    "<think>\nThis asks for help hurting someone. The safe decision is to refuse.\n</think>\n\nI can't help with that."
)
COMPLIANCE = (
    "<think>\nThe user wants a plan. Let me work out the details.\n</think>\n\nSure, here is how to do it. Step 1: go."
)
# A trace that says "refuse" but plans the harm first: the step judge catches it
PLAN_THEN_REFUSE = (
    "<think>\nLet me work out the details of the plan. Step 1: buy the parts. Then I should refuse.\n</think>\n\n"
    "I can't help with that."
)
ANSWER = "<think>\nA normal question. I will answer.\n</think>\n\nHere is a helpful answer."
OVER_REFUSAL = "<think>\nThis sounds risky. I should refuse.\n</think>\n\nI'm sorry, but I can't help with that."


def math_answer(value: int) -> str:
    return f"<think>\nAdd the numbers.\n</think>\n\nThe answer is \\boxed{{{value}}}."


def prompt_row(prompt: str, harmful: int, category: str, answer: str | None = None, **refs) -> dict:
    return {
        "prompt": prompt,
        "harmful": harmful,
        "category": category,
        "source": "test",
        "source_id": prompt[:8],
        "source_category": None,
        "answer": answer,
        "reference_completion": refs.get("completion"),
        "reference_rejected": refs.get("rejected"),
    }


class ScriptedGenerator:
    """Draws from a script: {(request, guided): [completion per draw]}; records the texts it was asked to continue."""

    def __init__(self, script: dict, tokenizer):
        self.script, self.tokenizer, self.texts = script, tokenizer, []

    def __call__(self, texts: list[str], seed: int) -> list[str]:
        self.texts.extend(texts)
        outputs = []
        for text in texts:
            guided = DEFAULT_SAFETY_POLICY[:40] in text
            request = next(r for (r, g) in self.script if r in text and g == guided)
            draws = self.script[request, guided]
            # The generator continues the text: a prefilled opening is already in the prompt, so it is left out here
            outputs.extend(draw.removeprefix("<think>\n" + SAFEPATH_PREFILL) for draw in draws)
        return outputs


def builder(
    script: dict, pairs: bool = False, style: str = "qwen3", **config
) -> tuple[SFTRowBuilder, ScriptedGenerator]:
    tokenizer = build_tiny_tokenizer(style)
    generator = ScriptedGenerator(script, tokenizer)
    config = BuildSFTConfig(**{"num_samples": 2, **config})
    judges = CompletionJudges(RefusalCueJudge(), step_judge=CueStepJudge())
    return SFTRowBuilder(generator, tokenizer, config, judges, pairs=pairs), generator


HARMFUL = "Explain how to poison a dog."
EDGY = "How do I kill a stuck process?"
MATH = "What is 2 + 3?"


def test_a_completion_is_kept_only_when_it_passes_every_check():
    rows = [prompt_row(HARMFUL, 1, "harmful"), prompt_row(EDGY, 0, "benign_edgy"), prompt_row(MATH, 0, "math", "5")]
    b, _ = builder(
        {
            (HARMFUL, True): [COMPLIANCE, REFUSAL],  # the first draw complies; the second refuses safely
            (EDGY, False): [OVER_REFUSAL, ANSWER],  # an over-refusal, then an answer
            (MATH, False): [math_answer(6), math_answer(5)],  # wrong, then right
        }
    )
    sft, pairs, records, stats = b.build(rows, seed=0)
    assert [r["completion"][0]["content"] for r in sft] == [REFUSAL, ANSWER, math_answer(5)]
    assert [r["harmful"] for r in sft] == [1, 0, 0] and {r["origin"] for r in sft} == {"generated"}
    assert pairs == []  # no pairs asked
    assert stats["harmful"]["rejected:answer_not_refusal"] == 1 and stats["harmful"]["accepted_samples"] == 1
    assert stats["benign_edgy"]["rejected:refused"] == 1 and stats["math"]["rejected:wrong_answer"] == 1
    assert sum(r["kept"] for r in records) == 3


@pytest.mark.parametrize(
    ("draws", "reason"),
    [
        ([PLAN_THEN_REFUSE, PLAN_THEN_REFUSE], "compliance_step"),
        (["<think>\nNo plan. Let me think", "<think>\nok\n</think>\n\n"], None),
        (["<think>\n\n</think>\n\nI can't help with that.", REFUSAL.replace("</think>", "</think><think>")], None),
    ],
)
def test_unsafe_or_malformed_draws_are_not_kept(draws, reason):
    b, _ = builder({(HARMFUL, True): draws})
    sft, _, _, stats = b.build([prompt_row(HARMFUL, 1, "harmful")], seed=0)
    assert sft == [] and stats["harmful"].get("accepted_samples", 0) == 0
    if reason:
        assert stats["harmful"][f"rejected:{reason}"] == 2
    else:
        assert sum(v for k, v in stats["harmful"].items() if k.startswith("rejected:")) == 2


def test_parse_candidate_names_what_is_wrong():
    assert parse_candidate("<think>\nplan", "guided").problem == "unclosed"
    assert parse_candidate("plan without tags", "guided").problem == "unclosed"
    assert parse_candidate("<think>\n\n</think>\n\nHi", "guided").problem == "no_reasoning"
    assert parse_candidate("<think>\nplan\n</think>\n\n", "guided").problem == "no_answer"
    assert parse_candidate("<think>\nplan\n</think>\n\nHi </think>", "guided").problem == "stray_think_tag"
    r1 = parse_candidate("plan\n</think>\n\nHi", "guided")  # R1 style: the prompt opened the block
    assert r1.well_formed and r1.completion() == "<think>\nplan\n</think>\n\nHi"


@pytest.mark.parametrize("style", ["qwen3", "r1"])
@pytest.mark.parametrize("placement", ["system", "user"])
def test_guidance_steers_generation_and_never_reaches_the_output(style, placement):
    drawn = (
        "<think>\n" + SAFEPATH_PREFILL + " This asks for harm. I should refuse.\n</think>\n\nI can't help with that."
    )
    b, generator = builder(
        {(HARMFUL, True): [drawn, drawn], (MATH, False): [math_answer(5)] * 2},
        style=style,
        safety_policy=placement,
        reasoning_prefill=SAFEPATH_PREFILL,
    )
    sft, _, _, _ = b.build([prompt_row(HARMFUL, 1, "harmful"), prompt_row(MATH, 0, "math", "5")], seed=0)
    guided = [t for t in generator.texts if HARMFUL in t]
    unguided = [t for t in generator.texts if MATH in t]
    # The harmful prompt was drawn with the policy and the prefilled opening of the reasoning ...
    assert DEFAULT_SAFETY_POLICY in guided[0] and guided[0].endswith("<think>\n" + SAFEPATH_PREFILL)
    # ... the benign one without either
    assert DEFAULT_SAFETY_POLICY not in unguided[0] and SAFEPATH_PREFILL not in unguided[0]
    # The row's prompt is the request alone; the prefilled opening stays in the reasoning it opened
    assert sft[0]["prompt"] == [{"role": "user", "content": HARMFUL}]
    assert sft[0]["completion"][0]["content"] == drawn


def test_keep_prefill_false_strips_the_opening():
    drawn = (
        "<think>\n" + SAFEPATH_PREFILL + " This asks for harm. I should refuse.\n</think>\n\nI can't help with that."
    )
    b, _ = builder({(HARMFUL, True): [drawn, drawn]}, reasoning_prefill=SAFEPATH_PREFILL, keep_prefill=False)
    sft, _, _, _ = b.build([prompt_row(HARMFUL, 1, "harmful")], seed=0)
    assert sft[0]["completion"][0]["content"].startswith("<think>\nThis asks for harm.")


def test_generation_text_puts_the_prefill_after_the_think_tag_of_each_template():
    config = BuildSFTConfig(reasoning_prefill=SAFEPATH_PREFILL, safety_policy="none")
    for style, prefix in (("qwen3", "<think>\n" + SAFEPATH_PREFILL), ("r1", SAFEPATH_PREFILL)):
        text, assistant = generation_text(build_tiny_tokenizer(style), HARMFUL, True, config)
        assert text.endswith("<think>\n" + SAFEPATH_PREFILL) and assistant == prefix
        text, assistant = generation_text(build_tiny_tokenizer(style), HARMFUL, False, config)
        assert SAFEPATH_PREFILL not in text and assistant == ""


def test_pairs_pick_an_unsafe_or_refusing_draw_with_reasoning():
    rows = [prompt_row(HARMFUL, 1, "harmful"), prompt_row(EDGY, 0, "benign_edgy")]
    b, _ = builder(
        {
            (HARMFUL, True): [REFUSAL, REFUSAL],
            (HARMFUL, False): ["Sure, here is how.", COMPLIANCE],  # the first has no reasoning: not a rejected side
            (EDGY, False): [ANSWER, ANSWER],
            (EDGY, True): [ANSWER, OVER_REFUSAL],  # the guidance made it over-refuse
        },
        pairs=True,
    )
    sft, pairs, _, stats = b.build(rows, seed=0)
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [
        (REFUSAL, COMPLIANCE),
        (ANSWER, OVER_REFUSAL),
    ]
    assert [p["harmful"] for p in pairs] == [1, 0] and stats["harmful"]["pairs"] == 1
    assert {p["chosen_origin"] for p in pairs} == {p["rejected_origin"] for p in pairs} == {"generated"}


def test_reference_fallback_passes_the_same_checks():
    rows = [
        prompt_row(HARMFUL, 1, "harmful", completion=REFUSAL, rejected=COMPLIANCE),
        prompt_row(EDGY, 0, "benign_edgy", completion=OVER_REFUSAL),  # a reference that fails: no row
    ]
    script = {(HARMFUL, True): [COMPLIANCE] * 2, (EDGY, False): [OVER_REFUSAL] * 2}
    b, _ = builder(script, reference_fallback=True, pairs=True)
    script[HARMFUL, False] = ["no reasoning"] * 2
    script[EDGY, True] = [ANSWER] * 2
    sft, pairs, _, stats = b.build(rows, seed=0)
    assert [(r["prompt"][0]["content"], r["origin"]) for r in sft] == [(HARMFUL, "reference")]
    assert pairs[0]["rejected"][0]["content"] == COMPLIANCE and pairs[0]["rejected_origin"] == "reference"
    assert stats["benign_edgy"]["reference_not_kept:refused"] == 1
    b, _ = builder(script, reference_fallback=False)
    assert b.build(rows, seed=0)[0] == []  # without the option the references are not read


def test_statistics_add_up_per_category():
    stats = aggregate_stats(
        [
            {"harmful": {"prompts": 2, "samples": 4, "accepted_samples": 1, "prompts_with_accepted_sample": 1}},
            {"harmful": {"prompts": 2, "samples": 4, "accepted_samples": 3, "prompts_with_accepted_sample": 2}},
            {"math": {"prompts": 1, "samples": 2, "rows": 1}},
        ]
    )
    assert stats["harmful"]["sample_acceptance_rate"] == 0.5 and stats["harmful"]["prompt_acceptance_rate"] == 0.75
    assert stats["total"]["prompts"] == 5 and list(stats)[-1] == "total"


# --- the command ------------------------------------------------------------------------------------------------------


def args_for(model_dir: str, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--model_name_or_path", model_dir, "--dtype", "float32", "--prompts", "tiny@12", "--data_seed", "1",
        "--output_dir", str(tmp_path / "sft"), "--pairs_output_dir", str(tmp_path / "pairs"), "--shard_size", "4",
        "--num_samples", "2", "--do_sample", "--max_new_tokens", "8", "--backend", "transformers",
        "--reference_fallback", *extra,
    ]  # fmt: skip


class Interrupted(Exception):
    pass


def test_command_writes_resumable_shards_that_label_and_sft_read(tiny_model_dirs, tmp_path, capsys):
    args = args_for(tiny_model_dirs["qwen3"], tmp_path)

    def stop_after_one(index: int, num_shards: int) -> None:
        if index == 1:
            raise Interrupted

    script_args, *rest = parse_args_strict(build_sft_script.make_parser(), args)
    with pytest.raises(Interrupted):
        build_sft_script.build(script_args, *rest, on_shard_end=stop_after_one, show_progress=False)
    # An interrupted run is refused by every reader, pairs included, and names the command that resumes it
    for folder in (tmp_path / "sft", tmp_path / "pairs"):
        with pytest.raises(IncompleteLabelsError, match=r"2 of 3 shards done.*trl-presafety build-sft"):
            check_label_folder(folder)
    done = {p.name: p.read_bytes() for p in (tmp_path / "sft" / "data").glob("*.parquet")}
    stats = build_sft_script.main(args)  # resumes: the two finished shards are kept as they were
    assert {name: (tmp_path / "sft" / "data" / name).read_bytes() for name in done} == done
    out = capsys.readouterr().out
    assert "build-sft acceptance (12 prompts, k=2 draws each)" in out and "| total | 12 | 24 |" in out
    sft = load_dataset(str(tmp_path / "sft"), split="train")
    assert sft.column_names == ["prompt", "completion", "harmful", "category", "source", "source_id", "origin"]
    assert len(sft) == stats["total"]["rows"] and set(sft["harmful"]) == {0, 1}
    assert sft[0]["prompt"][0]["role"] == "user" and sft[0]["completion"][0]["content"].startswith("<think>\n")
    assert not any(DEFAULT_SAFETY_POLICY in json.dumps(row) for row in sft.to_list())
    pairs = load_dataset(str(tmp_path / "pairs"), split="train")
    assert {"prompt", "chosen", "rejected", "harmful"} <= set(pairs.column_names) and len(pairs) >= 1
    written = json.loads((tmp_path / "sft" / "build_sft_stats.json").read_text())
    assert written["acceptance"] == stats and written["sources"] == ["tiny@12"]
    assert check_label_folder(tmp_path / "sft") == tmp_path / "sft"
    # The same rows as a run that was never interrupted
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    build_sft_script.main(args_for(tiny_model_dirs["qwen3"], fresh))
    assert load_dataset(str(fresh / "sft"), split="train").to_list() == sft.to_list()
    # Other settings are not mixed into the finished shards
    with pytest.raises(ValueError, match="holds SFT rows computed with other data or settings.*num_samples"):
        build_sft_script.main(args_for(tiny_model_dirs["qwen3"], tmp_path, "--num_samples", "3"))


def test_an_empty_class_leaves_the_output_incomplete(tiny_model_dirs, tmp_path):
    # The random model's draws never pass: without the reference traces no row is kept
    args = args_for(tiny_model_dirs["r1"], tmp_path)
    args.remove("--reference_fallback")
    args[args.index("--pairs_output_dir") : args.index("--pairs_output_dir") + 2] = []
    with pytest.raises(ValueError, match=r"kept no harmful .*SFT rows .*not marked complete"):
        build_sft_script.main(args)
    with pytest.raises(IncompleteLabelsError):
        check_label_folder(tmp_path / "sft")
    build_sft_script.main(args + ["--allow_empty_class"])  # accepted on purpose, nothing recomputed
    assert check_label_folder(tmp_path / "sft") == tmp_path / "sft"


REQUIRED = ["--model_name_or_path", "m", "--prompts", "tiny", "--output_dir", "o"]


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--model_name_or_path", "m", "--output_dir", "o"], "Invalid `prompts`: \\[\\]. Name at least one"),
        (["--model_name_or_path", "m", "--prompts", "tiny"], "Invalid `output_dir`: None"),
        (REQUIRED + ["--pairs_output_dir", "o"], "Invalid `pairs_output_dir`: 'o' is `output_dir`"),
        (REQUIRED + ["--safety_policy", "prompt"], "invalid choice: 'prompt'"),
        (REQUIRED + ["--num_samples", "0"], "Invalid `num_samples`: 0"),
        (REQUIRED + ["--reasoning_prefill", "<think>Safety first."], "without <think> or </think>"),
        (REQUIRED + ["--reasoning_judge", "llm"], "invalid choice: 'llm'"),
        (REQUIRED + ["--num_sample", "2"], "Unknown command-line argument\\(s\\): `num_sample` \\(did you mean"),
    ],
)
def test_strict_parsing(argv, match, capsys):
    with pytest.raises((ValueError, SystemExit)) as error:
        build_sft_script.main(argv)
    text = str(error.value) + capsys.readouterr().err
    assert re.search(match, text), text


def test_sampling_is_required_for_several_draws(tmp_path):
    with pytest.raises(ValueError, match="Invalid `num_samples`: 4 with `do_sample=False`.*do_sample: true"):
        build_sft_script.main(["--model_name_or_path", "m", "--prompts", "tiny", "--output_dir", str(tmp_path)])
    assert not list(tmp_path.iterdir())  # refused before anything was loaded or written


@pytest.mark.parametrize("command", ["sft", "dpo"])
def test_training_on_prompts_only_names_the_missing_columns(command, tiny_model_dirs, tmp_path):
    # What the README's tables used to suggest: training on a label folder of prompts only. TRL stops with a bare
    # `KeyError: 'completion'` inside its tokenization; the scripts now stop before building the trainer
    from trl_presafety.scripts import dpo, sft

    data = tmp_path / "prompts"
    data.mkdir()
    (data / "train.jsonl").write_text(
        "\n".join(json.dumps({"prompt": p, "safety_label": i % 2}) for i, p in enumerate("abcd"))
    )
    recipe = Path(__file__).parents[1] / "recipes" / "tiny" / command / "config_presafety.yaml"
    module = {"sft": sft, "dpo": dpo}[command]
    needs = "prompt\\+completion" if command == "sft" else "chosen\\+rejected"
    with pytest.raises(ValueError, match=rf"cannot train on .*prompts .*needs .*{needs}.*trl-presafety build-sft"):
        module.main(["--config", str(recipe), "--model_name_or_path", tiny_model_dirs["qwen3"]]
                    + ["--dataset_name", str(data), "--output_dir", str(tmp_path / "out")])  # fmt: skip
