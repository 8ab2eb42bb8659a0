"""Training curves from metrics.jsonl files and the demo's combined figure."""
from __future__ import annotations

import json
import math

import pytest

from rpo_tutorial.plots.base import plt
from rpo_tutorial.plots.training import (
    TRAINING_METRICS,
    draw_win_rates,
    load_run,
    metric_series,
    plot_demo_results,
    plot_training_curves,
)


def records(steps: int, offset: float = 0.0, contrast: bool = True) -> list[dict]:
    """Logging-step records like RPOTrainer writes them, then the trainer's final summary record."""
    rows = []
    for step in range(1, steps + 1):
        row = {"step": step, "epoch": step / steps, "loss": 0.7 - 0.05 * step + offset,
               "rewards/margins": 0.1 * step, "rewards/accuracies": min(1.0, 0.5 + 0.1 * step),
               "logps/chosen": -100.0 + step}
        if contrast:
            row["contrast/accuracy"] = 0.4 + 0.05 * step
        rows.append(row)
    rows.append({"step": steps, "epoch": 1.0, "train_loss": 0.5, "train_runtime": 3.0})
    return rows


def write_run(folder, rows) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_load_run_reads_folder_file_or_records_and_drops_the_summary(tmp_path):
    rows = records(3)
    write_run(tmp_path / "run", rows)
    from_folder = load_run(tmp_path / "run")
    assert from_folder == load_run(tmp_path / "run" / "metrics.jsonl") == load_run(rows)
    assert [row["step"] for row in from_folder] == [1, 2, 3]
    assert all("train_loss" not in row for row in from_folder)


def test_load_run_names_a_missing_metrics_file(tmp_path):
    with pytest.raises(ValueError, match="no metrics file"):
        load_run(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="record 1"):
        load_run([{"step": 1, "loss": 1.0}, "not a dict"])


def test_metric_series_skips_missing_and_non_finite_values():
    rows = [{"step": 1, "loss": 1.0}, {"step": 2, "loss": math.nan}, {"step": 3}, {"step": 4, "loss": 0.5},
            {"step": 5, "loss": True}]
    assert metric_series(rows, "loss") == ([1, 4], [1.0, 0.5])


def test_training_curves_draw_one_line_per_run_that_logged_the_metric(tmp_path):
    write_run(tmp_path / "dpo", records(4, contrast=True))
    sft_like = [{k: v for k, v in row.items() if k not in ("contrast/accuracy",)} for row in records(4, 0.3)]
    path = tmp_path / "figure" / "curves.png"
    figure = plot_training_curves({"DPO": tmp_path / "dpo", "SFT-like": sft_like}, path=path)
    assert path.is_file() and path.stat().st_size > 0
    axes = figure.axes[: len(TRAINING_METRICS)]
    lines = {ax.get_title(): len(ax.lines) for ax in axes}
    assert list(lines.values()) == [2, 2, 2, 2, 1]  # contrast/accuracy logged by one run only
    loss_axes = axes[0]
    expected = [0.7 - 0.05 * step for step in range(1, 5)]
    assert list(loss_axes.lines[0].get_ydata()) == pytest.approx(expected)
    plt.close(figure)


def test_a_metric_no_run_logged_gets_a_note_instead_of_lines():
    figure = plot_training_curves({"A": records(2)}, metrics=("loss", "weights/row_entropy"))
    ax = figure.axes[1]
    assert not ax.lines and any("weights/row_entropy" in text.get_text() for text in ax.texts)
    plt.close(figure)


def test_win_rate_bars_have_the_rates_and_interval_ends():
    rows = [{"method": "DPO", "win_rate": 0.7, "ci_low": 0.55, "ci_high": 0.82, "n": 40},
            {"method": "RPO", "win_rate": 0.6, "ci_low": 0.45, "ci_high": 0.74, "n": 40},
            {"method": "none", "win_rate": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}]
    figure, ax = plt.subplots()
    draw_win_rates(ax, rows)
    heights = [patch.get_height() for patch in ax.patches]
    assert heights == pytest.approx([70.0, 60.0])  # the row without judged pairs gets no bar
    segments = ax.collections[0].get_segments()  # the error bars: (x, low) -> (x, high)
    assert [(s[0][1], s[1][1]) for s in segments] == [pytest.approx((55.0, 82.0)), pytest.approx((45.0, 74.0))]
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["DPO", "RPO"]
    plt.close(figure)


def test_demo_figure_has_curves_and_win_rates(tmp_path):
    rows = [{"method": "DPO", "win_rate": 0.7, "ci_low": 0.55, "ci_high": 0.82, "n": 40}]
    path = tmp_path / "demo.png"
    figure = plot_demo_results({"DPO": records(3), "RPO": records(3, 0.1)}, rows, path=path)
    assert path.is_file()
    assert len(figure.axes) == len(TRAINING_METRICS) + 1
    assert "win rate vs SFT" in figure.axes[len(TRAINING_METRICS)].get_title()
    plt.close(figure)


def test_empty_runs_are_rejected():
    with pytest.raises(ValueError, match="runs is empty"):
        plot_training_curves({})
