"""Bar plot of win rates with 95% error bars across methods (and datasets), Agg-safe.

    from rpo_tutorial.evaluation.winrate import win_rate_table
    from rpo_tutorial.plots.winrates import plot_win_rates
    rows = win_rate_table({"DPO": dpo_records, "RPO": rpo_records})
    figure = plot_win_rates(rows, path="figures/win_rates.png")
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from rpo_tutorial.plots.base import plt, save


def plot_win_rates(rows: Sequence[Mapping[str, Any]], path: str | Path | None = None,
                   title: str = "Win rate against the baseline (95% Wilson interval)",
                   reference: float | None = 0.5) -> plt.Figure:
    """One bar per method (grouped by ``dataset`` when the rows have one), with asymmetric error bars.

    Args:
        rows: :func:`rpo_tutorial.evaluation.winrate.win_rate_table` rows (``method``, optional ``dataset``,
            ``win_rate``, ``ci_low``, ``ci_high``, ``n``); rates in [0, 1] are drawn as percent.
        path: save a PNG there as well.
        reference: draw a dashed line at this rate (0.5 = parity with the baseline); None for none.

    Returns:
        The matplotlib Figure.
    """
    if not rows:
        raise ValueError("rows is empty: nothing to plot")
    for index, row in enumerate(rows):
        missing = [key for key in ("method", "win_rate", "ci_low", "ci_high") if key not in row]
        if missing:
            raise ValueError(f"rows[{index}] lacks {missing}; build rows with winrate.win_rate_table")
    datasets = list(dict.fromkeys(row.get("dataset", "") for row in rows))
    methods = list(dict.fromkeys(row["method"] for row in rows))
    by_cell = {(row["method"], row.get("dataset", "")): row for row in rows}
    width = 0.8 / len(methods)
    figure, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(methods) * len(datasets) + 1.5), 3.8))
    for m, method in enumerate(methods):
        xs, heights, below, above = [], [], [], []
        for d, dataset in enumerate(datasets):
            row = by_cell.get((method, dataset))
            if row is None or not row.get("n") or math.isnan(row["win_rate"]):
                continue  # no judged pairs: no bar
            rate = 100 * row["win_rate"]
            xs.append(d + (m - (len(methods) - 1) / 2) * width)
            heights.append(rate)
            below.append(rate - 100 * row["ci_low"])
            above.append(100 * row["ci_high"] - rate)
        ax.bar(xs, heights, width=width * 0.92, yerr=[below, above], capsize=4, label=method)
        for x, height, up in zip(xs, heights, above):
            ax.text(x, height + up + 1.5, f"{height:.1f}", ha="center", va="bottom", fontsize=7)  # above the cap
    if reference is not None:
        ax.axhline(100 * reference, color="grey", linestyle="--", linewidth=1)
    if datasets == [""]:  # one group: name each bar on the axis
        ax.set_xticks([(m - (len(methods) - 1) / 2) * width for m in range(len(methods))], methods, fontsize=8)
    else:
        ax.set_xticks(range(len(datasets)), [str(d) for d in datasets])
        ax.legend(fontsize=8, loc="upper left", ncols=len(methods), frameon=False)
    ax.set_ylabel("win rate (%)")
    ax.set_ylim(0, 115)
    ax.set_title(title, fontsize=10)
    figure.tight_layout()
    if path is not None:
        save(figure, path)
    return figure
