"""The synthetic world: r*, embeddings, pairs and splits, checked by hand on a tiny world."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from rpo_lab.world.pairs import arm_rows, labelled_pairs, noise_temperature, split_prompts
from rpo_lab.world.presets import SMOKE_WORLD
from rpo_lab.world.reference import all_prompts, train_reference
from rpo_lab.world.spec import WorldSpec
from rpo_lab.world.world import draw_world


@pytest.fixture(scope="module")
def seeded():
    world = draw_world(SMOKE_WORLD, 3)
    reference, _ = train_reference(world, 3)
    pairs, temperature = labelled_pairs(world, reference, 3)
    return world, reference, pairs, temperature


def test_true_reward_is_the_cluster_direction_times_the_mean_token_feature():
    world = draw_world(SMOKE_WORLD, 0)
    prompts = torch.tensor([[0, 1, 2], [3, 0, 5], [1, 4, 4]])
    responses = torch.tensor([[0, 1, 2], [5, 5, 5], [2, 0, 3]])
    got = world.reward(prompts, responses)
    for row in range(3):
        cluster = prompts[row, 0].item()
        mean = [sum(world.features[t, f].item() for t in responses[row].tolist()) / 3 for f in range(2)]
        expected = sum(world.directions[cluster, f].item() * mean[f] for f in range(2))
        assert got[row].item() == pytest.approx(expected, abs=1e-6)


def test_clusters_of_a_group_nearly_agree_and_opposite_groups_disagree():
    world = draw_world(WorldSpec(), 1)  # the default world: 4 groups of 4 clusters
    directions = world.directions
    same_group = directions[0] @ directions[1]
    opposite = directions[0] @ directions[4]  # group 0 is +a, group 1 is -a
    orthogonal = directions[0] @ directions[8]  # group 2 is +b
    assert same_group > 0.7 and opposite < -0.7 and abs(orthogonal) < 0.6


def test_prompt_embeddings_reflect_cluster_and_group():
    world = draw_world(WorldSpec(), 2)
    prompts = all_prompts(world)
    unit = torch.nn.functional.normalize(world.prompt_embeddings(prompts), dim=1)
    clusters, groups = prompts[:, 0], world.cluster_group[prompts[:, 0]]
    cosine = unit @ unit.T
    same_cluster = cosine[clusters[:, None] == clusters[None, :]].mean()
    same_group_only = cosine[(groups[:, None] == groups[None, :]) & (clusters[:, None] != clusters[None, :])].mean()
    other_group = cosine[groups[:, None] != groups[None, :]].mean()
    assert same_cluster > same_group_only + 0.1 > other_group + 0.2


def test_splits_are_disjoint_and_the_arms_nested(seeded):
    world, _, pairs, _ = seeded
    prompts = split_prompts(world, 3)
    seen = [set(map(tuple, part.tolist())) for part in prompts.values()]
    assert all(not (a & b) for i, a in enumerate(seen) for b in seen[i + 1:])
    small, large = arm_rows(world, 2), arm_rows(world, 4)
    assert set(small.tolist()) < set(large.tolist())
    assert torch.bincount(pairs["train"].prompts[large, 0]).tolist() == [4] * world.spec.num_clusters


def test_test_pairs_follow_r_star_and_train_labels_carry_calibrated_noise(seeded):
    world, reference, pairs, temperature = seeded
    test = pairs["test"]
    assert (world.reward(test.prompts, test.chosen) > world.reward(test.prompts, test.rejected)).all()
    train = pairs["train"]
    gap = world.reward(train.prompts, train.chosen) - world.reward(train.prompts, train.rejected)
    torch.testing.assert_close(gap, train.gap)  # negative exactly where the label was flipped
    both = torch.cat([pairs["train"].gap, pairs["validation"].gap]).abs()
    assert torch.sigmoid(-both / temperature).mean().item() == pytest.approx(SMOKE_WORLD.label_noise, abs=1e-4)
    with torch.no_grad():
        logps = reference.response_logps(world.prompt_tokens(test.prompts)[None], test.chosen[None])[0]
    torch.testing.assert_close(logps, test.reference_chosen_logps)


def test_noise_temperature_solves_its_equation():
    gaps = torch.tensor([0.1, 0.5, 1.0, 2.0])
    s = noise_temperature(gaps, 0.2)
    assert sum(1 / (1 + torch.exp(g / s).item()) for g in gaps) / 4 == pytest.approx(0.2, abs=1e-5)


def test_the_reference_learns_the_sft_distribution():
    world = draw_world(dataclasses.replace(SMOKE_WORLD, reference_steps=150), 4)
    _, curve = train_reference(world, 4)
    assert curve[-1] < curve[0] - 0.1  # NLL per token falls from the random initialisation
