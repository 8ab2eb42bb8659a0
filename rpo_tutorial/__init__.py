"""rpo_tutorial: Relative Preference Optimization (Yin et al., arXiv 2402.10958), tested and explained.

The losses and weighting strategies are pure functions; import them into any trainer:

    from rpo_tutorial import rpo_loss, embedding_weights
    weights = embedding_weights(chosen_prompt_embeddings, rejected_prompt_embeddings, tau=0.5)
    losses, chosen_rewards, rejected_rewards = rpo_loss(
        policy_chosen_logps, policy_rejected_logps,
        reference_chosen_logps, reference_rejected_logps, weights, beta=0.1)
"""
from .losses import LOSSES, contrast_matrix, dpo_loss, ipo_loss, kto_loss, rpo_loss, zero_loss_like
from .weighting import (
    WEIGHTINGS,
    compute_weights,
    diagonal_weights,
    embedding_weights,
    sinkhorn_weights,
    uniform_weights,
)

__version__ = "0.1.0"

__all__ = [
    "LOSSES",
    "WEIGHTINGS",
    "compute_weights",
    "contrast_matrix",
    "diagonal_weights",
    "dpo_loss",
    "embedding_weights",
    "ipo_loss",
    "kto_loss",
    "rpo_loss",
    "sinkhorn_weights",
    "uniform_weights",
    "zero_loss_like",
]
