"""Small JSON-lines helpers shared by sampling, judging and the evaluation CLI.

``write_jsonl`` writes to a temporary file and renames it, so a crash never leaves a half-written
output; ``read_jsonl`` names the file and line of any malformed row instead of failing deep
inside ``json``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Mapping


def read_jsonl(path: str | Path) -> list[dict]:
    """Every non-blank line of ``path`` parsed as one JSON object.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line that is not a JSON object (message names the file and line number).
    """
    path = Path(path)
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}: line {line_number} is not valid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}: line {line_number} must be a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def write_jsonl(path: str | Path, rows: Iterable[Mapping]) -> Path:
    """Write ``rows`` as JSON lines (UTF-8, non-ASCII kept), atomically; creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(path)
    return path
