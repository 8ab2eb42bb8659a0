"""Run a real-model study: data once, learning rates on validation, then every (seed, method) on held-out.

    from rpo_lab.study.runner import run_study
    from rpo_lab.study.settings import StudySettings
    run_study("outputs/study-hh", StudySettings())                                   # the committed HH study
    run_study("/tmp/s", StudySettings(model="tiny-random:llama", dataset="my.jsonl"))  # tests: seconds

Phases (each run cached as one JSON, so an interrupted study resumes and never retrains a run):

1. **Data** (``features.pt``): split by prompt, tokenize, the frozen trunk's features and the
   reference log-probs of every pair, the train prompts' embeddings.
2. **Tuning** (``runs/tuning/seed<k>/<method>/lr<rate>.json``): every method at every rate of the
   shared grid on the tuning seeds; only validation outcomes are scored.
3. **Choice**: per method, the rate with the best mean validation accuracy (ties: the smaller rate);
   the design's power (``power.design_power``) is computed from these validation runs and printed
   BEFORE any held-out pair is scored.
4. **Evaluation** (``runs/evaluation/seed<k>/<method>.json``): every method at its rate on every
   seed, seed by seed (an interrupted study holds whole seeds); held-out outcomes.

A cached run records the settings it was made with; a cache of other settings is refused (name a
new folder), never mixed in.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

from rpo_lab.study.data import StudyData, build_data, study_rows
from rpo_lab.study.settings import StudySettings, questions
from rpo_lab.study.train import seed_order, train_run
from rpo_lab.study.trunk import TopStack, load_model
from rpo_tutorial.training.threads import apply_num_threads

# settings that do not change what a run computes
_NOT_TRAINING = {"methods", "seeds", "tuning_seeds", "learning_rates", "bootstrap_samples", "num_threads"}
_NOT_DATA = _NOT_TRAINING | {"batch_size", "steps", "beta", "max_grad_norm"}


def _file_digest(name: str | None) -> str | None:
    """sha256 of a local data file (the cache follows its content, not its name); the name otherwise."""
    if name is None or not Path(name).is_file():
        return name
    return hashlib.sha256(Path(name).read_bytes()).hexdigest()


def fingerprint(settings: StudySettings, data_only: bool = False) -> dict:
    """The settings that determine a run (or, ``data_only``, the features), with the data files' digests."""
    values = {key: value for key, value in dataclasses.asdict(settings).items()
              if key not in (_NOT_DATA if data_only else _NOT_TRAINING)}
    values.update(dataset=_file_digest(settings.dataset), heldout=_file_digest(settings.heldout))
    return json.loads(json.dumps(values))  # tuples -> lists, as read back from JSON


def read_json(path: Path, key: dict) -> dict | None:
    """A cached file made with ``key``, None when absent; raises when unreadable or made with other settings."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a cached study run (unreadable JSON: {error}); delete it to rerun") from error
    if not isinstance(record, dict):
        raise ValueError(f"{path}: not a cached study run (a JSON {type(record).__name__}); delete it to rerun")
    if record.get("key") != key:
        changed = sorted(k for k in set(key) | set(record.get("key") or {})
                         if (record.get("key") or {}).get(k) != key.get(k))
        raise ValueError(f"{path} was made with other settings ({changed}); use a new output folder or the same "
                         "settings")
    return record


def write_json(path: Path, record: dict) -> None:
    """Write whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".tmp").write_text(json.dumps(record))
    path.with_suffix(".tmp").replace(path)


class Study:
    """The model split and the data of one study, loaded on first use; trains and caches runs."""

    def __init__(self, output_dir: Path, settings: StudySettings, say: Callable[[str], None], embed=None,
                 workers: int = 1) -> None:
        self.output_dir, self.settings, self.say, self.embed, self.workers = output_dir, settings, say, embed, workers
        self.stack: TopStack | None = None
        self.seconds: float | None = None  # time spent building the data in this process (None: from the cache)
        self.data: StudyData | None = None
        self.source: dict | None = None

    def load(self) -> StudyData:
        """The data (read and split first, so a bad file fails before the model loads), the model split."""
        from rpo_lab.study.power import heldout_warning

        if self.data is not None:
            return self.data
        path, key = self.output_dir / "features.pt", fingerprint(self.settings, data_only=True)
        cached = torch.load(path, weights_only=False) if path.is_file() else None
        if cached is not None and cached.get("key") == key:
            parts, self.source = None, cached["source"]
        else:
            parts, self.source = study_rows(self.settings)
        warning = heldout_warning(self.source["sizes"]["heldout"], len(self.settings.seeds))
        if warning:
            warnings.warn(warning)
        tokenizer, model = load_model(self.settings)
        self.stack = TopStack(model, self.settings.trainable_layers)
        self.pristine = self.stack.state()  # the pretrained top layers: the reference of every run
        if parts is None:
            self.data = cached["data"]
            return self.data
        sizes = ", ".join(f"{len(rows)} {name}" for name, rows in parts.items())
        self.say(f"data: {sizes} pairs from {self.source['dataset']}; running the frozen layers once")
        began = time.perf_counter()
        self.data = build_data(parts, self.stack, tokenizer, self.settings, self.embed or _bundled_embed, self.workers)
        self.source.update(kept=self.data.sizes)
        self.seconds = round(time.perf_counter() - began, 1)
        self.say(f"data ready in {self.seconds / 60:.1f} min")
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"key": key, "data": self.data, "source": self.source}, path)
        write_json(self.output_dir / "source.json", {"key": key, **self.source})
        return self.data

    def key(self, method: str, rate: float, seed: int, split: str) -> dict:
        return {**fingerprint(self.settings), "method": method, "learning_rate": rate, "seed": seed, "split": split}

    def train(self, unit: tuple) -> dict:
        """Train one unit (path, method, rate, seed, split) now and cache it."""
        path, method, rate, seed, split = unit
        data = self.load()
        record = train_run(self.stack, data, method, rate, seed_order(data, self.settings, seed), self.settings,
                           self.pristine, split)
        record.update(key=self.key(method, rate, seed, split), seed=seed)
        write_json(Path(path), record)
        return record


_WORKER: dict = {}


def _worker_start(output_dir: str, settings: StudySettings) -> None:
    apply_num_threads(settings.num_threads)
    _WORKER["study"] = Study(Path(output_dir), settings, lambda message: None)
    _WORKER["study"].load()  # the features are on disk: read, never recomputed


def _worker_train(unit: tuple) -> tuple[tuple, float, float]:
    record = _WORKER["study"].train(unit)
    return unit, record["accuracy"], record["train_seconds"]


def run_phase(study: Study, units: list[tuple], train: bool, workers: int, say: Callable[[str], None]) -> list[dict]:
    """Every unit's record: from the cache, or trained (by ``workers`` processes of one torch thread each)."""
    missing = [unit for unit in units if read_json(Path(unit[0]), study.key(*unit[1:])) is None]
    if missing and not train:
        raise FileNotFoundError(f"{missing[0][0]}: run missing from the cache ({len(missing)} missing); run without "
                                "--report-only to train it")
    if missing:
        study.load()  # the features exist before any worker starts
        began, pool = time.perf_counter(), None
        if workers > 1 and len(missing) > 1:
            import multiprocessing

            pool = multiprocessing.get_context("spawn").Pool(min(workers, len(missing)), _worker_start,
                                                             (str(study.output_dir), study.settings))
            finished = pool.imap_unordered(_worker_train, missing)
        else:
            finished = ((unit, record["accuracy"], record["train_seconds"])
                        for unit, record in ((unit, study.train(unit)) for unit in missing))
        for done, (unit, accuracy, seconds) in enumerate(finished, start=1):
            left = (time.perf_counter() - began) / done * (len(missing) - done)
            say(f"{unit[4]} seed {unit[3]} {unit[1]} lr {unit[2]:g}: accuracy {accuracy:.1%} ({seconds:.0f} s of "
                f"training); {done}/{len(missing)} runs of this phase, ~{left / 60:.0f} min left")
        if pool is not None:
            pool.close()
            pool.join()
    return [read_json(Path(unit[0]), study.key(*unit[1:])) for unit in units]


def choose_learning_rates(tuning: list[dict]) -> dict[str, float]:
    """Per method: the grid rate with the best mean validation accuracy over the tuning seeds (ties: smaller)."""
    scores: dict[str, dict[float, list[float]]] = {}
    for record in tuning:
        scores.setdefault(record["method"], {}).setdefault(record["learning_rate"], []).append(record["accuracy"])
    return {method: max(sorted(by_rate), key=lambda rate: (sum(by_rate[rate]) / len(by_rate[rate]), -rate))
            for method, by_rate in scores.items()}


def run_study(output_dir: str | Path, settings: StudySettings | None = None, progress: bool = True,
              train: bool = True, embed: Callable | None = None, workers: int = 1) -> dict:
    """Run (or resume) every phase; returns ``{"source", "tuning", "learning_rates", "power", "evaluation"}``.

    ``train=False`` reads the cache only (a missing run is an error naming it).

    Args:
        embed: ``texts -> (K, D)`` prompt embeddings (default: the bundled all-MiniLM-L6-v2).
        workers: processes that train runs side by side, one torch thread each (``settings.num_threads``); a
            run's numbers do not depend on the process that trained it.
    """
    from rpo_lab.study.power import design_power

    settings = settings if settings is not None else StudySettings()
    settings.check()
    output_dir = Path(output_dir)
    began = time.perf_counter()

    def say(message: str) -> None:
        if progress:
            minutes, seconds = divmod(int(time.perf_counter() - began), 60)
            print(f"[{minutes:02d}:{seconds:02d}] {message}", flush=True)

    apply_num_threads(settings.num_threads)
    study = Study(output_dir, settings, say, embed, workers)
    runs, timing = output_dir / "runs", {}
    phase_began = time.perf_counter()
    tuning = run_phase(study, [(runs / "tuning" / f"seed{seed}" / method / f"lr{rate:g}.json", method, rate, seed,
                                "validation") for method in settings.methods for rate in settings.learning_rates
                               for seed in settings.tuning_seeds], train, workers, say)
    timing["tuning_seconds"] = round(time.perf_counter() - phase_began, 1)
    rates = choose_learning_rates(tuning)
    source = study.source if study.source is not None else _cached_source(output_dir)
    heldout = (source.get("kept") or source["sizes"])["heldout"] if source else None
    power = design_power(tuning, rates, settings, questions(settings.methods), heldout)
    say("learning rates chosen on validation: " + ", ".join(f"{m} {r:g}" for m, r in rates.items()))
    for line in power["lines"]:
        say(line)
    if power["warning"]:
        warnings.warn(power["warning"])
    phase_began = time.perf_counter()
    evaluation = run_phase(study, [(runs / "evaluation" / f"seed{seed}" / f"{method}.json", method, rates[method], seed,
                                    "heldout") for seed in settings.seeds for method in settings.methods],
                           train, workers, say)
    timing.update(evaluation_seconds=round(time.perf_counter() - phase_began, 1), data_seconds=study.seconds)
    timing["tuning_seconds"] = round(timing["tuning_seconds"] - (study.seconds or 0.0), 1)  # data built inside it
    source = study.source if study.source is not None else _cached_source(output_dir)
    return {"source": source, "tuning": tuning, "learning_rates": rates, "power": power, "evaluation": evaluation,
            "timing": timing}


def _cached_source(output_dir: Path) -> dict | None:
    path = output_dir / "source.json"
    return {k: v for k, v in json.loads(path.read_text()).items() if k != "key"} if path.is_file() else None


def _bundled_embed(texts: list[str]) -> torch.Tensor:
    from rpo_tutorial.data.embeddings import PromptEmbedder

    return PromptEmbedder().embed(texts, show_progress=False)
