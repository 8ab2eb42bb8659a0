"""Inference for seeded, paired studies: bootstrap intervals, paired differences, Holm, power.

The data of one method in one condition is, per seed s, a vector of per-unit values x_s (test
pairs' outcomes 0 / 0.5 / 1, or per-prompt reward gains; one value per seed for a per-seed
scalar). The estimand is the mean over seeds of the per-seed means. Designs:

- ``"nested"`` (the synthetic world: each seed draws its own test pairs): a bootstrap draw
  resamples the S seeds with replacement, each keeping its own units. A seed's mean already
  carries its own unit-sampling noise, so both levels of variation enter: the replicates' variance
  is (S - 1) / S^2 (sigma_b^2 + sigma_w^2 / P), the unbiased two-stage variance up to (S - 1) / S
  (Davison & Hinkley 1997, Sec. 3.8).
- ``"two-level"``: seeds with replacement, then the units of every drawn seed copy with
  replacement. It counts the within-seed variance twice (sigma_b^2 / S + 2 sigma_w^2 / (S P)), so
  its intervals over-cover when pair noise dominates (the tests show 99.5 % for a nominal 95 %);
  kept for comparison, not used by the reports.
- ``"crossed"`` (every seed scored on the SAME units, e.g. a fixed held-out file): seeds and
  units are resampled independently and the unit draw is used in every seed, so a hard unit
  counts in all seeds at once; pooling seeds x units as independent would understate the error.

A paired difference d = x_method - x_baseline is formed unit by unit within a seed before
resampling (the methods of a seed share its reference, data order and test pairs), so what they
share cancels. Resampling with replacement is done with multinomial counts (of seeds; of each
distinct unit value in the two-level design), which is exact; tests check every design against
plain loops and the nested one against a simulation of known coverage.

Never are seeds x pairs treated as independent.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.stats import norm
from scipy.stats import t as student_t

DESIGNS = ("nested", "two-level", "crossed")


def seed_arrays(values) -> list[np.ndarray]:
    """Per-seed 1-D float arrays from an (S, P) array, an (S,) array of scalars, or a list of arrays."""
    if isinstance(values, np.ndarray) and values.ndim == 1 or (
            isinstance(values, (list, tuple)) and values and np.ndim(values[0]) == 0):
        arrays = [np.asarray([value], dtype=float) for value in values]
    else:
        arrays = [np.asarray(value, dtype=float).reshape(-1) for value in values]
    if not arrays or any(array.size == 0 for array in arrays):
        raise ValueError("need at least one seed, and at least one value per seed")
    if any(not np.isfinite(array).all() for array in arrays):
        bad = next(s for s, array in enumerate(arrays) if not np.isfinite(array).all())
        raise ValueError(f"seed {bad} has a non-finite value")
    return arrays


def bootstrap_means(values, samples: int, rng: np.random.Generator, design: str = "nested") -> np.ndarray:
    """``samples`` bootstrap replicates of the mean over seeds of per-seed means (module docstring).

    Shape:
        values: S seeds of P_s values (crossed: every P_s equal); returns (samples,)
    """
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {DESIGNS}, got {design!r}")
    arrays = seed_arrays(values)
    S = len(arrays)
    seed_counts = rng.multinomial(S, np.full(S, 1.0 / S), size=samples)  # (B, S)
    if design == "nested":
        return seed_counts @ np.asarray([array.mean() for array in arrays]) / S
    if design == "crossed":
        if len({array.size for array in arrays}) != 1:
            raise ValueError("the crossed design needs the same units in every seed")
        matrix = np.stack(arrays)  # (S, P)
        P = matrix.shape[1]
        unit_counts = rng.multinomial(P, np.full(P, 1.0 / P), size=samples)  # (B, P)
        return np.einsum("bs,sp,bp->b", seed_counts, matrix, unit_counts) / (S * P)
    total = np.zeros(samples)
    for s, array in enumerate(arrays):
        distinct, counts = np.unique(array, return_counts=True)
        # the a_bs drawn copies of seed s together resample a_bs * P_s units
        drawn = rng.multinomial(seed_counts[:, s] * array.size, counts / array.size)  # (B, U_s)
        total += drawn @ distinct / array.size
    return total / S


def _p_value(mean: float, se: float) -> float:
    """Two-sided p-value of 'mean = 0' from the bootstrap standard error (normal approximation)."""
    if se == 0.0:
        return 1.0 if mean == 0.0 else 0.0
    return float(2.0 * norm.sf(abs(mean) / se))


def summarize(values, samples: int = 10000, seed: int = 0, design: str = "nested", confidence: float = 0.95) -> dict:
    """Mean over seeds, bootstrap standard error, percentile interval, and the p-value of mean = 0.

    The p-value (and ``corrected_interval``) use the normal approximation with the bootstrap SE: the
    family-wise levels sit in tails too thin for percentiles of ``samples`` draws to resolve.
    """
    arrays = seed_arrays(values)
    replicates = bootstrap_means(arrays, samples, np.random.default_rng(seed), design)
    tail = (1 - confidence) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail])
    mean, se = float(np.mean([array.mean() for array in arrays])), float(replicates.std(ddof=1))
    return {"mean": mean, "se": se, "ci_low": float(low), "ci_high": float(high), "p_value": _p_value(mean, se),
            "n_seeds": len(arrays), "n_units": int(sum(array.size for array in arrays))}


def paired_difference(method, baseline, **options) -> dict:
    """``summarize`` of the unit-by-unit difference method - baseline within each seed."""
    left, right = seed_arrays(method), seed_arrays(baseline)
    if len(left) != len(right) or any(a.shape != b.shape for a, b in zip(left, right)):
        raise ValueError("method and baseline must have the same seeds and units per seed "
                         f"(got {[a.size for a in left]} and {[b.size for b in right]})")
    return summarize([a - b for a, b in zip(left, right)], **options)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: max_{j <= i} min(1, (m - j + 1) p_(j)) in sorted order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def corrected_interval(summary: dict, family_size: int, alpha: float = 0.05) -> tuple[float, float]:
    """mean -+ z_{1 - alpha / (2 m)} x SE: the Bonferroni-level interval, simultaneous over a family of m."""
    half = float(norm.ppf(1 - alpha / (2 * family_size))) * summary["se"]
    return summary["mean"] - half, summary["mean"] + half


def variance_components(differences) -> dict:
    """Between-seed and within-seed variance of per-unit differences (nested design).

    var(seed mean) = sigma_b^2 + sigma_w^2 / P, so sigma_b^2 = max(0, var(seed means) - sigma_w^2 / P)
    with P the harmonic mean of the units per seed. One unit per seed: all variance is between seeds.
    """
    arrays = seed_arrays(differences)
    means = np.asarray([array.mean() for array in arrays])
    units = len(arrays) / sum(1.0 / array.size for array in arrays)
    within = float(np.mean([array.var(ddof=1) if array.size > 1 else 0.0 for array in arrays]))
    between_of_means = float(means.var(ddof=1)) if len(arrays) > 1 else math.nan
    return {"between": max(0.0, between_of_means - within / units), "within": within, "units": units,
            "seeds": len(arrays)}


def minimal_detectable_difference(se: float, seeds: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The true difference a two-sided test at ``alpha`` detects with probability ``power``:
    (t_{1 - alpha/2, S-1} + t_{power, S-1}) x SE (normal quantiles when S - 1 < 1)."""
    df = max(seeds - 1, 1)
    return float((student_t.ppf(1 - alpha / 2, df) + student_t.ppf(power, df)) * se)


def projected_se(components: dict, seeds: int, units: float) -> float:
    """SE of a mean difference with ``seeds`` seeds of ``units`` units each, from ``variance_components``."""
    return math.sqrt(components["between"] / seeds + components["within"] / (seeds * units))
