"""The data order of one (seed, batch arm, train size): shared by every method trained on it.

- ``random``: the library's ``random_batches`` (the paper's default), a new permutation each epoch;
- ``stratified``: the library's ``similarity_batches`` (the similarity sampler of
  ``rpo_tutorial.data.sampler``) on the prompt embeddings, so a batch holds related prompts
  (mostly one group, often one or two clusters);

both with whole batches only, epochs concatenated until ``steps`` batches. Unpaired methods take
the chosen responses of batch k and the rejected responses of batch k + 1 (cyclically). The
placebo's permutations and RPO's mean own-pair weight (which sets ``dpo-own-beta``'s beta) are
fixed here too, from the data alone, before anything trains.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from rpo_lab.world.methods import own_weights
from rpo_lab.world.world import stream
from rpo_tutorial.data.sampler import random_batches, similarity_batches


@dataclass
class DataOrder:
    """Batches (rows of the train pairs) of one condition. Shape: chosen, unpaired_rejected, placebo (steps, N)."""

    chosen: torch.Tensor  # (steps, N) the pairs of each step (paired methods: both responses)
    unpaired_rejected: torch.Tensor  # (steps, N) rows whose rejected responses unpaired methods see
    placebo: torch.Tensor  # (steps, N) the placebo's embedding permutation of each step
    mean_own_weight: float  # mean w_ii over the run's batches (RPO embedding, tau 0.5)


def sampler_seed(seed: int, arm: str, pairs_per_cluster: int) -> int:
    return (int(seed) * 1009 + int(pairs_per_cluster)) * 2 + (arm == "stratified")


def data_order(rows: torch.Tensor, embeddings: torch.Tensor, arm: str, steps: int, batch_size: int, seed: int,
               pairs_per_cluster: int) -> DataOrder:
    """The condition's batches over ``rows`` (the arm's train pairs) with their prompt ``embeddings``.

    Shape:
        rows: (R,) indexes into the train pairs; embeddings: (R, D) of those rows
    """
    if rows.shape[0] < 2 * batch_size:
        raise ValueError(f"{rows.shape[0]} train pairs make fewer than two batches of {batch_size}")
    order_seed, batches, epoch = sampler_seed(seed, arm, pairs_per_cluster), [], 0
    while len(batches) < steps:
        if arm == "random":
            batches += random_batches(rows.shape[0], batch_size, order_seed, epoch, drop_last=True)
        else:
            batches += similarity_batches(embeddings, batch_size, order_seed, epoch, drop_last=True)
        epoch += 1
    local = torch.tensor(batches[:steps])  # (steps, N) positions in rows
    g = stream(order_seed, "placebo")
    placebo = torch.stack([torch.randperm(batch_size, generator=g) for _ in range(steps)])
    mean_own = torch.stack([own_weights(embeddings[batch]) for batch in local]).mean().item()
    return DataOrder(rows[local], rows[local.roll(-1, dims=0)], placebo, mean_own)
