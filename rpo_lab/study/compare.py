"""A study's comparisons, from per-seed values alone: intervals, paired differences, Holm, power.

Generic over where the numbers came from (the synthetic world, SmolLM2 on HH, a user's file):

    from rpo_lab.study.compare import Cell, analyse, power_lines, question_table, method_table
    cell = Cell(key="hh", label="HH, 128 train pairs", seeds=[0, 1, 2],
                values={"accuracy": {"dpo": [outcomes_seed0, ...], "rpo-emb": [...]},   # 0 / 0.5 / 1 per pair
                        "gain": {"dpo": [0.12, 0.10, 0.15], "rpo-emb": [...]}})         # one number per seed
    analysis = analyse([cell], baseline="dpo", questions=[("rpo-emb", "dpo")], primary_metrics=("accuracy",))
    print("\\n".join(power_lines(analysis, FORMATS) + question_table(analysis, FORMATS)))

Per cell and method, each metric gets its mean over seeds with a two-level bootstrap interval
(``inference.summarize``). Comparisons are paired differences (same seed, same units):

- the **primary family**: each (focus, other) pair of ``questions`` in every cell, on every metric of
  ``primary_metrics``;
- the **secondary family**: every other method against ``baseline`` (those not already primary).

Holm's correction runs within each family; every comparison also gets the Bonferroni-level
interval (simultaneous over its family) and its minimal detectable difference (80 % power, two-sided
alpha, and at the family's corrected alpha), which the power lines summarise BEFORE any result.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median

from rpo_lab.study.inference import (corrected_interval, holm, minimal_detectable_difference, paired_difference,
                                     seed_arrays, summarize, variance_components)


@dataclass
class Cell:
    """One condition: per metric, per method, the values of each seed (aligned with ``seeds``)."""

    key: object  # any JSON-able id, e.g. ["curvature", "random", 2]
    label: str
    seeds: list[int]
    values: dict[str, dict[str, list]] = field(default_factory=dict)  # metric -> method -> per-seed values


@dataclass(frozen=True)
class MetricFormat:
    """How a metric is printed: ``value * scale`` with ``digits`` decimals and a unit for differences."""

    label: str
    scale: float = 1.0
    digits: int = 3
    difference_unit: str = ""


def _comparison(cell: Cell, metric: str, method: str, other: str, family: str, options: dict) -> dict:
    values = cell.values[metric]
    summary = paired_difference(values[method], values[other], **options)
    differences = [a - b for a, b in zip(seed_arrays(values[method]), seed_arrays(values[other]))]
    return {"cell": cell.key, "cell_label": cell.label, "metric": metric, "method": method, "against": other,
            "family": family, **summary, "variance": variance_components(differences)}


def analyse(cells: list[Cell], baseline: str, questions: list[tuple[str, str]], primary_metrics: tuple[str, ...],
            samples: int = 10000, design: str = "nested", alpha: float = 0.05, power: float = 0.8) -> dict:
    """Summaries per cell and method, and both comparison families with Holm and power (module docstring)."""
    options = {"samples": samples, "design": design}
    result = {"baseline": baseline, "questions": [list(q) for q in questions], "alpha": alpha, "power": power,
              "design": design, "samples": samples, "cells": [], "comparisons": []}
    for index, cell in enumerate(cells):
        summaries = {metric: {method: summarize(values, seed=index, **options)
                              for method, values in by_method.items()} for metric, by_method in cell.values.items()}
        result["cells"].append({"key": cell.key, "label": cell.label, "seeds": cell.seeds, "summaries": summaries})
        for metric, by_method in cell.values.items():
            asked = [(a, b) for a, b in questions if a in by_method and b in by_method] \
                if metric in primary_metrics else []
            wanted = [(focus, other, "primary") for focus, other in asked] + [
                (method, baseline, "secondary") for method in by_method
                if method != baseline and baseline in by_method and (method, baseline) not in asked]
            for method, other, family in wanted:
                seeded = {**options, "seed": 1000 + len(result["comparisons"])}
                result["comparisons"].append(_comparison(cell, metric, method, other, family, seeded))
    for family in ("primary", "secondary"):
        members = [c for c in result["comparisons"] if c["family"] == family]
        for comparison, adjusted in zip(members, holm([c["p_value"] for c in members])):
            low, high = corrected_interval(comparison, len(members), alpha)
            comparison.update(p_holm=adjusted, ci_low_corrected=low, ci_high_corrected=high,
                              family_size=len(members),
                              mdd=minimal_detectable_difference(comparison["se"], comparison["n_seeds"], alpha, power),
                              mdd_corrected=minimal_detectable_difference(comparison["se"], comparison["n_seeds"],
                                                                          alpha / len(members), power))
    return result


def _number(value: float, fmt: MetricFormat, signed: bool = False) -> str:
    return f"{value * fmt.scale:{'+' if signed else ''}.{fmt.digits}f}"


def power_lines(analysis: dict, formats: dict[str, MetricFormat]) -> list[str]:
    """The power statement: per metric, the primary family's minimal detectable differences."""
    lines = []
    for metric, fmt in formats.items():
        members = [c for c in analysis["comparisons"] if c["family"] == "primary" and c["metric"] == metric]
        if not members:
            continue
        seeds, units = members[0]["n_seeds"], members[0]["n_units"] // max(members[0]["n_seeds"], 1)
        flat = [c for c in members if c["mdd"] == 0]  # no variance at all: every outcome the same for both sides
        if flat:
            lines.append(f"- **{fmt.label}**: {len(flat)} of the {len(members)} primary comparisons have no variance "
                         "(both methods score the same on every unit of every seed, e.g. both at 100 %): they can "
                         "detect nothing, and their intervals of width 0 are not evidence of equality.")
            members = [c for c in members if c["mdd"] > 0]
            if not members:
                continue
        mdd, corrected = [c["mdd"] for c in members], [c["mdd_corrected"] for c in members]
        lines.append(
            f"- **{fmt.label}**: with {seeds} paired seeds x {units} units per seed, a difference of "
            f"{_number(median(mdd), fmt)}{fmt.difference_unit} (median over the {len(members)} primary comparisons; "
            f"range {_number(min(mdd), fmt)}-{_number(max(mdd), fmt)}) is detected with {analysis['power']:.0%} "
            f"power at two-sided alpha {analysis['alpha']:g}; at the Holm family's strictest level (alpha / "
            f"{members[0]['family_size']}) the median is {_number(median(corrected), fmt)}{fmt.difference_unit}. "
            "Smaller true differences can go undetected; a null below these sizes is not evidence of equality.")
    return lines


def p_text(p: float) -> str:
    return "p<1e-4" if p < 1e-4 else f"p={p:.2g}"


def _difference_cell(c: dict, fmt: MetricFormat, annotate=None) -> str:
    mark = " **" if c["p_holm"] < 0.05 else " "
    note = annotate(c) if annotate else ""
    return (f"{_number(c['mean'], fmt, True)}{mark}[{_number(c['ci_low_corrected'], fmt, True)}, "
            f"{_number(c['ci_high_corrected'], fmt, True)}]{mark.strip()} {p_text(c['p_holm'])}{note}")


def question_table(analysis: dict, formats: dict[str, MetricFormat], labels: dict[str, str] | None = None,
                   annotate=None) -> list[str]:
    """One row per cell and metric, one column per question: difference [corrected interval], Holm p.

    ``annotate(comparison) -> str`` may append a note to an entry (e.g. a mark where learning rates differ).
    """
    labels = labels or {}
    questions = [tuple(q) for q in analysis["questions"]]
    header = ["condition", "metric"] + [f"{labels.get(a, a)} vs {labels.get(b, b)}" for a, b in questions]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cell in analysis["cells"]:
        for metric, fmt in formats.items():
            found = {(c["method"], c["against"]): c for c in analysis["comparisons"]
                     if c["family"] == "primary" and c["cell"] == cell["key"] and c["metric"] == metric}
            if found:
                lines.append("| " + " | ".join([cell["label"], fmt.label] + [
                    _difference_cell(found[q], fmt, annotate) if q in found else "-" for q in questions]) + " |")
    return lines


def method_table(analysis: dict, cell_index: int, formats: dict[str, MetricFormat],
                 labels: dict[str, str] | None = None, annotate=None) -> list[str]:
    """One row per method: each metric's mean [95 % interval] and its difference to the baseline."""
    labels, cell = labels or {}, analysis["cells"][cell_index]
    header = ["method"] + [f"{fmt.label} [95% CI]" for fmt in formats.values()] + \
        [f"{fmt.label} vs {labels.get(analysis['baseline'], analysis['baseline'])}" for fmt in formats.values()]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    methods = list(next(iter(cell["summaries"].values())))
    for method in methods:
        row = [labels.get(method, method)]
        for metric, fmt in formats.items():
            s = cell["summaries"][metric][method]
            row.append(f"{_number(s['mean'], fmt)} [{_number(s['ci_low'], fmt)}, {_number(s['ci_high'], fmt)}]")
        for metric, fmt in formats.items():
            match = [c for c in analysis["comparisons"] if c["cell"] == cell["key"] and c["metric"] == metric
                     and c["method"] == method and c["against"] == analysis["baseline"]]
            row.append(_difference_cell(match[0], fmt, annotate) if match else "-")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def rounded(value, digits: int = 6):
    """Floats rounded (recursively): a smaller, readable report JSON whose bytes still come from the cache alone."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {key: rounded(item, digits) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(item, digits) for item in value]
    return value
