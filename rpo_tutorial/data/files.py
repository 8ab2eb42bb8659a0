"""Read records (one dict per row) from local JSON, JSON Lines, CSV or Parquet files.

Supported names: ``.json``, ``.jsonl`` (each optionally ``.gz``-compressed), ``.csv``,
``.parquet``. Anything else is a ``ValueError`` that lists what is supported.

Errors name the file and, where there is one, the line:
- a ``.json`` file that does not parse raises (the whole file is unusable);
- one broken line of a ``.jsonl`` file is one invalid row: skipped and counted, or raised in
  strict mode, like every other invalid row (see :mod:`rpo_tutorial.data.report`).

CSV cells are read as strings (no type guessing, so an empty cell stays ``""`` and is caught as
an empty field rather than turning into a float NaN).
"""
from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path
from typing import IO, Iterator

from rpo_tutorial.data.report import InvalidRow, LoadReport

SUFFIXES = (".json", ".json.gz", ".jsonl", ".jsonl.gz", ".csv", ".parquet")


def file_format(path: str | Path) -> str:
    """The format of a data file from its name: "json", "jsonl", "csv" or "parquet"."""
    name = Path(path).name.lower()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix.removesuffix(".gz").lstrip(".")
    raise ValueError(f"{path}: unsupported file extension {''.join(Path(path).suffixes) or '(none)'!r}; "
                     f"expected one of {', '.join(SUFFIXES)}")


def has_data_suffix(path: str | Path) -> bool:
    try:
        file_format(path)
    except ValueError:
        return False
    return True


def _open_text(path: Path) -> IO[str]:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig", newline="")


def _jsonl(path: Path, report: LoadReport, strict: bool) -> Iterator[tuple[int, dict]]:
    index = 0
    with _open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue  # blank lines are not rows
            report.total += 1
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                report.reject(InvalidRow(str(path), index, "invalid JSON", f"line {line_number}: {error.msg}"), strict)
            else:
                if isinstance(record, dict):
                    yield index, record
                else:
                    detail = f"line {line_number} holds a {type(record).__name__}"
                    report.reject(InvalidRow(str(path), index, "not a JSON object", detail), strict)
            index += 1


def _json(path: Path, report: LoadReport, strict: bool) -> Iterator[tuple[int, dict]]:
    with _open_text(path) as handle:
        try:
            records = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})") from None
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON array of objects at the top level, got a {type(records).__name__}")
    for index, record in enumerate(records):
        report.total += 1
        if isinstance(record, dict):
            yield index, record
        else:
            report.reject(InvalidRow(str(path), index, "not a JSON object", f"a {type(record).__name__}"), strict)


def _csv(path: Path, report: LoadReport) -> Iterator[tuple[int, dict]]:
    with _open_text(path) as handle:
        for index, record in enumerate(csv.DictReader(handle)):
            report.total += 1
            yield index, {key: value for key, value in record.items() if key is not None}


def _parquet(path: Path, report: LoadReport) -> Iterator[tuple[int, dict]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise ValueError(f"{path}: cannot read as Parquet ({type(error).__name__}: {error})") from None
    for index, record in enumerate(table.to_pylist()):
        report.total += 1
        yield index, record


def read_records(path: str | Path, report: LoadReport, strict: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield ``(index, record)`` for every row of a local file; bad rows go to ``report``.

    Args:
        path: a ``.json``/``.jsonl`` (optionally ``.gz``), ``.csv`` or ``.parquet`` file.
        report: receives the row count and the rows that are not JSON objects.
        strict: raise on the first such row instead of skipping it.

    Raises:
        FileNotFoundError: no such file. ValueError: unsupported extension, or a file that
        cannot be decoded at all (the message names the file and, for JSON, the line).
    """
    path = Path(path)
    kind = file_format(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such data file: {path}")
    report.sources.append(str(path))
    readers = {
        "jsonl": lambda: _jsonl(path, report, strict),
        "json": lambda: _json(path, report, strict),
        "csv": lambda: _csv(path, report),
        "parquet": lambda: _parquet(path, report),
    }
    try:
        yield from readers[kind]()
    except (UnicodeDecodeError, EOFError, gzip.BadGzipFile) as error:
        raise ValueError(f"{path}: cannot be decoded as {kind} ({type(error).__name__}: {error})") from None
