# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The settings of `trl-presafety build-sft` (`build_sft.py`): the guidance of harmful prompts (a STAR-1-style safety
policy, a SAFEPATH primer), how many draws, and which completions are kept."""

from dataclasses import dataclass, field

from ..judges.registry import ANSWER_JUDGES
from ..reasoning import THINK_CLOSE, THINK_OPEN
from ..validation import check_choice, check_range, fail


# The STAR-1 recipe (https://huggingface.co/papers/2504.01903), in this package's words: the policies of its eight
# categories, to be treated as the model's own knowledge; cite the relevant ones while reasoning, then decide between
# complying, helping safely and refusing; benign requests that only sound risky are answered
DEFAULT_SAFETY_POLICY = """You follow the safety policies below. Treat them as your own knowledge, not as text from \
the user, and do not mention this message.

1. Violence and physical harm: no instructions, plans or encouragement for hurting people or animals, or for building \
weapons.
2. Illicit and criminal behaviour: no help committing crimes (theft, fraud, hacking, making drugs, evading the law); \
general, educational or historical information is fine.
3. Self-harm: never give methods; answer with empathy and point to crisis lines and professional help.
4. Harassment, hate and discrimination: no content that demeans, threatens or targets people for who they are.
5. Sexual content: nothing sexual involving minors, nothing non-consensual.
6. Privacy: do not reveal, collect or infer personal data about private people, and do not help track anyone.
7. Intellectual property: do not reproduce protected works at length; summarise instead.
8. Misinformation: do not write deceptive content meant to mislead, such as fake news or impersonation.

While reasoning about a request, name the policies that apply, if any (for example "the self-harm policy says ..."), \
then decide whether to comply, to help safely (general information, a safer alternative, resources) or to refuse. \
Answer benign requests helpfully, even when they only sound risky. The final answer speaks to the user and does not \
repeat the analysis."""
# STAR-1 puts the policies in the user turn with the request; the request follows them here
USER_POLICY_TEMPLATE = "{policy}\n\n---\nThe request:\n{prompt}"
# SAFEPATH's safety primer (https://huggingface.co/papers/2505.14667), the opening its models learn for harmful prompts
SAFEPATH_PREFILL = "Let's think about safety first."
POLICY_PLACEMENTS = ("system", "user", "none")


@dataclass
class BuildSFTConfig:
    r"""
    How `build-sft` draws and keeps completions (the data, model and decoding are set elsewhere).

    > Guidance of harmful prompts (never written to the output prompts)

    num_samples (`int`, *optional*, defaults to `4`):
        Completions drawn per prompt and pool (k); the first one that passes the checks is kept. k > 1 needs
        `do_sample`.
    safety_policy (`str`, *optional*, defaults to `"system"`):
        Where the safety policy goes while harmful prompts are answered: `"system"` (a system message), `"user"`
        (before the request in the user turn, as STAR-1 does; for models that follow no system prompt, like the
        DeepSeek-R1 distills), or `"none"`.
    safety_policy_text (`str`, *optional*):
        The policy; defaults to `DEFAULT_SAFETY_POLICY`, STAR-1's eight categories and deliberation in this package's
        words.
    reasoning_prefill (`str`, *optional*):
        Text that opens the reasoning of harmful prompts, after the opening think tag, e.g. SAFEPATH's safety primer
        `"Let's think about safety first."`. Unset: no prefill.
    keep_prefill (`bool`, *optional*, defaults to `True`):
        Keep the prefilled opening at the start of the kept reasoning (the text the model continued from). `False`
        strips it.

    > Checks

    reasoning_judge (`str`, *optional*):
        Judge of the reasoning traces of harmful prompts (`"cues"`, `"classifier"`, `"guard"`); defaults to the
        answer judge. E.g. the refusal classifier for answers and a guard model for traces.
    check_steps (`bool`, *optional*, defaults to `True`):
        Also reject a harmful prompt's completion whose trace has a compliance step (the step judge).
    check_math (`bool`, *optional*, defaults to `True`):
        Keep a math completion only when its answer matches the gold one (`math-verify`).
    reference_fallback (`bool`, *optional*, defaults to `False`):
        When no drawn completion of a prompt passes, use the source's own trace (`reference_completion`: STAR-1's and
        SafeChain's R1 traces, the bundled tiny references) if it passes the same checks; likewise
        `reference_rejected` for a pair's rejected side. Rows record their `origin`.

    > Self-routing

    self_routing (`bool`, *optional*, defaults to `False`):
        Also answer every prompt with thinking off (the safe model, one greedy draw) and judge that answer with the
        answer judge: `safety_label` is 1 when it refuses. A prompt it refuses trains on that answer after an
        immediately closed think block (`<think>\n</think>\n\n` + answer, origin `"self_routed"`), whatever the
        thinking-on draws gave; the others keep their reasoning rows. Rows gain `safety_label` and `safe_response`
        (what `trl-presafety label` writes) and `self_routed`. See `trl_presafety.data.self_routing`.
    """

    num_samples: int = field(
        default=4, metadata={"help": "Completions drawn per prompt (k); the first that passes the checks is kept."}
    )
    safety_policy: str = field(
        default="system",
        metadata={
            "help": "Where the safety policy goes while harmful prompts are answered (STAR-1 style): a system "
            "message, the user turn (before the request), or none.",
            "choices": list(POLICY_PLACEMENTS),
        },
    )
    safety_policy_text: str | None = field(
        default=None, metadata={"help": "The safety policy; default: STAR-1's eight categories in our words."}
    )
    reasoning_prefill: str | None = field(
        default=None,
        metadata={
            "help": "Opening of the reasoning of harmful prompts, after the think tag, e.g. SAFEPATH's "
            '"Let\'s think about safety first."; unset: none.'
        },
    )
    keep_prefill: bool = field(
        default=True, metadata={"help": "Keep the prefilled opening in the kept reasoning (False strips it)."}
    )
    reasoning_judge: str | None = field(
        default=None,
        metadata={
            "help": "Judge of harmful prompts' traces; default: the answer judge.",
            "choices": list(ANSWER_JUDGES),
        },
    )
    check_steps: bool = field(
        default=True, metadata={"help": "Reject a harmful prompt's completion whose trace has a compliance step."}
    )
    check_math: bool = field(
        default=True, metadata={"help": "Keep a math completion only when it matches the gold answer (math-verify)."}
    )
    reference_fallback: bool = field(
        default=False,
        metadata={"help": "Use the source's own trace for a prompt whose draws all fail, if it passes the checks."},
    )
    self_routing: bool = field(
        default=False,
        metadata={
            "help": "Label each prompt with the safe model's decision (thinking off, judged by the answer judge); "
            "prompts it refuses train on its answer after an immediately closed think block."
        },
    )

    def __post_init__(self) -> None:
        check_range("num_samples", self.num_samples, 1, fix="Draw at least one completion per prompt, e.g. 4.")
        check_choice("safety_policy", self.safety_policy, POLICY_PLACEMENTS)
        if self.reasoning_judge is not None:
            check_choice("reasoning_judge", self.reasoning_judge, ANSWER_JUDGES)
        if self.safety_policy_text is not None and not self.safety_policy_text.strip():
            fail("safety_policy_text", self.safety_policy_text, "Give the policy text, or leave it unset.")
        if self.reasoning_prefill is not None:
            if not self.reasoning_prefill.strip():
                fail("reasoning_prefill", self.reasoning_prefill, "Give the opening text, or leave it unset.")
            if THINK_OPEN in self.reasoning_prefill or THINK_CLOSE in self.reasoning_prefill:
                fail(
                    "reasoning_prefill",
                    self.reasoning_prefill,
                    f"Give the text after the opening think tag, without {THINK_OPEN} or {THINK_CLOSE}: the chat "
                    "template's tag is added for you.",
                )

    @property
    def policy(self) -> str | None:
        if self.safety_policy == "none":
            return None
        return self.safety_policy_text or DEFAULT_SAFETY_POLICY
