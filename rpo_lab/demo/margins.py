"""The demo's unsaturation check: final train margins in nats, times each method's beta per contrast.

DPO's loss on a pair is -log sigma(beta x margin); once beta x margin is well above ~3 the sigmoid
has flattened, the pair no longer pulls, and two methods trained that far differ mostly by noise.
RPO's embedding weight rows sum to 1 over N = pairs per batch, so its mean beta per contrast is
beta / N (matched to DPO's at beta x N, :attr:`DemoSettings.rpo_training_beta`); the own pair gets
w_ii > 1/N, so that one contrast has beta x w_ii. ``rewards/margins`` in metrics.jsonl is beta x
margin; dividing by the run's beta gives nats, the scale both methods share.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Mapping, Sequence

from rpo_tutorial.plots.training import load_run

SATURATED = 3.0  # effective beta x margin past which -log sigma has flattened: sigma(-3) < 0.05
SATURATED_LOSS = 0.05  # -log sigma(3), the train loss at that margin


def effective_beta(method: str, beta: float, batch_size: int) -> float:
    """Beta per contrast: DPO's beta; RPO's beta / N (its weight rows sum to 1 over N = batch pairs)."""
    return beta / batch_size if method == "rpo" else beta


def training_summary(records: Sequence[Mapping[str, Any]], beta: float, effective: float,
                     steps_per_epoch: int) -> dict:
    """The unsaturation check of one run: means over its last ``steps_per_epoch`` logged steps.

    ``rewards/margins`` is logged as beta x (own-pair log-ratio margin); dividing by ``beta`` gives
    nats, the scale shared by methods trained at different betas. ``effective`` is the mean beta per
    contrast (DPO: beta, RPO: beta / N); an RPO run also logs the mean own-pair weight w_ii
    (``weights/diagonal_mass``), so its own pair's contrast has beta x w_ii (DPO: w_ii = 1).
    """
    steps = [record for record in records if "rewards/margins" in record][-max(1, steps_per_epoch):]
    if not steps:
        return {}
    margin = statistics.fmean(record["rewards/margins"] for record in steps) / beta
    diagonal = [record["weights/diagonal_mass"] for record in steps if "weights/diagonal_mass" in record]
    own_pair_beta = beta * statistics.fmean(diagonal) if diagonal else beta
    return {"train_margin_nats": margin, "effective_beta": effective, "effective_beta_x_margin": effective * margin,
            "own_pair_beta": own_pair_beta, "own_pair_beta_x_margin": own_pair_beta * margin,
            "train_loss": statistics.fmean(record["loss"] for record in steps),
            "train_reward_accuracy": statistics.fmean(record["rewards/accuracies"] for record in steps),
            "train_steps_averaged": len(steps)}


def training_summaries(output_dir: Path, methods: Sequence[str], configs, settings) -> dict[str, dict]:
    """``training_summary`` of each method from its ``metrics.jsonl`` (final epoch: every train pair once)."""
    steps_per_epoch = math.ceil(settings.train_rows / settings.batch_size)
    return {method: training_summary(load_run(output_dir / method), configs[method].beta,
                                     effective_beta(method, configs[method].beta, settings.batch_size),
                                     steps_per_epoch) for method in methods}


def markdown_training(rows: Sequence[Mapping[str, Any]]) -> str:
    """The unsaturation table (trained methods only) and a few sentences on how to read it."""
    trained = [row for row in rows if row.get("train_margin_nats") is not None]
    if not trained:
        return ""
    lines = ["| method | beta | beta per contrast: mean / own pair | final-epoch train margin (nats) "
             "| beta x margin: mean / own pair | final-epoch train loss | train reward acc. % |",
             "|---|---|---|---|---|---|---|"]
    for row in trained:
        lines.append(f"| {row['method']} | {row['beta']:g} | {row['effective_beta']:.3g} / "
                     f"{row['own_pair_beta']:.3g} | {row['train_margin_nats']:.2f} | "
                     f"{row['effective_beta_x_margin']:.2f} / {row['own_pair_beta_x_margin']:.2f} | "
                     f"{row['train_loss']:.3f} | {100 * row['train_reward_accuracy']:.1f} |")
    largest = max(row["effective_beta_x_margin"] for row in trained)
    lowest_loss = min(row["train_loss"] for row in trained)
    verdict = "unsaturated" if largest < SATURATED and lowest_loss > SATURATED_LOSS else "SATURATED"
    return ("\n".join(lines) + "\n\n"
            "How to read it: the margin is log pi/pi_SFT(chosen) - log pi/pi_SFT(rejected) of each train pair, "
            "averaged over the last epoch (every pair once, logged before each step's update). A pair's DPO loss "
            f"is -log sigma(beta x margin): 0.69 at 0, 0.31 at 1, {SATURATED_LOSS:g} at {SATURATED:g}, where its "
            "gradient weight sigma(-beta x margin) has fallen below 5 %. RPO's weight rows sum to 1, so its mean "
            "beta per contrast is beta / N, matched to DPO's at beta x N; its embedding weights give the own pair "
            "more than 1/N (w_ii), so that one contrast (beta x w_ii) flattens first while the other N - 1 still "
            "pull. Mean beta x margin of order 1 or less, and a loss well above 0, mean the pairs still pull, so "
            f"the methods can differ; beta x margin well above {SATURATED:g} or a loss near 0 mean the sigmoids "
            f"have flattened and a difference between the methods says little. Here: largest mean beta x margin "
            f"{largest:.2f}, lowest train loss {lowest_loss:.3f} ({verdict}).")
