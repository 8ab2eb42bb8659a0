"""A seed's preference data: disjoint train / validation / test prompts and their labelled pairs.

Per cluster the prompts are a seeded permutation of all detail combinations, cut into
``train_prompts_per_cluster`` train, ``validation_prompts_per_cluster`` validation and
``test_prompts_per_cluster`` test prompts. Each prompt gets k reference samples; its pair is the
best and the worst of them under r* (a prompt whose k samples all have the same r* is sampled
again). Labels:

- train and validation: Bradley-Terry noise. The best response is labelled chosen with
  probability sigma(gap / s), gap = r*(best) - r*(worst) > 0; the temperature s is set per world
  (bisection) so that the mean flip probability over these pairs is ``label_noise``.
- test: the true order under r*, no noise (the test accuracy measures agreement with r*).

The train arms are nested: the arm with m pairs per cluster uses each cluster's first m train
prompts, so a larger arm holds every pair of a smaller one.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from rpo_lab.world.policy import StackedPolicy
from rpo_lab.world.world import World, stream


@dataclass
class PairSet:
    """Labelled pairs. Shape: prompts (n, 1 + P); chosen, rejected (n, L); the rest (n,)."""

    prompts: torch.Tensor
    chosen: torch.Tensor
    rejected: torch.Tensor
    gap: torch.Tensor  # r*(chosen) - r*(rejected); negative where the label was flipped
    reference_chosen_logps: torch.Tensor
    reference_rejected_logps: torch.Tensor
    embeddings: torch.Tensor  # (n, D) prompt embeddings

    def __len__(self) -> int:
        return self.prompts.shape[0]

    def take(self, rows: torch.Tensor) -> "PairSet":
        return PairSet(*(getattr(self, name)[rows] for name in self.__dataclass_fields__))


def split_prompts(world: World, seed: int) -> dict[str, torch.Tensor]:
    """{"train", "validation", "test"}: disjoint prompts, cluster-major. Shape: each (C * m, 1 + P)."""
    s = world.spec
    g = stream(seed, "prompts")
    sizes = {"train": s.train_prompts_per_cluster, "validation": s.validation_prompts_per_cluster,
             "test": s.test_prompts_per_cluster}
    combos = torch.stack(torch.meshgrid(*[torch.arange(s.detail_vocab)] * s.detail_positions, indexing="ij"),
                         dim=-1).reshape(-1, s.detail_positions)  # (V_d^P, P)
    parts = {name: [] for name in sizes}
    for cluster in range(s.num_clusters):
        order = combos[torch.randperm(combos.shape[0], generator=g)]
        start = 0
        for name, size in sizes.items():
            details = order[start:start + size]
            parts[name].append(torch.cat([torch.full((size, 1), cluster), details], dim=1))
            start += size
    return {name: torch.cat(rows) for name, rows in parts.items()}


def best_and_worst(world: World, reference: StackedPolicy, prompts: torch.Tensor, g: torch.Generator,
                   attempts: int = 20) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(best (n, L), worst (n, L), gap (n,)) of k reference samples per prompt under r*."""
    k, L = world.spec.samples_per_prompt, world.spec.response_length
    n = prompts.shape[0]
    best, worst = torch.zeros(n, L, dtype=torch.long), torch.zeros(n, L, dtype=torch.long)
    gap, todo = torch.zeros(n), torch.arange(n)
    for _ in range(attempts):
        repeated = prompts[todo].repeat_interleave(k, dim=0)  # (m k, 1 + P)
        samples = reference.sample(world.prompt_tokens(repeated)[None], torch.rand(len(repeated), L, generator=g))[0]
        rewards = world.reward(repeated, samples).reshape(-1, k)  # (m, k)
        samples = samples.reshape(-1, k, L)
        high, low = rewards.argmax(dim=1), rewards.argmin(dim=1)
        rows = torch.arange(len(todo))
        best[todo], worst[todo] = samples[rows, high], samples[rows, low]
        gap[todo] = rewards[rows, high] - rewards[rows, low]
        todo = todo[gap[todo] <= 0]
        if len(todo) == 0:
            return best, worst, gap
    raise ValueError(f"{len(todo)} prompts had k={k} samples of equal r* in {attempts} attempts: the reference "
                     "is too peaked for this world (raise samples_per_prompt or the SFT scales' entropy)")


def noise_temperature(gaps: torch.Tensor, flip_rate: float) -> float:
    """s such that mean_i sigma(-gap_i / s) = flip_rate (bisection on log s). Shape: gaps (n,) > 0."""
    low, high = -12.0, 12.0
    for _ in range(80):
        middle = (low + high) / 2
        if torch.sigmoid(-gaps / torch.exp(torch.tensor(middle))).mean().item() < flip_rate:
            low = middle
        else:
            high = middle
    return float(torch.exp(torch.tensor((low + high) / 2)))


def labelled_pairs(world: World, reference: StackedPolicy, seed: int) -> tuple[dict[str, PairSet], float]:
    """The seed's train, validation and test pairs (module docstring) and the noise temperature s."""
    g_pairs, g_labels = stream(seed, "pairs"), stream(seed, "labels")
    pairs, prompts = {}, split_prompts(world, seed)
    drawn = {name: best_and_worst(world, reference, rows, g_pairs) for name, rows in prompts.items()}
    temperature = noise_temperature(torch.cat([drawn["train"][2], drawn["validation"][2]]), world.spec.label_noise)
    for name, (best, worst, gap) in drawn.items():
        flip = torch.zeros_like(gap, dtype=torch.bool)
        if name != "test":
            flip = torch.rand(gap.shape, generator=g_labels) < torch.sigmoid(-gap / temperature)
        chosen = torch.where(flip[:, None], worst, best)
        rejected = torch.where(flip[:, None], best, worst)
        tokens = world.prompt_tokens(prompts[name])[None]
        with torch.no_grad():
            reference_chosen = reference.response_logps(tokens, chosen[None])[0]
            reference_rejected = reference.response_logps(tokens, rejected[None])[0]
        pairs[name] = PairSet(prompts[name], chosen, rejected, torch.where(flip, -gap, gap), reference_chosen,
                              reference_rejected, world.prompt_embeddings(prompts[name]))
    return pairs, temperature


def arm_rows(world: World, pairs_per_cluster: int) -> torch.Tensor:
    """Rows of the train pairs in the arm with ``pairs_per_cluster`` pairs per cluster. Shape: (C * m,)."""
    per_cluster = world.spec.train_prompts_per_cluster
    return torch.cat([torch.arange(c * per_cluster, c * per_cluster + pairs_per_cluster)
                      for c in range(world.spec.num_clusters)])
