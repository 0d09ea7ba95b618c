# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""An append-only JSON-lines cache: what an interrupted evaluation already computed, keyed per example.

Each record is one line, flushed and fsynced when written, so a kill loses at most the chunk being generated. A torn
last line (killed mid-write) is skipped on reading.
"""

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def stable_hash(*parts: Any) -> str:
    """A short hash of JSON-serializable parts, stable across runs and machines."""
    payload = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:24]


class JsonlCache:
    """`key -> record` mapping persisted as JSON lines in `path` (the last record of a key wins)."""

    def __init__(self, path: str | Path, resume: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not resume and self.path.exists():
            self.path.unlink()
        self._records: dict[str, dict[str, Any]] = {}
        self.skipped_lines = 0
        if self.path.exists():
            self._drop_torn_tail()
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                    self._records[record["key"]] = record
                except (json.JSONDecodeError, KeyError, TypeError):
                    self.skipped_lines += 1

    def _drop_torn_tail(self) -> None:
        # A kill mid-write leaves a last line without its newline: the next append would glue onto it
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.path.open("r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)
            self.skipped_lines += 1

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def __len__(self) -> int:
        return len(self._records)

    def get(self, key: str) -> dict[str, Any] | None:
        return self._records.get(key)

    def put_many(self, records: list[dict[str, Any]]) -> None:
        """Appends records (each with a `key`) and syncs them to disk."""
        if not records:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                self._records[record["key"]] = record
            handle.flush()
            os.fsync(handle.fileno())
