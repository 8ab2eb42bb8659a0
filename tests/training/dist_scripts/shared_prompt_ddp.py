"""Shared prompts under DDP: 2 processes' averaged gradients == one process, one forward per batch.

    python -m torch.distributed.run --nproc_per_node 2 tests/training/dist_scripts/shared_prompt_ddp.py OUT.json

Each process holds a DDP-wrapped tiny Llama (with and without ``find_unused_parameters``, which
transformers' Trainer turns on for a model without activation checkpointing) and its own paired
batch, runs the shared-prompt path (two forwards: prompts, then responses on their cache) and
one backward. Rank 0 then computes the mean of both processes' losses with an unwrapped copy on
the one-forward path, and writes the largest loss and gradient differences.
"""
from __future__ import annotations

import copy
import json
import random
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from rpo_tutorial.data.collate import PreferenceCollator
from rpo_tutorial.models.head import model_sequence_logps
from rpo_tutorial.models.loading import tiny_model
from rpo_tutorial.models.shared_prompt import prompt_sharing_sequence_logps, shared_prompt_problem

VOCAB = 97


def paired_batch(rank: int) -> dict:
    """Three pairs with prompts of 2-6 tokens and responses of 1-8 tokens, different on each process."""
    rng, examples = random.Random(rank), []
    for _ in range(3):
        prompt = [rng.randrange(1, VOCAB) for _ in range(rng.randrange(2, 7))]
        answers = [[rng.randrange(1, VOCAB) for _ in range(rng.randrange(1, 9))] for _ in range(2)]
        examples.append({f"{side}_{key}": prompt + answer if key == "input_ids" else [-100] * len(prompt) + answer
                         for side, answer in zip(("chosen", "rejected"), answers) for key in ("input_ids", "labels")})
    return PreferenceCollator(0)(examples)


def loss_of(logps: torch.Tensor) -> torch.Tensor:
    return (torch.linspace(-1.0, 2.0, logps.shape[0]) * logps).sum()  # rows weighted differently


def check(start, find_unused_parameters: bool) -> dict:
    rank = dist.get_rank()
    batch = paired_batch(rank)
    model = DistributedDataParallel(copy.deepcopy(start), find_unused_parameters=find_unused_parameters)
    problem = shared_prompt_problem(model)
    loss = loss_of(prompt_sharing_sequence_logps(model, batch["input_ids"], batch["attention_mask"],
                                                 batch["labels"], 3))
    loss.backward()  # DDP averages the two processes' gradients
    grads = {name: p.grad.clone() for name, p in model.module.named_parameters()}
    if rank != 0:
        return {}
    single = copy.deepcopy(start)
    expected = sum(loss_of(model_sequence_logps(single, b["input_ids"], b["attention_mask"], b["labels"]))
                   for b in (paired_batch(0), paired_batch(1))) / 2
    expected.backward()
    single_grads = {name: p.grad for name, p in single.named_parameters()}
    return {"problem": problem, "max_grad_difference": max((grads[k] - single_grads[k]).abs().max().item()
                                                           for k in grads),
            "max_grad": max(g.abs().max().item() for g in single_grads.values())}


def main() -> None:
    dist.init_process_group("gloo")
    start = tiny_model(VOCAB, hidden_size=16, num_layers=2, seed=0).train()
    results = {str(flag): check(start, flag) for flag in (False, True)}
    if dist.get_rank() == 0:
        with open(sys.argv[1], "w") as handle:
            json.dump(results, handle)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
