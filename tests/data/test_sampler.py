"""Similarity-aware batches: coverage, determinism, grouping, DataLoader use."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.utils.data import DataLoader

from rpo_tutorial.data.sampler import (
    SimilarityBatchSampler,
    SimilaritySampler,
    mean_within_batch_similarity,
    random_batches,
    similarity_batches,
)


def clustered(clusters: int, per_cluster: int, dim: int = 16, noise: float = 0.05, seed: int = 0):
    """Points around `clusters` random directions, in a shuffled order; returns (points, cluster ids)."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=generator)  # (C, D)
    labels = torch.arange(clusters).repeat_interleave(per_cluster)  # (C * P,)
    points = centres[labels] + noise * torch.randn(len(labels), dim, generator=generator)  # (C * P, D)
    order = torch.randperm(len(labels), generator=generator)
    return points[order], labels[order]


@pytest.mark.parametrize("count, batch_size", [(1, 4), (3, 8), (8, 8), (37, 8), (100, 64), (257, 16), (64, 1)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_every_index_appears_exactly_once_per_epoch(count, batch_size, drop_last):
    embeddings = torch.randn(count, 5, generator=torch.Generator().manual_seed(count))
    for epoch in range(3):
        batches = similarity_batches(embeddings, batch_size, seed=1, epoch=epoch, drop_last=drop_last)
        flat = [index for batch in batches for index in batch]
        assert len(flat) == len(set(flat))
        full = (count // batch_size) * batch_size
        if drop_last:
            assert len(flat) == full and all(len(batch) == batch_size for batch in batches)
        else:
            assert sorted(flat) == list(range(count)) and len(batches) == math.ceil(count / batch_size)
            assert all(len(batch) == batch_size for batch in batches[:-1])  # only the last may be short


def test_batches_are_deterministic_per_seed_and_epoch_and_change_between_epochs():
    embeddings, _ = clustered(8, 20)
    first = similarity_batches(embeddings, 8, seed=5, epoch=0)
    assert similarity_batches(embeddings, 8, seed=5, epoch=0) == first
    assert similarity_batches(embeddings, 8, seed=5, epoch=1) != first
    assert similarity_batches(embeddings, 8, seed=6, epoch=0) != first


def test_batches_group_points_of_the_same_cluster():
    embeddings, labels = clustered(clusters=8, per_cluster=16)
    for epoch in range(3):
        batches = similarity_batches(embeddings, 16, seed=0, epoch=epoch)
        assert all(len({labels[i].item() for i in batch}) == 1 for batch in batches)
    smaller = similarity_batches(embeddings, 8, seed=0)  # half a cluster per batch
    assert all(len({labels[i].item() for i in batch}) == 1 for batch in smaller)


def brute_force_similarity(embeddings, batches):
    means = []
    for batch in batches:
        pairs = [(i, j) for i, j in itertools.permutations(batch, 2)]
        if not pairs:
            continue
        cosines = [torch.nn.functional.cosine_similarity(embeddings[i], embeddings[j], dim=0).item() for i, j in pairs]
        means.append(sum(cosines) / len(cosines))
    return sum(means) / len(means)


def test_mean_within_batch_similarity_matches_a_loop_and_beats_random_batches():
    embeddings, _ = clustered(clusters=6, per_cluster=12, noise=0.5)
    grouped = similarity_batches(embeddings, 6, seed=2)
    shuffled = random_batches(len(embeddings), 6, seed=2)
    for batches in (grouped, shuffled, [[0], [1, 2, 3]]):
        assert mean_within_batch_similarity(embeddings, batches) == pytest.approx(
            brute_force_similarity(embeddings, batches), abs=1e-5)
    assert mean_within_batch_similarity(embeddings, grouped) > mean_within_batch_similarity(embeddings, shuffled) + 0.3
    with pytest.raises(ValueError, match="two or more rows"):
        mean_within_batch_similarity(embeddings, [[0], [1]])


def test_random_batches_cover_every_index():
    batches = random_batches(23, 5, seed=0)
    assert sorted(i for b in batches for i in b) == list(range(23)) and [len(b) for b in batches] == [5, 5, 5, 5, 3]
    assert random_batches(23, 5, seed=0, drop_last=True) == batches[:4]


def test_batch_sampler_and_index_sampler_give_the_same_dataloader_batches():
    embeddings, _ = clustered(4, 10)
    dataset = list(range(40))
    batch_sampler = SimilarityBatchSampler(embeddings, batch_size=8, seed=3)
    index_sampler = SimilaritySampler(embeddings, batch_size=8, seed=3)
    assert len(batch_sampler) == 5 and len(index_sampler) == 40
    for epoch in (0, 1):
        batch_sampler.set_epoch(epoch)
        index_sampler.set_epoch(epoch)
        via_batches = [b.tolist() for b in DataLoader(dataset, batch_sampler=batch_sampler)]
        via_indexes = [b.tolist() for b in DataLoader(dataset, sampler=index_sampler, batch_size=8)]
        assert via_batches == via_indexes == similarity_batches(embeddings, 8, seed=3, epoch=epoch)
    dropping = SimilaritySampler(torch.randn(42, 3), batch_size=8, drop_last=True)
    assert len(dropping) == 40 == len(list(dropping))


@pytest.mark.parametrize("embeddings, batch_size, message", [
    (torch.zeros(0, 4), 4, r"\(K, D\)"),
    (torch.ones(4), 4, r"\(K, D\)"),
    (torch.tensor([[1.0, float("nan")]]), 1, "non-finite"),
    (torch.ones(3, 2), 0, "batch_size"),
])
def test_bad_input_is_a_clear_error(embeddings, batch_size, message):
    with pytest.raises(ValueError, match=message):
        similarity_batches(embeddings, batch_size)
