# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""A linear probe fitted after training on the pre-CoT hidden state, for every arm alike.

The trained head's AUROC exists only where the head got a gradient (weight > 0): with weight 0, or with no head at
all, it means nothing. To compare arms on *where the refusal decision is readable*, this fits the same probe for every
model: logistic regression on the hidden state at the last prompt token of the thinking-on prompt (the `prompt_end`
anchor, i.e. the position that predicts `<think>`), fitted on the safety split's prompts (harmful from its source)
and scored on the held-out harmful vs held-out benign-edgy prompts. Read at the final hidden state (after the final
norm) and at the middle of the decoder.
"""

from pathlib import Path
from typing import Any

from . import data as D


def anchor_states(model: Any, tokenizer: Any, prompts: list[str], layers: list[int], batch_size: int = 64) -> dict:
    """Hidden states at the last token of each thinking-on generation prompt: {layer index: (n, hidden) array}.

    `layers` index `output_hidden_states` (0 = embeddings, -1 = the final hidden state after the final norm).
    """
    import numpy as np
    import torch

    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
        for p in prompts
    ]
    out: dict[int, list] = {layer: [] for layer in layers}
    tokenizer.padding_side = "left"  # the last position is the anchor of every row
    model.eval()
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
            )
            hidden = model(**batch, output_hidden_states=True).hidden_states
            for layer in layers:
                out[layer].append(hidden[layer][:, -1, :].float().numpy())
    return {layer: np.concatenate(chunks) for layer, chunks in out.items()}


def fit_auroc(train_x, train_y, test_x, test_y) -> float | None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(set(test_y)) < 2 or len(set(train_y)) < 2:
        return None
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    probe.fit(train_x, train_y)
    return float(roc_auc_score(test_y, probe.predict_proba(test_x)[:, 1]))


def fitted_probe(model_dir: str | Path, layout: Any, eval_sets: str = "heldout", peft: bool = False) -> dict[str, Any]:
    """AUROC of probes fitted on the safety split and scored on the evaluation files (harmful vs benign-edgy).

    `peft`: `model_dir` is a LoRA adapter on the organism (merged before reading the states)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if peft:
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(str(layout.organism), dtype="float32")
        model = PeftModel.from_pretrained(base, str(model_dir)).merge_and_unload()
        tokenizer = AutoTokenizer.from_pretrained(str(layout.organism))
    else:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype="float32")
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    num_layers = model.config.num_hidden_layers
    layers = {"final": -1, "middle": num_layers // 2}
    train = [r for r in D.load_splits()["safety"] if r["category"] != "math"]
    test = [
        r
        for path in layout.eval_files(eval_sets)
        for r in D.read_jsonl(path)
        if r["category"] in {"harmful", "benign_edgy"}
    ]
    train_states = anchor_states(model, tokenizer, [r["prompt"] for r in train], list(layers.values()))
    test_states = anchor_states(model, tokenizer, [r["prompt"] for r in test], list(layers.values()))
    train_y = [int(r["category"] == "harmful") for r in train]
    test_y = [int(r["category"] == "harmful") for r in test]
    return {
        "anchor": "prompt_end (thinking-on prompt)",
        "fit_on": f"safety split, {sum(train_y)} harmful / {len(train_y) - sum(train_y)} benign-edgy prompts",
        "scored_on": f"{sum(test_y)} harmful / {len(test_y) - sum(test_y)} benign-edgy evaluation prompts",
        "layers": {name: index for name, index in layers.items()},
        **{
            f"auroc_{name}": fit_auroc(train_states[index], train_y, test_states[index], test_y)
            for name, index in layers.items()
        },
    }
