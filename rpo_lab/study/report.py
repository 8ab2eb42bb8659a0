"""The study's report: ``study.json``, ``study.md`` and two figures, from the cached runs alone.

Per setting and method (intervals: ``stats``):
- held-out implicit-reward accuracy (ties half): mean over seeds, 95% t-interval across seeds;
- the judge win rate against the SFT reference's samples (``study.judge``; controlled and control
  only), the same way, with its own paired difference to DPO over seeds and prompts;
- its paired difference to DPO: mean over seeds and held-out pairs, two-level bootstrap interval;
- drift = mean |log pi - log pi_ref| over held-out responses, and the mean change of the chosen
  and rejected log-probs (nats per response), means over seeds;
- the train margin (log-ratio difference, nats, mean of the last quarter of steps), the check
  that training is unsaturated, and the counts of wins / ties / losses summed over seeds.
Missing runs (an interrupted study) are listed; every number says how many seeds it rests on.
"""
from __future__ import annotations

import json
import math
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from rpo_lab.study.cache import read_run, run_path
from rpo_lab.study.judge import TIE_MARGIN
from rpo_lab.study.settings import StudySettings
from rpo_lab.study.stats import paired_bootstrap, pair_outcomes, seed_interval

BASELINE = "dpo"


def _last_quarter(values: list[float]) -> float:
    return float(np.mean(values[-max(1, len(values) // 4):])) if values else math.nan


def method_row(records: list[dict], baseline: list[dict] | None, settings: StudySettings) -> dict:
    """The table row of one method in one setting, from its runs (one per seed)."""
    finals = [record["evals"][-1] for record in records]
    row = {"label": records[0]["label"], "method": records[0]["method"], "beta": records[0]["beta"],
           "seeds": [record["seed"] for record in records],
           "accuracy": seed_interval([final["accuracy"] for final in finals]),
           "drift": seed_interval([final["drift"] for final in finals]),
           "chosen_logp_change": float(np.mean([final["chosen_logp_change"] for final in finals])),
           "rejected_logp_change": float(np.mean([final["rejected_logp_change"] for final in finals])),
           "train_margin_nats": float(np.mean([_last_quarter([c["margin_nats"] for c in r["curve"]]) for r in records])),
           "train_accuracy": float(np.mean([_last_quarter([c["accuracy"] for c in r["curve"]]) for r in records])),
           "wins": sum(f["wins"] for f in finals), "ties": sum(f["ties"] for f in finals),
           "losses": sum(f["losses"] for f in finals), "pairs_per_seed": finals[0]["n"]}
    judges = [record.get("judge") for record in records]
    row["judge_win_rate"] = seed_interval([j["win_rate"] for j in judges]) if all(judges) else None
    if all(judges):
        row.update({f"judge_{key}": sum(j[key] for j in judges) for key in ("wins", "ties", "losses")},
                   judge_mean_score=float(np.mean([j["mean_score"] for j in judges])),
                   sft_judge_mean_score=float(np.mean([j["reference_mean_score"] for j in judges])))
    if baseline is not None and row["method"] != BASELINE:
        seeds = sorted(set(row["seeds"]) & {record["seed"] for record in baseline})
        if seeds:
            mine = {record["seed"]: record for record in records}
            theirs = {record["seed"]: record for record in baseline}
            outcomes = [np.stack([pair_outcomes(np.asarray(x[s]["heldout_policy"]), np.asarray(x[s]["heldout_reference"]))
                                  for s in seeds]) for x in (mine, theirs)]
            row["difference_to_dpo"] = paired_bootstrap(outcomes[0], outcomes[1], settings.bootstrap_samples)
            if all(x[s].get("judge") for x in (mine, theirs) for s in seeds):
                judged = [np.stack([x[s]["judge"]["outcomes"] for s in seeds]) for x in (mine, theirs)]  # (S, P)
                row["judge_difference_to_dpo"] = paired_bootstrap(judged[0], judged[1], settings.bootstrap_samples)
    return row


def collect(output_dir: Path, settings: StudySettings) -> tuple[dict, list[str]]:
    """``{setting: {method key: [records by seed]}}`` of the cached runs, and the missing runs."""
    found, missing = {}, []
    for setting in settings.settings:
        for method in settings.method_list(setting):
            for seed in settings.seeds:
                record = read_run(run_path(output_dir, setting, seed, method.key), settings)
                if record is None:
                    missing.append(f"{setting}/seed{seed}/{method.key}")
                else:
                    found.setdefault(setting, {}).setdefault(method.key, []).append(record)
    return found, missing


def _curves(found: dict) -> dict:
    """Per setting and method: the train margin (nats) of each step, one list per seed."""
    curves = {}
    for setting, methods in found.items():
        for key, records in methods.items():
            if "-tau" in key:
                continue  # the tau ablation has its own table
            steps = [c["step"] for c in records[0]["curve"]]
            curves.setdefault(setting, {})[records[0]["label"]] = {
                "step": steps, "values": [[c["margin_nats"] for c in r["curve"]] for r in records]}
    return curves


def build_report(output_dir: str | Path, settings: StudySettings) -> dict:
    """The report's content (``study.json``) from the cache."""
    output_dir = Path(output_dir)
    found, missing = collect(output_dir, settings)
    tables = {setting: [method_row(records, methods.get(BASELINE), settings) for records in methods.values()]
              for setting, methods in found.items()}
    return {"created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {platform.system()}, Python {sys.version.split()[0]}, "
                       f"{_cpu_count()} CPU cores (shared)",
            "settings": {key: list(value) if isinstance(value, tuple) else value
                         for key, value in vars(settings).items()},
            "tables": tables, "missing": missing, "curves": _curves(found)}


def _cpu_count() -> int:
    import os

    return os.cpu_count() or 1


def _interval(stat: dict, percent: bool = True) -> str:
    scale, unit = (100.0, "%") if percent else (1.0, "")
    if stat is None or math.isnan(stat["mean"]):
        return "n/a"
    text = f"{stat['mean'] * scale:.1f}{unit}"
    if not math.isnan(stat.get("ci_low", math.nan)):
        text += f" [{stat['ci_low'] * scale:.1f}, {stat['ci_high'] * scale:.1f}]"
    return text


SETTING_TEXT = {
    "controlled": "demo prompts (8 topic clusters); happier response preferred in cooking/travel/pets/gardening, "
                  "gloomier in sports/music/school/work (ground truth r* = sign(cluster) x VADER sentiment, "
                  "`rpo_lab/study/controlled.py`)",
    "control": "the same demo pairs, one criterion everywhere (happier response preferred)",
    "hh": "Anthropic HH harmless-base test file, split by prompt",
}


def _setup(report: dict) -> list[str]:
    s = report["settings"]
    return [
        f"Setup: model {'SmolLM2-135M-Instruct (bundled)' if s['model'] == 'bundled' else s['model']}, top {s['trainable_layers']} decoder layers + final norm "
        f"trained, lower layers frozen; per seed one SFT reference (one pass over the train pairs' chosen "
        f"responses, lr {s['sft_learning_rate']:g}) and one data order shared by every method; {s['steps']} "
        f"AdamW steps of {s['batch_size']} pairs, lr {s['learning_rate']:g} for every method (fixed, not "
        f"tuned on any method); beta {s['beta']:g} (DPO, KTO, RPO paper beta) and beta x N = "
        f"{s['beta'] * s['batch_size']:g} (RPO matched); seeds {s['seeds']}; sequences of at most "
        f"{s['max_length']} tokens ({s['hh_max_length']} for HH); held-out pairs: {s['heldout_per_cluster']} "
        f"per cluster (demo settings), {s['hh_heldout_pairs']} (HH); train pairs: {s['train_pairs']} (demo), "
        f"{s['hh_train_pairs']} (HH).", "",
        "Settings: " + "; ".join(f"**{name}**: {text}" for name, text in SETTING_TEXT.items()
                                 if name in s["settings"]) + ".", ""]


def _judge_text(report: dict) -> list[str]:
    """How the judge win rate was measured, and the SFT samples' mean r* per judged setting."""
    s = report["settings"]
    if not s.get("judge_max_new_tokens"):
        return ["Judge win rates against SFT (sampling) were not run in this study.", ""]
    means = [f"{setting} {row['sft_judge_mean_score']:+.3f}" for setting, rows in report["tables"].items()
             for row in rows[:1] if row.get("judge_win_rate")]
    return [f"Judge win rate vs SFT (controlled and control; HH has no offline judge): each held-out prompt "
            f"sampled once from the trained policy and once from the seed's SFT reference (top-p "
            f"{s['judge_top_p']:g}, temperature {s['judge_temperature']:g}, at most {s['judge_max_new_tokens']} new "
            f"tokens, the same sampling seeds for the SFT reference and every method of a seed), both scored with "
            f"the ground truth r* (controlled: sign(cluster) x VADER sentiment; control: VADER sentiment; an empty "
            f"or degenerate response scores -1); win = r* higher by more than {TIE_MARGIN:g}, a tie (within it) "
            f"counts half (`rpo_lab/study/judge.py`). Interval: Student t across seeds; judge vs DPO: the "
            f"same two-level bootstrap over seeds and prompts on the per-prompt outcomes. Mean r* of the SFT "
            f"samples: {', '.join(means) or 'n/a'}.", ""]


def _saturation(report: dict) -> list[str]:
    margins = [row["train_margin_nats"] for rows in report["tables"].values() for row in rows]
    if not margins:
        return []
    return [f"Unsaturated? Train margins over the last quarter of steps range from {min(margins):.2f} to "
            f"{max(margins):.2f} nats. The DPO sigmoid saturates when beta x margin reaches ~3-5, i.e. at ~30-50 "
            "nats for beta 0.1; an RPO contrast has beta x w_ij with w_ij ~ 1/N, so at the matched beta x N it "
            "saturates about where DPO does (see the learning-curve figure).", ""]


def markdown(report: dict, command: str) -> str:
    """``study.md``: the command, machine, settings, one table per setting, what is missing."""
    lines = [f"# RPO study ({report['created']})", "", f"Command: `{command}`", "",
             f"Machine: {report['machine']}.", "", *_setup(report),
             "Held-out implicit-reward accuracy counts a tie as half a win (see `rpo_tutorial/evaluation/evaluate.py`); "
             "intervals are 95%: across seeds (Student t) for the accuracy, a two-level bootstrap over seeds and "
             "held-out pairs for the paired difference to DPO. Drift = mean |log pi - log pi_ref| over held-out "
             "responses (nats). Train margin = mean log-ratio difference chosen - rejected over the last quarter of "
             "steps (nats; own pairs, all pairs for unpaired methods).", "", *_judge_text(report), *_saturation(report)]
    for setting, rows in report["tables"].items():
        lines += [f"## {setting}", "", "| method | beta | accuracy [95% CI] | vs DPO [95% CI] | judge win rate vs "
                  "SFT [95% CI] | judge vs DPO [95% CI] | drift | chosen / rejected log-prob change | train margin | "
                  "train acc. | wins/ties/losses | judge W/T/L | seeds |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in rows:
            difference, judge = row.get("difference_to_dpo"), row.get("judge_win_rate")
            judge_difference = row.get("judge_difference_to_dpo")
            counts = f"{row['judge_wins']}/{row['judge_ties']}/{row['judge_losses']}" if judge else "-"
            lines.append(
                f"| {row['label']} | {row['beta']:g} | {_interval(row['accuracy'])} | "
                f"{_interval(difference) if difference else '-'} | "
                f"{_interval(judge) if judge else 'n/a (no offline judge)'} | "
                f"{_interval(judge_difference) if judge_difference else ('-' if judge else 'n/a')} | "
                f"{_interval(row['drift'], percent=False)} | "
                f"{row['chosen_logp_change']:+.2f} / {row['rejected_logp_change']:+.2f} | "
                f"{row['train_margin_nats']:.2f} | {row['train_accuracy']:.0%} | "
                f"{row['wins']}/{row['ties']}/{row['losses']} | {counts} | {len(row['seeds'])} |")
        lines.append("")
    if report["missing"]:
        lines += ["## Missing runs", "", "Not in the cache when this report was written (resume with the same "
                  "command): " + ", ".join(report["missing"]), ""]
    lines += ["Figures: `study_learning_curves.png` (train margin per step, mean and range over seeds), "
              "`study_accuracy.png` (held-out accuracy, mean and 95% interval across seeds), `study_judge_winrate.png` "
              "(judge win rate against SFT, controlled and control).", ""]
    return "\n".join(lines)


def write_report(output_dir: str | Path, settings: StudySettings, command: str = "rpo-tutorial study",
                 copy_to: str | Path | None = None) -> dict:
    """Write study.json, study.md and the figures into ``output_dir`` (and ``copy_to``)."""
    from rpo_tutorial.plots.study import plot_accuracy_bars, plot_learning_curves

    report = build_report(output_dir, settings)
    report["command"] = command
    for folder in [Path(output_dir)] + ([Path(copy_to)] if copy_to is not None else []):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "study.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
        (folder / "study.md").write_text(markdown(report, command))
        if report["tables"]:
            plot_learning_curves(report["curves"], folder / "study_learning_curves.png", metric="margin_nats",
                                 ylabel="train margin, log-ratio chosen - rejected (nats)")
            plot_accuracy_bars(report["tables"], folder / "study_accuracy.png")
            judged = {setting: rows for setting, rows in report["tables"].items()
                      if any(row.get("judge_win_rate") for row in rows)}
            if judged:
                plot_accuracy_bars(judged, folder / "study_judge_winrate.png", key="judge_win_rate",
                                   title="judge win rate vs SFT (r*, ties half)")
    return report
