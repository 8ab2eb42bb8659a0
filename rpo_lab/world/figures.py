"""Figures of the synthetic study, from ``study.json`` alone: the regime figure and the learning curves."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rpo_lab.world.labels import ARM_TEXT, LABELS  # noqa: E402
from rpo_lab.world.run import method_keys  # noqa: E402
from rpo_lab.world.spec import StudyDesign  # noqa: E402

STYLE = {"dpo": ("black", "-"), "rpo-emb": ("tab:red", "-"), "rpo-uniform": ("tab:blue", "--"),
         "dpo-own-beta": ("tab:gray", "--"), "rpo-own-pair": ("tab:orange", ":"), "rpo-placebo": ("tab:purple", "-."),
         "rpo-emb-paper-beta": ("tab:pink", ":"), "rpo-unpaired": ("tab:green", "-."), "kto": ("tab:olive", ":")}
PANELS = (("accuracy", "test accuracy (ties half)", 1.0), ("gain", "true-reward gain over the reference (r*)", 1.0))


def _panels(design: StudyDesign) -> list[tuple[str, str]]:
    return [(regime, arm) for regime, _ in design.regimes for arm in design.batch_arms]


def plot_regimes(report: dict, design: StudyDesign, path: Path) -> Path:
    """Rows: accuracy, gain; columns: regime x batch arm; x: pairs per cluster; one line per method, 95 % CI."""
    panels, methods = _panels(design), method_keys(design)
    cells = {tuple(cell["key"]): cell for cell in report["analysis"]["cells"]}
    figure, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 7.4), squeeze=False, sharex=True)
    sizes = np.asarray(design.pairs_per_cluster, dtype=float)
    for column, (regime, arm) in enumerate(panels):
        for row, (metric, ylabel, _) in enumerate(PANELS):
            ax = axes[row][column]
            for offset, method in enumerate(methods):
                stats = [cells[(regime, arm, size)]["summaries"][metric][method] for size in design.pairs_per_cluster]
                means = np.asarray([s["mean"] for s in stats])
                errors = np.abs(np.asarray([[s["ci_low"] for s in stats], [s["ci_high"] for s in stats]]) - means)
                color, line = STYLE.get(method, (None, "-"))
                x = sizes * (1 + 0.025 * (offset - len(methods) / 2))  # small dodge so intervals do not overlap
                ax.errorbar(x, means, yerr=errors, color=color, linestyle=line, marker="o", markersize=3,
                            capsize=2, linewidth=1.2, label=LABELS[method])
            ax.set_xscale("log", base=2)
            ax.set_xticks(sizes, [str(s) for s in design.pairs_per_cluster])
            if metric == "accuracy":
                ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
                ax.set_title(f"{regime} regime, {ARM_TEXT[arm]}", fontsize=9)
            else:
                ax.axhline(0.0, color="grey", linewidth=0.8, linestyle=":")
                ax.set_xlabel("train pairs per cluster")
            if column == 0:
                ax.set_ylabel(ylabel)
    handles, names = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, names, loc="lower center", ncol=min(len(names), 5), fontsize=8)
    figure.suptitle(f"mean over {len(report['seeds'])} seeds, 95 % bootstrap interval over seeds")
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    figure.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(figure)
    return path


def plot_learning_curves(report: dict, design: StudyDesign, path: Path) -> Path:
    """Rows: smallest and largest train size; columns: regime x batch arm; test-subset accuracy per step."""
    panels, methods = _panels(design), method_keys(design)
    sizes = [design.pairs_per_cluster[0], design.pairs_per_cluster[-1]]
    figure, axes = plt.subplots(len(sizes), len(panels), figsize=(4.2 * len(panels), 3.4 * len(sizes)), squeeze=False)
    for row, size in enumerate(sizes):
        for column, (regime, arm) in enumerate(panels):
            ax = axes[row][column]
            for method in methods:
                entry = report["curves"][f"{regime}/{arm}/{size}/{method}"]
                color, line = STYLE.get(method, (None, "-"))
                ax.plot(entry["step"], entry["mean"], color=color, linestyle=line, label=LABELS[method])
            ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
            ax.set_title(f"{regime}, {ARM_TEXT[arm]}, {size} pairs/cluster", fontsize=8)
            ax.set_xlabel("step")
            if column == 0:
                ax.set_ylabel("test accuracy (subset)")
    handles, names = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, names, loc="lower center", ncol=min(len(names), 5), fontsize=8)
    figure.suptitle("learning curves: mean over seeds")
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    figure.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(figure)
    return path
