"""Accuracy with ties: the one rule every preference accuracy and win rate in the package uses.

A comparison is won when the chosen side scores higher, lost when it scores lower, and tied when
the two scores are exactly equal. A tie carries no preference either way, so it counts half a
win, never a miss::

    accuracy = (wins + ties / 2) / n

A model equal to its reference ties every pair and so scores exactly 0.5, not 0. The training
metrics (``rewards/accuracies``, ``contrast/accuracy``), the held-out implicit-reward accuracy,
the judges' win rates and the study all count this way; it sits below both training and
evaluation so that neither imports the other for it.
"""
from __future__ import annotations

import math

import torch


def tie_half_accuracy(differences: torch.Tensor) -> torch.Tensor:
    """1 where a score difference (chosen minus rejected) is > 0, 0.5 where it is exactly 0, 0 where < 0.

    Works on torch tensors (float32 result) and numpy arrays (float64 result) alike.

    Shape:
        differences: any shape; returns the same shape
    """
    return (differences > 0) * 1.0 + (differences == 0) * 0.5


def tie_half_rate(wins: int, ties: int, n: int) -> float:
    """``(wins + ties / 2) / n`` from counts, NaN when ``n`` is 0 (nothing was compared)."""
    return (wins + ties / 2) / n if n else math.nan
