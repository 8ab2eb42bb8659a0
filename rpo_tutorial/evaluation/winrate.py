"""Win rates with 95% Wilson intervals, and the table of methods (the shape of the paper's Table 3).

How outcomes enter (``n`` = judged pairs = wins + losses + ties):

    win_rate = (wins + ties / 2) / n

A tie is half a win, as a pair whose verdict flipped with the order carries no preference
(:mod:`rpo_tutorial.accuracy`, the package's one rule for ties).
"failed" and "unparseable" pairs are counted and reported but are NOT in ``n``: they are
missing judgements, not losses (the official DPO / RPO scripts count them as losses).

The interval is Wilson's score interval for a proportion ``p`` = win_rate over ``n`` trials at
normal quantile ``z`` (1.96 for 95%), applied to the half-counted ties as to any proportion::

    centre = (p + z^2 / (2n)) / (1 + z^2 / n)
    half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))
    [ci_low, ci_high] = [centre - half, centre + half]

It stays inside [0, 1] and behaves at p = 0 or 1 and for small n, where the normal interval
does not. With ``n = 0`` the win rate and both bounds are NaN.
"""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Mapping, Sequence

from rpo_tutorial.accuracy import tie_half_rate
from rpo_tutorial.evaluation.prompts import WINNERS


def wilson_interval(p: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval ``(low, high)`` for an observed proportion ``p`` out of ``n`` trials."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= p <= 1:
        raise ValueError(f"p must be a proportion in [0, 1], got {p!r}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def win_rate(records: Sequence[Mapping[str, Any]], confidence: float = 0.95) -> dict:
    """Win rate of the candidate over the baseline, with its interval and every count.

    Returns:
        ``{win_rate, ci_low, ci_high, n, wins, losses, ties, failed, unparseable, total}``
        (rates in [0, 1]; ``total`` = all records).

    Raises:
        ValueError: a record without a valid ``"winner"`` (names the index and value).
    """
    counts = dict.fromkeys(WINNERS, 0)
    for index, record in enumerate(records):
        winner = record.get("winner") if isinstance(record, Mapping) else None
        if winner not in counts:
            raise ValueError(f"records[{index}] has winner {winner!r}; expected one of {WINNERS}")
        counts[winner] += 1
    wins, losses, ties = counts["candidate"], counts["baseline"], counts["tie"]
    n = wins + losses + ties
    rate = tie_half_rate(wins, ties, n)
    low, high = wilson_interval(rate, n, confidence) if n else (math.nan, math.nan)
    return {"win_rate": rate, "ci_low": low, "ci_high": high, "n": n, "wins": wins, "losses": losses,
            "ties": ties, "failed": counts["failed"], "unparseable": counts["unparseable"], "total": len(records)}


def _summary(value: Any, where: str) -> dict:
    if isinstance(value, Mapping) and "win_rate" in value:
        return dict(value)
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return win_rate(value)
    raise ValueError(f"{where} must be a list of judge records or a win_rate() summary, got {type(value).__name__}")


def win_rate_table(results: Mapping[str, Any]) -> list[dict]:
    """Rows ``{method, [dataset,] win_rate, ci_low, ci_high, n, ...}`` from named results.

    Args:
        results: ``{method: records or summary}`` or ``{method: {dataset: records or summary}}``
            (the paper's Table 3: methods against each dataset's chosen responses).
    """
    rows = []
    for method, value in results.items():
        nested = isinstance(value, Mapping) and "win_rate" not in value
        for dataset, item in (value.items() if nested else [(None, value)]):
            row = {"method": method} if dataset is None else {"method": method, "dataset": dataset}
            row.update(_summary(item, f"results[{method!r}]" + (f"[{dataset!r}]" if nested else "")))
            rows.append(row)
    return rows


def _percent(row: Mapping[str, Any]) -> str:
    if not row.get("n"):
        return "n/a"
    return f"{100 * row['win_rate']:.1f} ({100 * row['ci_low']:.1f}-{100 * row['ci_high']:.1f})"


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table of :func:`win_rate_table` rows (percent, 95% interval in brackets).

    With a ``dataset`` column the table is pivoted like the paper's Table 3: one row per method,
    one column per dataset. Otherwise one row per method with the counts.
    """
    if not rows:
        return "(no results)"
    if any("dataset" in row for row in rows):
        datasets = list(dict.fromkeys(row.get("dataset", "") for row in rows))
        methods = list(dict.fromkeys(row["method"] for row in rows))
        cells = {(row["method"], row.get("dataset", "")): _percent(row) for row in rows}
        lines = ["| method | " + " | ".join(map(str, datasets)) + " |", "|---" * (len(datasets) + 1) + "|"]
        for method in methods:
            lines.append(f"| {method} | " + " | ".join(cells.get((method, d), "-") for d in datasets) + " |")
        return "\n".join(lines)
    lines = ["| method | win rate % (95% CI) | n | wins | ties | losses | failed | unparseable |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {row['method']} | {_percent(row)} | {row['n']} | {row['wins']} | {row['ties']} | {row['losses']} "
              f"| {row['failed']} | {row['unparseable']} |" for row in rows]
    return "\n".join(lines)
