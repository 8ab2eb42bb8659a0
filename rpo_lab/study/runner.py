"""Run a study: every (setting, seed, method), each cached on disk, then the report.

    from rpo_lab.study.runner import run_study
    from rpo_lab.study.settings import StudySettings
    run_study("outputs/study", StudySettings())                      # the committed study (~1 h, CPU)
    run_study("/tmp/s", StudySettings(model="tiny-random:llama", ...))  # tests: seconds

Layout of ``output_dir``::

    runs/<setting>/seed<k>/<method>.json   one finished run (curves, held-out log-probs)
    runs/<setting>/seed<k>/sft.pt          the seed's SFT weights (top layers) and reference log-probs
    runs/<setting>/seed<k>/sft_samples.json  the SFT reference's judged samples (controlled, control)
    features/<setting>.pt                  trunk features of every sequence (shared by all seeds)
    study.json, study.md, *.png            the report (``report.write_report``)

Runs go method by method (``settings.methods`` order, then the tau ablation), each in every
setting, all seeds in a row (the SFT reference of each seed is read back from disk), so an
interrupted study holds complete rows of its first methods.
A judged run (``judge``) also samples the held-out prompts after training and compares them with the
SFT reference's samples (``study.judge``); its JSON holds the samples and per-prompt outcomes.
A run is trained only when its JSON is absent, so an interrupted study resumes where it
stopped and never retrains a finished run. Each JSON records the settings it was trained with; a
cache made with other settings is refused (name a new folder) rather than mixed in.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import torch

from rpo_lab.study import train as training
from rpo_lab.study.cache import FEATURE_FIELDS, JUDGE_FIELDS, SFT_FIELDS, fingerprint, read_run, run_path
from rpo_lab.study.data import SettingData, build_setting, setting_rows
from rpo_lab.study.judge import JUDGED_SETTINGS, compare_to_reference, sample_scores
from rpo_lab.study.settings import StudySettings
from rpo_lab.study.trunk import TopStack
from rpo_tutorial.training.threads import apply_num_threads

def load_model(settings: StudySettings):
    """(tokenizer, model) of ``settings.model``."""
    from rpo_tutorial.models.loading import load_policy, load_tokenizer, tiny_model

    tokenizer = load_tokenizer()
    if settings.model.startswith("tiny-random:"):
        model = tiny_model(len(tokenizer), architecture=settings.model.split(":", 1)[1], num_layers=3)
    else:
        model = load_policy() if settings.model == "bundled" else load_policy(settings.model)
    return tokenizer, model.to("cuda" if torch.cuda.is_available() else "cpu")


class Progress:
    """One line per run with the elapsed time and an estimate of the time left."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled, self.began = total, 0, enabled, time.perf_counter()
        self.trained, self.trained_seconds = 0, 0.0

    def say(self, message: str) -> None:
        if self.enabled:
            minutes, seconds = divmod(int(time.perf_counter() - self.began), 60)
            print(f"[{minutes:02d}:{seconds:02d}] {message}", flush=True)

    def finished(self, name: str, record: dict, seconds: float | None) -> None:
        self.done += 1
        if seconds is not None:
            self.trained, self.trained_seconds = self.trained + 1, self.trained_seconds + seconds
        left = self.total - self.done
        estimate = (f"~{left * self.trained_seconds / self.trained / 60:.0f} min left" if self.trained
                    else "no estimate yet")
        final = record["evals"][-1]
        how = f"{seconds:.0f} s" if seconds is not None else "cached"
        judge = record.get("judge")
        judged = (f", judge win rate vs SFT {judge['win_rate']:.1%} (sampling {judge['seconds']:.0f} s)"
                  if judge else "")
        self.say(f"run {self.done}/{self.total} {name}: held-out accuracy {final['accuracy']:.1%} "
                 f"({final['wins']}/{final['ties']}/{final['losses']}), drift {final['drift']:.2f} nats{judged}, "
                 f"{how}; {left} left, {estimate}")


def run_study(output_dir: str | Path, settings: StudySettings | None = None, progress: bool = True,
              report: bool = True, embed: Callable | None = None) -> dict:
    """Train every missing run, then write the report; returns ``{(setting, seed, method): record}``.

    Args:
        embed: ``texts -> (K, D)`` prompt embeddings (default: the bundled all-MiniLM-L6-v2).
    """
    settings = settings if settings is not None else StudySettings()
    settings.check()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    available = {name: setting_rows(name, settings) for name in settings.settings}
    # method by method (in the order given), each in every setting, every seed of a method in a row: an
    # interrupted study has whole rows (all seeds) of the first methods in every setting
    names = [name for name in settings.settings if available[name] is not None]
    methods = list({m.key: m for name in names for m in settings.method_list(name)}.values())
    plan = [(name, seed, method) for method in methods for name in names
            if method in settings.method_list(name) for seed in settings.seeds]
    log = Progress(len(plan), progress)
    for name, rows in available.items():
        if rows is None:
            log.say(f"setting {name!r} skipped: its data file is absent")
    results: dict = {}
    state: dict = {}
    for name, seed, method in plan:
        path = run_path(output_dir, name, seed, method.key)
        record = read_run(path, settings)
        seconds = None
        if record is None:
            began = time.perf_counter()
            threads = apply_num_threads(settings.num_threads)
            stack, data = _setting(state, name, available[name], settings, output_dir, embed, log)
            sft = _sft(state, stack, data, settings, seed, output_dir, log)
            reference = _sft_samples(state, stack, available[name][1], settings, seed, sft, output_dir, log)
            log.say(f"training {name} seed {seed} {method.label} ({settings.steps} steps, {threads} thread(s))")
            record = training.train_method(stack, data, method, settings, seed, sft)
            record["judge"] = None if reference is None else _judge_run(state, stack, available[name][1],
                                                                        settings, seed, reference)
            record.update(setting=name, settings=fingerprint(settings), sft_seconds=sft.get("seconds"))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.with_suffix(".tmp").write_text(json.dumps(record))
            path.with_suffix(".tmp").replace(path)  # a run is cached whole or not at all
            seconds = time.perf_counter() - began
        results[(name, seed, method.key)] = record
        log.finished(f"{name} seed {seed} {method.key}", record, seconds)
    if report:
        from rpo_lab.study.report import write_report

        write_report(output_dir, settings)
    return results


def _setting(state: dict, name: str, rows, settings: StudySettings, output_dir: Path, embed, log: Progress
             ) -> tuple[TopStack, SettingData]:
    """The model split (loaded once) and the setting's trunk features (built once, cached on disk)."""
    if "stack" not in state:
        tokenizer, model = load_model(settings)
        state.update(stack=TopStack(model, settings.trainable_layers), tokenizer=tokenizer)
        state["pristine"] = state["stack"].state()
    if state.get("setting_name") != name:
        path = output_dir / "features" / f"{name}.pt"
        key = {"settings": fingerprint(settings, FEATURE_FIELDS), "setting": name}
        cached = torch.load(path, weights_only=False) if path.is_file() else None
        if cached is not None and cached.get("key") == key:
            data = cached["data"]
        else:
            log.say(f"setting {name}: tokenizing {len(rows[0])} train and {len(rows[1])} held-out pairs, "
                    "running the frozen layers once")
            data = build_setting(name, rows[0], rows[1], state["stack"], state["tokenizer"], settings,
                                 embed or _bundled_embed)
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"key": key, "data": data}, path)
        state.update(setting_name=name, data=data, sft_key=None)
    return state["stack"], state["data"]


def _sft(state: dict, stack: TopStack, data: SettingData, settings: StudySettings, seed: int, output_dir: Path,
         log: Progress) -> dict:
    """The seed's SFT reference (trained once per setting and seed, cached on disk)."""
    key = (data.name, seed)
    if state.get("sft_key") == key:
        return state["sft"]
    path = output_dir / "runs" / data.name / f"seed{seed}" / "sft.pt"
    cached = torch.load(path, weights_only=False) if path.is_file() else None
    sft_key = fingerprint(settings, FEATURE_FIELDS | SFT_FIELDS)
    if cached is not None and cached.get("settings") == sft_key:
        sft = cached["sft"]
    else:
        log.say(f"SFT reference for {data.name} seed {seed}: one pass over {len(data.train_pairs)} chosen responses")
        sft = training.run_sft(stack, data, settings, seed, state["pristine"])
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"settings": sft_key, "sft": sft}, path)
    state.update(sft_key=key, sft=sft)
    return sft


def _judged(name: str, settings: StudySettings) -> bool:
    return name in JUDGED_SETTINGS and settings.judge_max_new_tokens > 0


def _sft_samples(state: dict, stack: TopStack, heldout_rows: list[dict], settings: StudySettings, seed: int,
                 sft: dict, output_dir: Path, log: Progress) -> dict | None:
    """The SFT reference's judged samples of the held-out prompts (once per setting and seed, cached on disk).

    None where the setting has no judge. Loads the SFT weights into ``stack`` when it has to sample.
    """
    name = state["setting_name"]
    if not _judged(name, settings):
        return None
    path = output_dir / "runs" / name / f"seed{seed}" / "sft_samples.json"
    key = fingerprint(settings, FEATURE_FIELDS | SFT_FIELDS | JUDGE_FIELDS)
    cached = json.loads(path.read_text()) if path.is_file() else None
    if cached is not None and cached.get("settings") == key:
        return cached["samples"]
    log.say(f"sampling the SFT reference on {len(heldout_rows)} held-out prompts of {name} seed {seed}")
    stack.load_state(sft["state"])
    samples = sample_scores(stack.model, state["tokenizer"], heldout_rows, name, settings, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".tmp").write_text(json.dumps({"settings": key, "samples": samples}))
    path.with_suffix(".tmp").replace(path)
    return samples


def _judge_run(state: dict, stack: TopStack, heldout_rows: list[dict], settings: StudySettings, seed: int,
               reference: dict) -> dict:
    """Sample the trained policy (the stack holds its weights) and judge it against the SFT samples."""
    samples = sample_scores(stack.model, state["tokenizer"], heldout_rows, state["setting_name"], settings, seed)
    return {**compare_to_reference(samples["scores"], reference["scores"]), **samples}


def _bundled_embed(texts: list[str]) -> torch.Tensor:
    from rpo_tutorial.data.embeddings import PromptEmbedder

    return PromptEmbedder().embed(texts, show_progress=False)
