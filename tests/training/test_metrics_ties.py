"""rewards/accuracies counts a tie half, never as a miss; rewards/ties reports the ties."""
from __future__ import annotations

import pytest
import torch

from rpo_tutorial.accuracy import tie_half_accuracy
from rpo_tutorial.training.metrics import preference_metrics
from rpo_tutorial.training.objectives import ObjectiveOutput, PreferenceLogps


def logps_of(policy_chosen, policy_rejected, reference_chosen, reference_rejected) -> PreferenceLogps:
    return PreferenceLogps(torch.tensor(policy_chosen), torch.tensor(policy_rejected), torch.tensor(reference_chosen),
                           torch.tensor(reference_rejected), torch.zeros(len(policy_chosen), 0),
                           torch.zeros(len(policy_rejected), 0), paired=True)


def averages(logps: PreferenceLogps, beta: float = 0.1) -> dict:
    chosen = beta * (logps.policy_chosen_logps - logps.reference_chosen_logps)
    rejected = beta * (logps.policy_rejected_logps - logps.reference_rejected_logps)
    stats = preference_metrics(logps, ObjectiveOutput(torch.tensor(0.0), chosen, rejected))
    return {name: float(total) / count for name, (total, count) in stats.items()}


def test_a_policy_equal_to_its_reference_reports_one_half_with_every_pair_tied():
    same = [-10.0, -20.0, -30.0, -5.0]
    result = averages(logps_of(same, [-11.0] * 4, same, [-11.0] * 4))
    assert result["rewards/accuracies"] == 0.5  # not 0.0: ties are not misses
    assert result["rewards/ties"] == 1.0
    assert result["contrast/accuracy"] == 0.5


def test_accuracies_match_a_loop_with_ties_half():
    logps = logps_of([-1.0, -2.0, -3.0, -4.0], [-2.0, -2.0, -2.0, -4.0], [-2.0, -2.0, -2.0, -4.0],
                     [-2.0, -1.0, -2.0, -4.0])
    chosen = [p - r for p, r in zip([-1.0, -2.0, -3.0, -4.0], [-2.0, -2.0, -2.0, -4.0])]
    rejected = [p - r for p, r in zip([-2.0, -2.0, -2.0, -4.0], [-2.0, -1.0, -2.0, -4.0])]
    expected = sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected)) / 4
    ties = sum(c == r for c, r in zip(chosen, rejected)) / 4
    result = averages(logps)
    assert result["rewards/accuracies"] == pytest.approx(expected)  # wins 2 (rows 0, 1), ties 1, losses 1
    assert result["rewards/ties"] == pytest.approx(ties)
    assert tie_half_accuracy(torch.tensor([1.0, 0.0, -1.0])).tolist() == [1.0, 0.5, 0.0]
