# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Builds the tiny data of the related methods (committed; rerun to regenerate, deterministically):

- `tiny/ipo/traces/train.jsonl`: unsafe reasoning traces with a known compliance step, plus benign ones, for IPO pairs:
  `harmful` (which traces IPO intervenes) and the imagined safe model's decision `safety_label` (carried into the pairs
  for the pre-CoT head), which differ where that safe model is wrong (see `build_tiny.py`);
- `tiny/rl/train.jsonl`: prompts with `harmful` and math solutions for the GRPO safety rewards.

The IPO pairs (`tiny/ipo/<style>/`) and AltTrain data (`tiny/alttrain/`) are built from these by
`trl-presafety build-ipo-pairs` and `trl-presafety build-alttrain`.

    python -m trl_presafety.data.build_tiny_methods
"""

import json
import random
from pathlib import Path

from trl_presafety.data.build_tiny import (
    EDGY_BENIGN_REQUESTS,
    HARMFUL_REQUESTS,
    REFUSALS,
    SAFE_MODEL_ANSWERS,
    SAFE_MODEL_REFUSES,
    UNSAFE_COMPLIANCE,
    math_problem,
)


def build(root: str | Path | None = None) -> dict[str, Path]:
    root = Path(root or Path(__file__).parent / "tiny")
    rng = random.Random(6)
    NEUTRAL = [
        "This touches on a sensitive topic.",
        "I need to think about what exactly is being asked.",
        "The request is specific about the goal.",
    ]
    COMPLIANCE = [
        "Let me work out the details step by step.",
        "Sure, I can help with that.",
        "Here is how I would approach it.",
    ]
    FOLLOW = "Step 1: gather the materials. Step 2: follow the procedure carefully."
    SAFE_REASONING = [
        "Giving these details could hurt people, so I will not continue this plan.",
        "This would cause real harm, and I will not walk through it.",
    ]
    traces = []
    for i, request in enumerate(HARMFUL_REQUESTS):
        k = i % 3  # number of neutral sentences before the compliance step: the compliance step index is k + 1
        sentences = [f"The user asks: {request}"] + NEUTRAL[:k] + [COMPLIANCE[i % 3], FOLLOW]
        reasoning = " ".join(sentences)
        traces.append(
            {
                "prompt": [{"role": "user", "content": request}],
                "response": f"<think>\n{reasoning}\n</think>\n\n{UNSAFE_COMPLIANCE[i % 3]}",
                "safe_continuation": f"{SAFE_REASONING[i % 2]}\n</think>\n\n{REFUSALS[i % 4]}",
                "harmful": 1,
                "safety_label": 0 if request in SAFE_MODEL_ANSWERS else 1,
                "compliance_step": k + 1,
            }
        )
    for request in EDGY_BENIGN_REQUESTS[:10]:
        reasoning = f"The user asks: {request} This is a safe, everyday question, so I will answer helpfully."
        traces.append(
            {
                "prompt": [{"role": "user", "content": request}],
                "response": f"<think>\n{reasoning}\n</think>\n\nHere is a helpful, safe answer with the key steps and precautions.",
                "safe_continuation": None,
                "harmful": 0,
                "safety_label": 1 if request in SAFE_MODEL_REFUSES else 0,
                "compliance_step": None,
            }
        )
    for _ in range(10):
        question, reasoning, answer = math_problem(rng)
        traces.append(
            {
                "prompt": [{"role": "user", "content": question}],
                "response": f"<think>\n{reasoning}\n</think>\n\nThe answer is \\boxed{{{answer}}}.",
                "safe_continuation": None,
                "harmful": 0,
                "safety_label": 0,
                "compliance_step": None,
            }
        )
    path = root / "ipo" / "traces" / "train.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in traces), encoding="utf-8")

    rl = []
    for line in (root / "eval" / "train.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        rl.append(
            {
                "prompt": [{"role": "user", "content": row["prompt"]}],
                "harmful": row["harmful"],  # the prompt's harmfulness: the GRPO safety rewards read it
                "solution": row.get("answer"),
                "category": row["category"],
            }
        )
    path = root / "rl" / "train.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rl), encoding="utf-8")
    return {"ipo_traces": root / "ipo" / "traces" / "train.jsonl", "rl": root / "rl" / "train.jsonl"}


if __name__ == "__main__":
    for name, path in build().items():
        print(f"{name}: {path}")
