"""The one place where messages about bad input are worded: file, row, field, value.

Every loader (and the CLI) reports a problem with the user's input the same way:

    data/pairs.jsonl: row 12: field 'chosen': not a string (got 3)

- :class:`DataError` (a ``ValueError``): the input cannot be used; the CLI prints its message as
  one line and exits with status 1.
- :class:`RowError`: one row is invalid; loaders skip it and count it (or raise a
  :class:`DataError` naming it in strict mode), see :mod:`rpo_tutorial.data.report`.
"""
from __future__ import annotations

from pathlib import Path

# Longer text fields are refused: no preference or prompt text is a megabyte long; such a field
# is a broken export (a whole file pasted into one cell), and it would be cut to max_length anyway.
MAX_FIELD_CHARS = 1_000_000
_NO_VALUE = object()


class DataError(ValueError):
    """Input data that cannot be used; the message names the file, and where known the row and field."""


class RowError(ValueError):
    """Raised by row parsers for an invalid row; ``reason`` is the short reason that is counted."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason} ({detail})" if detail else reason)
        self.reason = reason
        self.detail = detail


def locate(source: str | Path, row: int | None = None, field: str | None = None) -> str:
    """``"path: row 3: field 'prompt'"``: the location part of every message (row is 0-based)."""
    parts = [str(source)]
    if row is not None:
        parts.append(f"row {row}")
    if field is not None:
        parts.append(f"field {field!r}")
    return ": ".join(parts)


def data_error(source: str | Path, problem: str, row: int | None = None, field: str | None = None,
               value: object = _NO_VALUE) -> DataError:
    """A :class:`DataError` worded ``"<file>: row <i>: field '<f>': <problem> (got <value>)"``."""
    message = f"{locate(source, row, field)}: {problem}"
    if value is not _NO_VALUE:
        message += f" (got {value!r:.60})"
    return DataError(message)


def check_data_file(path: str | Path, expected: str = "a data file") -> Path:
    """``path`` as a Path when it is an existing file; else a clear error.

    Raises:
        FileNotFoundError: nothing at ``path``. DataError: ``path`` is a directory.
    """
    path = Path(path)
    if path.is_dir():
        raise data_error(path, f"is a directory, expected {expected}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected {expected})")
    return path


def check_field_length(value: object, field: str, limit: int = MAX_FIELD_CHARS) -> None:
    """Raise :class:`RowError` ("field too long") when a string field exceeds ``limit`` characters."""
    if isinstance(value, str) and len(value) > limit:
        raise RowError("field too long", f"field {field!r} has {len(value):,} characters, more than {limit:,}")
