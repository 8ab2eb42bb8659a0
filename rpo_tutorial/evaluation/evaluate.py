"""Held-out implicit-reward accuracy of a trained model against its reference: ``rpo-tutorial evaluate``.

    from rpo_tutorial.evaluation.evaluate import evaluate_preferences
    summary = evaluate_preferences(policy, reference, tokenizer, rows)   # rows: {prompt, chosen, rejected}

For each held-out pair the implicit reward (DPO's reparametrisation, paper Eq. 5) of a response is
``r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x))``, and the pair is

- a **win** when ``r(x, y_chosen) > r(x, y_rejected)``,
- a **loss** when it is lower,
- a **tie** when the two are exactly equal (every pair of a model equal to its reference).

How ties enter (the same rule as win rates, :mod:`rpo_tutorial.evaluation.winrate`)::

    accuracy = (wins + ties / 2) / n,        n = wins + ties + losses (every pair)

A tie carries no preference, so it is half a win, never a miss: a model equal to its reference
scores exactly 0.5. The interval is Wilson's 95% score interval for that proportion over ``n``
pairs (ties counted half, as in the point estimate); the counts are always reported next to it,
so a reader can see when many ties make it less informative. Beta > 0 scales every reward alike,
so the verdicts do not depend on it.

Also reported: the mean change of the chosen and of the rejected log-probs (policy minus
reference, nats per response), and the drift, the mean |log pi - log pi_ref| over all held-out
responses (chosen and rejected).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from rpo_tutorial.accuracy import tie_half_rate
from rpo_tutorial.evaluation.offline import response_logps
from rpo_tutorial.evaluation.winrate import wilson_interval


def preference_accuracy(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor,
                        confidence: float = 0.95) -> dict:
    """Wins, ties, losses, accuracy ``(wins + ties / 2) / n`` and its Wilson interval (module docstring).

    Args:
        chosen_logratios: log pi - log pi_ref of each pair's chosen response.
        rejected_logratios: the same for the rejected response.

    Shape:
        chosen_logratios, rejected_logratios: (N,); returns a dict of Python numbers
    """
    chosen, rejected = torch.as_tensor(chosen_logratios).double(), torch.as_tensor(rejected_logratios).double()
    if chosen.dim() != 1 or chosen.shape != rejected.shape:
        raise ValueError(f"log-ratios must be two 1-D tensors of one length, got {tuple(chosen.shape)} "
                         f"and {tuple(rejected.shape)}")
    if not bool(torch.isfinite(chosen).all() and torch.isfinite(rejected).all()):
        raise ValueError("log-ratios must be finite")
    n = int(chosen.numel())
    wins, ties = int((chosen > rejected).sum()), int((chosen == rejected).sum())
    losses = n - wins - ties
    accuracy = tie_half_rate(wins, ties, n)
    low, high = wilson_interval(accuracy, n, confidence) if n else (math.nan, math.nan)
    return {"n": n, "wins": wins, "ties": ties, "losses": losses, "accuracy": accuracy,
            "ci_low": low, "ci_high": high, "confidence": confidence}


def logprob_changes(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                    reference_chosen_logps: torch.Tensor, reference_rejected_logps: torch.Tensor) -> dict:
    """Mean change of chosen and rejected log-probs, and the drift mean |log pi - log pi_ref|.

    Shape:
        each tensor: (N,); returns floats (nats per response)
    """
    chosen = torch.as_tensor(policy_chosen_logps).double() - torch.as_tensor(reference_chosen_logps).double()
    rejected = torch.as_tensor(policy_rejected_logps).double() - torch.as_tensor(reference_rejected_logps).double()
    return {"chosen_logp_change": chosen.mean().item(), "rejected_logp_change": rejected.mean().item(),
            "drift": torch.cat([chosen, rejected]).abs().mean().item()}


def summarize_logps(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                    reference_chosen_logps: torch.Tensor, reference_rejected_logps: torch.Tensor,
                    confidence: float = 0.95) -> dict:
    """:func:`preference_accuracy` and :func:`logprob_changes` of one model's held-out log-probs. Shape: (N,) each."""
    chosen = torch.as_tensor(policy_chosen_logps).double() - torch.as_tensor(reference_chosen_logps).double()
    rejected = torch.as_tensor(policy_rejected_logps).double() - torch.as_tensor(reference_rejected_logps).double()
    return {**preference_accuracy(chosen, rejected, confidence),
            **logprob_changes(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                              reference_rejected_logps)}


def evaluate_preferences(policy: torch.nn.Module, reference: torch.nn.Module, tokenizer, rows: Sequence[dict],
                         max_prompt_length: int = 256, max_length: int = 512, batch_size: int = 8,
                         confidence: float = 0.95, progress: bool = True) -> dict:
    """Held-out implicit-reward accuracy of ``policy`` against ``reference`` on paired rows.

    Args:
        rows: ``{prompt, chosen, rejected}`` rows (as from ``load_preferences`` / ``load_hh``).
        max_prompt_length, max_length: tokenization as in training (truncation rules of ``tokenize_pair``).

    Returns:
        the dict of :func:`summarize_logps`: n, wins, ties, losses, accuracy, ci_low, ci_high,
        chosen_logp_change, rejected_logp_change, drift.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("no preference rows to evaluate")
    for index, row in enumerate(rows):
        missing = [key for key in ("prompt", "chosen", "rejected") if key not in row]
        if missing:
            raise ValueError(f"row {index}: missing field(s) {missing} (evaluate needs paired rows)")
    prompts = [row["prompt"] for row in rows]
    options = dict(batch_size=batch_size, max_prompt_length=max_prompt_length, max_length=max_length,
                   progress=progress)
    logps = {}
    for name, model in (("policy", policy), ("reference", reference)):
        for side in ("chosen", "rejected"):
            logps[f"{name}_{side}_logps"] = response_logps(model, tokenizer, prompts, [row[side] for row in rows],
                                                           **options)  # (N,)
    return summarize_logps(**logps, confidence=confidence)


def format_summary(summary: dict) -> str:
    """One readable paragraph of :func:`evaluate_preferences`'s result."""
    return (f"implicit-reward accuracy {summary['accuracy']:.1%} "
            f"[{summary['ci_low']:.1%}, {summary['ci_high']:.1%}] ({summary['confidence']:.0%} Wilson, ties half) "
            f"over n={summary['n']} pairs: {summary['wins']} wins / {summary['ties']} ties / "
            f"{summary['losses']} losses\nmean log-prob change: chosen {summary['chosen_logp_change']:+.3f}, "
            f"rejected {summary['rejected_logp_change']:+.3f} nats; drift mean |log pi - log pi_ref| "
            f"{summary['drift']:.3f} nats")
