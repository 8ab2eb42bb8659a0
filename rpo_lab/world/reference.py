"""The SFT reference of a world: a tiny transformer trained from scratch by maximum likelihood.

The examples are prompts drawn uniformly over all prompts, each with one response from the
world's SFT distribution (which knows nothing of r*). Training is plain next-token maximum
likelihood with Adam on seeded mini-batches; the result is the reference pi_ref of every method
of the seed, and every pair is sampled from it.
"""
from __future__ import annotations

import torch

from rpo_lab.world.optim import StackedAdam
from rpo_lab.world.policy import StackedPolicy
from rpo_lab.world.world import World, stream


def all_prompts(world: World) -> torch.Tensor:
    """Every prompt of the world, cluster by cluster. Shape: returns (C * V_d^P, 1 + P)."""
    s = world.spec
    grids = torch.meshgrid(torch.arange(s.num_clusters), *[torch.arange(s.detail_vocab)] * s.detail_positions,
                           indexing="ij")
    return torch.stack([grid.reshape(-1) for grid in grids], dim=1)


def sft_examples(world: World, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompts (n, 1 + P), responses (n, L)): n = ``sft_examples`` draws of the SFT distribution."""
    g = stream(seed, "sft_data")
    prompts = all_prompts(world)
    chosen = prompts[torch.randint(0, prompts.shape[0], (world.spec.sft_examples,), generator=g)]
    return chosen, world.sample_sft(chosen, g)


def train_reference(world: World, seed: int) -> tuple[StackedPolicy, list[float]]:
    """The seed's reference (a one-model stack) and its training NLL per token, every 50 steps."""
    s = world.spec
    g = stream(seed, "reference")
    prompts, responses = sft_examples(world, seed)
    tokens = world.prompt_tokens(prompts)  # (n, T_p)
    policy = StackedPolicy.initial(s, 1, g)
    for value in policy.params.values():
        value.requires_grad_(True)
    optimizer = StackedAdam(policy.params, torch.tensor([s.reference_learning_rate]))
    curve = []
    for step in range(s.reference_steps):
        rows = torch.randint(0, tokens.shape[0], (s.reference_batch_size,), generator=g)
        logps = policy.response_logps(tokens[rows][None], responses[rows][None])  # (1, B)
        loss = -logps.mean() / s.response_length
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == s.reference_steps - 1:
            curve.append(round(loss.item(), 5))
    return policy.detached(), curve


def sft_entropy_per_token(world: World, seed: int, policy: StackedPolicy) -> dict:
    """The reference's NLL per token on fresh SFT samples next to the SFT distribution's own (its entropy)."""
    g = stream(seed, "sft_data")
    prompts = all_prompts(world)
    prompts = prompts[torch.randint(0, prompts.shape[0], (2048,), generator=g)]
    responses = world.sample_sft(prompts, g)
    with torch.no_grad():
        model = -policy.response_logps(world.prompt_tokens(prompts)[None], responses[None]).mean().item()
    truth, previous = 0.0, None
    for t in range(world.spec.response_length):
        log_probabilities = torch.log_softmax(world.sft_logits(prompts, previous), dim=-1)
        truth -= log_probabilities.gather(1, responses[:, t:t + 1]).mean().item()
        previous = responses[:, t]
    return {"reference_nll_per_token": model / world.spec.response_length,
            "sft_nll_per_token": truth / world.spec.response_length}
