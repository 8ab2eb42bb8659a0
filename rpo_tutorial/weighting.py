"""Weighting strategies for the RPO contrast matrix: who is compared with whom, and how much.

Each strategy returns an (M, N) float32 tensor w that carries no gradient: row i holds the
weights of chosen response i against every rejected response j. ``rpo_loss`` consumes it.

| strategy    | w_ij                                             | source                       |
|-------------|--------------------------------------------------|------------------------------|
| embedding   | softmax_j(-d_ij / tau), d_ij = 1 - cos(e_i, e'_j)| paper Eqs. 11-12             |
| uniform     | 1/N ("paper") or 1 ("official")                  | paper / official code        |
| diagonal    | alpha on the diagonal, (1-alpha)/(M-1) elsewhere | paper Eq. 14 (paired only)   |
| sinkhorn    | entropic optimal transport with cost d_ij / tau  | beyond the paper (its future work) |
"""
from __future__ import annotations

from typing import Callable

import torch

CONVENTIONS = ("paper", "official")


def _embeddings(name: str, value: torch.Tensor) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() != 2 or value.shape[0] == 0:
        raise ValueError(f"{name} must have shape (K, D) with K >= 1, got {tuple(value.shape)}")
    if not torch.isfinite(value).all():
        raise ValueError(f"{name} contains non-finite values")
    return value.detach().float()


def _tau(tau: float) -> None:
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau > 0:  # NaN fails `> 0`
        raise ValueError(f"tau must be > 0, got {tau!r}")


def _count(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def prompt_distances(chosen_prompt_embeddings: torch.Tensor, rejected_prompt_embeddings: torch.Tensor) -> torch.Tensor:
    """Cosine distances d_ij = 1 - cos(e_i, e'_j) between prompt embeddings (paper Eq. 11).

    Shape:
        chosen_prompt_embeddings: (M, D); rejected_prompt_embeddings: (N, D); returns (M, N) in [0, 2]
    """
    chosen = _embeddings("chosen_prompt_embeddings", chosen_prompt_embeddings)
    rejected = _embeddings("rejected_prompt_embeddings", rejected_prompt_embeddings)
    if chosen.shape[1] != rejected.shape[1]:
        raise ValueError(f"embedding sizes differ: chosen D={chosen.shape[1]}, rejected D={rejected.shape[1]}")
    chosen = chosen / chosen.norm(dim=1, keepdim=True).clamp_min(1e-12)  # (M, D)
    rejected = rejected / rejected.norm(dim=1, keepdim=True).clamp_min(1e-12)  # (N, D)
    return (1.0 - chosen @ rejected.T).clamp(0.0, 2.0)  # (M, D) @ (D, N) -> (M, N)


def embedding_weights(
    chosen_prompt_embeddings: torch.Tensor, rejected_prompt_embeddings: torch.Tensor, tau: float = 0.5
) -> torch.Tensor:
    """w_ij = exp(-d_ij / tau) / sum_j' exp(-d_ij' / tau) (paper Eq. 12); each row sums to 1.

    Small tau concentrates a row on the most similar prompts (the diagonal of a paired batch,
    where d_ii = 0); tau -> infinity gives uniform 1/N.

    Shape:
        chosen_prompt_embeddings: (M, D); rejected_prompt_embeddings: (N, D); returns (M, N)
    """
    _tau(tau)
    distances = prompt_distances(chosen_prompt_embeddings, rejected_prompt_embeddings)  # (M, N)
    return torch.softmax(-distances / tau, dim=1)  # Eq. 12, normalised over j


def uniform_weights(M: int, N: int, convention: str = "paper") -> torch.Tensor:
    """Uniform weights: 1/N everywhere ("paper"), or 1 everywhere ("official").

    The paper's rows sum to 1 like every other strategy. The official code uses ones inside
    the sigmoid, i.e. the plain mean of -log sigma(s_ij) over all pairs; its effective beta per
    contrast is N times the paper's.

    Shape:
        returns (M, N)
    """
    _count("M", M)
    _count("N", N)
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    value = 1.0 / N if convention == "paper" else 1.0
    return torch.full((M, N), value, dtype=torch.float32)


def diagonal_weights(M: int, alpha: float = 0.5) -> torch.Tensor:
    """alpha on the diagonal and (1 - alpha) / (M - 1) off it (paper Eq. 14; paired only).

    alpha = 1 keeps only the DPO pairs; alpha = 1/M is uniform. Each row sums to 1; M = 1
    gives the single weight 1.

    Shape:
        returns (M, M)
    """
    _count("M", M)
    if not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if M == 1:
        return torch.ones((1, 1), dtype=torch.float32)
    weights = torch.full((M, M), (1.0 - alpha) / (M - 1), dtype=torch.float32)
    weights.fill_diagonal_(alpha)
    return weights


def sinkhorn_weights(
    chosen_prompt_embeddings: torch.Tensor,
    rejected_prompt_embeddings: torch.Tensor,
    tau: float = 0.5,
    num_iterations: int = 50,
) -> torch.Tensor:
    """Entropic optimal-transport weights with cost d_ij / tau, rows summing to 1, columns to M/N.

    Beyond the paper (its stated future work). Embedding weights normalise each row alone, so
    a rejected response whose prompt resembles many chosen prompts receives weight from every
    row and is pushed down harder than the rest. Sinkhorn balances the columns as well: every
    rejected response receives the same total mass M/N, while rows still prefer similar prompts.
    Iterations run in the log domain; the last step normalises rows exactly.

    Shape:
        chosen_prompt_embeddings: (M, D); rejected_prompt_embeddings: (N, D); returns (M, N)
    """
    _tau(tau)
    _count("num_iterations", num_iterations)
    log_kernel = -prompt_distances(chosen_prompt_embeddings, rejected_prompt_embeddings) / tau  # (M, N)
    M, N = log_kernel.shape
    log_col_target = torch.log(torch.tensor(M / N, device=log_kernel.device))
    log_u = torch.zeros(M, device=log_kernel.device)
    log_v = torch.zeros(N, device=log_kernel.device)
    for _ in range(num_iterations):
        log_u = -torch.logsumexp(log_kernel + log_v[None, :], dim=1)  # rows -> 1
        log_v = log_col_target - torch.logsumexp(log_kernel + log_u[:, None], dim=0)  # cols -> M/N
    plan = log_kernel + log_u[:, None] + log_v[None, :]  # (M, N), log of diag(u) K diag(v)
    return torch.softmax(plan, dim=1)  # exact row sums of 1; columns are M/N up to tolerance


def row_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Entropy of each row after normalising it to sum to 1 (log N = uniform, 0 = one-hot).

    Shape:
        weights: (M, N); returns (M,)
    """
    probabilities = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)  # (M, N)
    return -(probabilities * probabilities.clamp_min(1e-12).log()).sum(dim=1)


def diagonal_mass(weights: torch.Tensor) -> float:
    """Mean share of each row's weight that sits on its own pair (paired batches, M = N).

    Shape:
        weights: (M, M); returns a float in [0, 1] (nan when the matrix is not square)
    """
    if weights.dim() != 2 or weights.shape[0] != weights.shape[1]:
        return float("nan")
    row_sums = weights.sum(dim=1).clamp_min(1e-12)
    return (weights.diagonal() / row_sums).mean().item()


def _diagonal_from_embeddings(chosen: torch.Tensor, rejected: torch.Tensor, **options) -> torch.Tensor:
    if chosen.shape[0] != rejected.shape[0]:
        raise ValueError(
            f"diagonal weighting needs paired data (M == N), got M={chosen.shape[0]}, N={rejected.shape[0]}"
        )
    return diagonal_weights(chosen.shape[0], options["alpha"])


# name -> builder(chosen_prompt_embeddings (M, D), rejected_prompt_embeddings (N, D), **options) -> (M, N)
WEIGHTINGS: dict[str, Callable[..., torch.Tensor]] = {
    "embedding": lambda chosen, rejected, **o: embedding_weights(chosen, rejected, o["tau"]),
    "uniform": lambda chosen, rejected, **o: uniform_weights(chosen.shape[0], rejected.shape[0], o["convention"]),
    "diagonal": _diagonal_from_embeddings,
    "sinkhorn": lambda chosen, rejected, **o: sinkhorn_weights(chosen, rejected, o["tau"]),
}


def compute_weights(
    name: str,
    chosen_prompt_embeddings: torch.Tensor,
    rejected_prompt_embeddings: torch.Tensor,
    *,
    tau: float = 0.5,
    alpha: float = 0.5,
    convention: str = "paper",
) -> torch.Tensor:
    """Build the (M, N) weight matrix of strategy ``name`` for one batch.

    M and N are read from the embeddings' first dimensions (uniform and diagonal ignore the
    vectors themselves).

    Shape:
        chosen_prompt_embeddings: (M, D); rejected_prompt_embeddings: (N, D); returns (M, N)
    """
    if name not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {name!r}; choose from {sorted(WEIGHTINGS)}")
    return WEIGHTINGS[name](
        chosen_prompt_embeddings, rejected_prompt_embeddings, tau=tau, alpha=alpha, convention=convention
    ).to(chosen_prompt_embeddings.device)
