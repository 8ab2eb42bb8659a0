"""Figures of a study (``rpo-tutorial study``): learning curves with bands, accuracy bars with intervals.

Both take plain dicts (the study's JSON), so they need nothing from training.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rpo_tutorial.plots.base import save  # noqa: E402


def plot_learning_curves(curves: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]], path: str | Path,
                         metric: str = "accuracy", ylabel: str = "held-out implicit-reward accuracy") -> Path:
    """One panel per setting; per method the mean over seeds and a band from the lowest to the highest seed.

    Args:
        curves: ``{setting: {method label: {"step": [K steps], "values": [[K values of seed 0], ...]}}}``
    """
    settings = list(curves)
    figure, axes = plt.subplots(1, len(settings), figsize=(5.2 * len(settings), 4.2), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        for label, series in curves[setting].items():
            steps = np.asarray(series["step"], dtype=float)
            values = np.asarray(series["values"], dtype=float)  # (S, K)
            mean = values.mean(axis=0)
            line, = ax.plot(steps, mean, marker="o", markersize=3, label=label)
            if values.shape[0] > 1:
                ax.fill_between(steps, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.15)
        ax.axhline(0.5 if metric == "accuracy" else 0.0, color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(setting)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7, loc="best")
    figure.suptitle("mean over seeds; band: lowest to highest seed")
    figure.tight_layout()
    saved = save(figure, path)
    plt.close(figure)
    return saved


def plot_accuracy_bars(rows: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path,
                       key: str = "accuracy", title: str = "held-out implicit-reward accuracy") -> Path:
    """Per setting, one bar per method: mean over seeds with its 95% interval across seeds.

    Args:
        rows: ``{setting: [{"label", key: {"mean", "ci_low", "ci_high"}}, ...]}``
    """
    settings = list(rows)
    figure, axes = plt.subplots(1, len(settings), figsize=(5.2 * len(settings), 4.6), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        entries = [row for row in rows[setting] if row.get(key)]
        means = np.asarray([row[key]["mean"] for row in entries], dtype=float)
        lows = np.asarray([row[key]["ci_low"] for row in entries], dtype=float)
        highs = np.asarray([row[key]["ci_high"] for row in entries], dtype=float)
        errors = np.vstack([np.nan_to_num(means - lows), np.nan_to_num(highs - means)])
        positions = np.arange(len(entries))
        ax.bar(positions, means, yerr=errors, capsize=3, color="tab:blue", alpha=0.75)
        ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xticks(positions, [row["label"] for row in entries], rotation=60, ha="right", fontsize=7)
        ax.set_title(setting)
        low = float(np.nanmin(np.concatenate([lows, means, [0.5]])))
        high = float(np.nanmax(np.concatenate([highs, means, [0.5]])))
        ax.set_ylim(max(0.0, low - 0.05), min(1.0, high + 0.05))
    axes[0][0].set_ylabel(title)
    figure.suptitle(f"{title}: mean over seeds, 95% t-interval across seeds")
    figure.tight_layout()
    saved = save(figure, path)
    plt.close(figure)
    return saved
