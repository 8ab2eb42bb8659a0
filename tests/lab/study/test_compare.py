"""The generic comparison layer: families, Holm, corrected intervals, power lines, tables."""
from __future__ import annotations

import numpy as np
import pytest

from rpo_lab.study.compare import Cell, MetricFormat, analyse, method_table, power_lines, question_table

FORMATS = {"accuracy": MetricFormat("accuracy", 100.0, 1, " points"), "gain": MetricFormat("gain", 1.0, 3)}


def _cells(seeds: int = 8, pairs: int = 300):
    rng = np.random.default_rng(0)
    cells = []
    for name, shift in (("easy", 0.15), ("hard", 0.0)):
        base = [rng.integers(0, 2, pairs) / 1.0 for _ in range(seeds)]
        better = [np.where(rng.random(pairs) < shift, 1.0, b) for b in base]  # flips some losses to wins
        same = [b.copy() for b in base]
        cells.append(Cell(name, f"{name} cell", list(range(seeds)), {
            "accuracy": {"dpo": base, "focus": better, "twin": same},
            "gain": {"dpo": list(rng.normal(0, 1, seeds)), "focus": list(rng.normal(0, 1, seeds) + 5),
                     "twin": list(rng.normal(0, 1, seeds))}}))
    return cells


def test_families_holm_and_corrected_intervals():
    analysis = analyse(_cells(), baseline="dpo", questions=[("focus", "dpo"), ("focus", "twin")],
                       primary_metrics=("accuracy",), samples=4000)
    primary = [c for c in analysis["comparisons"] if c["family"] == "primary"]
    secondary = [c for c in analysis["comparisons"] if c["family"] == "secondary"]
    assert len(primary) == 2 * 2  # 2 questions x 2 cells, accuracy only
    # secondary: twin vs dpo on accuracy (focus vs dpo is primary there), and focus, twin vs dpo on gain, per cell
    assert {(c["method"], c["metric"]) for c in secondary} == {("twin", "accuracy"), ("focus", "gain"), ("twin", "gain")}
    for c in analysis["comparisons"]:
        assert c["p_holm"] >= c["p_value"] and c["ci_low_corrected"] <= c["ci_low"] <= c["ci_high"] <= c["ci_high_corrected"]
        assert c["mdd_corrected"] > c["mdd"] > 0 or c["se"] == 0
    easy = {(c["method"], c["against"]): c for c in primary if c["cell"] == "easy"}
    assert easy[("focus", "dpo")]["p_holm"] < 0.05 and easy[("focus", "dpo")]["mean"] > 0.03
    twin = [c for c in secondary if c["method"] == "twin" and c["metric"] == "accuracy"]
    assert all(c["mean"] == 0.0 and c["se"] == 0.0 and c["p_holm"] == 1.0 for c in twin)  # identical outcomes


def test_power_line_and_tables_render_every_comparison():
    analysis = analyse(_cells(), baseline="dpo", questions=[("focus", "dpo")], primary_metrics=("accuracy", "gain"),
                       samples=2000)
    lines = power_lines(analysis, FORMATS)
    # the "hard" cell's focus repeats dpo's outcomes: that comparison is named as having no variance
    assert len(lines) == 3 and "1 of the 2 primary comparisons have no variance" in lines[0]
    assert "8 paired seeds x 300 units" in lines[1] and "80% power" in lines[1]
    table = question_table(analysis, FORMATS, {"focus": "Focus"})
    assert table[0] == "| condition | metric | Focus vs dpo |" and len(table) == 2 + 2 * 2
    rows = method_table(analysis, 0, FORMATS)
    assert len(rows) == 2 + 3 and rows[2].startswith("| dpo |") and rows[3].startswith("| focus |")


def test_a_crossed_design_is_available_for_shared_held_out_pairs():
    cells = _cells(seeds=4, pairs=50)
    analysis = analyse(cells, baseline="dpo", questions=[("focus", "dpo")], primary_metrics=("accuracy",),
                       samples=2000, design="crossed")
    assert analysis["design"] == "crossed"
    with pytest.raises(ValueError, match="same seeds and units"):
        cells[0].values["accuracy"]["focus"] = cells[0].values["accuracy"]["focus"][:3]
        analyse(cells, baseline="dpo", questions=[("focus", "dpo")], primary_metrics=("accuracy",), samples=100)


def test_a_comparison_without_variance_is_named_and_left_out_of_the_power_median():
    analysis = analyse(_cells(), baseline="dpo", questions=[("focus", "dpo"), ("twin", "dpo")],
                       primary_metrics=("accuracy",), samples=1000)
    lines = power_lines(analysis, {"accuracy": FORMATS["accuracy"]})
    # twin repeats dpo's outcomes in both cells, and so does focus in the "hard" cell: 3 of 4 without variance
    assert len(lines) == 2 and "3 of the 4 primary comparisons have no variance" in lines[0]
    easy = [c for c in analysis["comparisons"] if c["family"] == "primary" and c["method"] == "focus"
            and c["cell"] == "easy"]
    assert easy[0]["mdd"] > 0 and "median over the 1 primary comparisons" in lines[1]
    assert f"{100 * easy[0]['mdd']:.1f} points (median" in lines[1]
