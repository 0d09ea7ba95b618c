# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The settings of the IPO pair builder (`ipo.py`): where an unsafe trace is cut, the safety triggers, where the safe
continuation comes from, and the columns read."""

from dataclasses import dataclass, field

from ..harmfulness import HARMFUL_COLUMN, check_harmful_column_name
from ..judges import STEP_SPLITS
from ..validation import check_choice, check_range, fail


# Safety triggers in the style of IPO's: a short self-correction that turns the reasoning towards refusing.
DEFAULT_TRIGGERS = [
    "Wait, this request could cause serious harm, so I should not provide these details.",
    "Hold on, helping with this would be unsafe and possibly illegal, so I need to refuse.",
    "However, I have to consider safety first: this could hurt people, and I must not assist with it.",
]
DEFAULT_BENIGN_REFUSAL = "I'm sorry, but I can't help with that request."
CONTINUATION_SOURCES = ("model", "supplied")
TRIGGER_SELECTIONS = ("cycle", "random", "first")
NO_COMPLIANCE_POLICIES = ("skip", "end_of_reasoning")


@dataclass
class IPOConfig:
    r"""
    How [`build_ipo_pairs`] cuts unsafe traces and builds the pairs.

    > Data columns

    prompt_column (`str`, *optional*, defaults to `"prompt"`): The request (a string or chat messages).
    response_column (`str`, *optional*, defaults to `"response"`): The model's full response: reasoning (with or
        without its opening think tag) and answer, a string or one assistant message. Unsafe for harmful prompts, a
        normal answer for benign ones.
    harmful_column (`str`, *optional*, defaults to `"harmful"`): Harmfulness of the prompt, from its source (a
        harmful or benign set, a guard judge): 1 (the trace is intervened) or 0 (benign: a pair against
        over-refusal); a bool is accepted. Required on every row. Not `safety_label`: that is the safe model's
        decision, which the pairs carry along (with `safety_label_prob`) for the pre-CoT head.
    continuation_column (`str`, *optional*, defaults to `"safe_continuation"`): With `continuation="supplied"`, the
        text that follows the trigger: the rest of the reasoning, the closing think tag and the safe answer.
    refusal_column (`str`, *optional*, defaults to `"refusal"`): Refusal answer of a benign row's rejected completion;
        `benign_refusal` when the column is absent.

    > Intervention

    triggers (`list[str]`): Safety trigger sentences that replace the compliance step.
    trigger_selection (`str`, *optional*, defaults to `"cycle"`): `"cycle"` (row i gets trigger i mod n), `"random"`
        (seeded) or `"first"`.
    step_split (`str`, *optional*, defaults to `"sentence"`): How traces are split into steps: `"sentence"`, `"line"`
        or `"paragraph"`.
    on_no_compliance (`str`, *optional*, defaults to `"skip"`): When no reasoning step is a compliance step:
        `"skip"` the row, or `"end_of_reasoning"` (intervene before the closing tag when the answer itself complies).
    continuation (`str`, *optional*, defaults to `"model"`): `"model"` generates the text after the trigger with the
        reasoning model; `"supplied"` reads it from `continuation_column`.
    max_interventions (`int`, *optional*, defaults to `2`): Rounds of "cut at the next compliance step and trigger
        again" while a generated continuation is still unsafe; pairs still unsafe after them are dropped.
    drop_unfinished (`bool`, *optional*, defaults to `True`): Drop pairs whose generated continuation never closes
        the reasoning (the token cap was hit).
    loss_from_intervention (`bool`, *optional*, defaults to `True`): Put the shared reasoning prefix in the prompt, so
        the DPO loss covers only tokens from the intervention point on (IPO). `False` moves it into both completions:
        DPO on the whole chain, the paper's baseline.
    benign_refusal (`str`): Refusal answer of benign rows' rejected completions.
    seed (`int`, *optional*, defaults to `0`): Trigger selection (`"random"`).

    Decoding of generated continuations is set apart (`generation_kwargs` of [`IPOPairBuilder`], the
    `GenerationArguments` of `trl-presafety build-ipo-pairs`).
    """

    prompt_column: str = field(default="prompt", metadata={"help": "Column of the request (string or messages)."})
    response_column: str = field(
        default="response",
        metadata={"help": "Column of the full response (reasoning + answer): unsafe for harmful rows."},
    )
    harmful_column: str = field(
        default=HARMFUL_COLUMN,
        metadata={
            "help": "Column of the prompt's harmfulness (from its source, not the safe model's decision): 1 harmful "
            "(intervene), 0 benign (anti over-refusal pair)."
        },
    )
    continuation_column: str = field(
        default="safe_continuation",
        metadata={"help": "Column of the text following the trigger, for continuation='supplied'."},
    )
    refusal_column: str = field(
        default="refusal", metadata={"help": "Column of a benign row's refusal (the rejected answer), optional."}
    )
    triggers: list[str] = field(
        default_factory=lambda: list(DEFAULT_TRIGGERS),
        metadata={"help": "Safety trigger sentences that replace the compliance step."},
    )
    trigger_selection: str = field(
        default="cycle",
        metadata={"help": "Which trigger each row gets.", "choices": list(TRIGGER_SELECTIONS)},
    )
    step_split: str = field(
        default="sentence", metadata={"help": "How traces are split into steps.", "choices": list(STEP_SPLITS)}
    )
    on_no_compliance: str = field(
        default="skip",
        metadata={
            "help": "Rows with no compliance step in the reasoning: skip, or cut at the end of the reasoning when "
            "the answer complies.",
            "choices": list(NO_COMPLIANCE_POLICIES),
        },
    )
    continuation: str = field(
        default="model",
        metadata={"help": "Source of the text after the trigger.", "choices": list(CONTINUATION_SOURCES)},
    )
    max_interventions: int = field(
        default=2, metadata={"help": "Intervention rounds while a generated continuation is still unsafe, >= 1."}
    )
    drop_unfinished: bool = field(
        default=True, metadata={"help": "Drop pairs whose generated continuation never closes the reasoning."}
    )
    loss_from_intervention: bool = field(
        default=True,
        metadata={
            "help": "Shared reasoning prefix in the prompt (DPO loss from the intervention point on, IPO). False: "
            "DPO on the whole chain (baseline)."
        },
    )
    benign_refusal: str = field(
        default=DEFAULT_BENIGN_REFUSAL, metadata={"help": "Refusal answer of benign rows' rejected completions."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the random trigger selection."})

    def __post_init__(self):
        for name, allowed in (
            ("trigger_selection", TRIGGER_SELECTIONS),
            ("step_split", STEP_SPLITS),
            ("on_no_compliance", NO_COMPLIANCE_POLICIES),
            ("continuation", CONTINUATION_SOURCES),
        ):
            check_choice(name, getattr(self, name), allowed)
        if isinstance(self.triggers, str):
            self.triggers = [self.triggers]
        if not self.triggers or any(not t or not t.strip() for t in self.triggers):
            fail("triggers", self.triggers, "Give at least one non-empty trigger sentence.")
        check_range("max_interventions", self.max_interventions, 1, fix="Use at least 1 round.")
        check_harmful_column_name(self.harmful_column, "harmful_column")
