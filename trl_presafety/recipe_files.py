# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Strict reading of YAML recipes and pipeline files: what a plain `yaml.safe_load` lets through silently.

- A key written twice in one mapping: YAML keeps the last value, so `presafety_loss_weight: 0.0` appended to a
  PreSafety recipe would silently train plain SFT. Refused, naming the file, the key and both lines.
- Unknown keys inside the mappings handed to another library (`model_init_kwargs` to `from_pretrained`,
  `gradient_checkpointing_kwargs` / `activation_checkpointing_kwargs` to `torch.utils.checkpoint`): they would fail (or be ignored) far from the recipe, in
  the model constructor. Refused at parse time, naming the file, the key and its line.
"""

import difflib
import inspect
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class RecipeError(ValueError):
    """A recipe or pipeline file that is not what it looks like (a duplicate key, an unknown nested key)."""


def _loader(path: str):
    import yaml

    class StrictLoader(yaml.SafeLoader):
        pass

    def construct_mapping(loader, node, deep=False):
        loader.flatten_mapping(node)
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise RecipeError(
                    f"{path}, line {line}: the key `{key}` is written twice in the same mapping (first on line "
                    f"{seen[key]}). YAML would keep the last value silently; keep one of them."
                )
            seen[key] = line
        return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return StrictLoader


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """The line (1-based) of each key of a YAML document, by its path of keys (`("model_init_kwargs", "dtype")`)."""
    import yaml

    lines: dict[tuple[str, ...], int] = {}

    def walk(node: Any, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                path = (*prefix, str(key_node.value))
                lines[path] = key_node.start_mark.line + 1
                walk(value_node, path)

    try:
        walk(yaml.compose(text, Loader=yaml.SafeLoader), ())
    except yaml.YAMLError:
        pass
    return lines


def load_yaml_strict(path: str | Path) -> Any:
    """The content of a YAML file, refusing a key written twice in one mapping (see the module's docstring)."""
    import yaml

    path = str(path)
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=_loader(path))  # noqa: S506 (a SafeLoader subclass)


# --- nested keys handed to other libraries -------------------------------------------------------------------------


def _gradient_checkpointing_keys() -> set[str]:
    import torch.utils.checkpoint

    parameters = inspect.signature(torch.utils.checkpoint.checkpoint).parameters
    return {name for name, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY} | {
        "use_reentrant",
        "preserve_rng_state",
    }


def _from_pretrained_keys(model_name_or_path: Any) -> set[str]:
    """Keyword arguments `AutoModelForCausalLM.from_pretrained` takes: its own (signature, and those it pops from
    `kwargs`), TRL's `dtype`, and the fields of the model's config (which `from_pretrained` sets on the config)."""
    from transformers import PretrainedConfig, PreTrainedModel

    method = PreTrainedModel.from_pretrained
    keys = {name for name in inspect.signature(method).parameters if name not in ("cls", "args", "kwargs")}
    try:
        source = inspect.getsource(method)
    except (OSError, TypeError):
        source = ""
    keys |= set(re.findall(r"""kwargs\.pop\(\s*["'](\w+)["']""", source))
    keys |= {"dtype", "torch_dtype", "device_map", "attn_implementation", "trust_remote_code", "revision"}
    keys |= {"quantization_config", "low_cpu_mem_usage", "max_memory", "use_cache", "use_kernels"}
    keys |= set(PretrainedConfig().to_dict())
    config_file = Path(str(model_name_or_path)) / "config.json" if model_name_or_path else None
    if config_file is not None and config_file.is_file():
        import json

        try:
            keys |= set(json.loads(config_file.read_text(encoding="utf-8")))
        except ValueError:
            pass
    else:  # a hub id: the config is not at hand; accept the fields common model configs have
        keys |= {"rope_scaling", "rope_theta", "max_position_embeddings", "sliding_window", "use_sliding_window"}
        keys |= {"attention_dropout", "hidden_dropout", "output_router_logits", "router_aux_loss_coef"}
    return keys


def check_nested_keys(config: Mapping[str, Any], path: str, text: str | None = None) -> None:
    """Refuses unknown keys in a recipe's `model_init_kwargs` and `gradient_checkpointing_kwargs`, naming the file,
    the key and its line."""
    checks = {
        "gradient_checkpointing_kwargs": (_gradient_checkpointing_keys, "`torch.utils.checkpoint.checkpoint`"),
        # Its new name in transformers 5
        "activation_checkpointing_kwargs": (_gradient_checkpointing_keys, "`torch.utils.checkpoint.checkpoint`"),
        "model_init_kwargs": (
            lambda: _from_pretrained_keys(config.get("model_name_or_path")),
            "`from_pretrained` (its keyword arguments and the model config's fields)",
        ),
    }
    lines = None
    for field_name, (known_keys, target) in checks.items():
        value = config.get(field_name)
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise RecipeError(
                f"{path}: `{field_name}` is {value!r} ({type(value).__name__}); it must be a mapping of keyword "
                f"arguments for {target}."
            )
        known = known_keys()
        unknown = [str(k) for k in value if str(k) not in known]
        if not unknown:
            continue
        if lines is None:
            lines = key_lines(text if text is not None else Path(path).read_text(encoding="utf-8"))
        described = []
        for key in unknown:
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
            line = lines.get((field_name, key))
            described.append(
                f"`{key}`" + (f" (line {line})" if line else "") + (f", did you mean `{close[0]}`?" if close else "")
            )
        raise RecipeError(
            f"{path}: unknown key(s) in `{field_name}`: {'; '.join(described)}. `{field_name}` is passed to "
            f"{target}, which would fail (or ignore the key) later, far from this file. Fix the spelling or remove "
            "the key."
        )


def check_recipe_file(path: str | Path) -> dict[str, Any]:
    """A recipe read strictly: duplicate keys and unknown nested keys refused (see the module's docstring)."""
    path = str(path)
    text = Path(path).read_text(encoding="utf-8")
    config = load_yaml_strict(path)
    if isinstance(config, Mapping):
        check_nested_keys(config, path, text)
    return config if isinstance(config, dict) else {}
