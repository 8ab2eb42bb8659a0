"""Weighting strategies checked against loops written here."""
from __future__ import annotations

import math

import pytest
import torch

from rpo_tutorial.weighting import (
    WEIGHTINGS,
    compute_weights,
    diagonal_mass,
    diagonal_weights,
    embedding_weights,
    row_entropy,
    sinkhorn_weights,
    uniform_weights,
)


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def brute_force_embedding_weights(chosen, rejected, tau):
    rows = []
    for e in chosen:
        exps = [math.exp(-(1 - cosine(e, f)) / tau) for f in rejected]
        rows.append([x / sum(exps) for x in exps])
    return rows


def embeddings(K: int, D: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randn(K, D, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("tau", [0.25, 0.5, 0.75, 1.0])
def test_embedding_weights_match_loop_and_rows_sum_to_one(tau):
    chosen, rejected = embeddings(4, seed=1), embeddings(6, seed=2)
    weights = embedding_weights(chosen, rejected, tau)
    expected = brute_force_embedding_weights(chosen.tolist(), rejected.tolist(), tau)
    for i in range(4):
        assert weights[i].tolist() == pytest.approx(expected[i], rel=1e-4)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(4))


def test_embedding_weights_with_huge_tau_are_uniform():
    weights = embedding_weights(embeddings(5, seed=3), embeddings(7, seed=4), tau=1e9)
    torch.testing.assert_close(weights, uniform_weights(5, 7))


def test_identical_prompts_give_uniform_weights():
    prompt = embeddings(1, seed=5)
    weights = embedding_weights(prompt.repeat(3, 1), prompt.repeat(4, 1) * 2.0, tau=0.1)  # scale-free
    torch.testing.assert_close(weights, uniform_weights(3, 4))


def test_embedding_weights_favour_the_similar_prompt():
    base = embeddings(1, seed=6)
    near = base + 0.05 * embeddings(1, seed=7)
    far = embeddings(1, seed=8)
    weights = embedding_weights(base, torch.cat([near, far]), tau=0.5)
    assert weights[0, 0] > weights[0, 1]


def test_smaller_tau_concentrates_weight_on_the_diagonal():
    prompts = embeddings(6, seed=9)
    masses = [diagonal_mass(embedding_weights(prompts, prompts, tau)) for tau in (2.0, 0.5, 0.1)]
    assert masses[0] < masses[1] < masses[2]


def test_uniform_conventions():
    assert torch.equal(uniform_weights(2, 4), torch.full((2, 4), 0.25))
    assert torch.equal(uniform_weights(2, 4, convention="official"), torch.ones(2, 4))


@pytest.mark.parametrize("M,alpha", [(4, 0.7), (2, 0.0), (5, 1.0)])
def test_diagonal_weights_match_loop(M, alpha):
    weights = diagonal_weights(M, alpha)
    for i in range(M):
        for j in range(M):
            assert weights[i, j].item() == pytest.approx(alpha if i == j else (1 - alpha) / (M - 1))


def test_diagonal_weights_for_one_prompt_are_one_not_nan():
    assert torch.equal(diagonal_weights(1, 0.3), torch.ones(1, 1))


def test_diagonal_weights_with_alpha_one_over_m_are_uniform():
    torch.testing.assert_close(diagonal_weights(4, 0.25), uniform_weights(4, 4))


@pytest.mark.parametrize("M,N", [(5, 3), (4, 4), (2, 6)])
def test_sinkhorn_rows_sum_to_one_and_columns_to_m_over_n(M, N):
    weights = sinkhorn_weights(embeddings(M, seed=10), embeddings(N, seed=11), tau=0.5, num_iterations=200)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(M))
    torch.testing.assert_close(weights.sum(dim=0), torch.full((N,), M / N), atol=1e-4, rtol=1e-4)


def test_sinkhorn_spreads_the_load_of_a_popular_rejected_prompt():
    """A rejected prompt close to every chosen prompt takes most of each embedding-weight row;
    Sinkhorn caps its column at M/N."""
    centre = embeddings(1, seed=12)
    chosen = centre + 0.3 * embeddings(4, seed=13)
    rejected = torch.cat([centre, embeddings(3, seed=14)])
    popular_embedding = embedding_weights(chosen, rejected, 0.2)[:, 0].sum()
    popular_sinkhorn = sinkhorn_weights(chosen, rejected, 0.2, num_iterations=200)[:, 0].sum()
    assert popular_embedding > 1.5
    assert popular_sinkhorn == pytest.approx(1.0, abs=1e-3)


def test_sinkhorn_matches_a_plain_loop():
    chosen, rejected, tau = embeddings(3, seed=15), embeddings(4, seed=16), 0.7
    kernel = [[math.exp(-(1 - cosine(e, f)) / tau) for f in rejected.tolist()] for e in chosen.tolist()]
    u, v = [1.0] * 3, [1.0] * 4
    for _ in range(300):
        u = [1.0 / sum(kernel[i][j] * v[j] for j in range(4)) for i in range(3)]
        v = [(3 / 4) / sum(kernel[i][j] * u[i] for i in range(3)) for j in range(4)]
    plan = [[u[i] * kernel[i][j] * v[j] for j in range(4)] for i in range(3)]
    expected = [[x / sum(row) for x in row] for row in plan]
    weights = sinkhorn_weights(chosen, rejected, tau, num_iterations=300)
    for i in range(3):
        assert weights[i].tolist() == pytest.approx(expected[i], rel=1e-4)


def test_weights_carry_no_gradient():
    chosen = embeddings(3, seed=17).requires_grad_(True)
    for name in WEIGHTINGS:
        weights = compute_weights(name, chosen, chosen, tau=0.5, alpha=0.5)
        assert not weights.requires_grad, name
        assert weights.dtype == torch.float32


def test_compute_weights_dispatches_by_name():
    chosen, rejected = embeddings(3, seed=18), embeddings(3, seed=19)
    torch.testing.assert_close(compute_weights("embedding", chosen, rejected, tau=0.3), embedding_weights(chosen, rejected, 0.3))
    torch.testing.assert_close(compute_weights("diagonal", chosen, rejected, alpha=0.9), diagonal_weights(3, 0.9))
    torch.testing.assert_close(compute_weights("uniform", chosen, rejected, convention="official"), torch.ones(3, 3))


def test_row_entropy_is_log_n_for_uniform_and_zero_for_one_hot():
    torch.testing.assert_close(row_entropy(uniform_weights(2, 8)), torch.full((2,), math.log(8)))
    torch.testing.assert_close(row_entropy(diagonal_weights(3, 1.0)), torch.zeros(3))


def test_bfloat16_embeddings_give_float32_weights():
    chosen = embeddings(3, seed=20)
    low = embedding_weights(chosen.to(torch.bfloat16), chosen.to(torch.bfloat16), 0.5)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, embedding_weights(chosen.to(torch.bfloat16).float(), chosen.to(torch.bfloat16).float(), 0.5))


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: embedding_weights(embeddings(2), embeddings(2), tau=0.0), "tau must be > 0, got 0.0"),
        (lambda: embedding_weights(embeddings(2), embeddings(2), tau=-1), "tau must be > 0"),
        (lambda: sinkhorn_weights(embeddings(2), embeddings(2), tau=float("nan")), "tau must be > 0"),
        (lambda: diagonal_weights(3, alpha=1.5), "alpha must be in \\[0, 1\\], got 1.5"),
        (lambda: diagonal_weights(0), "M must be a positive integer"),
        (lambda: uniform_weights(2, 3, convention="ones"), "convention"),
        (lambda: embedding_weights(embeddings(2, D=4), embeddings(2, D=5)), "embedding sizes differ"),
        (lambda: embedding_weights(torch.empty(0, 4), embeddings(2, D=4)), "chosen_prompt_embeddings must have shape"),
        (lambda: compute_weights("diagonal", embeddings(2), embeddings(3)), "paired data"),
        (lambda: compute_weights("nearest", embeddings(2), embeddings(3)), "unknown weighting 'nearest'"),
    ],
)
def test_bad_input_is_a_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
