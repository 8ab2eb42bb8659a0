"""What a loader kept, what it skipped and why: the one return type of every loader.

Every loader in :mod:`rpo_tutorial.data` returns a :class:`PreferenceData`: a plain ``list`` of
row dicts (use it anywhere a list works: slicing, ``len``, a ``DataLoader``) that also carries
``.report``, a :class:`LoadReport` with the counts of skipped rows by reason and where they are.

Invalid rows are never dropped silently. By default they are skipped, counted, and announced
with one ``warnings.warn`` per load; with ``strict=True`` the first one raises a ``ValueError``
that names the file (or hub dataset), the 0-based row index, the reason and the field.

    rows = load_hh(path="harmless-base-test.jsonl.gz")
    rows.report.counts()           # {"prompts differ": 5, "empty response": 4}
    rows.report.first_indexes()    # [86, 516, 925, 1103, 1254]
"""
from __future__ import annotations

import json
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from rpo_tutorial.data.errors import DataError, locate

__all__ = ["InvalidRow", "LoadReport", "PreferenceData", "drop_duplicates", "finish"]  # errors: data.errors
STRICT_HINT = "Pass strict=False (on the command line: leave out --strict) to skip invalid rows and count them."
# what a user can do about skipped rows: the loaders' argument, or the flag of the commands that load files
STRICT_ADVICE = ("pass strict=True (on the command line: rpo-tutorial train / sft / evaluate --strict) to raise on "
                 "the first invalid row")
# keys that tell copies of one row apart without changing its content
_IDENTITY_KEYS = ("id", "source", "prompt_embedding")


@dataclass(frozen=True)
class InvalidRow:
    """One skipped row."""

    source: str  # file path or hub dataset (with subset / split) the row came from
    index: int  # 0-based position of the row within its source
    reason: str  # short, stable reason used for counting, e.g. "empty response"
    detail: str = ""  # the field and value involved, for the message

    def describe(self) -> str:
        text = f"{locate(self.source, self.index)}: {self.reason}"
        return f"{text} ({self.detail})" if self.detail else text


@dataclass
class LoadReport:
    """Counts of one load: rows read, rows kept, and every skipped row with its reason."""

    sources: list[str] = field(default_factory=list)  # where rows were read from
    total: int = 0  # rows read (valid and invalid)
    kept: int = 0  # rows returned
    invalid: list[InvalidRow] = field(default_factory=list)  # every skipped row, in reading order
    duplicates: list[int] = field(default_factory=list)  # positions of kept rows that repeat an earlier row
    strict_hint: str = STRICT_HINT  # how to get past a strict-mode error

    @property
    def skipped(self) -> int:
        return len(self.invalid)

    def counts(self) -> dict[str, int]:
        """Skipped rows per reason, most frequent first."""
        return dict(Counter(row.reason for row in self.invalid).most_common())

    def first_indexes(self, reason: str | None = None, limit: int = 5) -> list[int]:
        """0-based indexes of the first skipped rows (of one reason, or of any)."""
        rows = [row for row in self.invalid if reason is None or row.reason == reason]
        return [row.index for row in rows[:limit]]

    def reject(self, row: InvalidRow, strict: bool) -> None:
        """Record an invalid row; in strict mode raise instead, naming it."""
        if strict:
            raise DataError(f"invalid row: {row.describe()}. {self.strict_hint}")
        self.invalid.append(row)

    def summary(self, limit: int = 5) -> str:
        """One line: how many rows were skipped, per reason, with the first few locations."""
        parts = []
        several_sources = len({row.source for row in self.invalid}) > 1
        for reason, count in self.counts().items():
            rows = [row for row in self.invalid if row.reason == reason][:limit]
            where = ", ".join(f"{row.source}:{row.index}" if several_sources else str(row.index) for row in rows)
            parts.append(f"{reason}: {count} (first rows {where})")
        origin = ", ".join(self.sources) or "the input"
        text = f"skipped {self.skipped} of {self.total} rows from {origin}: " + "; ".join(parts) if parts else \
            f"read {self.total} rows from {origin}"
        if self.duplicates:
            text += (f"; kept {len(self.duplicates)} rows that repeat an earlier row "
                     f"(positions {self.duplicates[:limit]})")
        return text

    def merge(self, other: "LoadReport") -> None:
        """Add another report's counts to this one (used when reading several subsets)."""
        self.sources.extend(other.sources)
        self.total += other.total
        self.kept += other.kept
        self.invalid.extend(other.invalid)
        self.duplicates.extend(other.duplicates)


class PreferenceData(list):
    """A list of row dicts with the :class:`LoadReport` of the load that produced it.

    ``rows.report`` holds the counts; ``rows.rows`` is the list itself (for readability).
    Slicing or concatenating returns a plain list, without the report.
    """

    def __init__(self, rows: Iterable[dict] = (), report: LoadReport | None = None):
        super().__init__(rows)
        self.report = report if report is not None else LoadReport(total=len(self), kept=len(self))

    @property
    def rows(self) -> list[dict]:
        return self

    def __repr__(self) -> str:
        return f"PreferenceData({len(self)} rows, {self.report.skipped} skipped)"


def _content_key(row: dict) -> str:
    return json.dumps({key: value for key, value in row.items() if key not in _IDENTITY_KEYS},
                      sort_keys=True, default=str, ensure_ascii=False)


def duplicate_positions(rows: Iterable[dict]) -> list[int]:
    """Positions of rows equal to an earlier row in every key but ``id``, ``source`` and embeddings."""
    seen, positions = set(), []
    for position, row in enumerate(rows):
        key = _content_key(row)
        if key in seen:
            positions.append(position)
        seen.add(key)
    return positions


def drop_duplicates(rows: "PreferenceData") -> "PreferenceData":
    """The rows without the duplicates its report counted (the first copy of each row stays)."""
    report = getattr(rows, "report", None) or LoadReport(total=len(rows))
    dropped = set(duplicate_positions(rows))
    kept = [row for position, row in enumerate(rows) if position not in dropped]
    new_report = LoadReport(list(report.sources), report.total, len(kept), list(report.invalid), [],
                            report.strict_hint)
    return PreferenceData(kept, new_report)


def finish(rows: list[dict], report: LoadReport, loader: str) -> PreferenceData:
    """Wrap kept rows with their report; warn (once) when rows were skipped or duplicated.

    Duplicate rows are kept (a dataset may repeat a pair on purpose) but counted in
    ``report.duplicates`` and announced; :func:`drop_duplicates` removes them. When rows were read
    but none is valid, a :class:`DataError` with the counts is raised instead of returning nothing.
    """
    report.kept = len(rows)
    if report.total and not rows:
        raise DataError(f"{loader}: no valid row: {report.summary()}")
    report.duplicates = duplicate_positions(rows)
    if report.invalid or report.duplicates:
        advice = [STRICT_ADVICE] if report.invalid else []
        advice += ["drop_duplicates(rows) drops the repeats"] if report.duplicates else []
        warnings.warn(f"{loader}: {report.summary()}. To change this: {', or '.join(advice)}; the counts are in "
                      ".report.", stacklevel=3)
    return PreferenceData(rows, report)
