"""Training curves from ``metrics.jsonl`` files, one line per method, and the demo's results figure.

    from rpo_tutorial.plots.training import plot_training_curves
    figure = plot_training_curves({"DPO": "outputs/demo/dpo", "RPO": "outputs/demo/rpo"},
                                  path="figures/training_curves.png")

Each run is a folder holding ``metrics.jsonl`` (what :class:`rpo_tutorial.training.trainer.RPOTrainer`
writes), the file itself, or a list of already-read records. Only the records of logging steps
are drawn (those that carry ``loss``; the trainer's final summary record has ``train_loss``
instead). A metric that a run never logged (``contrast/accuracy`` of an SFT run) is left out of
that run's panel, and a panel no run logged says so instead of drawing empty axes.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from rpo_tutorial.data.run_logs import METRICS_FILE, read_metrics
from rpo_tutorial.plots.base import plt, save

TRAINING_METRICS = ("loss", "rewards/margins", "rewards/accuracies", "logps/chosen", "contrast/accuracy")
_TITLES = {
    "loss": "training loss",
    "rewards/margins": "reward margin  beta*(log-ratio chosen - rejected)",
    "rewards/margins_nats": "train margin  log-ratio chosen - rejected (nats)",
    "rewards/accuracies": "reward accuracy (own pair)",
    "logps/chosen": "log pi(chosen | prompt)",
    "contrast/accuracy": "contrast accuracy  share of s_ij > 0",
}


def load_run(run: str | Path | Sequence[Mapping[str, Any]]) -> list[dict]:
    """The logging-step records of one run: a folder, a ``metrics.jsonl`` path, or records."""
    if isinstance(run, (str, Path)):
        path = Path(run)
        if path.is_dir():
            path = path / METRICS_FILE
        if not path.is_file():
            raise ValueError(f"no metrics file at {path}; train with RPOTrainer (it writes {METRICS_FILE})")
        records = read_metrics(path)
    elif isinstance(run, Sequence):
        records = list(run)
    else:
        raise ValueError(f"a run must be a folder, a metrics.jsonl path or a list of records, got {type(run).__name__}")
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise ValueError(f"record {index} is {type(record).__name__}, expected a dict")
    return [dict(record) for record in records if "loss" in record and "step" in record]


def metric_series(records: Sequence[Mapping[str, Any]], name: str) -> tuple[list[int], list[float]]:
    """(steps, values) of ``name`` over the records that logged a finite value of it."""
    steps, values = [], []
    for record in records:
        value = record.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            steps.append(int(record["step"]))
            values.append(float(value))
    return steps, values


def draw_training_curves(axes: Sequence[plt.Axes], runs: Mapping[str, list[dict]],
                         metrics: Sequence[str] = TRAINING_METRICS) -> None:
    """One panel per metric on ``axes`` (same length as ``metrics``), one line per run."""
    if len(axes) != len(metrics):
        raise ValueError(f"got {len(axes)} axes for {len(metrics)} metrics")
    for ax, name in zip(axes, metrics):
        drawn = 0
        for label, records in runs.items():
            steps, values = metric_series(records, name)
            if steps:
                ax.plot(steps, values, marker="o", markersize=3, linewidth=1.5, label=label)
                drawn += 1
        ax.set_title(_TITLES.get(name, name), fontsize=9)
        ax.set_xlabel("optimizer step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=7, frameon=False)
        else:
            ax.text(0.5, 0.5, f"no run logged\n{name}", ha="center", va="center", transform=ax.transAxes,
                    fontsize=8, color="grey")


def _runs(runs: Mapping[str, Any]) -> dict[str, list[dict]]:
    if not runs:
        raise ValueError("runs is empty: nothing to plot")
    return {str(label): load_run(run) for label, run in runs.items()}


def plot_training_curves(runs: Mapping[str, Any], metrics: Sequence[str] = TRAINING_METRICS,
                         path: str | Path | None = None) -> plt.Figure:
    """Training curves of several runs in one figure (a panel per metric).

    Args:
        runs: ``{label: folder | metrics.jsonl path | records}``.
        metrics: names as logged in ``metrics.jsonl`` (see ``rpo_tutorial.training.metrics``).
        path: also save the PNG there.
    """
    loaded = _runs(runs)
    columns = min(len(metrics), 3)
    rows = math.ceil(len(metrics) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    draw_training_curves(list(axes.flat)[: len(metrics)], loaded, metrics)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    figure.tight_layout()
    if path is not None:
        save(figure, path)
    return figure


def draw_win_rates(ax: plt.Axes, rows: Sequence[Mapping[str, Any]], baseline: str = "baseline") -> None:
    """Win-rate bars (percent) with asymmetric 95% error bars on one axes; rows from ``win_rate_table``."""
    kept = [row for row in rows if row.get("n") and not math.isnan(row["win_rate"])]
    rates = [100 * row["win_rate"] for row in kept]
    below = [rate - 100 * row["ci_low"] for rate, row in zip(rates, kept)]
    above = [100 * row["ci_high"] - rate for rate, row in zip(rates, kept)]
    colors = [f"C{index}" for index in range(len(kept))]
    ax.bar(range(len(kept)), rates, yerr=[below, above], capsize=4, color=colors, width=0.6)
    for x, (rate, up, row) in enumerate(zip(rates, above, kept)):
        ax.text(x, rate + up + 2, f"{rate:.1f}\nn={row['n']}", ha="center", va="bottom", fontsize=7)
    ax.axhline(50, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(kept)), [str(row["method"]) for row in kept], fontsize=8)
    ax.set_ylim(0, 118)
    ax.set_ylabel("win rate (%)", fontsize=8)
    ax.set_title(f"win rate vs {baseline} (95% Wilson CI)", fontsize=9)
    ax.tick_params(labelsize=7)


def plot_demo_results(runs: Mapping[str, Any], win_rate_rows: Sequence[Mapping[str, Any]],
                      path: str | Path | None = None, baseline: str = "SFT",
                      metrics: Sequence[str] = TRAINING_METRICS) -> plt.Figure:
    """The demo's figure: training curves of each method and the win-rate bars, 2 x 3 panels."""
    loaded = _runs(runs)
    panels = len(metrics) + 1
    columns = 3
    rows = math.ceil(panels / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(13, 3.4 * rows), squeeze=False)
    flat = list(axes.flat)
    draw_training_curves(flat[: len(metrics)], loaded, metrics)
    draw_win_rates(flat[len(metrics)], win_rate_rows, baseline)
    for ax in flat[panels:]:
        ax.axis("off")
    figure.tight_layout()
    if path is not None:
        save(figure, path)
    return figure
