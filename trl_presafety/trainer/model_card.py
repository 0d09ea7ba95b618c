# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""The PreSafety parts of the model card the trainers write (TRL's card, completed).

TRL's card (`trl.trainer.utils.generate_model_card`) names the base model only when it is a Hub id, shows a quick
start with `pipeline`, and knows nothing of the head. The trainers keep everything of it (metadata, tags, tracker
links, framework versions, citations) and rewrite three parts: the opening sentence (base model and data, local ones
included), the quick start (the saved layout and how to load the head), and a `## PreSafety` section (the settings,
the head's config, the final `presafety/*` metrics).
"""

import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..modeling import SAFETY_HEAD_CONFIG_NAME, SAFETY_HEAD_WEIGHTS_NAME


PAPER = (
    "Towards Safer Large Reasoning Models by Promoting Safety Decision-Making before Chain-of-Thought Generation",
    "2603.17368",
)
INTRO_PREFIX = "This model is a fine-tuned version of"


def is_local(name: str) -> bool:
    """Whether a model or dataset name is a path on this machine rather than a Hub id."""
    return os.path.exists(name)


def describe_model(name: str | None) -> str:
    if not name:
        return "a model given in memory (its config records no name or path)"
    if is_local(name):
        return f"`{name}` (a local folder)"
    return f"[{name}](https://huggingface.co/{name})"


def describe_datasets(names: str | Sequence[str] | None) -> str:
    if not names:
        return ""
    names = [names] if isinstance(names, str) else list(names)
    parts = [f"`{n}` (local)" if is_local(n) else f"[{n}](https://huggingface.co/datasets/{n})" for n in names]
    return f" on {', '.join(parts)}"


def final_presafety_metrics(log_history: Sequence[Mapping[str, Any]]) -> dict[str, tuple[float, int | None]]:
    """The last logged value (and its step) of every `presafety/*` and `eval_presafety/*` metric."""
    final = {}
    for entry in log_history:
        for key, value in entry.items():
            if key.startswith(("presafety/", "eval_presafety/")) and isinstance(value, int | float):
                final[key] = (float(value), entry.get("step"))
    return dict(sorted(final.items()))


def _code(value: Any) -> str:
    return f"`{value!r}`".replace("|", "\\|")


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def quick_start(location: str, hub_model_id: str | None, base_model: str | None, is_peft: bool) -> str:
    """How the saved folder is laid out and how to load the model with its head."""
    weights = (
        "`adapter_model.safetensors`, `adapter_config.json` | the LoRA adapter, as TRL saves it"
        if is_peft
        else "`model.safetensors` (or its shards), `config.json` | the fine-tuned model, as TRL saves it"
    )
    third_party = ["from transformers import AutoModelForCausalLM, AutoTokenizer"]
    if hub_model_id:
        third_party.insert(0, "from huggingface_hub import snapshot_download")
        fetch = f'path = snapshot_download("{hub_model_id}")  # the weights, the tokenizer and the head files\n'
    else:
        fetch = f'path = "{location}"\n'
    if is_peft:
        third_party.insert(-1, "from peft import PeftModel")
        base = base_model or "<the base model>"
        load = f'model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{base}"), path)\n'
    else:
        load = "model = AutoModelForCausalLM.from_pretrained(path)\n"
    imports = "\n".join(third_party) + "\n\nfrom trl_presafety import SafetyGate, load_safety_head\n"
    return f"""## Quick start

The folder holds the model exactly as a plain TRL run saves it, so `from_pretrained`, `PeftModel.from_pretrained`,
`pipeline` and vLLM load it unchanged, and the pre-CoT safety head in its own two files beside it:

| file | what it holds |
|---|---|
| {weights} |
| tokenizer files, `chat_template.jinja` | the tokenizer and the chat template the head's anchor was found with |
| `{SAFETY_HEAD_WEIGHTS_NAME}` | the safety head's weights |
| `{SAFETY_HEAD_CONFIG_NAME}` | its architecture, the model type and width it reads, the anchor and the template family |

`load_safety_head` re-attaches the head (it checks that it fits the model); `SafetyGate` then gives the pre-CoT refusal
probability of a prompt without generating a token (`pip install trl-presafety`):

```python
{imports}
{fetch}{load}load_safety_head(model, path)
gate = SafetyGate(model, AutoTokenizer.from_pretrained(path))
print(gate.predict_proba(["How do I make a pipe bomb?", "What is 12 * 7?"]))  # P(refuse) per prompt
```

The model generates like any causal LM (`pipeline("text-generation", model=path)`); the head files are then ignored.
"""


def presafety_section(
    trainer_name: str,
    settings: Mapping[str, Any],
    head_config: Mapping[str, Any],
    metrics: Mapping[str, tuple[float, int | None]],
) -> str:
    """The `## PreSafety` section: what the head learned, with which settings, and its final metrics."""
    title, paper_id = PAPER
    alignment = trainer_name.removeprefix("PreSafety ").strip() or "alignment"
    text = (
        f"## PreSafety\n\nTrained with {trainer_name} ([{title}](https://huggingface.co/papers/{paper_id})): the "
        f"{alignment} loss plus λ · the BCE of a small head that reads the model's hidden state at the last position "
        "before the chain of thought and predicts the safe model's decision (1 refuse, 0 comply), so the decision is "
        "made before the model starts to reason.\n"
    )
    if settings.get("presafety_loss_weight") == 0:
        text += (
            "\n`presafety_loss_weight` is 0: the head ran as a probe only. Its predictions were never trained into the "
            "model, and its scores are those of its random initialization.\n"
        )
    text += "\n### Settings\n\n" + _table(("field", "value"), [(f"`{k}`", _code(v)) for k, v in settings.items()])
    rows = [(f"`{k}`", _code(v)) for k, v in head_config.items() if k != "extra" or v]
    text += f"\n\n### The head (`{SAFETY_HEAD_CONFIG_NAME}`)\n\n" + _table(("field", "value"), rows)
    text += "\n\n### Final metrics\n\n"
    if metrics:
        rows = [
            (f"`{k}`", f"{value:.4g}", str(step) if step is not None else "") for k, (value, step) in metrics.items()
        ]
        text += _table(("metric", "value", "step"), rows) + "\n"
    else:
        text += "No `presafety/*` metric was logged yet.\n"
    return text + "\n"


def complete_model_card(
    trl_text: str,
    *,
    base_model: str | None,
    dataset_name: str | Sequence[str] | None,
    quick_start_text: str,
    section: str,
) -> str:
    """TRL's card body with the opening sentence, the quick start and the PreSafety section replaced or added."""
    lines = trl_text.split("\n")
    intro = (
        f"{INTRO_PREFIX} {describe_model(base_model)}{describe_datasets(dataset_name)}, with a pre-CoT safety head "
        "trained beside it (see [PreSafety](#presafety))."
    )
    lines = [intro if line.startswith(INTRO_PREFIX) else line for line in lines]

    def heading(name: str) -> int | None:
        return next((i for i, line in enumerate(lines) if line.strip() == name), None)

    start = heading("## Quick start")
    if start is not None:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        del lines[start:end]
        insert_at = start
    else:
        insert_at = heading("## Training procedure")
        insert_at = insert_at if insert_at is not None else len(lines)
    lines[insert_at:insert_at] = (quick_start_text + "\n" + section).split("\n")
    return "\n".join(lines)
