# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The `continuation_ratio` step judge: IPO's continuation-safety ratio (https://huggingface.co/papers/2509.24393),
sampled continuations after each step judged by an answer judge."""

from collections.abc import Callable, Sequence
from typing import Any

from ..reasoning import THINK_CLOSE, reasoning_start_text
from ..validation import fail
from .base import AnswerJudge, StepJudge, default_generate
from .cues import RefusalCueJudge
from .steps import prefix_text, user_text


class ContinuationRatioStepJudge(StepJudge):
    """The continuation-safety ratio proxy of IPO: after each step, sample `num_samples` continuations of the
    reasoning from the model and judge their final answers; the step's score is the share of *unsafe* continuations.

    The samples of one prefix are drawn in one request for `num_samples` sequences (`num_return_sequences`: vLLM's
    `n`, seeded `seed + j` per sample; transformers' `num_return_sequences`), so they differ. The prefix is the
    generation prompt, the context passed to `score` (IPO: reasoning prefix and trigger) and the steps so far.

    With the default `threshold=0.9`, the compliance step is the first one after which fewer than 10% of the
    continuations stay safe. Costly (steps x samples generations): cap the candidates with `max_steps`.

    Args:
        model: The reasoning model (the one whose traces are cut).
        tokenizer: Its tokenizer.
        answer_judge: P(refusal) per (prompt, answer); a refusal counts as a safe continuation. Defaults to
            [`RefusalCueJudge`].
        num_samples (`int`, *optional*, defaults to `4`): Continuations per candidate step.
        max_new_tokens (`int`, *optional*, defaults to `256`): Length of each continuation.
        temperature (`float`, *optional*, defaults to `0.7`): Sampling temperature of the continuations.
        max_steps (`int`, *optional*): Only the first `max_steps` steps are candidates (later ones score 1.0).
        chat_template_kwargs (`dict`, *optional*): For the prompt (e.g. `{"enable_thinking": True}`).
        generate_fn (`Callable`, *optional*): As in [`GuardStepJudge`]; called with `num_return_sequences=num_samples`,
            it returns that many samples per text, grouped by text.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        answer_judge: AnswerJudge | None = None,
        num_samples: int = 4,
        max_new_tokens: int = 256,
        temperature: float = 0.7,
        threshold: float = 0.9,
        max_steps: int | None = None,
        batch_size: int = 8,
        seed: int = 0,
        chat_template_kwargs: dict[str, Any] | None = None,
        generate_fn: Callable[..., list[str]] | None = None,
    ):
        if num_samples < 1:
            fail("num_samples", num_samples, "Sample at least 1 continuation per step.")
        self.model, self.tokenizer = model, tokenizer
        self.answer_judge = answer_judge or RefusalCueJudge()
        self.num_samples, self.max_new_tokens, self.temperature = num_samples, max_new_tokens, temperature
        self.threshold, self.max_steps, self.batch_size, self.seed = threshold, max_steps, batch_size, seed
        self.chat_template_kwargs = chat_template_kwargs
        self.generate_fn = generate_fn or default_generate

    def score(
        self, prompts: Sequence[Any], steps: Sequence[Sequence[str]], contexts: Sequence[str] | None = None
    ) -> list[list[float]]:
        texts, owners = [], []
        contexts = contexts or [None] * len(steps)
        for t, (prompt, trace, context) in enumerate(zip(prompts, steps, contexts, strict=True)):
            start = reasoning_start_text(self.tokenizer, prompt, self.chat_template_kwargs)
            limit = len(trace) if self.max_steps is None else min(len(trace), self.max_steps)
            for i in range(limit):
                texts.append(start + prefix_text(trace, i + 1, context))
                owners.extend([(t, i)] * self.num_samples)
        outputs = (
            self.generate_fn(
                self.model,
                self.tokenizer,
                texts,
                max_new_tokens=self.max_new_tokens,
                do_sample=True,
                temperature=self.temperature,
                batch_size=self.batch_size,
                seed=self.seed,
                num_return_sequences=self.num_samples,
            )
            if texts
            else []
        )
        if len(outputs) != len(owners):
            raise RuntimeError(
                f"The generation function returned {len(outputs)} continuations for {len(texts)} prefixes x "
                f"{self.num_samples} samples; it must return `num_return_sequences` samples per text, grouped by text."
            )
        # The final answer when the continuation closed its reasoning; else the unfinished reasoning itself (a
        # continuation that talks itself into refusing counts as safe)
        answers = [out.partition(THINK_CLOSE)[2].strip() if THINK_CLOSE in out else out for out in outputs]
        judge_prompts = [user_text(prompts[t]) for t, _ in owners]
        p_refusal = self.answer_judge.predict_proba(judge_prompts, answers) if answers else []
        safe = [[0 for _ in trace] for trace in steps]
        for (t, i), p in zip(owners, p_refusal, strict=True):
            safe[t][i] += int(p >= 0.5)
        scores = []
        for t, trace in enumerate(steps):
            limit = len(trace) if self.max_steps is None else min(len(trace), self.max_steps)
            scores.append([1.0 - safe[t][i] / self.num_samples if i < limit else 1.0 for i in range(len(trace))])
        return scores
