"""The demo pipeline's evaluation and its output files (see :mod:`rpo_lab.demo.pipeline`).

Evaluation, offline:
- every model samples the same held-out prompts with the same seeds and settings;
- the demo judge (``data.sentiment.sentiment_score`` through ``offline_judges.RewardJudge``, ties
  within ``DEFAULT_TIE_MARGIN``) compares each model's sample with the SFT model's sample of the
  same prompt and seed: win rate = (wins + ties / 2) / n with a 95% Wilson interval;
- implicit-reward accuracy: on the held-out preference pairs, the share where
  beta * log(pi / pi_SFT) ranks the chosen response above the rejected one (a tie counts half);
- the unsaturation check: each method's train margin (log-ratio chosen - rejected, nats) averaged
  over its last epoch, and that margin times the method's effective beta per contrast (DPO: beta;
  RPO: beta / N, N = pairs per batch, since each row of its weights sums to 1).

Files: ``results.json``, ``results.md``, ``samples.jsonl`` and ``training_and_winrates.png``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import statistics
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from rpo_tutorial.data.jsonl import write_jsonl
from rpo_tutorial.data.sentiment import DEFAULT_TIE_MARGIN, sentiment_score
from rpo_lab.demo.margins import effective_beta, markdown_training, training_summaries
from rpo_tutorial.evaluation.offline import RewardJudge, implicit_reward_accuracy, response_logps
from rpo_tutorial.evaluation.sampling import generate_responses
from rpo_tutorial.evaluation.winrate import win_rate
from rpo_tutorial.plots.training import load_run, plot_demo_results
from rpo_tutorial.training.run import load_models

BASELINE = "sft"
LABELS = {"instruct": "Instruct (start)", "sft": "SFT", "dpo": "DPO", "rpo": "RPO"}
RESULTS_JSON, RESULTS_MD, SAMPLES_FILE, FIGURE_FILE = ("results.json", "results.md", "samples.jsonl",
                                                       "training_and_winrates.png")
MARGIN_NATS = "rewards/margins_nats"  # derived for the figure: rewards/margins / beta
FIGURE_METRICS = ("loss", MARGIN_NATS, "rewards/accuracies", "logps/chosen", "contrast/accuracy")


def sample_models(models: Mapping[str, torch.nn.Module], tokenizer, prompts: Sequence[str], settings,
                  progress: bool) -> dict[str, list[dict]]:
    """``samples_per_prompt`` rounds over ``prompts`` per model; round k uses seeds ``seed + 1000 k + batch``.

    Returns:
        ``{model name: rows}``, rows ordered round-major (round 0: every prompt, then round 1 ...).
    """
    samples = {}
    for name, model in models.items():
        rows = []
        for round_index in range(settings.samples_per_prompt):
            rows += generate_responses(model, tokenizer, list(prompts), max_new_tokens=settings.max_new_tokens,
                                       temperature=settings.temperature, top_p=settings.top_p,
                                       batch_size=settings.sample_batch_size, seed=settings.seed + 1000 * round_index,
                                       model_name=name, progress=progress)
        samples[name] = rows
    return samples


def spread(rows: Sequence[dict], count: int | None) -> list[dict]:
    """``count`` rows at evenly spaced positions (all rows when ``count`` is None or too large)."""
    rows = list(rows)
    if count is None or count >= len(rows):
        return rows
    return [rows[(index * len(rows)) // count] for index in range(count)]


def implicit_accuracies(policies: Mapping[str, torch.nn.Module], tokenizer, heldout: Sequence[dict], configs,
                        settings, progress: bool) -> dict[str, dict]:
    """Implicit-reward accuracy of each trained policy against the SFT reference on the held-out pairs.

    ``settings.implicit_pairs`` rows are used, evenly spread over the held-out list (which is
    grouped by cluster), to bound the cost: 2 forward passes per pair and model.
    """
    heldout = spread(heldout, settings.implicit_pairs)
    prompts = [row["prompt"] for row in heldout]
    config = configs[BASELINE]
    options = dict(batch_size=settings.logprob_batch_size, max_prompt_length=config.max_prompt_length,
                   max_length=config.max_length, progress=progress)

    def logps(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = response_logps(model, tokenizer, prompts, [row["chosen"] for row in heldout], **options)  # (P,)
        rejected = response_logps(model, tokenizer, prompts, [row["rejected"] for row in heldout], **options)
        return chosen, rejected

    reference = logps(policies[BASELINE])
    results = {}
    for name, model in policies.items():
        if name == BASELINE:
            continue
        accuracy = implicit_reward_accuracy(*logps(model), *reference, beta=configs[name].beta)
        results[name] = {"accuracy": accuracy, "pairs": len(heldout)}
    return results


def evaluate_policies(policies: Mapping[str, torch.nn.Module], tokenizer, heldout: Sequence[dict], configs,
                      settings, log, progress: bool) -> dict:
    """Sample, judge against the SFT samples, and measure implicit-reward accuracy (two stages)."""
    prompts = [row["prompt"] for row in heldout]
    with log.stage("sampling", f"{len(prompts)} held-out prompts x {settings.samples_per_prompt} per model"):
        models = dict(policies)
        if settings.include_instruct:
            models["instruct"] = load_models(configs[BASELINE])[1]  # the untouched starting model
        samples = sample_models(models, tokenizer, prompts, settings, progress)
        models.pop("instruct", None)
    with log.stage("judging", "sentiment judge vs SFT samples; implicit-reward accuracy"):
        judge = RewardJudge(sentiment_score, margin=DEFAULT_TIE_MARGIN, name="demo_judge.sentiment_score")
        baseline = [row["response"] for row in samples[BASELINE]]
        records = {}
        for name, rows in samples.items():
            for row in rows:
                row["score"] = sentiment_score(row["response"])
            if name != BASELINE:
                records[name] = judge.judge_pairs([row["prompt"] for row in rows],
                                                  [row["response"] for row in rows], baseline)
        implicit = implicit_accuracies(policies, tokenizer, heldout, configs, settings, progress)
    return {"samples": samples, "records": records, "implicit": implicit, "heldout": list(heldout)}


def _finite(value: Any) -> Any:
    """NaN and inf become None (JSON has no NaN)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def result_rows(methods: Sequence[str], evaluation: dict, train_times: Mapping[str, float], configs,
                training: Mapping[str, dict] | None = None) -> list[dict]:
    """One row per model: SFT (the baseline), each method, then the instruct model if sampled."""
    training = training or {}
    rows = []
    for name in (BASELINE, *methods, *(["instruct"] if "instruct" in evaluation["samples"] else [])):
        scores = [row["score"] for row in evaluation["samples"][name]]
        row = {"method": LABELS[name], "model": name, "mean_judge_score": statistics.fmean(scores),
               "train_time_s": train_times.get(name), "beta": configs[name].beta if name in methods else None}
        summary = win_rate(evaluation["records"][name]) if name in evaluation["records"] else {}
        for key in ("win_rate", "ci_low", "ci_high", "n", "wins", "ties", "losses", "failed"):
            row[key] = summary.get(key)
        implicit = evaluation["implicit"].get(name, {})
        row["implicit_reward_accuracy"] = implicit.get("accuracy")
        row["implicit_pairs"] = implicit.get("pairs")
        row.update(training.get(name, {}))
        rows.append({key: _finite(value) for key, value in row.items()})
    return rows


def _cell(value: float | None, percent: bool = False, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}" if percent else f"{value:.{digits}f}"


def markdown_results(rows: Sequence[Mapping[str, Any]]) -> str:
    """The results table: win rate against SFT with its 95% interval, counts, implicit accuracy, score, time."""
    lines = ["| method | win rate vs SFT % (95% CI) | n | wins / ties / losses | implicit-reward acc. % "
             "| mean judge score | train time (s) |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        if row["win_rate"] is None:
            rate, counts = ("baseline" if row["model"] == BASELINE else "n/a"), "-"
        else:
            rate = f"{_cell(row['win_rate'], True)} ({_cell(row['ci_low'], True)}-{_cell(row['ci_high'], True)})"
            counts = f"{row['wins']} / {row['ties']} / {row['losses']}"
        time_cell = "-" if row["train_time_s"] is None else f"{row['train_time_s']:.0f}"
        lines.append(f"| {row['method']} | {rate} | {row['n'] or '-'} | {counts} | "
                     f"{_cell(row['implicit_reward_accuracy'], True)} | {_cell(row['mean_judge_score'])} "
                     f"| {time_cell} |")
    return "\n".join(lines)


def setup_line(settings, methods: Sequence[str], configs) -> str:
    """One sentence with the run's sizes and hyper-parameters, for results.md."""
    layers = "all parameters" if settings.trainable_layers is None else \
        f"the top {settings.trainable_layers} decoder layers + final norm"
    betas = ", ".join(beta_label(m, configs[m].beta, settings) for m in methods)
    return (f"Setup: SFT on {settings.sft_rows} chosen responses (1 pass, lr {settings.sft_learning_rate:g}); "
            f"{' and '.join(LABELS[m] for m in methods)} on {settings.train_rows} pairs x {settings.epochs:g} "
            f"epoch(s), {settings.batch_size} pairs per step, lr {settings.learning_rate:g}, beta {betas}, "
            f"RPO embedding weights with tau {settings.tau:g}; {layers} trained; reference = the SFT model.")


def beta_label(method: str, beta: float, settings, short: bool = False) -> str:
    """E.g. "RPO 0.8 (= 0.1 x 8 pairs, matched: 0.1 per contrast)"; short: "RPO, beta 0.8 = 0.1 x 8 (matched)"."""
    matched = method == "rpo" and math.isclose(beta, settings.beta * settings.batch_size)
    if short:
        return f"{LABELS[method]}, beta {beta:g}" + (f" = {settings.beta:g} x {settings.batch_size} (matched)"
                                                      if matched else "")
    if method != "rpo":
        return f"{LABELS[method]} {beta:g}"
    kind = f"= {settings.beta:g} x {settings.batch_size} pairs, matched" if matched else "not matched"
    return f"{LABELS[method]} {beta:g} ({kind}: {effective_beta(method, beta, settings.batch_size):g} per contrast)"


def plot_results(output_dir: Path, methods: Sequence[str], rows: Sequence[Mapping[str, Any]], configs,
                 settings, path: Path) -> None:
    """The figure: training curves (margin in nats, so both betas share one scale) and win-rate bars."""
    runs = {}
    for method in methods:
        records = [{**record, MARGIN_NATS: record["rewards/margins"] / configs[method].beta}
                   if "rewards/margins" in record else record for record in load_run(output_dir / method)]
        runs[beta_label(method, configs[method].beta, settings, short=True)] = records
    bars = [{**row, "method": row["method"] + (f"\nbeta {row['beta']:g}" if row.get("beta") else "")}
            for row in rows if row["win_rate"] is not None]
    plot_demo_results(runs, bars, path=path, baseline="SFT", metrics=FIGURE_METRICS)


def _sample_records(evaluation: dict) -> list[dict]:
    heldout, records = evaluation["heldout"], []
    for name, rows in evaluation["samples"].items():
        for index, row in enumerate(rows):
            source = heldout[index % len(heldout)]
            records.append({"model": name, "prompt_id": source.get("id", str(index % len(heldout))),
                            "cluster": source.get("cluster"), "sample": index // len(heldout),
                            "prompt": row["prompt"], "response": row["response"], "score": row["score"],
                            "stop_reason": row["stop_reason"]})
    return records


def write_results(output_dir: Path, preset: str, settings, methods: Sequence[str], evaluation: dict,
                  train_times: Mapping[str, float], reports: Mapping[str, Any], log, configs,
                  figure_copy: str | Path | None = None) -> dict:
    """Write results.json, results.md, samples.jsonl and the figure; print the table; return the results."""
    rows = result_rows(methods, evaluation, train_times, configs,
                       training_summaries(output_dir, methods, configs, settings))
    table, training_table = markdown_results(rows), markdown_training(rows)
    implicit_pairs = max((row.get("implicit_pairs") or 0 for row in rows), default=0)
    figure_path = output_dir / FIGURE_FILE
    plot_results(output_dir, methods, rows, configs, settings, figure_path)
    if figure_copy is not None:
        Path(figure_copy).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(figure_path, figure_copy)
    write_jsonl(output_dir / SAMPLES_FILE, _sample_records(evaluation))
    results = {
        "preset": preset, "methods": list(methods), "baseline": BASELINE, "rows": rows,
        "judge": {"score": "demo_judge.sentiment_score (VADER compound, -1 if degenerate)",
                  "tie_margin": DEFAULT_TIE_MARGIN},
        "settings": dataclasses.asdict(settings), "configs": {name: c.to_dict() for name, c in configs.items()},
        "tokenization": {name: report.summary() for name, report in reports.items()},
        "timings_s": dict(log.timings), "elapsed_s": log.elapsed(),
        "files": {"samples": SAMPLES_FILE, "figure": FIGURE_FILE, "table": RESULTS_MD,
                  "metrics": {name: f"{name}/metrics.jsonl" for name in ("sft", *methods)}},
    }
    (output_dir / RESULTS_JSON).write_text(json.dumps(results, indent=2) + "\n")
    (output_dir / RESULTS_MD).write_text(
        f"# Demo results ({preset} preset)\n\n{setup_line(settings, methods, configs)}\n\n"
        f"Win rates against the SFT model's samples on "
        f"{len(evaluation['heldout'])} held-out prompts x {settings.samples_per_prompt} sample(s), judged by "
        f"VADER sentiment (ties within {DEFAULT_TIE_MARGIN}, counted half). Implicit-reward accuracy on "
        f"{implicit_pairs} held-out preference pairs (ties counted half).\n\n{table}\n\n"
        f"## Unsaturation check\n\n{training_table}\n")
    print("\n" + table + "\n\n" + training_table + "\n", flush=True)
    return results
