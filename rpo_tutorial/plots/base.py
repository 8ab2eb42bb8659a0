"""Figures: weight-matrix heatmaps, contrast matrices and training curves (matplotlib, Agg-safe)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

if matplotlib.get_backend().lower() not in {"module://matplotlib_inline.backend_inline", "nbagg", "widget"}:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def _short(label: str, width: int = 28) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def heatmap(
    ax: plt.Axes,
    matrix: torch.Tensor,
    title: str,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    annotate: bool = True,
    cmap: str = "viridis",
    center_zero: bool = False,
) -> None:
    """Draw one (M, N) matrix on ``ax`` with optional labels and values in the cells."""
    values = matrix.detach().float().cpu()
    low, high = min(values.min().item(), 0.0), values.max().item()
    if center_zero:
        high = values.abs().max().item() or 1.0
        low = -high
    if high <= low:  # a constant matrix: keep a visible scale
        high = low + 1.0
    limits = {"vmin": low, "vmax": high}
    image = ax.imshow(values.numpy(), cmap=cmap, aspect="auto", **limits)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title, fontsize=10)
    M, N = values.shape
    ax.set_yticks(range(M), [_short(s) for s in row_labels] if row_labels else range(M), fontsize=7)
    ax.set_xticks(range(N), [_short(s, 12) for s in col_labels] if col_labels else range(N), fontsize=7, rotation=45, ha="right")
    if annotate and M * N <= 100:
        for i in range(M):
            for j in range(N):
                bright = (values[i, j].item() - low) / (high - low) > 0.6 and not center_zero
                ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=6, color="black" if bright else "white")


def plot_weight_matrices(
    matrices: dict[str, torch.Tensor], labels: Sequence[str] | None = None, path: str | Path | None = None
) -> plt.Figure:
    """One heatmap per weighting strategy, side by side; saved to ``path`` when given."""
    count = len(matrices)
    columns = min(count, 3)
    rows = (count + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 4.4 * rows), squeeze=False)
    for ax, (title, matrix) in zip(axes.flat, matrices.items()):
        heatmap(ax, matrix, title, row_labels=labels, col_labels=[str(j) for j in range(matrix.shape[1])])
    for ax in list(axes.flat)[count:]:
        ax.axis("off")
    figure.tight_layout()
    if path is not None:
        save(figure, path)
    return figure


def save(figure: plt.Figure, path: str | Path, dpi: int = 130) -> Path:
    """Save a figure as PNG, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
