"""The study's inference: bootstraps against plain loops, a coverage simulation, Holm and power by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from rpo_lab.study.inference import (bootstrap_means, corrected_interval, holm, minimal_detectable_difference,
                                     paired_difference, projected_se, seed_arrays, summarize, variance_components)


def loop_bootstrap(arrays, samples, rng, design):
    """Plain loops: draw seeds with replacement; per drawn seed copy keep its units (nested), draw them
    again (two-level), or use one unit draw shared by every seed (crossed)."""
    means = []
    for _ in range(samples):
        seeds = [int(rng.integers(len(arrays))) for _ in arrays]
        shared = [int(rng.integers(len(arrays[0]))) for _ in arrays[0]]
        total = 0.0
        for s in seeds:
            units = {"nested": range(len(arrays[s])), "crossed": shared,
                     "two-level": [int(rng.integers(len(arrays[s]))) for _ in arrays[s]]}[design]
            total += sum(arrays[s][u] for u in units) / len(units)
        means.append(total / len(seeds))
    return np.asarray(means)


@pytest.mark.parametrize("design", ["nested", "two-level", "crossed"])
def test_bootstrap_has_the_distribution_of_the_plain_loop(design):
    rng = np.random.default_rng(0)
    sizes = (6, 6, 6, 6) if design == "crossed" else (5, 7, 3, 6)  # ragged seeds unless crossed
    arrays = [rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], size=size) for size in sizes]
    fast = bootstrap_means(arrays, 40000, np.random.default_rng(1), design)
    slow = loop_bootstrap(arrays, 8000, np.random.default_rng(2), design)
    assert fast.mean() == pytest.approx(slow.mean(), abs=0.01)
    assert fast.std() == pytest.approx(slow.std(), rel=0.05)
    assert np.quantile(fast, [0.025, 0.975]) == pytest.approx(np.quantile(slow, [0.025, 0.975]), abs=0.03)


def test_the_designs_differ_where_they_should():
    rng = np.random.default_rng(3)
    arrays = [rng.choice([0.0, 1.0], size=40) for _ in range(8)]
    spread = {design: bootstrap_means(arrays, 20000, np.random.default_rng(4), design).std()
              for design in ("nested", "two-level", "crossed")}
    means = np.asarray([a.mean() for a in arrays])
    assert spread["nested"] == pytest.approx(means.std() / math.sqrt(8), rel=0.05)  # the plug-in SE of seed means
    within = np.mean([a.var() for a in arrays]) / (8 * 40)
    assert spread["two-level"] ** 2 == pytest.approx(spread["nested"] ** 2 + within, rel=0.1)  # counted twice
    assert abs(spread["crossed"] - spread["nested"]) > 0.1 * spread["nested"]


@pytest.mark.parametrize("design", ["nested", "two-level"])
def test_one_value_per_seed_is_a_seed_level_bootstrap(design):
    values = np.array([0.2, 0.5, 0.1, 0.7, 0.4])
    fast = bootstrap_means(values, 40000, np.random.default_rng(3), design)
    slow = np.asarray([np.random.default_rng(4 + b).choice(values, 5).mean() for b in range(4000)])
    assert fast.std() == pytest.approx(slow.std(), rel=0.05)
    assert fast.std() == pytest.approx(values.std() / math.sqrt(5), rel=0.05)  # the plug-in SE of a mean


@pytest.mark.parametrize("design, low, high", [("nested", 0.90, 0.99), ("two-level", 0.99, 1.0)])
def test_interval_covers_a_known_difference_about_95_percent_of_the_time(design, low, high):
    # 200 synthetic studies: 20 seeds x 200 pairs, per-seed true effects N(0.03, 0.02^2), pair differences in
    # {-1, 0, 1}; the interval targets the mean over the seed population, 0.03. Pair noise dominates here, so the
    # two-level bootstrap (within-seed variance counted twice) over-covers: why the reports use "nested".
    rng, covered, truth = np.random.default_rng(7), 0, 0.03
    for study in range(200):
        effects = rng.normal(truth, 0.02, size=20)
        arrays = [rng.choice([-1.0, 0.0, 1.0], size=200, p=[0.15 - e / 2, 0.7, 0.15 + e / 2]) for e in effects]
        summary = summarize(arrays, samples=2000, seed=study, design=design)
        covered += summary["ci_low"] <= truth <= summary["ci_high"]
    assert low <= covered / 200 <= high


def test_paired_difference_cancels_what_the_methods_share():
    rng = np.random.default_rng(5)
    shared = [rng.normal(size=50) * 10 for _ in range(6)]  # a large per-unit effect common to both methods
    method = [x + 0.1 for x in shared]
    result = paired_difference(method, shared, samples=2000)
    assert result["mean"] == pytest.approx(0.1)
    assert result["se"] == pytest.approx(0.0, abs=1e-9) and result["p_value"] == 0.0
    unpaired_se = summarize(method, samples=2000)["se"]
    assert unpaired_se > 0.5  # without pairing the shared part would dominate
    with pytest.raises(ValueError, match="same seeds and units"):
        paired_difference(method, shared[:5])


def test_holm_matches_the_step_down_procedure_by_hand():
    p_values = [0.01, 0.04, 0.03, 0.005, 0.5]
    adjusted = holm(p_values)
    order = sorted(range(5), key=lambda i: p_values[i])  # 0.005, 0.01, 0.03, 0.04, 0.5
    by_hand = {}
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (5 - rank) * p_values[index]))
        by_hand[index] = running
    assert adjusted == [by_hand[i] for i in range(5)]
    assert adjusted == pytest.approx([0.04, 0.09, 0.09, 0.025, 0.5])
    # rejections at 0.05 are exactly Holm's sequential ones: 0.005 < 0.05/5, 0.01 < 0.05/4, 0.03 > 0.05/3 stop
    assert [a < 0.05 for a in adjusted] == [True, False, False, True, False]


def test_variance_components_recover_the_generating_variances():
    rng = np.random.default_rng(11)
    between, within, seeds, units = 0.04, 1.0, 400, 100
    arrays = [rng.normal(rng.normal(0, math.sqrt(between)), math.sqrt(within), size=units) for _ in range(seeds)]
    components = variance_components(arrays)
    assert components["within"] == pytest.approx(within, rel=0.03)
    assert components["between"] == pytest.approx(between, rel=0.2)
    assert projected_se(components, seeds, units) == pytest.approx(
        np.std([a.mean() for a in arrays], ddof=1) / math.sqrt(seeds), rel=0.05)


def test_minimal_detectable_difference_is_the_sum_of_the_two_quantiles_times_the_se():
    from scipy.stats import t

    assert minimal_detectable_difference(0.01, 20) == pytest.approx((t.ppf(0.975, 19) + t.ppf(0.8, 19)) * 0.01)
    # simulated power at that size: a two-sided t test on 20 seed means rejects about 80 % of the time
    rng, rejections, se = np.random.default_rng(13), 0, 0.01
    size = minimal_detectable_difference(se, 20)
    for _ in range(2000):
        means = rng.normal(size, se * math.sqrt(20), size=20)
        statistic = means.mean() / (means.std(ddof=1) / math.sqrt(20))
        rejections += abs(statistic) > t.ppf(0.975, 19)
    assert 0.76 <= rejections / 2000 <= 0.84


def test_corrected_interval_widens_with_the_family():
    summary = {"mean": 0.02, "se": 0.01}
    one, many = corrected_interval(summary, 1), corrected_interval(summary, 40)
    assert one == pytest.approx((0.02 - 1.959964 * 0.01, 0.02 + 1.959964 * 0.01), abs=1e-6)
    assert many[0] < one[0] and many[1] > one[1]


def test_bad_inputs_are_refused_with_the_seed_named():
    with pytest.raises(ValueError, match="seed 1 has a non-finite"):
        seed_arrays([[0.0, 1.0], [np.nan, 1.0]])
    with pytest.raises(ValueError, match="at least one"):
        seed_arrays([])
    with pytest.raises(ValueError, match="design must be"):
        bootstrap_means([[1.0, 0.0]], 10, np.random.default_rng(0), "sideways")
    with pytest.raises(ValueError, match="same units in every seed"):
        bootstrap_means([[1.0, 0.0], [1.0]], 10, np.random.default_rng(0), "crossed")
