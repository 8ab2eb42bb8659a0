"""Drawing one world: the true reward r*, the prompt embeddings and the SFT distribution.

A prompt is a cluster c and ``detail_positions`` detail values; its tokens are
``[c, detail_1, ..., detail_P, SEP]`` and a response is ``response_length`` tokens.

- **True reward.** Token features phi(t) in R^F (Gaussian). Group g has a direction along one
  axis of a random orthonormal basis, with a sign: groups 0, 1 are +a and -a, groups 2, 3 are +b
  and -b (opposite or orthogonal). Cluster c of group g has u_c = normalise(u_g + jitter * noise),
  and r*(x, y) = u_c . mean_t phi(y_t): details do not matter, clusters of a group nearly agree,
  opposite groups disagree.
- **Prompt embeddings** (RPO's weights read them): e(x) = s_g G_g + s_c O_c + s_d sum_p D_{p, d_p}
  with Gaussian G, O, D, so cosine similarity is high inside a cluster, lower inside a group and
  about 0 across groups.
- **SFT distribution** (independent of r*): token logits = A_c + sum_p B_{p, d_p} + C[previous
  token], Gaussian A, B, C; the reference is trained on samples of it, so it knows nothing of r*.

Every random draw comes from ``stream(seed, purpose)``: the world, the reference, the pairs,
the label noise and the data order of a seed are independent streams.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from rpo_lab.world.spec import WorldSpec

PURPOSES = {"world": 1, "sft_data": 2, "reference": 3, "prompts": 4, "pairs": 5, "labels": 6, "order": 7,
            "gain": 8, "placebo": 9, "policy": 10}


def stream(seed: int, purpose: str) -> torch.Generator:
    """The seeded generator of one purpose (see ``PURPOSES``) of one seed."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + PURPOSES[purpose])


@dataclass
class World:
    """One draw of the world (module docstring). Prompts are (n, 1 + P) long tensors: cluster, details."""

    spec: WorldSpec
    features: torch.Tensor  # (V_r, F) phi
    directions: torch.Tensor  # (C, F) unit u_c
    cluster_group: torch.Tensor  # (C,) group of each cluster
    group_vectors: torch.Tensor  # (G, D)
    cluster_vectors: torch.Tensor  # (C, D)
    detail_vectors: torch.Tensor  # (P, V_d, D)
    cluster_logits: torch.Tensor  # (C, V_r) SFT distribution
    detail_logits: torch.Tensor  # (P, V_d, V_r)
    bigram_logits: torch.Tensor  # (V_r, V_r)

    def reward(self, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """r*(x, y) = u_c . mean_t phi(y_t). Shape: prompts (n, 1 + P), responses (n, L) -> (n,)."""
        mean_features = self.features[responses].mean(dim=-2)  # (n, L, F) -> (n, F)
        return (mean_features * self.directions[prompts[:, 0]]).sum(dim=-1)

    def prompt_embeddings(self, prompts: torch.Tensor) -> torch.Tensor:
        """Shape: prompts (n, 1 + P) -> (n, D)."""
        s = self.spec
        clusters = prompts[:, 0]
        details = sum(self.detail_vectors[p, prompts[:, 1 + p]] for p in range(s.detail_positions))  # (n, D)
        return (s.embedding_group_scale * self.group_vectors[self.cluster_group[clusters]]
                + s.embedding_cluster_scale * self.cluster_vectors[clusters] + s.embedding_detail_scale * details)

    def prompt_tokens(self, prompts: torch.Tensor) -> torch.Tensor:
        """Token ids [cluster, details..., SEP]. Shape: (n, 1 + P) -> (n, prompt_length)."""
        s = self.spec
        separator = torch.full((prompts.shape[0], 1), s.num_clusters + s.detail_vocab, dtype=torch.long)
        return torch.cat([prompts[:, :1], s.num_clusters + prompts[:, 1:], separator], dim=1)

    def response_offset(self) -> int:
        """Response token t has input id ``response_offset() + t``."""
        return self.spec.num_clusters + self.spec.detail_vocab + 1

    def sft_logits(self, prompts: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        """Logits of the next response token under the SFT distribution. Shape: (n, 1 + P), (n,) -> (n, V_r)."""
        s = self.spec
        logits = self.cluster_logits[prompts[:, 0]].clone()  # (n, V_r)
        for p in range(s.detail_positions):
            logits += self.detail_logits[p, prompts[:, 1 + p]]
        return logits if previous is None else logits + self.bigram_logits[previous]

    def sample_sft(self, prompts: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Responses drawn from the SFT distribution. Shape: (n, 1 + P) -> (n, L)."""
        tokens, previous = [], None
        for _ in range(self.spec.response_length):
            probabilities = torch.softmax(self.sft_logits(prompts, previous), dim=-1)  # (n, V_r)
            previous = torch.multinomial(probabilities, 1, generator=generator)[:, 0]
            tokens.append(previous)
        return torch.stack(tokens, dim=1)


def group_directions(num_groups: int, feature_dim: int, generator: torch.Generator) -> torch.Tensor:
    """+a, -a, +b, -b, ... along a random orthonormal basis. Shape: returns (G, F) unit rows."""
    basis, _ = torch.linalg.qr(torch.randn(feature_dim, feature_dim, generator=generator))  # (F, F)
    signs = torch.tensor([1.0 if g % 2 == 0 else -1.0 for g in range(num_groups)])
    return signs[:, None] * basis.T[torch.arange(num_groups) // 2]  # (G, F)


def draw_world(spec: WorldSpec, seed: int) -> World:
    """Draw the world of ``seed`` (module docstring)."""
    spec.check()
    g = stream(seed, "world")
    C, G, F = spec.num_clusters, spec.num_groups, spec.feature_dim
    features = torch.randn(spec.response_vocab, F, generator=g)
    cluster_group = torch.arange(C) // spec.clusters_per_group  # (C,)
    jittered = group_directions(G, F, g)[cluster_group] + spec.cluster_jitter * torch.randn(C, F, generator=g)
    directions = jittered / jittered.norm(dim=1, keepdim=True)
    D, P, V_d, V_r = spec.embedding_dim, spec.detail_positions, spec.detail_vocab, spec.response_vocab
    return World(
        spec=spec, features=features, directions=directions, cluster_group=cluster_group,
        group_vectors=torch.randn(G, D, generator=g), cluster_vectors=torch.randn(C, D, generator=g),
        detail_vectors=torch.randn(P, V_d, D, generator=g),
        cluster_logits=spec.sft_cluster_scale * torch.randn(C, V_r, generator=g),
        detail_logits=spec.sft_detail_scale * torch.randn(P, V_d, V_r, generator=g),
        bigram_logits=spec.sft_bigram_scale * torch.randn(V_r, V_r, generator=g))
