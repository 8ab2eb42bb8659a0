"""Small JSON-lines helpers shared by sampling, judging and the evaluation CLI.

``write_jsonl`` writes to a temporary file and renames it, so a crash never leaves a half-written
output; ``read_jsonl`` names the file and line of any malformed row (or of a line that is not
UTF-8, or where a ``.gz`` file is cut short) instead of failing deep inside ``json``.
"""
from __future__ import annotations

import gzip
import json
import os
import zlib
from pathlib import Path
from typing import Iterable, Mapping

from rpo_tutorial.data.errors import check_data_file, data_error


def read_jsonl(path: str | Path) -> list[dict]:
    """Every non-blank line of ``path`` parsed as one JSON object.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a directory, a line that is not UTF-8 or not a JSON object, a truncated
            ``.gz`` (the message names the file and line number).
    """
    path = check_data_file(path, "a JSON-lines file")
    rows = []
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    line_number = 0
    try:
        with opener(path, "rb") as handle:
            for line_number, raw in enumerate(handle, start=1):
                rows.extend(_parse_line(path, line_number, raw))
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise data_error(path, f"truncated or damaged gzip file after line {line_number} ({error})") from None
    return rows


def _parse_line(path: Path, line_number: int, raw: bytes) -> list[dict]:
    """The line's JSON object (as a one-element list), or [] for a blank line."""
    try:
        line = raw.decode("utf-8-sig" if line_number == 1 else "utf-8")
    except UnicodeDecodeError as error:
        raise data_error(path, f"line {line_number} is not UTF-8 text (column {error.start + 1})") from None
    if not line.strip():
        return []
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise data_error(path, f"line {line_number} is not valid JSON ({error.msg})") from None
    if not isinstance(row, dict):
        raise data_error(path, f"line {line_number} must be a JSON object, got {type(row).__name__}")
    return [row]


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
