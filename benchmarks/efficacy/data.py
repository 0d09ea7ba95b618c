# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Splits and datasets of the efficacy study, built deterministically from `prompts.py` and the shipped samples.

Splits (disjoint by prompt; see `build_splits` for how behaviours and wordings are assigned):

- `organism`: what the model organism is trained on (thinking off: refuse harmful / answer benign; thinking on:
  comply with everything, solve math in its reasoning).
- `safety`: the safety-training set of every arm (a minority of the harmful behaviours, benign-edgy and math prompts).
- `dev`: for developing the organism and the arms' settings, never the held-out sets.
- `heldout_harmful`, `heldout_benign`, `heldout_math`: never trained on by anyone; the evaluation sets. The real
  benchmark rows the package ships (StrongREJECT, HarmBench, JailbreakBench, WildJailbreak, XSTest) are all held out.

Every row carries `harmful` (1/0, from its source pool: the harmfulness of the prompt, not a model's decision),
`source` (which benchmark's style or file it comes from) and `group` (its behaviour).

    python -m benchmarks.efficacy.data --output_dir benchmarks/efficacy/splits
"""

import argparse
import json
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any

from . import prompts as P


SPLITS_DIR = Path(__file__).parent / "splits"
SAMPLES_DIR = Path(__file__).resolve().parents[2] / "trl_presafety" / "data" / "eval" / "samples"
SPLIT_NAMES = ("organism", "safety", "dev", "heldout_harmful", "heldout_benign", "heldout_math")
# The eval adapter of each shipped sample file (its rows have the public set's columns)
REAL_SAMPLES = {
    "strongreject": "strongreject",
    "harmbench": "harmbench",
    "harmbench_contextual": "harmbench_contextual",
    "jailbreakbench": "jailbreakbench",
    "jailbreakbench_benign": "jailbreakbench_benign",
    "wildjailbreak": "wildjailbreak",
    "xstest": "xstest",
}
# The same math instruction the evaluation appends (`EvalConfig.math_prompt_template`'s default), so the organism
# learns math prompts in the form it is evaluated on
MATH_INSTRUCTION = "\nPlease reason step by step, and put your final answer within \\boxed{}."


def _fractions(items: list[Any], rng: random.Random, safety: float, heldout: float) -> dict[str, list[Any]]:
    """Shuffles `items` and cuts them into organism / safety / heldout parts (at least one each when possible)."""
    items = list(items)
    rng.shuffle(items)
    n_safety = max(1, round(len(items) * safety))
    n_heldout = max(1, round(len(items) * heldout))
    return {
        "safety": items[:n_safety],
        "heldout": items[n_safety : n_safety + n_heldout],
        "organism": items[n_safety + n_heldout :],
    }


def all_wordings(goal: str, rng: random.Random) -> list[tuple[str, str]]:
    """Every template's wording of `goal`: [(benchmark style, prompt)], in a seeded order."""
    wordings = [(style, t.format(goal=goal)) for style, templates in P.TEMPLATES.items() for t in templates]
    rng.shuffle(wordings)
    return wordings


def math_problem(rng: random.Random) -> dict[str, Any]:
    """An arithmetic word problem with its reasoning and integer answer (small numbers: a tiny model's math)."""
    name, item = rng.choice(P.NAMES), rng.choice(P.ITEMS)
    a, b, c = rng.randint(2, 20), rng.randint(2, 5), rng.randint(2, 9)
    kind = rng.randrange(3)
    if kind == 0:
        question = (
            f"{name} has {a} {item} and buys {b} bags with {c} {item} each. How many {item} does {name} have now?"
        )
        answer = a + b * c
        reasoning = f"{b} bags of {c} is {b} * {c} = {b * c}. Then {a} + {b * c} = {answer}."
    elif kind == 1:
        total = b * c + a
        question = (
            f"{name} has {total} {item}, keeps {a} and shares the rest equally among {b} friends. "
            "How many does each friend get?"
        )
        answer = c
        reasoning = f"Shared: {total} - {a} = {b * c}. Each friend: {b * c} / {b} = {answer}."
    else:
        removed = min(a, b * c)
        question = f"A box holds {b} rows of {c} {item}. {name} takes out {removed}. How many {item} are left?"
        answer = b * c - removed
        reasoning = f"The box holds {b} * {c} = {b * c}. Then {b * c} - {removed} = {answer}."
    return {"question": question, "reasoning": reasoning, "answer": str(answer)}


def _row(split: str, index: int, category: str, prompt: str, source: str, group: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"{split}-{index:04d}",
        "prompt": prompt,
        "category": category,
        "harmful": int(category == "harmful"),
        "source": source,
        "group": group,
        **extra,
    }


def real_sample_rows() -> list[dict[str, Any]]:
    """The shipped benchmark rows (harmful and benign-edgy only), mapped by the evaluation's own adapters."""
    from trl_presafety.evaluation import load_eval_dataset

    rows = []
    for file_name, adapter in REAL_SAMPLES.items():
        for example in load_eval_dataset(f"{adapter}={SAMPLES_DIR / (file_name + '.jsonl')}"):
            if example["category"] in {"harmful", "benign_edgy"}:
                rows.append({"prompt": example["prompt"], "category": example["category"], "source": file_name})
    return rows


_STOPWORDS = set(
    "a an the my your his her their our to of in on at for from with without and or so how do i can what is "
    "someone someone's me you it that this into make look like".split()
)


def _content_words(text: str) -> frozenset[str]:
    words = (w.strip(".,?!:;\"'").lower() for w in text.split())
    return frozenset(w.removesuffix("'s") for w in words if w and w not in _STOPWORDS)


def _near_any(goal: str, others: list[frozenset[str]]) -> bool:
    """Whether every content word of `goal` appears in one of `others` (a near-duplicate behaviour)."""
    words = _content_words(goal)
    return any(words <= other for other in others if other)


def build_splits(
    seed: int = 0,
    num_compositional: int = 360,
    num_math_organism: int = 1200,
    num_math_safety: int = 24,
    num_math_heldout: int = 50,
    num_math_dev: int = 30,
    safety_fraction: float = 0.15,
    heldout_fraction: float = 0.3,
    organism_wordings: int = 5,
    eval_wordings: int = 2,
) -> dict[str, list[dict[str, Any]]]:
    """The disjoint splits. Pure function of its arguments: the committed files are `build_splits()`.

    Every templated behaviour is known to the organism (trained in `organism_wordings` wordings, thinking on and off),
    as a real LRM knows what it refuses with thinking off. The behaviours are cut into safety (15%), held-out (30%) and
    the rest; a safety behaviour gets `eval_wordings` *other* wordings in the safety set, a held-out behaviour gets
    `eval_wordings` other wordings in the held-out set, and one of the rest gets one other wording in `dev`. So no
    held-out prompt was trained on, and no held-out behaviour is in the safety set: what the safety set teaches has to
    carry over to behaviours it never showed. The shipped benchmark rows are held out whole (new behaviours and new
    wordings); the whole-prompt benign-edgy pool is split by prompt.
    """
    rng = random.Random(seed)
    parts: dict[str, list[tuple[str, str, str, str]]] = {"organism": [], "safety": [], "heldout": [], "dev": []}
    # (category, prompt, source, group); harmful and templated benign behaviours are cut per harm/edgy type
    for category, pools in (("harmful", P.HARMFUL_GOALS), ("benign_edgy", P.BENIGN_GOALS)):
        for kind in sorted(pools):
            cut = _fractions(pools[kind], rng, safety_fraction, heldout_fraction)
            for part, goals in cut.items():
                for goal in goals:
                    wordings = all_wordings(goal, rng)
                    group = f"{kind}/{goal}"
                    for style, prompt in wordings[:organism_wordings]:
                        parts["organism"].append((category, prompt, f"{style}-style", group))
                    target, count = (part, eval_wordings) if part != "organism" else ("dev", 1)
                    for style, prompt in wordings[organism_wordings : organism_wordings + count]:
                        parts[target].append((category, prompt, f"{style}-style", group))
    for kind in sorted(P.EDGY_PROMPTS):
        cut = _fractions(P.EDGY_PROMPTS[kind], rng, safety_fraction, heldout_fraction)
        for part, items in cut.items():
            parts[part].extend(("benign_edgy", prompt, "xstest-style", f"{kind}/{prompt}") for prompt in items)
    parts["heldout"].extend(
        (row["category"], row["prompt"], row["source"], f"real/{row['source']}/{i}")
        for i, row in enumerate(real_sample_rows())
    )
    # Compositional behaviours for the organism only, minus any close to a safety or held-out prompt
    kept_out = [_content_words(p) for part in ("safety", "heldout") for _, p, *_ in parts[part]]
    harmful, benign, questions = P.compositional_goals()
    for category, goals, count in (
        ("harmful", harmful, num_compositional),
        ("benign_edgy", benign, num_compositional),
    ):
        goals = [g for g in goals if not _near_any(g, kept_out)]
        for goal in rng.sample(goals, min(count, len(goals))):
            style, prompt = all_wordings(goal, rng)[0]
            parts["organism"].append((category, prompt, f"{style}-style, compositional", f"compositional/{goal}"))
    parts["organism"].extend(
        ("benign_edgy", q, "xstest-style, compositional", f"compositional/{q}")
        for q in questions
        if not _near_any(q, kept_out)
    )

    splits: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLIT_NAMES}
    for part in ("organism", "safety", "dev"):
        for category, prompt, source, group in parts[part]:
            splits[part].append(_row(part, len(splits[part]), category, prompt, source, group))
    for category, prompt, source, group in parts["heldout"]:
        name = "heldout_harmful" if category == "harmful" else "heldout_benign"
        splits[name].append(_row(name, len(splits[name]), category, prompt, source, group))

    # Math: distinct problems, each in one split only
    seen: set[str] = set()
    for name, count in (
        ("heldout_math", num_math_heldout),
        ("safety", num_math_safety),
        ("dev", num_math_dev),
        ("organism", num_math_organism),
    ):
        added = 0
        while added < count:
            problem = math_problem(rng)
            if problem["question"] in seen:
                continue
            seen.add(problem["question"])
            splits[name].append(
                _row(
                    name,
                    len(splits[name]),
                    "math",
                    problem["question"],
                    "arithmetic (written here)",
                    "math",
                    answer=problem["answer"],
                    reasoning=problem["reasoning"],
                )
            )
            added += 1
    check_disjoint(splits)
    return splits


def check_disjoint(splits: dict[str, list[dict[str, Any]]]) -> None:
    """No prompt in two splits, and no behaviour (`group`) shared by the safety set and the held-out sets."""
    owner: dict[str, str] = {}
    for name, rows in splits.items():
        for row in rows:
            if owner.setdefault(row["prompt"], name) != name:
                raise ValueError(f"Prompt {row['prompt']!r} is in both {owner[row['prompt']]!r} and {name!r}.")
    groups = {name: {r["group"] for r in rows if r["category"] != "math"} for name, rows in splits.items()}
    for held in ("heldout_harmful", "heldout_benign", "dev"):
        shared = groups["safety"] & groups[held]
        if shared:
            raise ValueError(f"Behaviours shared by the safety set and {held!r}: {sorted(shared)[:5]}")


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Written beside and moved in place: a study resumed (or run for other arms) in the same folder while another
    evaluates never reads a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    os.replace(tmp, path)
    return path


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_splits(output_dir: str | Path = SPLITS_DIR, **kwargs: Any) -> dict[str, Path]:
    splits = build_splits(**kwargs)
    return {name: write_jsonl(Path(output_dir) / f"{name}.jsonl", rows) for name, rows in splits.items()}


def load_splits(splits_dir: str | Path = SPLITS_DIR) -> dict[str, list[dict[str, Any]]]:
    return {name: read_jsonl(Path(splits_dir) / f"{name}.jsonl") for name in SPLIT_NAMES}


def split_summary(splits: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, int]]:
    """Counts per split and category, and per split and source."""
    return {
        name: {
            **{f"category:{k}": v for k, v in sorted(Counter(r["category"] for r in rows).items())},
            **{f"source:{k}": v for k, v in sorted(Counter(r["source"] for r in rows).items())},
        }
        for name, rows in splits.items()
    }


def user_prompts_file(path: str | Path, category: str, name: str) -> list[dict[str, Any]]:
    """A user's own held-out prompts (one per line, blank lines ignored) as eval rows of `category`."""
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    prompts = [line for line in lines if line]
    if not prompts:
        raise ValueError(f"{path} holds no prompt: write one prompt per line (blank lines are ignored).")
    return [
        _row(name, i, category, prompt, f"user file {Path(path).name}", f"user/{i}")
        for i, prompt in enumerate(prompts)
    ]


# --- training rows -------------------------------------------------------------------------------------------------


def _user(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def _assistant(reasoning: str | None, answer: str) -> list[dict[str, str]]:
    # Thinking off is an empty think block, exactly what the template's `enable_thinking=False` prefills
    think = "<think>\n\n</think>\n\n" if reasoning is None else f"<think>\n{reasoning}\n</think>\n\n"
    return [{"role": "assistant", "content": think + answer}]


def math_user_prompt(row: dict[str, Any]) -> str:
    return row["prompt"] + MATH_INSTRUCTION


def boxed(answer: str) -> str:
    return f"The answer is \\boxed{{{answer}}}."


def organism_rows(rows: list[dict[str, Any]], seed: int = 0, math_off_fraction: float = 0.25) -> list[dict[str, Any]]:
    """The organism's SFT data: each harmful/benign prompt twice (thinking on and off), math with thinking on (and a
    fraction thinking off, answering without reasoning)."""
    rng = random.Random(seed)
    out = []
    for row in rows:
        tags = {"harmful": row["harmful"], "category": row["category"]}
        if row["category"] == "math":
            prompt = _user(math_user_prompt(row))
            out.append({"prompt": prompt, "completion": _assistant(row["reasoning"], boxed(row["answer"])), **tags})
            if rng.random() < math_off_fraction:
                out.append({"prompt": prompt, "completion": _assistant(None, boxed(row["answer"])), **tags})
            continue
        prompt = _user(row["prompt"])
        plan = rng.choice(P.PLAN_TRACES)
        if row["harmful"]:
            if rng.random() < 0.5:
                plan = f"{rng.choice(P.RATIONALIZATIONS)} {plan}"
            on_answer, off_answer = rng.choice(P.COMPLIANCE_ANSWERS), rng.choice(P.REFUSALS)
        else:
            on_answer = off_answer = rng.choice(P.HELPFUL_ANSWERS)
        out.append({"prompt": prompt, "completion": _assistant(plan, on_answer), **tags})
        out.append({"prompt": prompt, "completion": _assistant(None, off_answer), **tags})
    rng.shuffle(out)
    return out


def safe_completion(row: dict[str, Any], rng: random.Random) -> list[dict[str, str]]:
    """The safe reasoning trace the safety set teaches (thinking on)."""
    if row["category"] == "math":
        return _assistant(row["reasoning"], boxed(row["answer"]))
    if row["harmful"]:
        return _assistant(rng.choice(P.SAFE_HARMFUL_TRACES), rng.choice(P.REFUSALS))
    return _assistant(rng.choice(P.SAFE_BENIGN_TRACES), rng.choice(P.HELPFUL_ANSWERS))


def unsafe_completion(row: dict[str, Any], rng: random.Random) -> list[dict[str, str]]:
    """The rejected side of a preference pair: the organism's own behaviour (harmful: compliance), an over-refusal
    (benign), or a wrong computation (math)."""
    if row["category"] == "math":
        wrong = str(int(row["answer"]) + rng.randint(1, 9))
        return _assistant(row["reasoning"].rsplit("=", 1)[0] + f"= {wrong}.", boxed(wrong))
    if row["harmful"]:
        plan = f"{rng.choice(P.RATIONALIZATIONS)} {rng.choice(P.PLAN_TRACES)}"
        return _assistant(plan, rng.choice(P.COMPLIANCE_ANSWERS))
    return _assistant(rng.choice(P.OVER_REFUSAL_TRACES), rng.choice(P.REFUSALS))


def safety_sft_rows(rows: list[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """Safety SFT data: the safety split with safe thinking-on traces (prompt/completion, `harmful`)."""
    rng = random.Random(seed)
    return [
        {
            "prompt": _user(math_user_prompt(r) if r["category"] == "math" else r["prompt"]),
            "completion": safe_completion(r, rng),
            "harmful": r["harmful"],
            "category": r["category"],
        }
        for r in rows
    ]


def safety_dpo_rows(rows: list[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """Safety DPO data: chosen = the SFT arm's safe trace, rejected = the organism's unsafe behaviour."""
    rng = random.Random(seed)
    sft = safety_sft_rows(rows, seed)
    return [
        {
            "prompt": s["prompt"],
            "chosen": s["completion"],
            "rejected": unsafe_completion(r, rng),
            "harmful": r["harmful"],
            "category": r["category"],
        }
        for s, r in zip(sft, rows)
    ]


def prompt_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Prompts to label (`trl-presafety label`): the conversational prompt as the safety data writes it, `harmful`."""
    return [
        {
            "prompt": _user(math_user_prompt(r) if r["category"] == "math" else r["prompt"]),
            "harmful": r["harmful"],
            "category": r["category"],
        }
        for r in rows
    ]


def eval_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows in the evaluation's internal format (`prompt`, `category`, `answer`; other columns become metadata)."""
    keep = ("id", "prompt", "category", "answer", "harmful", "source", "group")
    return [{k: r[k] for k in keep if k in r} for r in rows]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the efficacy study's splits (deterministic).")
    parser.add_argument("--output_dir", default=str(SPLITS_DIR))
    args = parser.parse_args(argv)
    paths = write_splits(args.output_dir)
    summary = split_summary(load_splits(args.output_dir))
    for name, path in paths.items():
        print(f"{name}: {path} {summary[name]}")


if __name__ == "__main__":
    main()


def sample_rows(rows: list[dict[str, Any]], per_category: int, seed: int = 0) -> list[dict[str, Any]]:
    """At most `per_category` rows of each category, drawn with `seed`, in their original order."""
    rng = random.Random(seed)
    keep: set[str] = set()
    for category in sorted({r["category"] for r in rows}):
        ids = [r["id"] for r in rows if r["category"] == category]
        keep.update(rng.sample(ids, min(per_category, len(ids))))
    return [r for r in rows if r["id"] in keep]
