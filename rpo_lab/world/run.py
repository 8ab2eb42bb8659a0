"""The synthetic study end to end: tune learning rates, train every seed, cache everything.

    from rpo_lab.world.run import run_synthetic_study
    from rpo_lab.world.presets import SYNTHETIC_PRESETS
    records = run_synthetic_study("outputs/study-synthetic", SYNTHETIC_PRESETS["synthetic"])

Phases (each a list of independent units, run by ``design.workers`` processes of one torch
thread each; a unit's result depends on its inputs only, never on the process that ran it):

1. **Tuning** (one unit per tuning seed): every method x regime x batch arm x train size x
   learning rate of the shared grid trains as one stack; only validation accuracy is kept.
2. **Choice**: for each method x regime x arm x size, the rate with the best mean validation
   accuracy over the tuning seeds (ties: the smaller rate). Test data is never looked at.
3. **Evaluation** (one unit per evaluation seed): every method x regime x arm x size at its
   chosen rate, as one stack; test outcomes, true-reward gain, learning curves.

Layout of ``output_dir``: ``tuning/seed<k>.json``, ``evaluation/seed<k>.json`` (each with the design
fingerprint it was made with; a cache of another design is refused, not mixed in). An
interrupted study resumes from the finished units.
"""
from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import torch

from rpo_lab.world.evaluate import evaluate_stack, reference_rewards, validation_accuracy
from rpo_lab.world.methods import METHODS
from rpo_lab.world.pairs import labelled_pairs
from rpo_lab.world.reference import sft_entropy_per_token, train_reference
from rpo_lab.world.spec import StudyDesign, design_fingerprint
from rpo_lab.world.train import RunSpec, SeedData, train_stack
from rpo_lab.world.world import draw_world


def method_keys(design: StudyDesign) -> tuple[str, ...]:
    unknown = [key for key in design.methods if key not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    return design.methods or tuple(METHODS)


def conditions(design: StudyDesign) -> list[tuple[str, str, float, str, int]]:
    """(method, regime, beta, arm, pairs per cluster) of every cell of the study, in table order."""
    return [(method, regime, beta, arm, size) for regime, beta in design.regimes for arm in design.batch_arms
            for size in design.pairs_per_cluster for method in method_keys(design)]


def make_seed_data(design: StudyDesign, seed: int) -> tuple[SeedData, dict]:
    """Draw the seed's world, train its reference, sample and label its pairs."""
    world = draw_world(design.world, seed)
    reference, curve = train_reference(world, seed)
    pairs, temperature = labelled_pairs(world, reference, seed)
    train = pairs["train"]
    info = {"reference_nll_curve": curve, **{k: round(v, 5) for k, v in sft_entropy_per_token(world, seed, reference)
                                             .items()},
            "noise_temperature": round(temperature, 6),
            "train_label_agreement_with_r_star": round((train.gap > 0).float().mean().item(), 6)}
    return SeedData(seed, world, reference, pairs, temperature), info


def _unit(task: tuple[str, StudyDesign, int, list[RunSpec], str]) -> tuple[str, int, float]:
    """One unit in a worker process: train the stack, score it, write its JSON (whole or not at all)."""
    kind, design, seed, runs, path = task
    torch.set_num_threads(1)
    began = time.perf_counter()
    data, info = make_seed_data(design, seed)
    policy, trained = train_stack(data, runs, design, curves=kind == "evaluation")
    if kind == "tuning":
        scores = validation_accuracy(policy, data).tolist()
        records = [{"validation_accuracy": round(score, 6)} for score in scores]
    else:
        scored = evaluate_stack(policy, data, reference_rewards(data))
        records = [{**a, **b} for a, b in zip(trained, scored)]
    records = [{**vars(run), **record} for run, record in zip(runs, records)]
    payload = {"design": design_fingerprint(design), "seed": seed, "seed_info": info, "runs": records}
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.with_suffix(".tmp").write_text(json.dumps(payload))
    target.with_suffix(".tmp").replace(target)
    return kind, seed, time.perf_counter() - began


def read_unit(path: Path, design: StudyDesign) -> dict | None:
    if not path.is_file():
        return None
    payload = json.loads(path.read_text())
    if payload["design"] != design_fingerprint(design):
        raise ValueError(f"{path} was made with another study design; use a new output folder or the same design")
    return payload


def _run_units(tasks: list, workers: int, say, train: bool) -> None:
    if not tasks:
        return
    if not train:
        raise FileNotFoundError(f"{len(tasks)} unit(s) missing from the cache, e.g. {tasks[0][4]}: run without "
                                "--report-only to train them")
    began = time.perf_counter()
    if workers == 1 or len(tasks) == 1:
        finished = map(_unit, tasks)
    else:
        pool = multiprocessing.get_context("spawn").Pool(min(workers, len(tasks)))
        finished = pool.imap_unordered(_unit, tasks)
    for done, (kind, seed, seconds) in enumerate(finished, start=1):
        left = (time.perf_counter() - began) / done * (len(tasks) - done)
        say(f"{kind} seed {seed}: {seconds:.0f} s; {done}/{len(tasks)} units done, ~{left / 60:.1f} min left")
    if not (workers == 1 or len(tasks) == 1):
        pool.close()
        pool.join()


def choose_learning_rates(tuning: list[dict], design: StudyDesign) -> dict[tuple, float]:
    """Per (method, regime, arm, size): the grid rate with the best mean validation accuracy (ties: smaller)."""
    scores: dict[tuple, dict[float, list[float]]] = {}
    for payload in tuning:
        for run in payload["runs"]:
            key = (run["method"], run["regime"], run["arm"], run["pairs_per_cluster"])
            scores.setdefault(key, {}).setdefault(run["learning_rate"], []).append(run["validation_accuracy"])
    return {key: max(sorted(by_rate), key=lambda rate: (sum(by_rate[rate]) / len(by_rate[rate]), -rate))
            for key, by_rate in scores.items()}


def run_synthetic_study(output_dir: str | Path, design: StudyDesign, progress: bool = True, train: bool = True
                        ) -> dict:
    """Run (or resume) every unit; returns {"tuning": [...], "evaluation": [...], "learning_rates": {...}}.

    ``train=False`` only reads the cache (a missing unit is an error naming it).
    """
    design.check()
    output_dir = Path(output_dir)

    def say(message: str) -> None:
        if progress:
            print(message, flush=True)

    tuning_runs = [RunSpec(method, regime, beta, arm, size, rate) for method, regime, beta, arm, size
                   in conditions(design) for rate in design.learning_rates]
    tuning_paths = {seed: output_dir / "tuning" / f"seed{seed}.json" for seed in design.tuning_seeds}
    todo = [("tuning", design, seed, tuning_runs, str(path)) for seed, path in tuning_paths.items()
            if read_unit(path, design) is None]
    say(f"tuning: {len(tuning_runs)} models per seed, {len(todo)} of {len(tuning_paths)} seeds to train")
    _run_units(todo, design.workers, say, train)
    tuning = [read_unit(path, design) for path in tuning_paths.values()]
    rates = choose_learning_rates(tuning, design)
    evaluation_runs = [RunSpec(method, regime, beta, arm, size, rates[(method, regime, arm, size)])
                       for method, regime, beta, arm, size in conditions(design)]
    paths = {seed: output_dir / "evaluation" / f"seed{seed}.json" for seed in design.seeds}
    todo = [("evaluation", design, seed, evaluation_runs, str(path)) for seed, path in paths.items()
            if read_unit(path, design) is None]
    say(f"evaluation: {len(evaluation_runs)} models per seed, {len(todo)} of {len(paths)} seeds to train")
    _run_units(todo, design.workers, say, train)
    return {"tuning": tuning, "evaluation": [read_unit(path, design) for path in paths.values()],
            "learning_rates": rates}
