# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Content fingerprints: what binds saved state (a head fitted on a frozen model, a calibrated threshold) to the
weights and data it was computed from, rather than to a path that may later hold something else.

Both are cheap: a model fingerprint reads each safetensors file's header and a few small chunks of its data (a few MB
for a 16 GB model), not the whole file, yet a fine-tuned checkpoint (same names, shapes and sizes, other values)
differs, because every chunk sampled from its tensors does.
"""

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


# Chunks of each safetensors file's data section read for the fingerprint: evenly spaced, so that every region of the
# file (the embeddings, each layer, the LM head) is sampled
FINGERPRINT_CHUNKS = 16
FINGERPRINT_CHUNK_BYTES = 64 * 1024


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    size = path.stat().st_size
    with path.open("rb") as f:
        header_length = int.from_bytes(f.read(8), "little")
        if header_length <= 0 or 8 + header_length > size:
            raise ValueError(f"{path} is not a safetensors file (header length {header_length}, file size {size}).")
        digest.update(f.read(header_length))
        start = 8 + header_length
        data = size - start
        step = max(data // FINGERPRINT_CHUNKS, 1)
        for offset in range(start, size, step)[:FINGERPRINT_CHUNKS]:
            f.seek(offset)
            digest.update(f.read(FINGERPRINT_CHUNK_BYTES))
    return digest.hexdigest()


def weights_fingerprint(model_dir: str | os.PathLike) -> str:
    """A fingerprint of the weights in `model_dir`: the sha256 of each `*.safetensors` file's name, size, header and
    16 evenly spaced 64 KiB chunks of its data, in name order.

    Raises `FileNotFoundError` when the folder holds no safetensors file (pickle `*.bin` checkpoints are not read).
    """
    folder = Path(model_dir)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(
            f"No .safetensors file in {folder}: the weights cannot be fingerprinted. Save the model with "
            "`save_pretrained(..., safe_serialization=True)` (the default)."
        )
    parts = [[file.name, file.stat().st_size, _file_digest(file)] for file in files]
    return "sha256:" + hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()


def resolve_model_dir(name_or_path: str, revision: str | None = None) -> Path | None:
    """The local folder of a model: the path itself, or the snapshot of a hub id in the local cache; `None` when
    neither exists (nothing is downloaded)."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path, revision=revision, local_files_only=True))
    except Exception:  # not a hub id, or not in the cache
        return None


def text_hash(value: Any) -> str:
    """A short hash of one prompt (a string, or a list of chat messages), the same for the same text."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()[:16]


def prompts_fingerprint(prompts: Sequence[Any], labels: Sequence[Any] | None = None) -> str:
    """A fingerprint of a labeled prompt set, independent of row order: the sha256 of its sorted (prompt, label)
    hashes."""
    rows = sorted(f"{text_hash(p)}:{'' if labels is None else labels[i]}" for i, p in enumerate(prompts))
    return "sha256:" + hashlib.sha256("\n".join(rows).encode("utf-8")).hexdigest()
