"""Stacked models, stacked Adam, the methods' batches and losses, one stack's training and scoring."""
from __future__ import annotations

import pytest
import torch

from rpo_lab.world.batches import data_order
from rpo_lab.world.evaluate import evaluate_stack, reference_rewards
from rpo_lab.world.methods import METHODS, own_weights, step_logps
from rpo_lab.world.optim import StackedAdam
from rpo_lab.world.pairs import arm_rows
from rpo_lab.world.policy import StackedPolicy
from rpo_lab.world.presets import SMOKE_WORLD, SYNTHETIC_PRESETS
from rpo_lab.world.run import make_seed_data
from rpo_lab.world.train import RunSpec, train_stack
from rpo_tutorial.losses import rpo_loss
from rpo_tutorial.training.objectives import preference_objective
from rpo_tutorial.weighting import embedding_weights

SMOKE = SYNTHETIC_PRESETS["synthetic-smoke"]


def test_a_stack_computes_what_its_models_compute_one_at_a_time():
    stack = StackedPolicy.initial(SMOKE_WORLD, 3, torch.Generator().manual_seed(0))
    tokens = torch.randint(0, SMOKE_WORLD.vocab_size, (3, 5, 6), generator=torch.Generator().manual_seed(1))
    together = stack.logits(tokens)
    for k in range(3):
        alone = StackedPolicy(SMOKE_WORLD, {name: value[k:k + 1] for name, value in stack.params.items()})
        torch.testing.assert_close(alone.logits(tokens[k:k + 1])[0], together[k])


def test_stacked_adam_follows_torch_adam_for_each_model():
    generator = torch.Generator().manual_seed(2)
    start = torch.randn(2, 4, 3, generator=generator)
    stacked = {"w": start.clone().requires_grad_()}
    optimizer = StackedAdam(stacked, torch.tensor([1e-2, 3e-1]))
    singles = [start[k].clone().requires_grad_() for k in range(2)]
    references = [torch.optim.Adam([singles[k]], lr=rate) for k, rate in enumerate((1e-2, 3e-1))]
    for _ in range(5):
        target = torch.randn(2, 4, 3, generator=generator)
        optimizer.zero_grad()
        ((stacked["w"] - target) ** 3).abs().sum().backward()
        optimizer.step()
        for k in range(2):
            references[k].zero_grad()
            ((singles[k] - target[k]) ** 3).abs().sum().backward()
            references[k].step()
    for k in range(2):
        torch.testing.assert_close(stacked["w"][k], singles[k].detach())


def test_sampling_from_shared_uniforms_follows_the_model_distribution():
    stack = StackedPolicy.initial(SMOKE_WORLD, 1, torch.Generator().manual_seed(3))
    prompt = torch.tensor([[0, 4, 5, 10]])  # cluster 0, two details, separator
    uniforms = torch.rand(20000, SMOKE_WORLD.response_length, generator=torch.Generator().manual_seed(4))
    samples = stack.sample(prompt[None].expand(1, 20000, 4), uniforms)[0]
    with torch.no_grad():
        first = torch.softmax(stack.logits(prompt[None])[0, 0, -1], dim=-1)
    frequencies = torch.bincount(samples[:, 0], minlength=SMOKE_WORLD.response_vocab) / 20000
    torch.testing.assert_close(frequencies, first, atol=0.015, rtol=0)


@pytest.fixture(scope="module")
def seed_data():
    return make_seed_data(SMOKE, 5)[0]


def _batch_logps(data, method, step=0, arm="random"):
    rows = arm_rows(data.world, 4)
    order = data_order(rows, data.pairs["train"].embeddings[rows], arm, 3, 4, data.seed, 4)
    train = data.pairs["train"]
    chosen = order.chosen[step]
    rejected = chosen if method.paired else order.unpaired_rejected[step]
    policy = torch.randn(8, generator=torch.Generator().manual_seed(6), requires_grad=True)
    logps = step_logps(method, policy, train.reference_chosen_logps[chosen], train.reference_rejected_logps[rejected],
                       train.embeddings[chosen], train.embeddings[rejected], order.placebo[step])
    return policy, logps, order, train.embeddings[chosen]


def test_own_pair_only_is_matched_rpo_with_the_off_diagonal_weights_removed(seed_data):
    method = METHODS["rpo-own-pair"]
    policy, logps, order, embeddings = _batch_logps(seed_data, method)
    preference_objective(logps, method.config(0.1, 4, order.mean_own_weight)).loss.backward()
    ours = policy.grad.clone()
    policy.grad = None  # brute force: RPO (Eq. 15) with w_ij = 0 off the diagonal, at beta N
    masked = torch.diag(embedding_weights(embeddings, embeddings, 0.5).diagonal())
    reference = torch.cat([logps.reference_chosen_logps, logps.reference_rejected_logps]) / torch.cat(
        [own_weights(embeddings)] * 2)
    rpo_loss(policy[:4], policy[4:], reference[:4], reference[4:], weights=masked, beta=0.4)[0].mean().backward()
    torch.testing.assert_close(ours, 4 * policy.grad)  # the mean over pairs instead of RPO's sum / N


def test_placebo_weights_are_the_real_weights_permuted(seed_data):
    real_policy, real, order, _ = _batch_logps(seed_data, METHODS["rpo-emb"])
    _, placebo, _, _ = _batch_logps(seed_data, METHODS["rpo-placebo"])
    config = METHODS["rpo-emb"].config(0.1, 4, order.mean_own_weight)
    w_real = preference_objective(real, config).weights
    w_placebo = preference_objective(placebo, config).weights
    permutation = order.placebo[0]
    torch.testing.assert_close(w_placebo, w_real[permutation][:, permutation])  # P W P^T
    assert sorted(w_placebo.diagonal().tolist()) == pytest.approx(sorted(w_real.diagonal().tolist()))


def test_every_method_of_a_condition_sees_the_same_batches_and_stratified_ones_are_related(seed_data):
    rows = arm_rows(seed_data.world, 4)
    embeddings = seed_data.pairs["train"].embeddings[rows]
    first = data_order(rows, embeddings, "stratified", 6, 4, seed_data.seed, 4)
    again = data_order(rows, embeddings, "stratified", 6, 4, seed_data.seed, 4)
    assert torch.equal(first.chosen, again.chosen) and torch.equal(first.placebo, again.placebo)
    assert torch.equal(first.unpaired_rejected, first.chosen.roll(-1, dims=0))
    random = data_order(rows, embeddings, "random", 6, 4, seed_data.seed, 4)
    clusters = seed_data.pairs["train"].prompts[:, 0]
    same = {arm: (clusters[order.chosen][:, :, None] == clusters[order.chosen][:, None, :]).float().mean().item()
            for arm, order in (("stratified", first), ("random", random))}
    assert same["stratified"] > same["random"]


def test_a_policy_equal_to_its_reference_ties_every_pair_and_gains_nothing(seed_data):
    scored = evaluate_stack(seed_data.reference.repeat(2), seed_data, reference_rewards(seed_data))
    for record in scored:
        assert set(record["test_outcomes2"]) == {1} and record["test_accuracy"] == 0.5
        assert record["gain"] == 0.0 and record["validation_accuracy"] == 0.5


def test_a_model_trains_the_same_alone_or_in_a_stack(seed_data):
    design = SMOKE.replace(steps=4, checkpoints=2)
    run = RunSpec("rpo-emb", "curvature", 0.1, "stratified", 4, 3e-2)
    others = [RunSpec("kto", "linear", 0.0002, "random", 2, 1e-2), RunSpec("dpo", "curvature", 0.1, "random", 4, 3e-3)]
    alone, alone_records = train_stack(seed_data, [run], design)
    stacked, stacked_records = train_stack(seed_data, others + [run], design)
    for name, value in alone.params.items():
        torch.testing.assert_close(stacked.params[name][2], value[0], rtol=1e-5, atol=1e-6)
    assert alone_records[0]["curve"][-1]["loss"] == pytest.approx(stacked_records[2]["curve"][-1]["loss"], rel=1e-5)
    assert alone_records[0]["diverged_at_step"] is None
    assert alone_records[0]["curve"][0]["test_accuracy"] == 0.5  # step 0: the reference itself
    assert alone_records[0]["curve"][-1]["train_margin"] != 0.0  # it moved


def test_a_diverging_model_leaves_the_loss_and_the_others_train_on(seed_data):
    design = SMOKE.replace(steps=3, checkpoints=1)
    runs = [RunSpec("dpo", "curvature", 0.1, "random", 4, 1e-2), RunSpec("dpo", "curvature", 0.1, "random", 4, 1e-2)]
    policy = seed_data.reference.repeat(2)
    with torch.no_grad():
        for value in policy.params.values():
            value[1] = float("nan")  # model 1 is already broken
    original = seed_data.reference

    class Broken:  # the stack's copies of the reference: model 1 NaN
        def repeat(self, count):
            return policy
    seed_data.reference = Broken()
    try:
        _, records = train_stack(seed_data, runs, design)
    finally:
        seed_data.reference = original
    assert records[0]["diverged_at_step"] is None and records[1]["diverged_at_step"] == 1
    assert torch.isfinite(policy.params["head"][0]).all()
