"""Win rates: counts, the tie rule, Wilson intervals against hand computations, table and bar plot."""
from __future__ import annotations

import math

import pytest

from rpo_tutorial.evaluation.winrate import markdown_table, wilson_interval, win_rate, win_rate_table
from rpo_tutorial.plots.winrates import plot_win_rates

Z95 = 1.959963984540054  # standard normal quantile at 0.975


def records_with(wins=0, losses=0, ties=0, failed=0, unparseable=0):
    outcomes = (["candidate"] * wins + ["baseline"] * losses + ["tie"] * ties + ["failed"] * failed
                + ["unparseable"] * unparseable)
    return [{"winner": outcome} for outcome in outcomes]


def hand_wilson(successes, n, z=Z95):
    """Wilson score interval written out as in Agresti & Coull (1998), eq. 2."""
    p = successes / n
    lower = (p + z ** 2 / (2 * n) - z * math.sqrt((p * (1 - p) + z ** 2 / (4 * n)) / n)) / (1 + z ** 2 / n)
    upper = (p + z ** 2 / (2 * n) + z * math.sqrt((p * (1 - p) + z ** 2 / (4 * n)) / n)) / (1 + z ** 2 / n)
    return lower, upper


def test_win_rate_counts_ties_as_half_and_leaves_failures_out_of_n():
    summary = win_rate(records_with(wins=7, losses=3, ties=2, failed=1, unparseable=4))
    assert (summary["n"], summary["wins"], summary["losses"], summary["ties"]) == (12, 7, 3, 2)
    assert (summary["failed"], summary["unparseable"], summary["total"]) == (1, 4, 17)
    assert summary["win_rate"] == pytest.approx(8 / 12)
    low, high = hand_wilson(8, 12)
    assert (summary["ci_low"], summary["ci_high"]) == (pytest.approx(low), pytest.approx(high))


def test_wilson_bounds_solve_the_score_equation():
    # Wilson's bounds are the two proportions pi with |p_hat - pi| = z * sqrt(pi (1 - pi) / n).
    for successes, n in [(8, 12), (1, 40), (39, 40), (50, 100), (3.5, 10)]:
        p_hat = successes / n
        for bound in wilson_interval(p_hat, n):
            assert abs(p_hat - bound) == pytest.approx(Z95 * math.sqrt(bound * (1 - bound) / n), rel=1e-9)


def test_wilson_interval_at_the_extremes_stays_in_the_unit_interval():
    low, high = wilson_interval(0.0, 10)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(Z95 ** 2 / (10 + Z95 ** 2))
    low, high = wilson_interval(1.0, 10)
    assert high == pytest.approx(1.0, abs=1e-12) and low == pytest.approx(10 / (10 + Z95 ** 2))
    narrow, wide = wilson_interval(0.5, 1000, 0.95), wilson_interval(0.5, 1000, 0.99)
    assert wide[0] < narrow[0] and wide[1] > narrow[1]


def test_no_judged_pairs_gives_nan_not_a_crash():
    summary = win_rate(records_with(failed=2))
    assert summary["n"] == 0 and math.isnan(summary["win_rate"]) and math.isnan(summary["ci_low"])


def test_invalid_winner_names_the_record():
    with pytest.raises(ValueError, match=r"records\[1\] has winner 'loss'"):
        win_rate([{"winner": "tie"}, {"winner": "loss"}])


def test_table_accepts_records_or_summaries_flat_or_by_dataset():
    flat = win_rate_table({"DPO": records_with(wins=3, losses=1), "RPO": win_rate(records_with(wins=4))})
    assert [row["method"] for row in flat] == ["DPO", "RPO"] and flat[0]["win_rate"] == 0.75
    text = markdown_table(flat)
    assert "| DPO | 75.0 (" in text and "| RPO | 100.0 (" in text and text.count("\n") == 3
    nested = win_rate_table({"DPO": {"HH": records_with(wins=1, losses=1), "TL;DR": records_with(losses=2)},
                             "RPO": {"HH": records_with(wins=2)}})
    assert [(row["method"], row["dataset"]) for row in nested] == [("DPO", "HH"), ("DPO", "TL;DR"), ("RPO", "HH")]
    pivot = markdown_table(nested).splitlines()
    assert pivot[0] == "| method | HH | TL;DR |" and pivot[3].startswith("| RPO | 100.0 (") and pivot[3].endswith("| - |")


def test_bar_plot_draws_rates_with_interval_error_bars_and_saves(tmp_path):
    rows = win_rate_table({"SFT": records_with(wins=2, losses=8), "DPO": records_with(wins=5, losses=5),
                           "RPO": records_with(wins=7, losses=2, ties=1)})
    figure = plot_win_rates(rows, path=tmp_path / "win_rates.png")
    ax = figure.axes[0]
    heights = [patch.get_height() for patch in ax.patches]
    assert heights == pytest.approx([100 * row["win_rate"] for row in rows])
    error_bars = [line for container in ax.containers if hasattr(container, "lines") and container.lines[2]
                  for line in container.lines[2]]
    segments = [segment for collection in error_bars for segment in collection.get_segments()]
    spans = sorted((seg[0][1], seg[1][1]) for seg in segments)
    expected = sorted((100 * row["ci_low"], 100 * row["ci_high"]) for row in rows)
    assert spans == [tuple(pytest.approx(v) for v in pair) for pair in expected]
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["SFT", "DPO", "RPO"]
    assert (tmp_path / "win_rates.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bar_plot_groups_by_dataset():
    rows = win_rate_table({"DPO": {"HH": records_with(wins=1, losses=1), "TL;DR": records_with(wins=1)},
                           "RPO": {"HH": records_with(wins=2), "TL;DR": records_with(failed=1)}})
    figure = plot_win_rates(rows)
    ax = figure.axes[0]
    assert len(ax.patches) == 3  # RPO on TL;DR has no judged pair: no bar
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["HH", "TL;DR"]
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["DPO", "RPO"]
    with pytest.raises(ValueError, match="rows is empty"):
        plot_win_rates([])
