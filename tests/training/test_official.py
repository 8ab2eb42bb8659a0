"""The official-code switch: settings, CLI flag, and the loss it gives against a brute-force loop."""
from __future__ import annotations

import math

import pytest
import torch

from rpo_lab.cli import build_parser
from rpo_lab.cli.train import config_from_args
from rpo_tutorial.training.config import get_preset
from rpo_tutorial.training.objectives import PreferenceLogps, preference_objective
from rpo_tutorial.training.official import apply_convention, official_convention


def official_code_loss(c: list[float], r: list[float], embeddings: list[list[float]], weighting: str,
                       beta: float, tau: float, alpha: float) -> float:
    """The official code's batch loss for a paired batch, written as plain loops.

    embedding: mean_i mean_j -log sigma(w_ij s_ij), w = row softmax of -(1 - cos) / tau
    uniform:   mean over all (i, j) of -log sigma(s_ij)   (weights of one, inside)
    diagonal:  mean_i [alpha l_ii + (1 - alpha) mean_{j != i} l_ij], l_ij = -log sigma(s_ij)
    """
    M = len(c)

    def nll(x: float) -> float:
        return math.log1p(math.exp(-x))

    def cosine(a, b):
        dot = sum(x * y for x, y in zip(a, b))
        return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    total = 0.0
    for i in range(M):
        s = [beta * (c[i] - r[j]) for j in range(M)]
        if weighting == "embedding":
            logits = [-(1 - cosine(embeddings[i], embeddings[j])) / tau for j in range(M)]
            norm = sum(math.exp(x) for x in logits)
            total += sum(nll(math.exp(logits[j]) / norm * s[j]) for j in range(M)) / M
        elif weighting == "uniform":
            total += sum(nll(s[j]) for j in range(M)) / M
        else:
            off = [nll(s[j]) for j in range(M) if j != i]
            total += alpha * nll(s[i]) + (1 - alpha) * sum(off) / len(off)
    return total / M


def test_official_convention_sets_the_five_settings_and_placement_follows_the_weighting():
    config = official_convention(get_preset("paper"))
    assert (config.placement, config.uniform_convention, config.alpha) == ("score", "official", 0.8)
    assert (config.contrast_scope, config.embed_text) == ("local", "full_prompt")
    assert official_convention(get_preset("paper"), weighting="diagonal").placement == "loss"
    assert official_convention(get_preset("paper"), weighting="diagonal", alpha=0.6).alpha == 0.6  # overrides win
    assert apply_convention(get_preset("paper"), "paper") == get_preset("paper")
    with pytest.raises(ValueError, match="convention"):
        apply_convention(get_preset("paper"), "authors")


def test_cli_convention_flag_applies_the_switch_and_explicit_flags_win():
    args = build_parser().parse_args(["train", "--preset", "smoke", "--convention", "official",
                                      "--weighting", "diagonal", "--alpha", "0.7"])
    config = config_from_args(args)
    assert (config.placement, config.uniform_convention, config.alpha, config.embed_text) == (
        "loss", "official", 0.7, "full_prompt")
    default = config_from_args(build_parser().parse_args(["train", "--preset", "smoke"]))
    assert (default.placement, default.uniform_convention, default.alpha) == ("score", "paper", 0.5)


@pytest.mark.parametrize("weighting", ["embedding", "uniform", "diagonal"])
def test_official_convention_reproduces_the_official_loss_and_the_default_does_not(weighting):
    generator = torch.Generator().manual_seed(3)
    M = 8
    policy_chosen, policy_rejected, reference_chosen, reference_rejected = (
        -30 + 3 * torch.randn(M, generator=generator) for _ in range(4))
    embeddings = torch.randn(M, 16, generator=generator)
    logps = PreferenceLogps(policy_chosen, policy_rejected, reference_chosen, reference_rejected,
                            embeddings, embeddings, paired=True)
    c = (policy_chosen - reference_chosen).tolist()
    r = (policy_rejected - reference_rejected).tolist()
    paper = get_preset("paper", weighting=weighting)
    official = official_convention(paper)
    expected = official_code_loss(c, r, embeddings.tolist(), weighting, official.beta, official.effective_tau,
                                  official.alpha)
    assert preference_objective(logps, official).loss.item() == pytest.approx(expected, rel=1e-5)
    if weighting != "embedding":  # the paper's uniform / diagonal settings give another loss
        assert preference_objective(logps, paper).loss.item() != pytest.approx(expected, rel=1e-3)
