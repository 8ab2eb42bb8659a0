"""Figures of a real-model study, from ``study.json`` alone: accuracies, learning curves, the rate grid."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rpo_lab.study.settings import LABELS  # noqa: E402
from rpo_lab.world.figures import STYLE  # noqa: E402
from rpo_tutorial.plots.base import save  # noqa: E402


def _methods(report: dict) -> list[str]:
    return list(report["methods"])


def plot_accuracy(report: dict, path: Path) -> Path:
    """Left: held-out accuracy per method with its 95 % interval; right: difference to DPO, family-wise interval."""
    analysis, methods = report["analysis"], _methods(report)
    summaries = analysis["cells"][0]["summaries"]["accuracy"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    positions = np.arange(len(methods))
    for x, method in zip(positions, methods):
        s = summaries[method]
        color = STYLE.get(method, ("tab:blue", "-"))[0]
        left.errorbar(x, 100 * s["mean"], yerr=[[100 * (s["mean"] - s["ci_low"])], [100 * (s["ci_high"] - s["mean"])]],
                      fmt="o", color=color, capsize=3)
        found = [c for c in analysis["comparisons"] if c["method"] == method and c["against"] == "dpo"]
        if found:
            c = found[0]
            right.errorbar(x, 100 * c["mean"], yerr=[[100 * (c["mean"] - c["ci_low_corrected"])],
                                                     [100 * (c["ci_high_corrected"] - c["mean"])]],
                           fmt="s" if c["family"] == "primary" else "o", color=color, capsize=3)
    left.axhline(50, color="grey", linewidth=0.8, linestyle=":")
    left.axhline(60, color="grey", linewidth=0.8, linestyle="--")
    right.axhline(0, color="grey", linewidth=0.8, linestyle=":")
    for ax, title in ((left, "held-out accuracy, % (95 % interval)"),
                      (right, "difference to DPO, points (family-wise interval)")):
        ax.set_xticks(positions, [LABELS[m] for m in methods], rotation=40, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
    figure.suptitle(f"seeds x held-out pairs resampled (crossed bootstrap); {len(report['settings']['seeds'])} seeds")
    figure.tight_layout()
    saved = save(figure, path)
    plt.close(figure)
    return saved


def plot_learning_curves(report: dict, path: Path) -> Path:
    """Train loss and own-pair train margin per step, mean over seeds, one line per method."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for method, curve in report["curves"].items():
        color, line = STYLE.get(method, (None, "-"))
        for ax, field in zip(axes, ("loss", "train_margin")):
            ax.plot(curve["step"], curve[field], color=color, linestyle=line, linewidth=1.0, label=LABELS[method])
    axes[0].set_ylabel("train loss (batch)")
    axes[1].set_ylabel("own-pair train margin, nats")
    for ax in axes:
        ax.set_xlabel("optimizer step")
    axes[1].legend(fontsize=7)
    figure.suptitle("mean over seeds")
    figure.tight_layout()
    saved = save(figure, path)
    plt.close(figure)
    return saved


def plot_validation(report: dict, path: Path) -> Path:
    """Validation accuracy against the learning rate (the tuning grid), one line per method."""
    figure, ax = plt.subplots(figsize=(6, 4.2))
    for method, by_rate in report["validation_accuracy_by_rate"].items():
        rates = sorted(by_rate, key=float)
        color, line = STYLE.get(method, (None, "-"))
        ax.plot([float(r) for r in rates], [100 * by_rate[r] for r in rates], color=color, linestyle=line, marker="o",
                markersize=3, label=LABELS[method])
    ax.set_xscale("log")
    ax.axhline(50, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("validation accuracy, %")
    ax.legend(fontsize=7)
    figure.tight_layout()
    saved = save(figure, path)
    plt.close(figure)
    return saved
