# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Local inputs a command needs (model folder, classifier folder, label folder, data file), checked before anything
loads: a missing one stops the command at once, naming the field, the path and the command that makes it, instead of
an `OSError` about huggingface.co minutes later (after generation) or a download attempt of a path taken for a hub id.

Light on purpose (no torch, transformers or datasets at import): the commands call it first.
"""

import os
import re
from collections.abc import Iterable
from pathlib import Path


# Where the project's recipes write their outputs (`output_dir: runs/...`): a name under it is a local folder, never
# a hub id, even before the folder exists
LOCAL_OUTPUT_ROOTS = ("runs",)
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")
_DATA_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv", ".arrow", ".txt")


class MissingInputError(FileNotFoundError):
    """A local input of a command (model, classifier or label folder, data file) does not exist."""


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def looks_local(value: str) -> bool:
    """Whether `value` can only be a local path (not a hub id): absolute, `./`, `~`, several `/`, a data file suffix,
    under an existing local folder or under a recipe output root (`runs/`)."""
    text = str(value)
    if text.startswith((".", "/", "~")) or "\\" in text or text.endswith("/") or text.count("/") >= 2:
        return True
    if text.lower().endswith(_DATA_SUFFIXES) or not _HUB_ID.match(text):
        return True
    first = text.split("/", 1)[0]
    return "/" in text and (first in LOCAL_OUTPUT_ROOTS or Path(first).is_dir())


def _in_hub_cache(repo_id: str, repo_type: str) -> bool:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return True
    return (Path(HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}").is_dir()


def check_local_input(
    value: str | os.PathLike | None,
    field: str,
    what: str,
    fix: str,
    *,
    repo_type: str = "model",
    required_files: Iterable[str] = (),
) -> None:
    """Stops with [`MissingInputError`] if `value` (the value of `field`) names a local input that is not there.

    Args:
        value: the path or hub id the user gave (`None`: nothing to check).
        field: the option that holds it (`classifier_name_or_path`).
        what: what it should be, for the message ("the refusal classifier folder").
        fix: how to make it, a command line if there is one.
        repo_type: `"model"` or `"dataset"`: where a hub id would live.
        required_files: files an existing folder must hold (any one of them), e.g. `("config.json",)`.

    A value that may be a hub id passes when online (the hub answers), and offline (`HF_HUB_OFFLINE=1`) only when it
    is in the local hub cache: offline, nothing else could load it.
    """
    if value is None or str(value) == "":
        return
    text = str(value)
    path = Path(text).expanduser()
    if path.exists():
        required = list(required_files)
        if required and path.is_dir() and not any((path / name).exists() for name in required):
            raise MissingInputError(
                f"`{field}`={text!r} is a folder but not {what}: it holds none of {required}. {fix}"
            )
        return
    if looks_local(text):
        raise MissingInputError(f"`{field}`={text!r}: no such file or folder ({what}). {fix}")
    if _offline() and not _in_hub_cache(text, repo_type):
        raise MissingInputError(
            f"`{field}`={text!r} is neither a local path nor in the local hub cache, and HF_HUB_OFFLINE is set, so "
            f"it cannot be loaded ({what}). {fix}"
        )


MODEL_FIX = (
    "Pass a model folder (a `save_pretrained` output) or a hub id; the tiny CPU model is built with "
    "`python -m trl_presafety.tiny --output_dir runs/tiny-qwen3 --style qwen3`."
)
CLASSIFIER_FIX = (
    "Train the classifier first: `trl-presafety train-classifier --config recipes/tiny/train_classifier.yaml` writes "
    "runs/refusal-classifier (or pass another trained classifier folder)."
)
DATA_FIX = (
    "Write it first (a label folder comes from `trl-presafety label`, SFT rows and pairs from `trl-presafety "
    "build-sft`), or correct the path."
)


def check_model_input(value: str | None, field: str = "model_name_or_path") -> None:
    """A model folder or hub id (a folder must hold `config.json` or a PEFT `adapter_config.json`)."""
    check_local_input(value, field, "a model folder", MODEL_FIX, required_files=("config.json", "adapter_config.json"))


def check_classifier_input(value: str | None, field: str = "classifier_name_or_path") -> None:
    """The safety decision classifier (`trl-presafety train-classifier` output)."""
    check_local_input(value, field, "the refusal classifier folder", CLASSIFIER_FIX, required_files=("config.json",))


def check_data_input(value: str | None, field: str = "dataset_name") -> None:
    """A dataset: a local file or folder (a label folder, `build-sft` output) or a hub dataset id."""
    check_local_input(value, field, "a data file or folder", DATA_FIX, repo_type="dataset")
