"""An append-only JSON-lines cache of paid judge answers, so a crash or Ctrl-C loses nothing.

Each answer is one line ``{"key", "judge_model", "task", "order", "answer", "verdict"}`` appended
(then flushed and fsynced) the moment it arrives. ``key`` is the SHA-256 of (judge model,
template, prompt, response A, response B, order): change any of them and the request is new;
rerun with the same inputs and the answer is read back instead of bought again. Only answers
are stored, never errors, so a request that failed is simply tried again on the next run.

A line cut short by a crash (the last line of the file) is skipped with a warning, and the next
append starts on a fresh line. One writer per cache file at a time (threads of one process are
fine: appends hold a lock).
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Mapping


def request_key(judge_model: str, template: str, prompt: str, response_a: str, response_b: str, order: str) -> str:
    """SHA-256 hex digest identifying one judge request (the six fields, JSON-encoded)."""
    payload = json.dumps([judge_model, template, prompt, response_a, response_b, order], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class JudgeCache:
    """Answers by request key, loaded from and appended to ``path`` (in memory only when None).

    Attributes:
        skipped_lines: lines of the file that could not be read (a crash's partial last line).
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self.skipped_lines = 0
        self._entries: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._needs_newline = False
        if self.path is not None and self.path.exists():
            self._load()

    def _load(self) -> None:
        text = self.path.read_text(encoding="utf-8")
        self._needs_newline = bool(text) and not text.endswith("\n")
        for line_number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                self._entries[entry["key"]] = entry
            except (json.JSONDecodeError, KeyError, TypeError):
                self.skipped_lines += 1
                warnings.warn(f"{self.path}: skipping unreadable cache line {line_number} "
                              "(an interrupted write?); its request will be made again", stacklevel=3)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> dict | None:
        """The cached entry for ``key``, or None."""
        return self._entries.get(key)

    def append(self, entry: Mapping[str, Any]) -> None:
        """Store ``entry`` (it must hold ``"key"``): one line, flushed and fsynced before returning."""
        if not isinstance(entry.get("key"), str):
            raise ValueError(f"a cache entry needs a string 'key', got {entry.get('key')!r:.40}")
        line = json.dumps(dict(entry), ensure_ascii=False) + "\n"
        with self._lock:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as handle:
                    if self._needs_newline:
                        handle.write("\n")
                        self._needs_newline = False
                    handle.write(line)
                    handle.flush()
                    os.fsync(handle.fileno())
            self._entries[entry["key"]] = dict(entry)
