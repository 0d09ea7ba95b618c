# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Self-generated safety SFT data: prompts in, prompt/completion rows (and preference pairs) out.

PreSafe (https://huggingface.co/papers/2603.17368) trains on data the reasoning model generates itself. For each
prompt (from [`trl_presafety.data.sources`]), with thinking on:

- **harmful prompts** are answered with *guidance* towards a safe decision, up to `num_samples` times: a safety policy
  in the prompt, as STAR-1 does (https://huggingface.co/papers/2504.01903: the policies are shown while the traces are
  generated, never in the training data, so the model learns to recall them), and/or a prefilled safety-aware opening
  of the reasoning, as SAFEPATH's safety primer (https://huggingface.co/papers/2505.14667, "Let's think about safety
  first."). A completion is kept only when its answer refuses and its reasoning is judged safe: the answer judge's
  verdict on the whole trace is not harmful and the step judge finds no compliance step in it (judges from
  [`trl_presafety.judges`]: `cues`, `classifier`, `guard`).
- **benign prompts** are answered without guidance; a completion is kept when its answer does not refuse and, for a
  math problem with a gold answer, is correct (`math-verify`).

A kept completion must be well formed: one closed think block with a non-empty trace, then a non-empty answer. The
first kept one of a prompt becomes its SFT row; a prompt without one gets no row (or, with `reference_fallback`, the
source's own trace when it passes the same checks). The guidance never reaches the output: the row's prompt is the
user's request alone, so the model learns to reason safely without being told to. A prefilled opening *is* kept at the
start of the reasoning by default (`keep_prefill`): the completion is then exactly the text that followed the prompt
the model saw, and the model learns to open harmful prompts' reasoning with it, which is SAFEPATH's training target.
Without it (`keep_prefill=False`) the trace starts mid-thought, on tokens conditioned on text the model never sees.

Preference pairs (`pairs=True`) take the same draws further: a harmful prompt's kept completion (chosen) against an
unguided completion judged unsafe (rejected: its answer or its trace harmful, or a compliance step); a benign prompt's
kept completion against one that refuses (drawn with the guidance, which makes over-refusals likelier, then without).
Both sides have a reasoning trace.

The settings of the draws and checks are [`BuildSFTConfig`] (`build_sft_config.py`).
"""

import hashlib
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..reasoning import THINK_CLOSE, THINK_OPEN, split_reasoning
from .build_sft_config import USER_POLICY_TEMPLATE, BuildSFTConfig


logger = logging.getLogger(__name__)

PROBLEMS = ("unclosed", "stray_think_tag", "no_reasoning", "no_answer")


def guided_messages(prompt: str, config: BuildSFTConfig) -> list[dict[str, str]]:
    """The chat a harmful prompt is answered from: the request with the safety policy (system or user turn)."""
    policy = config.policy
    if policy is None:
        return [{"role": "user", "content": prompt}]
    if config.safety_policy == "system":
        return [{"role": "system", "content": policy}, {"role": "user", "content": prompt}]
    return [{"role": "user", "content": USER_POLICY_TEMPLATE.format(policy=policy, prompt=prompt)}]


def generation_text(
    tokenizer: Any, prompt: str, guided: bool, config: BuildSFTConfig, chat_template_kwargs: dict | None = None
) -> tuple[str, str]:
    """The text generation continues, and the part of it that belongs to the assistant turn (the opening think tag
    and the prefill, when the prompt ends with them), which is put back in front of the generated text."""
    from ..reasoning import build_prompt, reasoning_start_text

    messages = guided_messages(prompt, config) if guided else [{"role": "user", "content": prompt}]
    text = build_prompt(tokenizer, messages, thinking=True, chat_template_kwargs=chat_template_kwargs)
    if not (guided and config.reasoning_prefill):
        return text, ""
    # After the opening think tag: R1-style templates end with it, Qwen3-style ones leave it to the completion
    start = reasoning_start_text(tokenizer, messages, chat_template_kwargs)
    full = start + config.reasoning_prefill
    return full, full[len(text) :] if full.startswith(text) else config.reasoning_prefill


@dataclass
class Candidate:
    """One completion of a prompt: drawn (`pool`: `"guided"` / `"unguided"`) or the source's (`"reference"`)."""

    pool: str
    text: str
    reasoning: str | None = None
    answer: str = ""
    problem: str | None = None
    answer_refusal: bool | None = None
    answer_harmful: bool | None = None
    reasoning_harmful: bool | None = None
    compliance_step: int | None = None
    correct: bool | None = None
    verdict_errors: list[str] = field(default_factory=list)

    @property
    def well_formed(self) -> bool:
        return self.problem is None

    def completion(self) -> str:
        """The assistant content of a training row: the format of the bundled data and of STAR-1's traces."""
        return f"{THINK_OPEN}\n{self.reasoning}\n{THINK_CLOSE}\n\n{self.answer}"

    def record(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("reasoning", "answer")}


def parse_candidate(text: str, pool: str, prefill: str | None = None, keep_prefill: bool = True) -> Candidate:
    """Splits a completion into trace and answer and says what makes it unusable, if anything: no closing think tag
    (`unclosed`, e.g. the token cap was hit), a stray think tag in the trace or the answer, an empty trace or answer."""
    split = split_reasoning(text)
    candidate = Candidate(pool=pool, text=text, reasoning=split.reasoning, answer=split.answer)
    reasoning = split.reasoning or ""
    if prefill and not keep_prefill and reasoning.startswith(prefill):
        reasoning = reasoning[len(prefill) :].strip()
    candidate.reasoning = reasoning
    if THINK_CLOSE not in text:  # the trace never ended (R1 style: the prompt opened it), or there was none
        candidate.problem = "unclosed"
    elif any(tag in reasoning for tag in (THINK_OPEN, THINK_CLOSE)) or any(
        tag in split.answer for tag in (THINK_OPEN, THINK_CLOSE)
    ):
        candidate.problem = "stray_think_tag"
    elif not reasoning:
        candidate.problem = "no_reasoning"
    elif not split.answer:
        candidate.problem = "no_answer"
    return candidate


def is_safe_refusal(candidate: Candidate) -> str | None:
    """`None` when a harmful prompt's completion may be kept, else why not."""
    if not candidate.well_formed:
        return candidate.problem
    if candidate.answer_refusal is None:
        return "answer_unjudged"
    if not candidate.answer_refusal:
        return "answer_not_refusal"
    if candidate.reasoning_harmful is None:
        return "reasoning_unjudged"
    if candidate.reasoning_harmful:
        return "unsafe_reasoning"
    if candidate.compliance_step is not None:
        return "compliance_step"
    return None


def is_unsafe(candidate: Candidate) -> bool:
    """Whether a harmful prompt's completion can be a pair's rejected side: well formed and judged unsafe somewhere."""
    if not candidate.well_formed:
        return False
    return bool(candidate.answer_harmful or candidate.reasoning_harmful or candidate.compliance_step is not None)


def is_helpful_answer(candidate: Candidate, gold: str | None, check_math: bool) -> str | None:
    """`None` when a benign prompt's completion may be kept, else why not."""
    if not candidate.well_formed:
        return candidate.problem
    if candidate.answer_refusal is None:
        return "answer_unjudged"
    if candidate.answer_refusal:
        return "refused"
    if gold is not None and check_math and not candidate.correct:
        return "wrong_answer"
    return None


def is_refusal(candidate: Candidate) -> bool:
    """Whether a benign prompt's completion can be a pair's rejected side: well formed, and its answer refuses."""
    return candidate.well_formed and candidate.answer_refusal is True


class CompletionJudges:
    """The checks of `build-sft`: an answer judge (refusal of the answer), a reasoning judge (harmfulness of the
    trace; the answer judge by default), an optional step judge (compliance steps) and `math-verify`."""

    def __init__(
        self,
        answer_judge: Any,
        reasoning_judge: Any = None,
        step_judge: Any = None,
        check_math: bool = True,
    ):
        self.answer_judge = answer_judge
        self.reasoning_judge = reasoning_judge or answer_judge
        self.step_judge = step_judge
        self.check_math = check_math

    def describe(self) -> dict[str, Any]:
        return {
            "answer": self.answer_judge.describe(),
            "reasoning": self.reasoning_judge.describe(),
            "steps": type(self.step_judge).__name__ if self.step_judge is not None else None,
            "math": self.check_math,
        }

    def judge(self, items: Sequence[tuple[Mapping[str, Any], Candidate]]) -> None:
        """Fills the verdicts of the well-formed candidates: the answer of all, the trace and its steps of those of
        harmful prompts, the math grade of those with a gold answer."""
        items = [(row, c) for row, c in items if c.well_formed]
        if not items:
            return
        verdicts = self.answer_judge.judge([row["prompt"] for row, _ in items], [c.answer for _, c in items])
        for (_, candidate), verdict in zip(items, verdicts, strict=True):
            candidate.answer_refusal, candidate.answer_harmful = verdict.refusal, verdict.harmful
            if verdict.error:
                candidate.verdict_errors.append(f"answer: {verdict.error}")
        harmful = [(row, c) for row, c in items if row["harmful"]]
        if harmful:
            prompts = [row["prompt"] for row, _ in harmful]
            verdicts = self.reasoning_judge.judge(prompts, [c.reasoning for _, c in harmful], kind="reasoning")
            for (_, candidate), verdict in zip(harmful, verdicts, strict=True):
                candidate.reasoning_harmful = verdict.harmful
                if verdict.error:
                    candidate.verdict_errors.append(f"reasoning: {verdict.error}")
            if self.step_judge is not None:
                from ..judges.steps import split_steps

                steps = [[s.text for s in split_steps(c.reasoning)] for _, c in harmful]
                for (_, candidate), first in zip(harmful, self.step_judge.first_compliance_steps(prompts, steps)):
                    candidate.compliance_step = first
        graded = [(row, c) for row, c in items if not row["harmful"] and row.get("answer") and self.check_math]
        if graded:
            from ..judges.math_grading import grade_math

            for row, candidate in graded:
                candidate.correct = grade_math(candidate.answer, row["answer"])["correct"]


class SFTRowBuilder:
    """Draws, checks and selects the completions of a batch of prompt rows (the work of one shard).

    Args:
        generate (`Callable[[list[str], int], list[str]]`): Prompt texts and a seed -> `num_samples` completions per
            text, grouped by text.
        tokenizer: The model's tokenizer (its chat template builds the prompts).
        config ([`BuildSFTConfig`]): Guidance and checks.
        judges ([`CompletionJudges`]): The checks.
        pairs (`bool`): Also build preference pairs.
        generate_thinking_off (`Callable[[list[str], int], list[str]]`, *optional*): Prompt texts (thinking off) and
            a seed -> one answer per text, greedy: the safe model of `config.self_routing`. Needed with it.
    """

    def __init__(
        self,
        generate: Callable[[list[str], int], list[str]],
        tokenizer: Any,
        config: BuildSFTConfig,
        judges: CompletionJudges,
        pairs: bool = False,
        chat_template_kwargs: dict[str, Any] | None = None,
        generate_thinking_off: Callable[[list[str], int], list[str]] | None = None,
    ):
        self.generate, self.tokenizer, self.config, self.judges = generate, tokenizer, config, judges
        self.pairs, self.chat_template_kwargs = pairs, chat_template_kwargs
        if config.self_routing and generate_thinking_off is None:
            raise ValueError(
                "`self_routing=True` needs `generate_thinking_off`, the safe model's (greedy) generation."
            )
        self.generate_thinking_off = generate_thinking_off

    def _safe_model_decisions(self, rows: list[dict[str, Any]], seed: int) -> list[tuple[str, int | None]]:
        """The safe model's answer (thinking off) to each prompt and its decision as the answer judge reads it: 1
        refused, 0 complied, `None` when the judge could not tell."""
        from ..reasoning import build_prompt

        if not rows:
            return []
        texts = [build_prompt(self.tokenizer, r["prompt"], False, self.chat_template_kwargs) for r in rows]
        answers = self.generate_thinking_off(texts, seed)
        if len(answers) != len(rows):
            raise RuntimeError(
                f"Expected one thinking-off answer for each of {len(rows)} prompts, got {len(answers)}."
            )
        verdicts = self.judges.answer_judge.judge([r["prompt"] for r in rows], list(answers))
        return [(a, None if v.refusal is None else int(v.refusal)) for a, v in zip(answers, verdicts, strict=True)]

    def _draw(self, rows: list[dict[str, Any]], guided: bool, seed: int) -> list[list[Candidate]]:
        if not rows:
            return []
        k = self.config.num_samples
        texts, prefixes = zip(
            *(
                generation_text(self.tokenizer, r["prompt"], guided, self.config, self.chat_template_kwargs)
                for r in rows
            )
        )
        outputs = self.generate(list(texts), seed)
        if len(outputs) != k * len(rows):
            raise RuntimeError(f"Expected {k} completions for each of {len(rows)} prompts, got {len(outputs)}.")
        prefill = self.config.reasoning_prefill if guided else None
        pool = "guided" if guided else "unguided"
        return [
            [
                parse_candidate(prefixes[i] + outputs[i * k + j], pool, prefill, self.config.keep_prefill)
                for j in range(k)
            ]
            for i in range(len(rows))
        ]

    def build(self, rows: list[dict[str, Any]], seed: int) -> tuple[list[dict], list[dict], list[dict], dict]:
        """Returns `(sft_rows, pair_rows, sample_records, stats)` for `rows` (prompt rows of the sources)."""
        harmful = [i for i, r in enumerate(rows) if r["harmful"]]
        benign = [i for i, r in enumerate(rows) if not r["harmful"]]
        guided_idx = harmful + (benign if self.pairs else [])
        unguided_idx = benign + (harmful if self.pairs else [])
        pools: dict[int, dict[str, list[Candidate]]] = defaultdict(dict)
        # Two seeds per shard: the guided and the unguided draws never share a sampling stream
        for pool, indices, pool_seed in (("guided", guided_idx, 2 * seed), ("unguided", unguided_idx, 2 * seed + 1)):
            for i, candidates in zip(indices, self._draw([rows[i] for i in indices], pool == "guided", pool_seed)):
                pools[i][pool] = candidates
        for i, row in enumerate(rows):
            if self.config.reference_fallback:
                for key, pool in (("reference_completion", "reference"), ("reference_rejected", "reference_rejected")):
                    if row.get(key):
                        pools[i][pool] = [parse_candidate(row[key], pool)]
        self.judges.judge([(rows[i], c) for i in pools for cs in pools[i].values() for c in cs])
        # The thinking-off draws get a stream of their own too
        decisions = self._safe_model_decisions(rows, 2 * seed + 10**6) if self.config.self_routing else None

        sft_rows, pair_rows, records = [], [], []
        stats: dict[str, Counter] = defaultdict(Counter)
        for i, row in enumerate(rows):
            counts = stats[row["category"]]
            counts["prompts"] += 1
            main_pool = "guided" if row["harmful"] else "unguided"
            drawn = pools[i].get(main_pool, [])
            chosen, origin = None, None
            for candidate in drawn:
                reason = self._keep_reason(row, candidate)
                counts["samples"] += 1
                counts[f"rejected:{reason}" if reason else "accepted_samples"] += 1
                if reason is None and chosen is None:
                    chosen, origin = candidate, "generated"
            if chosen is not None:
                counts["prompts_with_accepted_sample"] += 1
            else:
                for candidate in pools[i].get("reference", []):
                    reason = self._keep_reason(row, candidate)
                    counts[f"reference_not_kept:{reason}" if reason else "from_reference"] += 1
                    if reason is None:
                        chosen, origin = candidate, "reference"
            meta = {k: row.get(k) for k in ("harmful", "category", "source", "source_id")}
            sft_completion = None if chosen is None else chosen.completion()
            sft_origin = origin
            if decisions is not None:
                from .self_routing import SELF_ROUTED_COLUMN, closed_think_completion, thinking_off_answer_problem

                answer, label = decisions[i]
                counts[f"safe_model:{'unjudged' if label is None else ('refused' if label else 'complied')}"] += 1
                problem = thinking_off_answer_problem(answer)
                if label == 1 and problem is None:
                    sft_completion, sft_origin = closed_think_completion(answer), "self_routed"
                    counts["self_routed"] += 1
                elif label == 1:
                    counts[f"self_routing_kept_trace:{problem}"] += 1
                meta = {**meta, "safety_label": label, "safe_response": answer}
                meta[SELF_ROUTED_COLUMN] = sft_origin == "self_routed"
            if sft_completion is not None:
                counts["rows"] += 1
                sft_rows.append(
                    {
                        "prompt": [{"role": "user", "content": row["prompt"]}],
                        "completion": [{"role": "assistant", "content": sft_completion}],
                        **meta,
                        "origin": sft_origin,
                    }
                )
            if self.pairs and chosen is not None:
                rejected, rejected_origin = self._rejected(row, pools[i])
                if rejected is None:
                    counts["pairs_without_rejected"] += 1
                else:
                    counts["pairs"] += 1
                    counts[f"rejected_from_{rejected_origin}"] += 1
                    pair_rows.append(
                        {
                            "prompt": [{"role": "user", "content": row["prompt"]}],
                            "chosen": [{"role": "assistant", "content": chosen.completion()}],
                            "rejected": [{"role": "assistant", "content": rejected.completion()}],
                            **meta,
                            "chosen_origin": origin,
                            "rejected_origin": rejected_origin,
                        }
                    )
            for candidates in pools[i].values():
                for j, candidate in enumerate(candidates):
                    kept = candidate is chosen
                    records.append({"prompt_index": i, "sample": j, **candidate.record(), "kept": kept})
        return sft_rows, pair_rows, records, {name: dict(c) for name, c in stats.items()}

    def _keep_reason(self, row: Mapping[str, Any], candidate: Candidate) -> str | None:
        if row["harmful"]:
            return is_safe_refusal(candidate)
        return is_helpful_answer(candidate, row.get("answer"), self.judges.check_math)

    def _rejected(self, row: Mapping[str, Any], pools: Mapping[str, list[Candidate]]) -> tuple[Candidate | None, str]:
        # Harmful: an unguided draw judged unsafe. Benign: a refusal, guided draws first (likelier to over-refuse)
        order = ("unguided",) if row["harmful"] else ("guided", "unguided")
        test = is_unsafe if row["harmful"] else is_refusal
        for pool in order:
            for candidate in pools.get(pool, []):
                if test(candidate):
                    return candidate, "generated"
        for candidate in pools.get("reference_rejected", []):
            if test(candidate):
                return candidate, "reference"
        return None, ""


def fingerprint(value: Any) -> str:
    """A stable hash of JSON-serializable settings or rows, for the resume check."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def aggregate_stats(per_shard: Sequence[Mapping[str, Mapping[str, int]]]) -> dict[str, dict[str, Any]]:
    """Sums the shards' counts per category, adds a `total`, and the rates: `sample_acceptance_rate` (kept draws /
    draws), `prompt_acceptance_rate` (prompts with a kept draw / prompts) and `row_rate` (rows / prompts)."""
    totals: dict[str, Counter] = defaultdict(Counter)
    for shard in per_shard:
        for category, counts in shard.items():
            totals[category].update(counts)
            totals["total"].update(counts)
    result = {}
    for category in sorted(totals, key=lambda c: (c == "total", c)):
        counts = dict(sorted(totals[category].items()))
        prompts, samples = counts.get("prompts", 0), counts.get("samples", 0)
        counts["sample_acceptance_rate"] = counts.get("accepted_samples", 0) / samples if samples else None
        counts["prompt_acceptance_rate"] = counts.get("prompts_with_accepted_sample", 0) / prompts if prompts else None
        counts["row_rate"] = counts.get("rows", 0) / prompts if prompts else None
        result[category] = counts
    return result


def format_stats(stats: Mapping[str, Mapping[str, Any]], pairs: bool) -> str:
    """The acceptance table `build-sft` prints."""

    def rate(value: Any) -> str:
        return "-" if value is None else f"{value:.3f}"

    header = (
        "| category | prompts | draws | kept draws | draw acceptance | prompts with a kept draw | from reference |"
    )
    header += " rows |" + (" pairs |" if pairs else "")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for category, c in stats.items():
        line = (
            f"| {category} | {c.get('prompts', 0)} | {c.get('samples', 0)} | {c.get('accepted_samples', 0)} | "
            f"{rate(c['sample_acceptance_rate'])} | {c.get('prompts_with_accepted_sample', 0)} "
            f"({rate(c['prompt_acceptance_rate'])}) | {c.get('from_reference', 0)} | {c.get('rows', 0)} |"
        )
        lines.append(line + (f" {c.get('pairs', 0)} |" if pairs else ""))
    reasons = Counter()
    for key, value in stats.get("total", {}).items():
        if key.startswith("rejected:"):
            reasons[key.split(":", 1)[1]] += value
    if reasons:
        lines.append("")
        lines.append("Draws not kept, by reason: " + ", ".join(f"{k} {v}" for k, v in reasons.most_common()) + ".")
    return "\n".join(lines)


def output_features(pairs: bool, self_routing: bool = False) -> Any:
    """The columns of the SFT rows (or, with `pairs`, of the pairs): conversational prompt and completion(s), as the
    SFT and DPO recipes read them, with `harmful` and where each row comes from; with `self_routing`, also the safe
    model's decision and answer (`safety_label`, `safe_response`) and `self_routed`."""
    from datasets import Features, List, Value

    messages = List({"role": Value("string"), "content": Value("string")})
    sides = {"chosen": messages, "rejected": messages} if pairs else {"completion": messages}
    meta = {"harmful": Value("int64"), "category": Value("string"), "source": Value("string")}
    meta["source_id"] = Value("string")
    origins = ["chosen_origin", "rejected_origin"] if pairs else ["origin"]
    if self_routing:
        meta.update({"safety_label": Value("int64"), "safe_response": Value("string"), "self_routed": Value("bool")})
    return Features({"prompt": messages, **sides, **meta, **{name: Value("string") for name in origins}})
