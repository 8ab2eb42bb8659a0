"""Read records (one dict per row) from local JSON, JSON Lines, CSV or Parquet files.

Supported names: ``.json``, ``.jsonl`` (each optionally ``.gz``-compressed), ``.csv``,
``.parquet``. Anything else is a ``ValueError`` that lists what is supported.

Errors name the file and, where there is one, the line:
- a ``.json`` file that does not parse raises (the whole file is unusable);
- one broken line of a ``.jsonl`` file is one invalid row: skipped and counted, or raised in
  strict mode, like every other invalid row (see :mod:`rpo_tutorial.data.report`).

CSV cells are read as strings (no type guessing, so an empty cell stays ``""`` and is caught as
an empty field rather than turning into a float NaN). The csv module's 128 KiB cell limit is raised
to :data:`CSV_FIELD_LIMIT` while reading; a larger cell is an error naming the file and line.

A directory, an empty file (no rows), a file that is not UTF-8 and a truncated ``.gz`` are errors
naming the file (and the line, where one is known).
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import json
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from rpo_tutorial.data.errors import MAX_FIELD_CHARS, check_data_file, data_error
from rpo_tutorial.data.report import InvalidRow, LoadReport

SUFFIXES = (".json", ".json.gz", ".jsonl", ".jsonl.gz", ".csv", ".parquet")
CSV_FIELD_LIMIT = 4 * MAX_FIELD_CHARS  # bytes per CSV cell while reading (longer text fields are refused later)


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


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line, decoded one by one so a bad byte is reported with its line."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise data_error(path, f"line {line_number} is not UTF-8 text (byte {raw[error.start]:#04x} at "
                                       f"column {error.start + 1})") from None
            yield line_number, text.removeprefix("\ufeff") if line_number == 1 else text


def _jsonl(path: Path, report: LoadReport, strict: bool) -> Iterator[tuple[int, dict]]:
    index = 0
    for line_number, line in _decoded_lines(path):
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


@contextmanager
def _csv_field_limit(limit: int):
    previous = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _csv(path: Path, report: LoadReport) -> Iterator[tuple[int, dict]]:
    with _open_text(path) as handle, _csv_field_limit(CSV_FIELD_LIMIT):
        reader = csv.DictReader(handle)
        index = 0
        while True:
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                raise data_error(path, f"line {reader.line_num + 1}: unreadable CSV ({error})", row=index) from None
            except UnicodeDecodeError:
                raise data_error(path, f"not UTF-8 text (near line {reader.line_num + 1})", row=index) from None
            report.total += 1
            yield index, {key: value for key, value in record.items() if key is not None}
            index += 1


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
        report: receives the row count, the rows that are not JSON objects, and the indexes of
            records equal to an earlier one (``report.duplicates``).
        strict: raise on the first such row instead of skipping it.

    Raises:
        FileNotFoundError: no such file. ValueError (:class:`DataError`): a directory, an
        unsupported extension, an empty file, or a file that cannot be decoded (the message
        names the file and, where known, the line).
    """
    path = Path(path)
    kind = file_format(path)
    check_data_file(path, f"a {kind} file")
    report.sources.append(str(path))
    read_before = report.total
    readers = {
        "jsonl": lambda: _jsonl(path, report, strict),
        "json": lambda: _json(path, report, strict),
        "csv": lambda: _csv(path, report),
        "parquet": lambda: _parquet(path, report),
    }
    seen: set[bytes] = set()
    try:
        for index, record in readers[kind]():
            key = hashlib.blake2b(json.dumps(record, sort_keys=True, default=str).encode(), digest_size=16).digest()
            if key in seen:
                report.duplicates.append(index)  # counted here; loaders recount on the rows they keep
            seen.add(key)
            yield index, record
    except UnicodeDecodeError as error:
        raise data_error(path, f"not UTF-8 text (byte {error.object[error.start]:#04x} at offset {error.start})") \
            from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise data_error(path, f"truncated or damaged gzip file after {report.total - read_before} rows "
                               f"({type(error).__name__}: {error})") from None
    if report.total == read_before:
        raise data_error(path, "holds no rows (an empty file)")
