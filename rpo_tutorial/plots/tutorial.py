"""Figures for the tutorial notebooks 01-03 (loss curves, contrast matrices, weights across tau).

Built on :mod:`rpo_tutorial.plots.base` (``heatmap``, ``save``). Every function returns the
matplotlib figure and saves it when ``path`` is given, so a notebook shows it inline and
``figures/`` gets the same picture.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch

from rpo_tutorial.plots.base import heatmap, plt, save


def _finish(figure: plt.Figure, path: str | Path | None) -> plt.Figure:
    figure.tight_layout()
    if path is not None:
        save(figure, path)
    return figure


def plot_curves(
    x: torch.Tensor,
    curves: Mapping[str, torch.Tensor],
    xlabel: str,
    ylabel: str,
    title: str = "",
    path: str | Path | None = None,
    ax: plt.Axes | None = None,
) -> plt.Figure:
    """Line plot of several curves over one x axis (e.g. loss against the margin h).

    Shape:
        x: (K,); each curve: (K,)
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6.0, 4.0))
    for name, values in curves.items():
        if values.shape != x.shape:
            raise ValueError(f"curve {name!r} has shape {tuple(values.shape)}, x has {tuple(x.shape)}")
        ax.plot(x.numpy(), values.detach().float().numpy(), label=name)
    ax.axvline(0.0, color="grey", linewidth=0.6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _finish(ax.figure, path)


def plot_distributions(
    distributions: Mapping[str, torch.Tensor], labels: Sequence[str], title: str = "", path: str | Path | None = None
) -> plt.Figure:
    """Grouped bars of several probability vectors over the same K outcomes (e.g. pi_ref vs pi*).

    Shape:
        each distribution: (K,); labels: K names
    """
    figure, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(labels) + 2.0), 3.6))
    width = 0.8 / max(len(distributions), 1)
    for index, (name, values) in enumerate(distributions.items()):
        positions = [k + (index - (len(distributions) - 1) / 2) * width for k in range(len(labels))]
        ax.bar(positions, values.detach().float().numpy(), width=width, label=name)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("probability")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _finish(figure, path)


def _outline_diagonal(ax: plt.Axes, size: int) -> None:
    for k in range(size):
        ax.add_patch(plt.Rectangle((k - 0.5, k - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.6))


def _labels_for(labels: Mapping[str, Sequence[str]] | Sequence[str], name: str) -> Sequence[str]:
    return labels[name] if isinstance(labels, Mapping) else labels


def plot_contrast_matrices(
    matrices: Mapping[str, torch.Tensor],
    row_labels: Mapping[str, Sequence[str]] | Sequence[str],
    col_labels: Mapping[str, Sequence[str]] | Sequence[str],
    outline_diagonal: Mapping[str, bool] | None = None,
    path: str | Path | None = None,
) -> plt.Figure:
    """Side-by-side heatmaps of contrast matrices s_ij, centred at 0 (red: s > 0, blue: s < 0).

    Labels are one list shared by every matrix, or a mapping from the matrix's name to its list.
    The diagonal of a paired matrix (DPO's own pairs) is outlined when ``outline_diagonal[name]``.

    Shape:
        each matrix: (M_k, N_k); its row labels: M_k names; its column labels: N_k names
    """
    widths = [max(3.0, 0.55 * m.shape[1] + 3.4) for m in matrices.values()]
    height = 0.5 * max(m.shape[0] for m in matrices.values()) + 2.8
    figure, axes = plt.subplots(1, len(matrices), figsize=(sum(widths), height), squeeze=False,
                                gridspec_kw={"width_ratios": widths})
    bound = max(matrix.abs().max().item() for matrix in matrices.values()) or 1.0  # one scale for all
    for ax, (name, matrix) in zip(axes.flat, matrices.items()):
        rows, columns = _labels_for(row_labels, name), _labels_for(col_labels, name)
        if (len(rows), len(columns)) != tuple(matrix.shape):
            raise ValueError(f"{name!r}: {len(rows)} x {len(columns)} labels for a {tuple(matrix.shape)} matrix")
        heatmap(ax, matrix, name, row_labels=rows, col_labels=columns, cmap="coolwarm", center_zero=True)
        ax.images[0].set_clim(-bound, bound)
        ax.set_xlabel("rejected response j")
        ax.set_ylabel("chosen response i")
        if outline_diagonal and outline_diagonal.get(name):
            _outline_diagonal(ax, min(matrix.shape))
    return _finish(figure, path)


def weight_shares(weights: torch.Tensor, groups: Sequence[str]) -> dict[str, float]:
    """Mean share of each row's weight on its own prompt, on same-group prompts, on the rest.

    For a paired batch whose prompts carry topic labels ``groups``: "own" is w_ii, "related" the
    other prompts of the same topic, "unrelated" everything else (row sums normalised to 1).

    Shape:
        weights: (M, M); groups: M labels; returns three floats that sum to 1
    """
    M = weights.shape[0]
    if weights.shape != (M, len(groups)) or M != len(groups):
        raise ValueError(f"weights must be (M, M) with M = len(groups) = {len(groups)}, got {tuple(weights.shape)}")
    shares = weights / weights.sum(dim=1, keepdim=True)  # (M, M), rows sum to 1
    same = torch.tensor([[a == b for b in groups] for a in groups])  # (M, M) bool
    own = torch.eye(M, dtype=torch.bool)
    return {
        "own": shares[own].sum().item() / M,
        "related": shares[same & ~own].sum().item() / M,
        "unrelated": shares[~same].sum().item() / M,
    }


def _share_bars(ax: plt.Axes, shares: Mapping[str, Mapping[str, float]], title: str) -> None:
    names = list(shares)
    bottom = [0.0] * len(names)
    for part, color in (("own", "tab:green"), ("related", "tab:orange"), ("unrelated", "tab:grey")):
        values = [shares[name][part] for name in names]
        ax.bar(range(len(names)), values, bottom=bottom, color=color, label=part)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_xticks(range(len(names)), names, fontsize=7, rotation=30, ha="right")
    ax.set_ylabel("mean share of a row's weight")
    ax.set_ylim(0, 1.12)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper center", ncol=3)


def _shared_scale(ax: plt.Axes, vmax: float) -> None:
    """Put a heatmap on the colour scale [0, vmax] and keep its cell labels readable."""
    image = ax.images[0]
    image.set_clim(0.0, vmax)
    for text in ax.texts:
        value = float(text.get_text())
        text.set_color("black" if value > 0.6 * vmax else "white")


def plot_weight_panels(
    matrices: Mapping[str, torch.Tensor],
    labels: Sequence[str],
    groups: Sequence[str],
    shares_title: str = "where each row's weight goes",
    path: str | Path | None = None,
) -> plt.Figure:
    """Heatmaps of weight matrices on one colour scale, plus stacked bars of own / related / unrelated.

    The heatmaps fill a two-column grid; the bars take a third column spanning all rows. Used
    for the embedding weights across tau and for the strategy comparison.

    Shape:
        each matrix: (M, M); labels, groups: M entries
    """
    count = len(matrices)
    rows = (count + 1) // 2
    figure = plt.figure(figsize=(17.0, 4.6 * rows))
    grid = figure.add_gridspec(rows, 3, width_ratios=(1.0, 1.0, 0.8))
    vmax = max(matrix.max().item() for matrix in matrices.values())
    for index, (title, matrix) in enumerate(matrices.items()):
        ax = figure.add_subplot(grid[index // 2, index % 2])
        heatmap(ax, matrix, title, row_labels=labels, col_labels=[str(j) for j in range(matrix.shape[1])])
        _shared_scale(ax, vmax)
    bars = figure.add_subplot(grid[:, 2])
    _share_bars(bars, {name: weight_shares(m, groups) for name, m in matrices.items()}, shares_title)
    return _finish(figure, path)


def plot_coverage(
    masks: Mapping[str, torch.Tensor], labels: Sequence[str], path: str | Path | None = None
) -> plt.Figure:
    """Which (i, j) contrasts a loss sees: 1 = in some contrast matrix, 0 = never compared.

    Shape:
        each mask: (M, N) bool or 0/1
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    colours = ("#eeeeee", "#2e7d32")  # never compared, compared: two categories, so a legend, not a colour bar
    figure, axes = plt.subplots(1, len(masks), figsize=(4.8 * len(masks), 4.6), squeeze=False)
    for ax, (title, mask) in zip(axes.flat, masks.items()):
        heatmap(ax, mask.float(), title, row_labels=labels, col_labels=[str(j) for j in range(mask.shape[1])],
                annotate=False, cmap=ListedColormap(colours))
        ax.images[0].set_clim(0.0, 1.0)
        ax.images[0].colorbar.remove()
    axes.flat[-1].legend(handles=[Patch(color=colours[1], label="compared"), Patch(color=colours[0], label="never")],
                         loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    return _finish(figure, path)
