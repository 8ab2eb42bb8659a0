"""The synthetic study's report: ``study.json``, ``study.md`` and figures, from the cached units alone.

``study.json`` holds no time stamp or timing: the same cache gives the same bytes (the
determinism the issue asks for: ``rpo-tutorial study --preset synthetic`` from a clean cache
reproduces the committed file exactly on the machine that made it). Wall times go to
``timing.json`` next to it.
"""
from __future__ import annotations

import json
from pathlib import Path
from statistics import fmean

import numpy as np

from rpo_lab.study.compare import Cell, analyse, rounded
from rpo_lab.world.figures import plot_learning_curves, plot_regimes
from rpo_lab.world.labels import cell_label
from rpo_lab.world.markdown import study_markdown
from rpo_lab.world.methods import FOCUS, QUESTIONS
from rpo_lab.world.run import conditions, method_keys
from rpo_lab.world.spec import StudyDesign, design_fingerprint

def build_cells(evaluation: list[dict], design: StudyDesign) -> list[Cell]:
    """One Cell per (regime, arm, size): per method, per seed, test outcomes and per-prompt gains."""
    seeds = [payload["seed"] for payload in evaluation]
    cells = {}
    for regime, _ in design.regimes:
        for arm in design.batch_arms:
            for size in design.pairs_per_cluster:
                cells[(regime, arm, size)] = Cell([regime, arm, size], cell_label(regime, arm, size), seeds,
                                                  {"accuracy": {}, "gain": {}})
    for payload in evaluation:
        for run in payload["runs"]:
            cell = cells[(run["regime"], run["arm"], run["pairs_per_cluster"])]
            cell.values["accuracy"].setdefault(run["method"], []).append(np.asarray(run["test_outcomes2"]) / 2.0)
            cell.values["gain"].setdefault(run["method"], []).append(np.asarray(run["gain_per_prompt"]))
    return list(cells.values())


def run_table(evaluation: list[dict], design: StudyDesign, field: str, step_field: str | None = None) -> dict:
    """Mean over seeds of one per-run number, keyed "regime/arm/size/method"."""
    table = {}
    for method, regime, _, arm, size in conditions(design):
        values = [run[step_field][field] if step_field else run[field] for payload in evaluation
                  for run in payload["runs"] if (run["method"], run["regime"], run["arm"], run["pairs_per_cluster"])
                  == (method, regime, arm, size)]
        table[f"{regime}/{arm}/{size}/{method}"] = round(fmean(values), 6)
    return table


def curves(evaluation: list[dict], design: StudyDesign) -> dict:
    """Per condition: the checkpoints' steps and the mean over seeds of the test-subset accuracy."""
    found = {}
    for payload in evaluation:
        for run in payload["runs"]:
            key = f"{run['regime']}/{run['arm']}/{run['pairs_per_cluster']}/{run['method']}"
            entry = found.setdefault(key, {"step": [p["step"] for p in run["curve"]], "values": []})
            entry["values"].append([p["test_accuracy"] for p in run["curve"]])
    return {key: {"step": entry["step"], "mean": np.asarray(entry["values"]).mean(axis=0).tolist()}
            for key, entry in found.items()}


def build_report(result: dict, design: StudyDesign, command: str) -> dict:
    evaluation = result["evaluation"]
    analysis = analyse(build_cells(evaluation, design), baseline="dpo",
                       questions=[(FOCUS, other) for other in QUESTIONS if other in method_keys(design)
                                  and FOCUS in method_keys(design)],
                       primary_metrics=("accuracy", "gain"), samples=design.bootstrap_samples)
    rates = result["learning_rates"]
    for comparison in analysis["comparisons"]:  # which rate each side trained at (chosen per method on validation)
        regime, arm, size = comparison["cell"]
        comparison["rates"] = [rates[(comparison[side], regime, arm, size)] for side in ("method", "against")]
    tuning = {}
    for payload in result["tuning"]:
        for run in payload["runs"]:
            key = f"{run['regime']}/{run['arm']}/{run['pairs_per_cluster']}/{run['method']}"
            tuning.setdefault(key, {}).setdefault(str(run["learning_rate"]), []).append(run["validation_accuracy"])
    seed_info = [payload["seed_info"] for payload in evaluation]
    return rounded({
        "command": command, "design": design_fingerprint(design), "seeds": [p["seed"] for p in evaluation],
        "learning_rates": {f"{r}/{a}/{s}/{m}": rate for (m, r, a, s), rate in result["learning_rates"].items()},
        "validation_accuracy_by_rate": {key: {rate: fmean(v) for rate, v in by.items()} for key, by in tuning.items()},
        "world": {"train_label_agreement_with_r_star": fmean(i["train_label_agreement_with_r_star"] for i in seed_info),
                  "reference_nll_per_token": fmean(i["reference_nll_per_token"] for i in seed_info),
                  "sft_nll_per_token": fmean(i["sft_nll_per_token"] for i in seed_info)},
        "diverged_runs": [f"seed {payload['seed']}: {run['regime']}/{run['arm']}/{run['pairs_per_cluster']}/"
                          f"{run['method']} at step {run['diverged_at_step']}" for payload in evaluation
                          for run in payload["runs"] if run.get("diverged_at_step")],
        "analysis": analysis,
        "curvature_share": run_table(evaluation, design, "curvature_share", "last_step"),
        "max_sigmoid_argument": run_table(evaluation, design, "max_argument", "last_step"),
        "train_margin": run_table(evaluation, design, "train_margin", "last_step"),
        "test_margin_abs_median": run_table(evaluation, design, "test_margin_abs_median"),
        "beta_used": run_table(evaluation, design, "config_beta"),
        "curves": curves(evaluation, design)})


def write_synthetic_report(result: dict, design: StudyDesign, folders: list[Path], command: str,
                           timing: dict | None = None) -> dict:
    """Write study.json, study.md and the figures into each folder (and timing.json when given)."""
    report = build_report(result, design, command)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "study.json").write_text(json.dumps(report, indent=1) + "\n")
        (folder / "study.md").write_text(study_markdown(report, design))
        plot_regimes(report, design, folder / "study_regimes.png")
        plot_learning_curves(report, design, folder / "study_learning_curves.png")
        if timing is not None:
            (folder / "timing.json").write_text(json.dumps(timing, indent=1) + "\n")
    return report

