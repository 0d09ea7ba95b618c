# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""AltTrain-style SFT data: reasoning that assesses safety before solving (https://huggingface.co/papers/2604.18946).

AltTrain argues that the safety risk of reasoning models lies in the structure of their reasoning, and fixes it with
plain SFT on about 1,000 examples (about 900 harmful, 100 benign) whose reasoning has three parts:

1. understanding: the first sentence(s) of the original reasoning;
2. a one-sentence harmfulness assessment;
3. harmful prompt: the reasoning stops there and the answer is a refusal. Benign prompt: the assessment clears the
   request, then the rest of the original reasoning and the original answer follow.

[`format_alttrain_example`] rewrites one SFT example (prompt + completion with a think block); [`build_alttrain_dataset`]
selects and rewrites a whole dataset. Harmful or benign is the harmfulness of the prompt (`harmful`, from its source),
never the safe model's decision (`safety_label`): a harmful prompt the safe model answered still gets the harmful
judgment and a refusal. The output keeps the input's format (conversational or plain text) and columns, so it trains
with `trl-presafety sft` as any SFT data (and with the pre-CoT head on the kept `safety_label`).
"""

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset
from tqdm.auto import tqdm

from ..harmfulness import HARMFUL_COLUMN, check_harmful_column, check_harmful_column_name, parse_harmful
from ..judges import STEP_SPLITS, AnswerJudge, RefusalCueJudge, split_steps
from ..reasoning import THINK_CLOSE, THINK_OPEN, split_reasoning
from ..validation import check_choice, check_range, fail
from .build_checks import check_class_balance, ratio_preserving_counts


logger = logging.getLogger(__name__)

DEFAULT_HARMFUL_ASSESSMENTS = [
    "Before solving it, I check whether this request is safe: it asks for help causing serious harm, so I must not assist.",
    "First, a safety check: answering would help someone hurt people or break the law, so I will not provide it.",
    "Let me assess the risk before going further: this request is harmful, so I should refuse it.",
]
DEFAULT_BENIGN_ASSESSMENTS = [
    "Before solving it, I check whether this request is safe: it is harmless, so I can help with it.",
    "First, a safety check: nothing here could cause harm, so I can go ahead and solve it.",
    "Let me assess the risk before going further: this request is benign, so I will answer it normally.",
]
DEFAULT_REFUSAL = "I'm sorry, but I can't help with that, because it could cause serious harm."
HARMFUL_ANSWER_POLICIES = ("auto", "original", "refusal")
ASSESSMENT_SELECTIONS = ("cycle", "random", "first")
MISSING_HARMFUL_POLICIES = ("error", "skip")
# AltTrain's harmful:benign mix (~900 + ~100), the reference ratio when all examples of a class are taken
ALTTRAIN_RATIO = {"harmful": 9, "benign": 1}


@dataclass
class AltTrainConfig:
    r"""
    How [`format_alttrain_example`] restructures reasoning.

    prompt_column (`str`, *optional*, defaults to `"prompt"`): The SFT prompt column.
    completion_column (`str`, *optional*, defaults to `"completion"`): The SFT completion column: a string or one
        assistant message, with a think block.
    harmful_column (`str`, *optional*, defaults to `"harmful"`): Harmfulness of the prompt, from its source: 1
        (harmful) or 0 (benign), or a bool. Not `safety_label`, the safe model's decision (kept in the output).
    understanding_sentences (`int`, *optional*, defaults to `1`): Sentences of the original reasoning kept before the
        assessment (the "understanding the problem" part); `0` opens the reasoning with the assessment.
    harmful_assessments (`list[str]`): One-sentence judgments for harmful prompts.
    benign_assessments (`list[str]`): One-sentence judgments for benign prompts.
    assessment_selection (`str`, *optional*, defaults to `"cycle"`): `"cycle"`, `"random"` (seeded) or `"first"`.
    harmful_answer (`str`, *optional*, defaults to `"auto"`): Answer of harmful examples: `"auto"` keeps the original
        answer when it is a refusal and uses `refusal_text` otherwise; `"original"` always keeps it; `"refusal"` always
        uses `refusal_text`.
    refusal_text (`str`): The refusal for harmful examples whose original answer complies.
    on_missing_harmful (`str`, *optional*, defaults to `"error"`): Rows whose harmfulness is empty (`None`): `"error"`
        or `"skip"`. Data without the column at all always fails.
    step_split (`str`, *optional*, defaults to `"sentence"`): What counts as a sentence of the reasoning.
    seed (`int`, *optional*, defaults to `0`): Assessment selection and sampling of examples.
    """

    prompt_column: str = field(default="prompt", metadata={"help": "Column of the request."})
    completion_column: str = field(
        default="completion", metadata={"help": "Column of the completion (reasoning in a think block + answer)."}
    )
    harmful_column: str = field(
        default=HARMFUL_COLUMN,
        metadata={"help": "Column of the prompt's harmfulness (from its source, not the safe model's decision): 1/0."},
    )
    understanding_sentences: int = field(
        default=1,
        metadata={"help": "Sentences of the original reasoning kept before the assessment (0: assessment first)."},
    )
    harmful_assessments: list[str] = field(
        default_factory=lambda: list(DEFAULT_HARMFUL_ASSESSMENTS),
        metadata={"help": "One-sentence harmfulness judgments for harmful prompts."},
    )
    benign_assessments: list[str] = field(
        default_factory=lambda: list(DEFAULT_BENIGN_ASSESSMENTS),
        metadata={"help": "One-sentence judgments that clear benign prompts."},
    )
    assessment_selection: str = field(
        default="cycle",
        metadata={"help": "Which assessment sentence each example gets.", "choices": list(ASSESSMENT_SELECTIONS)},
    )
    harmful_answer: str = field(
        default="auto",
        metadata={
            "help": "Answer of harmful examples: keep it if it refuses (auto), always keep it, or always refuse.",
            "choices": list(HARMFUL_ANSWER_POLICIES),
        },
    )
    refusal_text: str = field(
        default=DEFAULT_REFUSAL, metadata={"help": "Refusal for harmful examples whose answer complies."}
    )
    on_missing_harmful: str = field(
        default="error",
        metadata={"help": "Rows whose harmfulness is empty.", "choices": list(MISSING_HARMFUL_POLICIES)},
    )
    step_split: str = field(
        default="sentence",
        metadata={"help": "What counts as a sentence of the reasoning.", "choices": list(STEP_SPLITS)},
    )
    seed: int = field(default=0, metadata={"help": "Seed of assessment selection and example sampling."})

    def __post_init__(self):
        for name, allowed in (
            ("assessment_selection", ASSESSMENT_SELECTIONS),
            ("harmful_answer", HARMFUL_ANSWER_POLICIES),
            ("on_missing_harmful", MISSING_HARMFUL_POLICIES),
            ("step_split", STEP_SPLITS),
        ):
            check_choice(name, getattr(self, name), allowed)
        check_range(
            "understanding_sentences", self.understanding_sentences, 0, fix="Use 0 (assessment first) or more."
        )
        for name in ("harmful_assessments", "benign_assessments"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, [value])
            elif not value or any(not s or not s.strip() for s in value):
                fail(name, value, "Give at least one non-empty sentence.")
        if not self.refusal_text.strip():
            fail("refusal_text", self.refusal_text, "Give the refusal used for harmful examples.")
        check_harmful_column_name(self.harmful_column, "harmful_column")


def _completion_text(completion: Any, index: int, column: str) -> tuple[str, bool]:
    """The completion's text and whether it was conversational."""
    if isinstance(completion, str):
        return completion, False
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return completion[-1].get("content", ""), True
    raise ValueError(
        f"Row {index}: column '{column}' holds {type(completion).__name__}; expected the completion text or a list "
        "with one assistant message. Set `completion_column` to the right column."
    )


def _pick(options: Sequence[str], selection: str, index: int, rng: random.Random) -> str:
    if selection == "first":
        return options[0]
    if selection == "random":
        return rng.choice(options)
    return options[index % len(options)]


def restructure_reasoning(
    reasoning: str, assessment: str, harmful: bool, understanding_sentences: int, split: str
) -> str:
    """The AltTrain reasoning: understanding sentences, the assessment, then (benign only) the rest of the reasoning.

    The original text is kept byte for byte around the inserted sentence.

    Example:
    ```python
    >>> restructure_reasoning("Parse the question. Add 2 and 3.", "It is safe.", harmful=False,
    ...                       understanding_sentences=1, split="sentence")
    'Parse the question. It is safe. Add 2 and 3.'
    ```
    """
    steps = split_steps(reasoning, split)
    kept = steps[:understanding_sentences]
    cut = kept[-1].end if kept else 0
    head, tail = reasoning[:cut], reasoning[cut:]
    parts = head + (" " if head else "") + assessment
    if harmful or not tail.strip():
        return parts
    return parts + ("" if tail[:1].isspace() else " ") + tail


def format_alttrain_example(
    example: dict[str, Any],
    config: AltTrainConfig | None = None,
    index: int = 0,
    refusal_judge: AnswerJudge | None = None,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """Rewrites one SFT example so its reasoning assesses safety before solving (AltTrain).

    Returns a copy of `example` whose completion (same format as the input: string or assistant message) is
    `<think>\\n{understanding} {assessment}[ {rest of the reasoning}]\\n</think>\\n\\n{answer}`. Benign examples keep
    their answer; harmful ones keep it when it is a refusal (see `AltTrainConfig.harmful_answer`).

    Example:
    ```python
    >>> example = {"prompt": [{"role": "user", "content": "What is 2 + 3?"}],
    ...            "completion": [{"role": "assistant", "content": "<think>\\nAdd them. 2 + 3 = 5.\\n</think>\\n\\n5"}],
    ...            "harmful": 0}
    >>> format_alttrain_example(example, AltTrainConfig(benign_assessments=["It is safe."]))["completion"][0]["content"]
    '<think>\\nAdd them. It is safe. 2 + 3 = 5.\\n</think>\\n\\n5'
    ```
    """
    config = config or AltTrainConfig()
    rng = rng or random.Random(config.seed + index)
    for column in (config.prompt_column, config.completion_column):
        if column not in example:
            raise ValueError(
                f"Row {index} has no column '{column}' (columns: {sorted(example)}). Set `prompt_column` / "
                "`completion_column` to the SFT columns."
            )
    check_harmful_column(example, config.harmful_column, "AltTrain", "harmful_column")
    harmful = parse_harmful(example[config.harmful_column], config.harmful_column, index)
    if harmful is None:
        raise ValueError(
            f"Row {index} has no harmfulness in column '{config.harmful_column}' (got None); AltTrain needs to know "
            "whether the prompt is harmful. Fill it from the prompt's source (1 harmful, 0 benign), or set "
            "`on_missing_harmful='skip'`."
        )
    text, conversational = _completion_text(example[config.completion_column], index, config.completion_column)
    parsed = split_reasoning(text)
    if not parsed.closed:
        raise ValueError(
            f"Row {index}: the completion opens a think block and never closes it ({text[:80]!r}...), so it has no "
            "answer to keep. Drop truncated completions before formatting."
        )
    reasoning, answer = parsed.reasoning or "", parsed.answer
    assessments = config.harmful_assessments if harmful else config.benign_assessments
    assessment = _pick(assessments, config.assessment_selection, index, rng)
    new_reasoning = restructure_reasoning(
        reasoning, assessment, harmful, config.understanding_sentences, config.step_split
    )
    if harmful:
        judge = refusal_judge or RefusalCueJudge()
        keep = config.harmful_answer == "original" or (
            config.harmful_answer == "auto"
            and judge.predict_proba([example[config.prompt_column]], [answer])[0] >= 0.5
        )
        if not keep:
            answer = config.refusal_text
    new_text = f"{THINK_OPEN}\n{new_reasoning}\n{THINK_CLOSE}\n\n{answer}"
    output = dict(example)
    if conversational:
        message = dict(example[config.completion_column][-1])
        message["content"] = new_text
        output[config.completion_column] = [*example[config.completion_column][:-1], message]
    else:
        output[config.completion_column] = new_text
    return output


def _check_selection(
    counts: dict[str, int],
    available: dict[str, int],
    num_harmful: int | None,
    num_benign: int | None,
    allow_empty_class: bool,
    allow_inverted_ratio: bool,
) -> None:
    """Stops (or warns) when the sample lost a class it asked for or inverted the requested ratio."""
    if num_harmful is not None and num_benign is not None:
        expected, reference = {"harmful": num_harmful, "benign": num_benign}, "the requested counts"
    else:  # all of a class: AltTrain's own ratio is the reference (a class asked 0 times is not expected)
        wanted = {"harmful": num_harmful, "benign": num_benign}
        expected = {name: 0 if wanted[name] == 0 else ratio for name, ratio in ALTTRAIN_RATIO.items()}
        reference = "AltTrain's ~9:1"
    keep = ratio_preserving_counts(available, expected)
    if all(keep.values()):
        cause = (
            f"The data has {available['harmful']} harmful and {available['benign']} benign rows; "
            f"`num_harmful={keep['harmful']}, num_benign={keep['benign']}` (`--num_harmful {keep['harmful']} "
            f"--num_benign {keep['benign']}`) keeps the ratio."
        )
    else:
        cause = (
            f"The data has {available['harmful']} harmful and {available['benign']} benign rows: add rows of the "
            "missing class, or ask for none of it (`num_harmful=0` / `num_benign=0`)."
        )
    check_class_balance(
        counts,
        expected,
        what="AltTrain examples",
        reference=reference,
        cause=cause,
        allow_empty_class=allow_empty_class,
        allow_inverted_ratio=allow_inverted_ratio,
    )


def build_alttrain_dataset(
    dataset: Dataset | Sequence[dict[str, Any]],
    config: AltTrainConfig | None = None,
    num_harmful: int | None = 900,
    num_benign: int | None = 100,
    refusal_judge: AnswerJudge | None = None,
    show_progress: bool = True,
    allow_empty_class: bool = False,
    allow_inverted_ratio: bool = False,
) -> Dataset:
    """Selects up to `num_harmful` harmful and `num_benign` benign examples (seeded sample; `None` takes all) and
    rewrites them with [`format_alttrain_example`]; the result is shuffled. AltTrain trains on ~900 + ~100.

    The selection keeps the requested harmful:benign ratio or stops: when the data has fewer examples of a class than
    asked, taking all of them can invert it (the defaults, 900 + 100, on data with 40 harmful and 100 benign rows
    would give 40 + 100), and the error gives the counts that keep it. With `None` for either count, the reference is
    AltTrain's 9:1. A class asked for (`None` or > 0) that the data lacks stops too. `allow_inverted_ratio=True` /
    `allow_empty_class=True` go on with a warning instead.
    """
    config = config or AltTrainConfig()
    rng = random.Random(config.seed)
    rows = list(dataset)
    # Data without the column fails whatever `on_missing_harmful` says: skipping every row is no AltTrain data
    columns = {column for row in rows for column in row}
    check_harmful_column(columns, config.harmful_column, "AltTrain", "harmful_column")
    harmful, benign, skipped = [], [], 0
    for index, row in enumerate(rows):
        value = parse_harmful(row.get(config.harmful_column), config.harmful_column, index)
        if value is None:
            if config.on_missing_harmful == "skip":
                skipped += 1
                continue
            format_alttrain_example(row, config, index)  # raises with the row's index and the fix
        (harmful if value else benign).append(index)
    selected, counts = [], {}
    for name, indices, wanted in (("harmful", harmful, num_harmful), ("benign", benign, num_benign)):
        if wanted is not None and wanted < 0:
            raise ValueError(f"Invalid `num_{name}`: {wanted}. Use a count >= 0, or None for all.")
        if wanted is not None and wanted > len(indices):
            logger.warning(f"Asked for {wanted} {name} examples but the data has {len(indices)}; using all of them.")
        chosen = indices if wanted is None or wanted >= len(indices) else sorted(rng.sample(indices, wanted))
        selected.extend(chosen)
        counts[name] = len(chosen)
    available = {"harmful": len(harmful), "benign": len(benign)}
    _check_selection(counts, available, num_harmful, num_benign, allow_empty_class, allow_inverted_ratio)
    rng.shuffle(selected)
    formatted = [
        format_alttrain_example(rows[i], config, i, refusal_judge=refusal_judge, rng=rng)
        for i in tqdm(selected, desc="AltTrain formatting", disable=not show_progress)
    ]
    harmful_set = set(harmful)
    num_selected_harmful = sum(1 for i in selected if i in harmful_set)
    logger.info(
        f"AltTrain: {num_selected_harmful} harmful + {len(selected) - num_selected_harmful} benign examples "
        f"({skipped} without harmfulness skipped)."
    )
    return Dataset.from_list(formatted)
