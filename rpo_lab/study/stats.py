"""The study's statistics: intervals across seeds, and paired differences by bootstrap.

- Across seeds (the table's "mean [95% CI]"): the seeds' values x_1..x_S are treated as draws
  of a run's outcome; the interval is Student's t: ``mean +- t_{0.975, S-1} * sd / sqrt(S)``
  (``sd`` with S - 1 in the denominator). With one seed there is no interval (NaN).
- Paired difference to DPO: on each held-out pair p of seed s both methods get an outcome
  ``o = 1`` (chosen ranked higher), ``0.5`` (tie), ``0`` (lower), as in the accuracy. The
  difference ``d_sp = o_method - o_DPO`` shares the seed's SFT reference, data order and pair,
  so it removes what both runs have in common. Its interval is a two-level bootstrap: resample
  the S seeds with replacement, then within each drawn seed the P pairs with replacement, and
  take the mean of ``d``; the 2.5% and 97.5% percentiles of ``samples`` such means.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def seed_interval(values: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean and Student-t interval of per-seed values (module docstring)."""
    from scipy.stats import t as student_t

    array = np.asarray([value for value in values if value is not None], dtype=float)
    if array.size == 0:
        return {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n_seeds": 0}
    mean = float(array.mean())
    if array.size == 1:
        return {"mean": mean, "ci_low": math.nan, "ci_high": math.nan, "n_seeds": 1}
    half = float(student_t.ppf(0.5 + confidence / 2, array.size - 1) * array.std(ddof=1) / math.sqrt(array.size))
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n_seeds": int(array.size)}


def pair_outcomes(policy: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """1 / 0.5 / 0 per held-out pair: chosen log-ratio above / equal to / below the rejected one.

    Shape:
        policy, reference: (P, 2) log-probs (chosen, rejected); returns (P,)
    """
    ratios = np.asarray(policy, dtype=float) - np.asarray(reference, dtype=float)  # (P, 2)
    difference = ratios[:, 0] - ratios[:, 1]
    return (difference > 0) + 0.5 * (difference == 0)


def paired_bootstrap(method: np.ndarray, baseline: np.ndarray, samples: int = 2000, confidence: float = 0.95,
                     seed: int = 0) -> dict:
    """Mean of ``method - baseline`` and its two-level (seeds, then pairs) bootstrap interval.

    Shape:
        method, baseline: (S, P) outcomes of the same S seeds and P held-out pairs
    """
    method, baseline = np.asarray(method, dtype=float), np.asarray(baseline, dtype=float)
    if method.shape != baseline.shape or method.ndim != 2 or method.size == 0:
        raise ValueError(f"outcomes must be two (seeds, pairs) arrays of one shape, got {method.shape} and "
                         f"{baseline.shape}")
    difference = method - baseline  # (S, P)
    seeds, pairs = difference.shape
    generator = np.random.default_rng(seed)
    seed_draws = generator.integers(0, seeds, size=(samples, seeds))  # (B, S)
    pair_draws = generator.integers(0, pairs, size=(samples, seeds, pairs))  # (B, S, P)
    means = difference[seed_draws[:, :, None], pair_draws].mean(axis=(1, 2))  # (B,)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return {"mean": float(difference.mean()), "ci_low": float(low), "ci_high": float(high),
            "n_seeds": seeds, "n_pairs": pairs, "samples": samples}
