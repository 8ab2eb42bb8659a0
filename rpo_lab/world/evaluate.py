"""What a trained stack is scored on: pair accuracy (ties half) and the true-reward gain under r*.

- **Test accuracy**: on each test pair (labelled by r*, no noise) the outcome is 1 when the
  policy's implicit reward ranks the chosen response higher (h > 0), 0.5 on a tie, 0 below
  (``tie_half_accuracy``); a model equal to its reference scores exactly 0.5. Per-pair outcomes are
  kept: the statistics resample them.
- **Validation accuracy**: the same on the validation pairs (noisy labels, like train): the only
  number the learning rate is chosen on.
- **True-reward gain**: on each gain prompt, ``gain_samples`` responses of the policy and of the
  reference, drawn with the SAME uniforms (inverse-CDF sampling: common random numbers, so the
  difference has a small variance), scored by r*; the gain of a prompt is the mean r* of the
  policy's samples minus the reference's.
"""
from __future__ import annotations

import torch

from rpo_lab.world.pairs import PairSet
from rpo_lab.world.policy import StackedPolicy
from rpo_lab.world.train import SeedData, pair_logratio_margins
from rpo_lab.world.world import World, stream
from rpo_tutorial.accuracy import tie_half_accuracy


def gain_prompts(world: World, test: PairSet) -> torch.Tensor:
    """The first ``gain_prompts_per_cluster`` test prompts of each cluster. Shape: (Q, 1 + P)."""
    s = world.spec
    rows = torch.cat([torch.arange(c * s.test_prompts_per_cluster, c * s.test_prompts_per_cluster
                                   + s.gain_prompts_per_cluster) for c in range(s.num_clusters)])
    return test.prompts[rows]


def sampled_rewards(policy: StackedPolicy, world: World, prompts: torch.Tensor, uniforms: torch.Tensor,
                    chunk_rows: int = 16384) -> torch.Tensor:
    """Mean r* of each model's samples per prompt. Shape: prompts (Q, 1 + P), uniforms (Q n, L) -> (K, Q)."""
    K, Q = policy.num_models, prompts.shape[0]
    repeated = prompts.repeat_interleave(uniforms.shape[0] // Q, dim=0)  # (Q n, 1 + P)
    tokens = world.prompt_tokens(repeated)
    step = max(1, chunk_rows // K)
    rewards = []
    for start in range(0, repeated.shape[0], step):
        rows = slice(start, start + step)
        samples = policy.sample(tokens[rows][None].expand(K, -1, -1), uniforms[rows])  # (K, b, L)
        rewards.append(torch.stack([world.reward(repeated[rows], samples[k]) for k in range(K)]))  # (K, b)
    return torch.cat(rewards, dim=1).reshape(K, Q, -1).mean(dim=2)


def gain_uniforms(data: SeedData) -> torch.Tensor:
    s = data.world.spec
    count = s.num_clusters * s.gain_prompts_per_cluster * s.gain_samples
    return torch.rand(count, s.response_length, generator=stream(data.seed, "gain"))


def reference_rewards(data: SeedData) -> torch.Tensor:
    """The reference's mean sampled r* per gain prompt. Shape: (Q,)."""
    prompts = gain_prompts(data.world, data.pairs["test"])
    return sampled_rewards(data.reference, data.world, prompts, gain_uniforms(data))[0]


def validation_accuracy(policy: StackedPolicy, data: SeedData) -> torch.Tensor:
    """Shape: returns (K,)."""
    margins = pair_logratio_margins(policy, data.pairs["validation"], data.world)
    return tie_half_accuracy(margins).mean(dim=1)


def evaluate_stack(policy: StackedPolicy, data: SeedData, reference_gain_rewards: torch.Tensor) -> list[dict]:
    """Per model: test outcomes (as 0 / 1 / 2 = twice the outcome), accuracy, margins, gain per prompt."""
    margins = pair_logratio_margins(policy, data.pairs["test"], data.world)  # (K, P)
    outcomes = tie_half_accuracy(margins)  # (K, P)
    validation = validation_accuracy(policy, data)
    prompts = gain_prompts(data.world, data.pairs["test"])
    gains = sampled_rewards(policy, data.world, prompts, gain_uniforms(data)) - reference_gain_rewards  # (K, Q)
    return [{"validation_accuracy": round(validation[k].item(), 6),
             "test_accuracy": round(outcomes[k].mean().item(), 6),
             "test_outcomes2": (2 * outcomes[k]).round().to(torch.int8).tolist(),
             "test_margin_mean": round(margins[k].mean().item(), 4),
             "test_margin_abs_median": round(margins[k].abs().median().item(), 4),
             "gain_per_prompt": [round(value, 6) for value in gains[k].tolist()],
             "gain": round(gains[k].mean().item(), 6)} for k in range(policy.num_models)]
