"""The judge command's input files, checked before anything is judged (or paid for).

A candidates or baselines file is JSON lines of ``{"prompt": str | message list, "<field>": str}``
(``field`` is ``response`` for sample files, e.g. ``chosen`` for a preference file). Every
problem is a :class:`~rpo_tutorial.data.errors.DataError` naming the file, row and field; rows
that repeat an earlier row's prompt are kept (each is judged) and counted in a warning, so a
doubled sample file is never judged twice silently.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

from rpo_tutorial.data.errors import MAX_FIELD_CHARS, data_error
from rpo_tutorial.data.jsonl import read_jsonl


def _check_text(path: Path, index: int, field: str, value: object) -> None:
    if isinstance(value, list) and field == "prompt":  # a chat message list
        if not value or not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in value):
            raise data_error(path, "must be a string or a list of {role, content} messages", index, field, value)
        value = "".join(message["content"] for message in value)
    if not isinstance(value, str):
        raise data_error(path, f"must be a string, not {type(value).__name__}", index, field, value)
    if not value.strip():
        raise data_error(path, "is empty", index, field)
    if len(value) > MAX_FIELD_CHARS:
        raise data_error(path, f"has {len(value):,} characters, more than {MAX_FIELD_CHARS:,}", index, field)


def load_judge_rows(path: str | Path, field: str, limit: int | None = None) -> list[dict]:
    """The rows of one judge input file, checked (see the module docstring); warns about repeated prompts."""
    path = Path(path)
    rows = read_jsonl(path)[:limit]
    if not rows:
        raise data_error(path, "holds no rows (an empty file)")
    seen: set[str] = set()
    repeats = []
    for index, row in enumerate(rows):
        for key in ("prompt", field):
            if key not in row:
                raise data_error(path, f"missing (the row has {sorted(row)[:8]})", index, key)
            _check_text(path, index, key, row[key])
        prompt_key = json.dumps(row["prompt"], sort_keys=True, ensure_ascii=False)
        if prompt_key in seen:
            repeats.append(index)
        seen.add(prompt_key)
    if repeats:
        warnings.warn(f"{path}: {len(repeats)} rows repeat an earlier row's prompt (rows {repeats[:5]}); "
                      "candidates are each judged, a baseline's first row is used", stacklevel=2)
    return rows
