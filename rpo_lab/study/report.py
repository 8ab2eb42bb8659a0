"""The real-model study's report: ``study.json``, ``study.md`` and figures, from the cached runs alone.

Statistics come from the comparison layer (``rpo_lab.study.compare``): one ``Cell`` holding, per
method and seed, the outcomes of the held-out pairs; the design is ``"crossed"`` (every seed is
scored on the SAME held-out pairs, so seeds and pairs are resampled independently and a hard pair
counts in every seed at once). The primary family is RPO embedding against DPO, DPO at the own-pair
beta, the own-pair terms alone, uniform weights and the placebo; the secondary family every other
method against DPO; Holm within each family.

``study.json`` holds no time stamp or timing, so the same cache gives the same bytes; wall times go
to ``timing.json``.
"""
from __future__ import annotations

import json
from pathlib import Path
from statistics import fmean

import numpy as np

from rpo_lab.study.compare import Cell, analyse, rounded
from rpo_lab.study.settings import StudySettings, questions


def _last_quarter(curve: list[dict], field: str) -> float:
    values = [point[field] for point in curve]
    return float(np.mean(values[-max(1, len(values) // 4):])) if values else float("nan")


def _per_method(evaluation: list[dict], methods: tuple[str, ...]) -> dict:
    """Per method, means over seeds of what shows how far and how it moved."""
    table = {}
    for method in methods:
        runs = [run for run in evaluation if run["method"] == method]
        table[method] = {
            "beta": runs[0]["beta"], "learning_rate": runs[0]["learning_rate"],
            "train_margin": fmean(_last_quarter(run["curve"], "train_margin") for run in runs),
            "curvature_share": fmean(_last_quarter(run["curve"], "curvature_share") for run in runs),
            "train_loss": fmean(_last_quarter(run["curve"], "loss") for run in runs),
            "chosen_logp_change": fmean(run["chosen_logp_change"] for run in runs),
            "rejected_logp_change": fmean(run["rejected_logp_change"] for run in runs),
            "heldout_margin_abs_median": fmean(run["margin_abs_median"] for run in runs),
            "diverged": [run["seed"] for run in runs if run["diverged_at_step"]]}
    return table


def _curves(evaluation: list[dict], methods: tuple[str, ...]) -> dict:
    """Per method: steps and the mean over seeds of the train loss and own-pair train margin."""
    curves = {}
    for method in methods:
        runs = [run["curve"] for run in evaluation if run["method"] == method]
        length = min(len(curve) for curve in runs)
        curves[method] = {"step": [point["step"] for point in runs[0][:length]],
                          **{field: np.mean([[p[field] for p in curve[:length]] for curve in runs], axis=0).tolist()
                             for field in ("loss", "train_margin")}}
    return curves


def build_report(result: dict, settings: StudySettings, command: str) -> dict:
    """study.json's content: design, chosen rates, the design power, the analysis and per-method mechanics."""
    evaluation, methods = result["evaluation"], settings.methods
    seeds = list(settings.seeds)
    values = {method: [np.asarray(next(r for r in evaluation if r["method"] == method and r["seed"] == seed)
                                  ["outcomes2"], dtype=float) / 2.0 for seed in seeds] for method in methods}
    source = result["source"] or {}
    pairs = (source.get("kept") or source.get("sizes") or {}).get("heldout", len(values["dpo"][0]))
    cell = Cell(key="heldout", label=f"held-out, {pairs} pairs", seeds=seeds, values={"accuracy": values})
    analysis = analyse([cell], baseline="dpo", questions=questions(methods), primary_metrics=("accuracy",),
                       samples=settings.bootstrap_samples, design="crossed")
    validation = {}
    for record in result["tuning"]:
        validation.setdefault(record["method"], {}).setdefault(f"{record['learning_rate']:g}", []).append(
            record["accuracy"])
    return rounded({
        "command": command, "settings": json.loads(json.dumps(vars(settings))), "source": source,
        "learning_rates": result["learning_rates"],
        "validation_accuracy_by_rate": {m: {rate: fmean(v) for rate, v in by.items()} for m, by in validation.items()},
        "design_power": result["power"], "analysis": analysis, "methods": _per_method(evaluation, methods),
        "curves": _curves(evaluation, methods)})


def write_report(result: dict, settings: StudySettings, folders: list[Path], command: str,
                 timing: dict | None = None) -> dict:
    """Write study.json, study.md and the figures into each folder (and timing.json when given)."""
    from rpo_lab.study.figures import plot_accuracy, plot_learning_curves, plot_validation
    from rpo_lab.study.markdown import study_markdown

    report = build_report(result, settings, command)
    for folder in folders:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "study.json").write_text(json.dumps(report, indent=1) + "\n")
        (folder / "study.md").write_text(study_markdown(report))
        plot_accuracy(report, folder / "study_accuracy.png")
        plot_learning_curves(report, folder / "study_learning_curves.png")
        plot_validation(report, folder / "study_learning_rates.png")
        if timing is not None:
            (folder / "timing.json").write_text(json.dumps(timing, indent=1) + "\n")
    return report
