# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""`trl-presafety export-gate`: a gate as a sequence-classification checkpoint, for vLLM's classify runner and
`transformers.pipeline("text-classification")`.

The checkpoint is the gate's base weights with the head's weight as the `score` layer (`Qwen3ForSequenceClassification`,
`Qwen2ForSequenceClassification`, `LlamaForSequenceClassification`, ...) and the tokenizer. Only `prompt_end` linear
heads on the final hidden state are exported: a sequence classifier reads the last token of the request, which is that
anchor when the request is the conversation rendered with the generation prompt. Its output is the score `w . h`; the
head's bias and the threshold are in `config.json` (`presafety_gate`), see docs/serving.md.

```bash
trl-presafety export-gate --head_path runs/tiny-gate --output_dir runs/tiny-gate-classifier
trl-presafety export-gate --head_path runs/Qwen3-8B/gate --dtype bfloat16 --output_dir runs/Qwen3-8B/gate-classifier
vllm serve runs/Qwen3-8B/gate-classifier --runner pooling --pooler-config '{"logit_mean": <-logit_bias>}'
```
"""

import json
from dataclasses import dataclass, field

from trl import ModelConfig

from ..validation import fail
from .arguments import make_script_parser, parse_args_strict
from .fit_gate import model_init_kwargs


@dataclass
class ExportGateScriptArguments:
    r"""
    Arguments of `trl-presafety export-gate`.

    head_path (`str`):
        Folder of the gate: a `trl-presafety fit-gate` output or a PreSafety training run's output (full weights; merge
        a LoRA adapter first).
    output_dir (`str`):
        Folder of the sequence-classification checkpoint.
    chat_template_kwargs (`dict` or `str`, *optional*):
        Chat template arguments the requests are rendered with (a JSON string on the command line); defaults to
        those the head was fitted with.
    """

    head_path: str | None = field(default=None, metadata={"help": "Folder of the gate (fit-gate or training output)."})
    output_dir: str | None = field(
        default=None, metadata={"help": "Folder of the sequence-classification checkpoint."}
    )
    chat_template_kwargs: dict | str | None = field(
        default=None, metadata={"help": "Chat template arguments of the requests (JSON on the command line)."}
    )

    def __post_init__(self) -> None:
        for name, fix in (
            ("head_path", "the gate's folder (a `trl-presafety fit-gate` output or a training run's output)"),
            ("output_dir", "a folder for the sequence-classification checkpoint"),
        ):
            if not getattr(self, name):
                fail(name, getattr(self, name), f"Pass {fix}.")
        if isinstance(self.chat_template_kwargs, str):
            try:
                self.chat_template_kwargs = json.loads(self.chat_template_kwargs)
            except json.JSONDecodeError as error:
                fail("chat_template_kwargs", self.chat_template_kwargs, f"Pass a JSON object ({error}).")


def make_parser():
    return make_script_parser("export-gate", (ExportGateScriptArguments, ModelConfig))


def main(argv: list[str] | None = None):
    from ..gate import SafetyGate
    from ..gate_export import EXPORT_CONFIG_KEY, export_gate

    script_args, model_args = parse_args_strict(make_parser(), argv)
    kwargs = model_init_kwargs(model_args)
    kwargs.pop("revision", None)
    gate = SafetyGate.from_pretrained(script_args.head_path, base_model=model_args.model_name_or_path, **kwargs)
    folder = export_gate(gate, script_args.output_dir, chat_template_kwargs=script_args.chat_template_kwargs)
    exported = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    info = exported[EXPORT_CONFIG_KEY]
    print(
        f"Exported {exported['architectures'][0]} to {folder}: route when score >= {info['score_threshold']:.9g} "
        f"(P(refuse) = sigmoid(score + {info['logit_bias']:.9g}) >= {info['threshold']:.6g}). vLLM: vllm serve {folder} "
        f"--runner pooling --pooler-config '{json.dumps(info['vllm_pooler_config'])}' returns the gate's logit."
    )
    return folder


if __name__ == "__main__":
    main()
