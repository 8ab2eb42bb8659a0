"""Similarity-aware mini-batches (beyond the paper): related prompts share a batch.

RPO contrasts every chosen response with every rejected response of the mini-batch, weighted
by prompt similarity (paper Eqs. 11-12). With random batches of unrelated prompts the
off-diagonal weights are nearly uniform and small, so those contrasts carry little signal.
This sampler puts semantically related prompts together, so off-diagonal contrasts compare
responses to related requests. The default elsewhere stays random batches, as in the paper.

How batches are formed (balanced recursive 2-means bisection, O(K D log K) per epoch):
split the prompts in two by a few 2-means steps on the unit-normalised embeddings, cutting at
a multiple of ``batch_size`` so the halves stay balanced; recurse until a group fits in one
batch. Every index appears exactly once per epoch; at most one batch is short (placed last).
The two random seeds of each split and the order of the batches depend on ``(seed, epoch)``,
so every epoch gives different (still related) batches, reproducibly.

    sampler = SimilarityBatchSampler(stack_prompt_embeddings(rows), batch_size=8, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collator)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        ...
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.utils.data import Sampler


def _check(embeddings: torch.Tensor, batch_size: int) -> torch.Tensor:
    if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 2 or embeddings.shape[0] == 0:
        shape = tuple(embeddings.shape) if isinstance(embeddings, torch.Tensor) else type(embeddings).__name__
        raise ValueError(f"embeddings must be a (K, D) tensor with K >= 1, got {shape}")
    if not torch.isfinite(embeddings).all():
        raise ValueError("embeddings contain non-finite values")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    unit = embeddings.detach().float()
    return unit / unit.norm(dim=1, keepdim=True).clamp_min(1e-12)  # (K, D)


def _generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))


def _split_level(unit: torch.Tensor, order: torch.Tensor, sizes: torch.Tensor, batch_size: int,
                 generator: torch.Generator, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split every group larger than a batch in two, all groups at once.

    Groups are contiguous segments of ``order`` with the given ``sizes``. Each group larger
    than ``batch_size`` is cut by a few balanced 2-means steps into a part of ``left`` rows
    (a multiple of ``batch_size``, about half) and the rest.

    Shape:
        unit: (K, D) unit rows; order: (K,) a permutation; sizes: (G,). Returns the new order
        (K,) and the new sizes (G',), where each split group is replaced by its two parts.
    """
    count = order.shape[0]
    starts = torch.cumsum(sizes, 0) - sizes  # (G,)
    group = torch.repeat_interleave(torch.arange(sizes.shape[0]), sizes)  # (K,) group of each position
    active = sizes > batch_size  # (G,)
    batches_per_group = torch.div(sizes + batch_size - 1, batch_size, rounding_mode="floor")  # (G,) ceil(n / B)
    left = torch.where(active, batch_size * (batches_per_group // 2), 0)  # (G,) a multiple of B, about n / 2
    points = unit.index_select(0, order)  # (K, D) rows in the current order
    totals = torch.zeros(sizes.shape[0], unit.shape[1]).index_add_(0, group, points)  # (G, D)
    draws = torch.rand(sizes.shape[0], 2, generator=generator)  # two distinct random seed rows per group
    first_seed = (draws[:, 0] * sizes).long().clamp(max=sizes - 1)  # (G,)
    second_seed = (first_seed + 1 + (draws[:, 1] * (sizes - 1).clamp_min(1)).long()) % sizes  # (G,)
    first = points.index_select(0, starts + first_seed)  # (G, D)
    second = points.index_select(0, starts + second_seed)  # (G, D)
    rank = torch.arange(count) - starts[group]  # (K,) position inside its group
    for step in range(steps + 1):
        direction = torch.where(active[:, None], first - second, 0.0)  # (G, D)
        scores = torch.linalg.vecdot(points, direction.index_select(0, group))  # (K, D).(K, D) -> (K,)
        within = torch.argsort(-scores, stable=True)
        within = within[torch.argsort(group[within], stable=True)]  # (K,) sorted by group, then score
        is_left = torch.empty(count, dtype=torch.bool)
        is_left[within] = rank < left[group]  # (K,) in the current order
        if step < steps:  # 2-means update of the two centres of every group
            bucket = torch.where(is_left, group, sizes.shape[0])  # (K,) right-hand rows go to a spare bucket
            left_sum = torch.zeros(sizes.shape[0] + 1, unit.shape[1]).index_add_(0, bucket, points)[:-1]  # (G, D)
            first = left_sum / left.clamp_min(1)[:, None]
            second = (totals - left_sum) / (sizes - left).clamp_min(1)[:, None]
    parts = torch.stack([torch.where(active, left, sizes), torch.where(active, sizes - left, 0)], 1).reshape(-1)
    return order[within], parts[parts > 0]  # (K,), (G',): each group's left part, then its right part


def similarity_batches(embeddings: torch.Tensor, batch_size: int, seed: int = 0, epoch: int = 0,
                       drop_last: bool = False, steps: int = 3) -> list[list[int]]:
    """Group row indexes into batches of related prompts (see the module docstring).

    All groups of one level of the bisection are split together with a few whole-dataset
    tensor operations, so the cost does not grow with the number of groups.

    Args:
        embeddings: prompt embeddings, one row per dataset row.
        batch_size: rows per batch.
        seed, epoch: the batches are a deterministic function of both.
        drop_last: drop the one short batch (when K is not a multiple of batch_size).
        steps: 2-means refinement steps per split.

    Shape:
        embeddings: (K, D). Returns ceil(K / batch_size) lists (floor with drop_last) that
        together hold every index in [0, K) exactly once; the short batch, if any, is last.
    """
    unit = _check(embeddings, batch_size)
    generator = _generator(seed, epoch)
    order, sizes = torch.arange(unit.shape[0]), torch.tensor([unit.shape[0]])
    while bool((sizes > batch_size).any()):
        order, sizes = _split_level(unit, order, sizes, batch_size, generator, steps)
    groups = [group.tolist() for group in torch.split(order, sizes.tolist())]
    full = [group for group in groups if len(group) == batch_size]
    short = [group for group in groups if len(group) < batch_size]
    shuffled = [full[i] for i in torch.randperm(len(full), generator=generator).tolist()]
    return shuffled if drop_last else shuffled + short


def random_batches(num_rows: int, batch_size: int, seed: int = 0, epoch: int = 0,
                   drop_last: bool = False) -> list[list[int]]:
    """Random batches (the paper's default), same conventions as :func:`similarity_batches`."""
    order = torch.randperm(num_rows, generator=_generator(seed, epoch)).tolist()
    batches = [order[start:start + batch_size] for start in range(0, num_rows, batch_size)]
    return [batch for batch in batches if len(batch) == batch_size] if drop_last else batches


def mean_within_batch_similarity(embeddings: torch.Tensor, batches: list[list[int]]) -> float:
    """Mean over batches of the mean off-diagonal cosine similarity inside each batch.

    Batches with one row have no off-diagonal pair and are left out.

    Shape:
        embeddings: (K, D); batches: lists of indexes into K.
    """
    unit = _check(embeddings, 1)
    means = []
    for batch in batches:
        size = len(batch)
        if size < 2:
            continue
        members = unit[torch.tensor(batch)]  # (B, D)
        cosine = members @ members.T  # (B, D) @ (D, B) -> (B, B)
        means.append(((cosine.sum() - cosine.diagonal().sum()) / (size * (size - 1))).item())
    if not means:
        raise ValueError("no batch has two or more rows")
    return sum(means) / len(means)


class SimilarityBatchSampler(Sampler[list[int]]):
    """A ``batch_sampler`` yielding batches of related prompts; call ``set_epoch`` every epoch.

    Shape:
        embeddings: (K, D), row k is the prompt embedding of dataset row k.
    """

    def __init__(self, embeddings: torch.Tensor, batch_size: int, seed: int = 0, drop_last: bool = False):
        _check(embeddings, batch_size)
        self.embeddings = embeddings.detach().float()  # (K, D)
        self.batch_size, self.seed, self.drop_last, self.epoch = batch_size, seed, drop_last, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        return similarity_batches(self.embeddings, self.batch_size, self.seed, self.epoch, self.drop_last)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        count = self.embeddings.shape[0]
        return count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)


class SimilaritySampler(SimilarityBatchSampler):
    """The same batches as one index order, for ``DataLoader(sampler=..., batch_size=B)``.

    With the loader's ``batch_size`` equal to this one (and the same ``drop_last``), the
    loader's batches are exactly the similarity batches.
    """

    def __iter__(self) -> Iterator[int]:  # type: ignore[override]
        return iter([index for batch in self.batches() for index in batch])

    def __len__(self) -> int:
        count = self.embeddings.shape[0]
        return (count // self.batch_size) * self.batch_size if self.drop_last else count
