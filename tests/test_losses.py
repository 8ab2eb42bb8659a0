"""The loss family checked against plain-Python loops written here, independently of the package."""
from __future__ import annotations

import math

import pytest
import torch

from rpo_tutorial.losses import (
    LOSSES,
    contrast_matrix,
    dpo_loss,
    ipo_loss,
    kto_loss,
    rpo_loss,
    zero_loss_like,
)
from rpo_tutorial.weighting import diagonal_weights, embedding_weights, uniform_weights


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def random_logps(*sizes: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [-10.0 - 20.0 * torch.rand(size, generator=generator, dtype=torch.float64) for size in sizes]


def brute_force_rpo(pc, pr, rc, rr, weights, beta, placement):
    """losses_i = (1/N) sum_j -log sigma(w_ij s_ij)  or  sum_j w_ij (-log sigma(s_ij))."""
    M, N = len(pc), len(pr)
    losses = []
    for i in range(M):
        total = 0.0
        for j in range(N):
            s = beta * ((pc[i] - rc[i]) - (pr[j] - rr[j]))
            if placement == "score":
                total += -log_sigmoid(weights[i][j] * s) / N
            else:
                total += weights[i][j] * -log_sigmoid(s)
        losses.append(total)
    return losses


def as_lists(*tensors):
    return [t.tolist() for t in tensors]


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_dpo_matches_loop_including_conservative_variant(label_smoothing):
    pc, pr, rc, rr = random_logps(6, 6, 6, 6)
    losses, chosen_rewards, rejected_rewards = dpo_loss(pc, pr, rc, rr, beta=0.3, label_smoothing=label_smoothing)
    for i, (a, b, c, d) in enumerate(zip(*as_lists(pc, pr, rc, rr))):
        h = 0.3 * ((a - c) - (b - d))
        expected = -(1 - label_smoothing) * log_sigmoid(h) - label_smoothing * log_sigmoid(-h)
        assert losses[i].item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
        assert chosen_rewards[i].item() == pytest.approx(0.3 * (a - c), rel=1e-5)
        assert rejected_rewards[i].item() == pytest.approx(0.3 * (b - d), rel=1e-5)


def test_ipo_matches_loop():
    pc, pr, rc, rr = random_logps(5, 5, 5, 5, seed=1)
    losses, _, _ = ipo_loss(pc, pr, rc, rr, tau=0.25)
    for i, (a, b, c, d) in enumerate(zip(*as_lists(pc, pr, rc, rr))):
        expected = ((a - c) - (b - d) - 1 / (2 * 0.25)) ** 2
        assert losses[i].item() == pytest.approx(expected, rel=1e-5)


def test_kto_matches_loop_with_unequal_sides():
    pc, rc = random_logps(4, 4, seed=2)
    pr, rr = random_logps(7, 7, seed=3)
    losses, _, _ = kto_loss(pc, pr, rc, rr, kl_reference_point=0.7, beta=0.2, desirable_weight=1.5, undesirable_weight=0.5)
    expected = [1.5 * (1 - sigmoid(0.2 * ((a - c) - 0.7))) for a, c in zip(*as_lists(pc, rc))]
    expected += [0.5 * (1 - sigmoid(0.2 * (0.7 - (b - d)))) for b, d in zip(*as_lists(pr, rr))]
    assert losses.tolist() == pytest.approx(expected, rel=1e-5)


def test_contrast_matrix_entries_are_beta_times_chosen_minus_rejected():
    chosen, rejected = random_logps(3, 5, seed=4)
    scores = contrast_matrix(chosen, rejected, beta=0.5)
    assert scores.shape == (3, 5)
    for i in range(3):
        for j in range(5):
            assert scores[i, j].item() == pytest.approx(0.5 * (chosen[i].item() - rejected[j].item()), rel=1e-5)


@pytest.mark.parametrize("placement", ["score", "loss"])
@pytest.mark.parametrize("M,N", [(4, 4), (3, 6), (5, 2)])
def test_rpo_matches_loop_for_any_weights(placement, M, N):
    pc, rc = random_logps(M, M, seed=5)
    pr, rr = random_logps(N, N, seed=6)
    weights = torch.rand(M, N, generator=torch.Generator().manual_seed(7))
    losses, _, _ = rpo_loss(pc, pr, rc, rr, weights, beta=0.2, placement=placement)
    expected = brute_force_rpo(*as_lists(pc, pr, rc, rr), weights.tolist(), 0.2, placement)
    assert losses.shape == (M,)
    assert losses.tolist() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("placement", ["score", "loss"])
def test_rpo_with_one_prompt_equals_dpo(placement):
    pc, pr, rc, rr = random_logps(1, 1, 1, 1, seed=8)
    embedding = torch.randn(1, 16)
    weights = embedding_weights(embedding, embedding, tau=0.5)
    rpo, rpo_chosen, rpo_rejected = rpo_loss(pc, pr, rc, rr, weights, beta=0.1, placement=placement)
    dpo, dpo_chosen, dpo_rejected = dpo_loss(pc, pr, rc, rr, beta=0.1)
    torch.testing.assert_close(rpo, dpo)
    torch.testing.assert_close(rpo_chosen, dpo_chosen)
    torch.testing.assert_close(rpo_rejected, dpo_rejected)


def test_diagonal_alpha_one_with_loss_placement_is_exactly_dpo():
    pc, pr, rc, rr = random_logps(5, 5, 5, 5, seed=9)
    rpo, _, _ = rpo_loss(pc, pr, rc, rr, diagonal_weights(5, alpha=1.0), beta=0.1, placement="loss")
    dpo, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.1)
    torch.testing.assert_close(rpo, dpo)


def test_diagonal_alpha_one_with_score_placement_is_dpo_on_the_diagonal():
    """Inside the sigmoid, a zero weight leaves the constant -log sigma(0) = log 2: the loss is
    DPO / N plus a constant and its gradient is exactly DPO's gradient divided by N."""
    N = 4
    leaves = [t.clone().requires_grad_(True) for t in random_logps(N, N, N, N, seed=10)]
    rpo, _, _ = rpo_loss(*leaves, diagonal_weights(N, alpha=1.0), beta=0.1, placement="score")
    loop = [(-log_sigmoid(0.1 * ((a - c) - (b - d))) + (N - 1) * math.log(2)) / N for a, b, c, d in zip(*as_lists(*leaves))]
    assert rpo.tolist() == pytest.approx(loop, rel=1e-5)
    rpo_grads = torch.autograd.grad(rpo.sum(), leaves)
    dpo, _, _ = dpo_loss(*leaves, beta=0.1)
    dpo_grads = torch.autograd.grad(dpo.sum(), leaves)
    for rpo_grad, dpo_grad in zip(rpo_grads, dpo_grads):
        torch.testing.assert_close(rpo_grad, dpo_grad / N)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.8])
def test_loss_placement_with_diagonal_weights_is_the_official_rpo_diagonal(alpha):
    """alpha * l_ii + (1 - alpha) * mean_{j != i} l_ij, with l_ij = -log sigma(s_ij)."""
    M = 5
    pc, pr, rc, rr = random_logps(M, M, M, M, seed=11)
    losses, _, _ = rpo_loss(pc, pr, rc, rr, diagonal_weights(M, alpha), beta=0.1, placement="loss")
    c = [a - b for a, b in zip(pc.tolist(), rc.tolist())]
    r = [a - b for a, b in zip(pr.tolist(), rr.tolist())]
    for i in range(M):
        pair = [-log_sigmoid(0.1 * (c[i] - r[j])) for j in range(M)]
        off = [pair[j] for j in range(M) if j != i]
        assert losses[i].item() == pytest.approx(alpha * pair[i] + (1 - alpha) * sum(off) / len(off), rel=1e-5)


def test_official_uniform_is_the_mean_over_all_pairs():
    pc, rc = random_logps(3, 3, seed=12)
    pr, rr = random_logps(4, 4, seed=13)
    losses, _, _ = rpo_loss(pc, pr, rc, rr, uniform_weights(3, 4, convention="official"), beta=0.1)
    pairs = [
        -log_sigmoid(0.1 * ((a - c) - (b - d)))
        for a, c in zip(pc.tolist(), rc.tolist())
        for b, d in zip(pr.tolist(), rr.tolist())
    ]
    assert losses.mean().item() == pytest.approx(sum(pairs) / len(pairs), rel=1e-5)


def test_unpaired_gradients_reach_every_policy_input_and_no_reference_or_weight():
    M, N = 3, 5
    pc, pr, rc, rr = (t.float().requires_grad_(True) for t in random_logps(M, N, M, N, seed=14))
    weights = torch.rand(M, N).requires_grad_(True)
    losses, _, _ = rpo_loss(pc, pr, rc, rr, weights, beta=0.1)
    losses.mean().backward()
    assert (pc.grad < 0).all(), "raising a chosen log-prob must lower the loss"
    assert (pr.grad > 0).all(), "raising a rejected log-prob must raise the loss"
    assert rc.grad is not None and (rc.grad > 0).all()  # the reference enters with the opposite sign
    assert weights.grad is None, "weights are constants"


@pytest.mark.parametrize("name", ["dpo", "cdpo", "ipo", "rpo"])
def test_raising_chosen_lowers_and_raising_rejected_raises_the_loss(name):
    pc, pr, rc, rr = random_logps(4, 4, 4, 4, seed=15)
    extra = {"weights": embedding_weights(torch.randn(4, 8), torch.randn(4, 8), 0.5)} if name == "rpo" else {}
    base = LOSSES[name](pc, pr, rc, rr, **extra)[0].sum()
    up_chosen = LOSSES[name](pc + 0.5, pr, rc, rr, **extra)[0].sum()
    up_rejected = LOSSES[name](pc, pr + 0.5, rc, rr, **extra)[0].sum()
    assert up_chosen < base < up_rejected


def test_kto_moves_the_right_way():
    pc, pr, rc, rr = random_logps(3, 2, 3, 2, seed=16)
    base = kto_loss(pc, pr, rc, rr, 0.0)[0].sum()
    assert kto_loss(pc + 1, pr, rc, rr, 0.0)[0].sum() < base < kto_loss(pc, pr + 1, rc, rr, 0.0)[0].sum()


@pytest.mark.parametrize("name", ["dpo", "ipo", "rpo", "kto"])
def test_bfloat16_inputs_give_the_float32_loss_in_float32(name):
    tensors = [t.to(torch.bfloat16) for t in random_logps(4, 4, 4, 4, seed=17)]
    extra = {"weights": uniform_weights(4, 4).to(torch.bfloat16)} if name == "rpo" else {}
    extra = {"kl_reference_point": 0.1} if name == "kto" else extra
    low = LOSSES[name](*tensors, **extra)
    high = LOSSES[name](*[t.float() for t in tensors], **{k: v.float() if isinstance(v, torch.Tensor) else v for k, v in extra.items()})
    for a, b in zip(low, high):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b)


def test_zero_loss_for_a_one_sided_batch_is_zero_and_backpropagates():
    chosen = torch.randn(3, requires_grad=True)
    loss = zero_loss_like(chosen, torch.empty(0))
    assert loss.item() == 0.0
    loss.backward()
    assert chosen.grad is not None and torch.equal(chosen.grad, torch.zeros(3))


def test_zero_loss_reaches_model_parameters():
    layer = torch.nn.Linear(4, 1)
    logps = layer(torch.randn(2, 4)).squeeze(-1)
    zero_loss_like(logps).backward()
    assert layer.weight.grad is not None and torch.count_nonzero(layer.weight.grad) == 0


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"policy_rejected_logps": torch.zeros(3)}, "length mismatch"),
        ({"policy_chosen_logps": torch.tensor([0.0, float("nan")])}, "policy_chosen_logps has a non-finite value at index 1"),
        ({"reference_rejected_logps": torch.tensor([0.0, float("-inf")])}, "reference_rejected_logps"),
        ({"policy_chosen_logps": torch.zeros(2, 1)}, "must be 1-D"),
        ({"beta": 0.0}, "beta must be a positive"),
    ],
)
def test_dpo_bad_input_names_the_argument(kwargs, message):
    arguments = dict(zip(
        ["policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps", "reference_rejected_logps"],
        [torch.zeros(2)] * 4,
    ))
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        dpo_loss(**arguments)


def test_rpo_bad_weights_and_empty_side_are_clear_errors():
    pc, pr, rc, rr = torch.zeros(2), torch.zeros(3), torch.zeros(2), torch.zeros(3)
    with pytest.raises(ValueError, match=r"weights must have shape \(M, N\) = \(2, 3\), got \(3, 2\)"):
        rpo_loss(pc, pr, rc, rr, torch.ones(3, 2))
    with pytest.raises(ValueError, match="placement"):
        rpo_loss(pc, pr, rc, rr, torch.ones(2, 3), placement="inside")
    with pytest.raises(ValueError, match="policy_rejected_logps is empty.*zero_loss_like"):
        rpo_loss(pc, torch.zeros(0), rc, torch.zeros(0), torch.ones(2, 0))


@pytest.mark.parametrize("tau", [0.25, 1.0, None])
def test_matched_rpo_gradient_at_the_reference_is_dpo_times_the_column_sums(tau):
    # Why matched RPO tracks DPO while nothing is saturated: at policy = reference every contrast has
    # s_ij = 0, so d/dr of (1/MN) sum_ij -log sigma(w_ij N beta (c_i - r_j)) is beta/(2M) * (row sum of w)
    # for chosen i and -beta/(2M) * (column sum of w) for rejected j; DPO's is +-beta/(2M). Rows sum to 1,
    # so only the column sums differ (exactly 1 for uniform weights).
    M, beta = 5, 0.1
    generator = torch.Generator().manual_seed(3)
    embeddings = torch.randn(M, 6, generator=generator)
    weights = uniform_weights(M, M) if tau is None else embedding_weights(embeddings, embeddings, tau)
    chosen, rejected = torch.zeros(M, requires_grad=True), torch.zeros(M, requires_grad=True)
    zeros = torch.zeros(M)
    rpo_loss(chosen, rejected, zeros, zeros, weights=weights, beta=beta * M)[0].mean().backward()
    for i in range(M):  # brute force: the derivative of each contrast's -log sigma at 0 is -1/2 x its slope
        expected_chosen = sum(-0.5 * weights[i, j].item() * beta * M for j in range(M)) / (M * M)
        expected_rejected = sum(0.5 * weights[k, i].item() * beta * M for k in range(M)) / (M * M)
        assert chosen.grad[i].item() == pytest.approx(expected_chosen, abs=1e-7)
        assert rejected.grad[i].item() == pytest.approx(expected_rejected, abs=1e-7)
    dpo_chosen, dpo_rejected = torch.zeros(M, requires_grad=True), torch.zeros(M, requires_grad=True)
    dpo_loss(dpo_chosen, dpo_rejected, zeros, zeros, beta=beta)[0].mean().backward()
    torch.testing.assert_close(chosen.grad, dpo_chosen.grad)  # rows sum to 1: the chosen side is DPO's
    torch.testing.assert_close(rejected.grad, dpo_rejected.grad * weights.sum(dim=0))  # columns scale the rest
