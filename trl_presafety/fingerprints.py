# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Content fingerprints: what a folder a stage writes was computed from, bound to content rather than to paths.

A path says where a model or a data file was, not what it held: after the model at the same path is retrained, a
label folder that recorded only the path would resume (or be skipped) with the old model's labels. Every stage records
these fingerprints instead, and resume, skip and the pipeline compare them.

- [`fingerprint_path`]: a model folder (full checkpoint, sharded, a PEFT adapter with its local base model), a data
  file or folder, or a hub id (its cached snapshot's commit). Cheap: small files are hashed whole; a large file by its
  size, its first MiB (a safetensors file's header, i.e. its tensor names, dtypes and shapes) and 64 blocks of 4 KiB
  spread over its content, so a retrained model (whose every tensor changed) never fingerprints as the old one.
- [`fingerprint_weights`]: the weights of a model in memory or of a state dict about to be saved: per tensor its shape
  and 1,024 values spread over it (rounded to bfloat16, so the fp32 weights a run saved and the bf16 copy loaded later
  agree), names ignored (PEFT and DeepSpeed prefixes differ), the safety head left out. The head's config records it
  (`backbone_fingerprint`), and `load_safety_head` refuses a head on other weights.
- [`fingerprint_json`]: arguments, or any JSON-able value.

Nothing here imports torch at module import; fingerprints are `"sha256:<hex>"` strings.
"""

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


# Files of a model or data folder that are not part of what it holds (rewritten by training or by this package)
_IGNORED_NAMES = {
    "README.md",
    "trainer_state.json",
    "training_args.bin",
    "optimizer.pt",
    "scheduler.pt",
    "scaler.pt",
    "labeling_state.json",
    "pipeline_state.json",
    ".gitattributes",
}
_IGNORED_PREFIXES = ("rng_state", ".")
# The safety head's own files: a head's binding to its backbone must not depend on the head
_HEAD_FILES = {"safety_head.safetensors", "safety_head_config.json"}
# The head's keys in a model's state dict (`modeling.SAFETY_HEAD_ATTR`; not imported: modeling imports this module)
_HEAD_PREFIX = "safety_head."
_WHOLE_FILE_LIMIT = 4 * 1024 * 1024
_HEAD_BYTES = 1024 * 1024
_BLOCKS, _BLOCK_SIZE = 64, 4096
SAMPLES_PER_TENSOR = 1024


def _digest(parts: Iterable[bytes | str]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8") if isinstance(part, str) else part)
        h.update(b"\0")
    return "sha256:" + h.hexdigest()


def fingerprint_file(path: str | os.PathLike) -> str:
    """A file's content fingerprint: the whole content up to 4 MiB; above, the size, the first MiB and 64 blocks."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= _WHOLE_FILE_LIMIT:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(f.read(_HEAD_BYTES))
            step = (size - _HEAD_BYTES) // _BLOCKS
            for i in range(_BLOCKS):
                f.seek(_HEAD_BYTES + i * step)
                h.update(f.read(_BLOCK_SIZE))
            f.seek(max(size - _BLOCK_SIZE, 0))
            h.update(f.read(_BLOCK_SIZE))
    return "sha256:" + h.hexdigest()


def _folder_files(folder: Path, include_head: bool) -> list[Path]:
    files = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        # A training output folder holds its checkpoints and logs: they are not the model
        if relative.parts[0].startswith("checkpoint-") or relative.parts[0] in ("runs", "logs", "wandb"):
            continue
        name = path.name
        if name in _IGNORED_NAMES or name.startswith(_IGNORED_PREFIXES):
            continue
        if not include_head and name in _HEAD_FILES:
            continue
        files.append(path)
    return files


def fingerprint_path(name_or_path: str | os.PathLike, include_head: bool = False) -> str:
    """The content fingerprint of a model or data path: a file, a folder (every file in it but training logs, state
    files and checkpoints; a PEFT adapter folder adds its local base model's), or a hub id (the commit of its cached
    snapshot when there is one, else the id itself, marked `unresolved`).

    Args:
        name_or_path: the path or hub id, as given to `from_pretrained` / `load_dataset`.
        include_head: include the safety head's files of a model folder (by default the backbone only).
    """
    path = Path(name_or_path)
    if path.is_file():
        return _digest(["file", fingerprint_file(path)])
    if path.is_dir():
        parts = ["folder"]
        for file in _folder_files(path, include_head):
            parts += [file.relative_to(path).as_posix(), fingerprint_file(file)]
        adapter = path / "adapter_config.json"
        if adapter.is_file():
            try:
                base = json.loads(adapter.read_text(encoding="utf-8")).get("base_model_name_or_path")
            except (OSError, ValueError):
                base = None
            if isinstance(base, str) and base and Path(base).resolve() != path.resolve():
                parts += ["base_model", fingerprint_path(base)]
        return _digest(parts)
    return _digest(["hub", str(name_or_path), _hub_revision(str(name_or_path))])


def _hub_revision(repo_id: str) -> str:
    """The commit of the cached snapshot of `repo_id` (model or dataset), or `"unresolved"`."""
    try:
        from huggingface_hub import snapshot_download

        for repo_type in ("model", "dataset"):
            try:
                folder = snapshot_download(repo_id, repo_type=repo_type, local_files_only=True)
                return Path(folder).name
            except Exception:  # not cached as this type
                continue
    except ImportError:
        pass
    return "unresolved"


def fingerprint_json(value: Any) -> str:
    """A fingerprint of a JSON-able value (arguments, a list of prompts), independent of key order."""
    return _digest([json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)])


def fingerprint_dataset(dataset: Any) -> str:
    """A fingerprint of a `datasets.Dataset`'s rows (its Arrow content), or of a list of rows."""
    if isinstance(dataset, list):
        return fingerprint_json(dataset)
    h = hashlib.sha256()
    h.update(json.dumps(dataset.column_names).encode())
    table = dataset.with_format("arrow")[:] if len(dataset) else None
    if table is not None:
        import pyarrow as pa

        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        h.update(sink.getvalue().to_pybytes())
    return "sha256:" + h.hexdigest()


def _tensor_digest(tensor: Any) -> bytes | None:
    import torch

    if tensor.device.type == "meta" or tensor.numel() == 0:
        return None
    flat = tensor.detach().reshape(-1)
    n = flat.numel()
    if n > SAMPLES_PER_TENSOR:
        index = torch.linspace(0, n - 1, SAMPLES_PER_TENSOR, device=flat.device).long()
        flat = flat[index]
    if flat.is_floating_point():
        values = flat.to(torch.bfloat16).view(torch.int16)
    else:
        values = flat.to(torch.int64)
    h = hashlib.sha256(str(tuple(tensor.shape)).encode())
    h.update(values.cpu().numpy().tobytes())
    return h.digest()


def fingerprint_weights(weights: Any) -> str | None:
    """The fingerprint of a model's weights in memory (`nn.Module`) or of a state dict (`Mapping[str, Tensor]`).

    Per tensor: its shape and 1,024 values spread over it, rounded to bfloat16; the tensor names are ignored (a
    `PeftModel`, a DeepSpeed engine's consolidated state dict and the plain model name them differently), tied
    weights count once, and the safety head's tensors are left out. A full fine-tune, a LoRA update or another
    checkpoint of the same architecture changes it; re-saving the same weights in fp32 or bf16, or sharded, does not.

    Returns `None` when the weights are not all at hand (ZeRO-3 partitions, offloaded `meta` tensors): no binding is
    recorded then, rather than a wrong one.
    """
    # The state dict (tied weights appear twice, with one digest) is what a save writes and a load reads
    items = weights.items() if isinstance(weights, Mapping) else weights.state_dict(keep_vars=True).items()
    digests = set()
    for name, tensor in items:
        if (
            name.startswith(_HEAD_PREFIX) or f".{_HEAD_PREFIX}" in name or "inv_freq" in name
        ):  # the head itself; rotary buffers come from the config
            continue
        if not hasattr(tensor, "shape") or not hasattr(tensor, "device"):
            continue
        digest = _tensor_digest(tensor)
        if digest is None:
            return None
        digests.add(digest)
    if not digests:
        return None
    return _digest(["weights", *sorted(d.hex() for d in digests)])


def fingerprint_model(model: Any) -> str | None:
    """A model given as a path or hub id ([`fingerprint_path`]) or in memory ([`fingerprint_weights`])."""
    if isinstance(model, (str, os.PathLike)):
        return fingerprint_path(model)
    return fingerprint_weights(model)


def fingerprint_local_paths(values: Mapping[str, Any]) -> dict[str, str]:
    """The content fingerprint of every value of `values` that names a local file or folder (a classifier or guard
    model among judge settings, a data file among arguments), by key."""
    return {
        key: fingerprint_path(value)
        for key, value in sorted(values.items())
        if isinstance(value, (str, os.PathLike)) and str(value) and Path(value).exists()
    }


def provenance(models: Mapping[str, Any], data: Any = None, arguments: Any = None) -> dict[str, Any]:
    """What a folder written by a stage was computed from, by content: the fingerprint of each model (a path / hub id,
    or a model in memory; `None` entries skipped), of the data (a `datasets.Dataset` or a list of rows) and of the
    arguments (any JSON-able value, e.g. `dataclasses.asdict(args)`)."""
    record: dict[str, Any] = {
        f"{name}_fingerprint": fingerprint_model(model) for name, model in models.items() if model is not None
    }
    if data is not None:
        record["data_fingerprint"] = fingerprint_dataset(data)
    if arguments is not None:
        record["arguments_fingerprint"] = fingerprint_json(arguments)
        # Local files named by the arguments (a classifier, a guard model, a data file), one level of nesting down;
        # the folders written (`output_dir`...) are not inputs
        groups = [arguments] if isinstance(arguments, Mapping) else []
        groups += [v for v in groups[0].values() if isinstance(v, Mapping)] if groups else []
        local = {}
        for group in groups:
            inputs = {k: v for k, v in group.items() if "output" not in str(k)}
            local.update(fingerprint_local_paths(inputs))
        if local:
            record["local_inputs"] = local
    return record
