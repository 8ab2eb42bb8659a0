"""Embed a few related and unrelated prompts and show every weighting strategy on them.

This is the quick look at RPO's weighting: it needs only the bundled all-MiniLM-L6-v2 and
runs offline in seconds. ``python -m rpo_lab weights`` runs it.
"""
from __future__ import annotations

from pathlib import Path

import torch

from rpo_tutorial.data.examples import example_texts
from rpo_tutorial.plots.base import plot_weight_matrices
from rpo_tutorial.weighting import compute_weights, diagonal_mass, prompt_distances


def embed_texts(texts: list[str]) -> torch.Tensor:
    """Embed with the project's PromptEmbedder (bundled all-MiniLM-L6-v2, cached).

    Shape:
        returns (K, D) float32
    """
    from rpo_tutorial.data.embeddings import PromptEmbedder

    return PromptEmbedder().embed(texts)


def strategy_matrices(prompt_embeddings: torch.Tensor, tau: float = 0.5, alpha: float = 0.5) -> dict[str, torch.Tensor]:
    """Every strategy's (M, M) weights for a paired batch whose prompts are ``prompt_embeddings``."""
    options = {"tau": tau, "alpha": alpha}
    return {
        f"embedding (tau={tau})": compute_weights("embedding", prompt_embeddings, prompt_embeddings, **options),
        "uniform (paper: 1/N)": compute_weights("uniform", prompt_embeddings, prompt_embeddings),
        f"diagonal (alpha={alpha})": compute_weights("diagonal", prompt_embeddings, prompt_embeddings, **options),
        f"sinkhorn (tau={tau})": compute_weights("sinkhorn", prompt_embeddings, prompt_embeddings, **options),
        "cosine distance d_ij": prompt_distances(prompt_embeddings, prompt_embeddings),
    }


def run_weights_demo(output_dir: str | Path, tau: float = 0.5, alpha: float = 0.5) -> Path:
    """Print every strategy's weight matrix for the example prompts and save a heatmap PNG."""
    texts = example_texts()
    prompt_embeddings = embed_texts(texts)
    matrices = strategy_matrices(prompt_embeddings, tau, alpha)
    torch.set_printoptions(precision=3, sci_mode=False, linewidth=120)
    for index, text in enumerate(texts):
        print(f"  [{index}] {text}")
    for name, matrix in matrices.items():
        print(f"\n{name}  (diagonal mass {diagonal_mass(matrix):.3f})\n{matrix}")
    path = Path(output_dir) / "weighting_strategies.png"
    plot_weight_matrices(matrices, labels=[f"[{i}] {t}" for i, t in enumerate(texts)], path=path)
    print(f"\nSaved {path}")
    return path
