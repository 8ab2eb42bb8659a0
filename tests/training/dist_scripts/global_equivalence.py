"""2-process check of contrast_scope="global" (run by tests/training/test_distributed.py through torchrun).

    python -m torch.distributed.run --nproc_per_node 2 tests/training/dist_scripts/global_equivalence.py OUT.json

Every process holds a DDP-wrapped tiny model and its own slice of one global batch (unequal
M_k and N_k in the unpaired case), computes the global RPO loss through
``objectives.scoped_objective`` and backpropagates (DDP averages the gradients). Rank 0 then
runs ONE process on the concatenated batch with an unwrapped copy of the same model and writes
the largest differences in loss and gradients, plus the difference the "local" scope gives
(which must NOT match: the check can fail).
"""
from __future__ import annotations

import copy
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from helpers import finish
from rpo_tutorial.models.loading import tiny_model
from rpo_tutorial.models.logprobs import sequence_logps
from rpo_tutorial.training.config import RPOConfig
from rpo_tutorial.training.objectives import PreferenceLogps, scoped_objective

VOCAB, LENGTH, DIM = 97, 7, 5


def make_side(count: int, generator: torch.Generator) -> dict:
    """Random sequences whose first two tokens are a prompt (label -100)."""
    ids = torch.randint(0, VOCAB, (count, LENGTH), generator=generator)
    labels = ids.clone()
    labels[:, :2] = -100
    return {"ids": ids, "labels": labels, "reference": -20 * torch.rand(count, generator=generator),
            "embeddings": torch.randn(count, DIM, generator=generator)}


def global_batch(sizes: list[tuple[int, int]]) -> list[tuple[dict, dict]]:
    """One (chosen, rejected) side pair per rank; identical on every process (fixed seed)."""
    generator = torch.Generator().manual_seed(1234)
    return [(make_side(m, generator), make_side(n, generator)) for m, n in sizes]


def concatenate(parts: list[dict]) -> dict:
    return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}


def loss_and_grads(model, chosen: dict, rejected: dict, config: RPOConfig, paired: bool):
    ids = torch.cat([chosen["ids"], rejected["ids"]])
    labels = torch.cat([chosen["labels"], rejected["labels"]])
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits
    policy = sequence_logps(logits, labels)  # (M + N,)
    m = chosen["ids"].shape[0]
    logps = PreferenceLogps(policy[:m], policy[m:], chosen["reference"], rejected["reference"],
                            chosen["embeddings"], rejected["embeddings"], paired)
    output, _ = scoped_objective(logps, config)
    model.zero_grad()
    output.loss.backward()
    module = model.module if hasattr(model, "module") else model
    return output.loss.item(), {name: p.grad.clone() for name, p in module.named_parameters()}


def check(case: str, sizes: list[tuple[int, int]], config: RPOConfig, reference_model) -> dict:
    rank = dist.get_rank()
    paired = all(m == n for m, n in sizes) and config.is_paired
    sides = global_batch(sizes)
    results = {}
    for scope in ("global", "local"):
        scoped = config.replace(contrast_scope=scope)
        model = DistributedDataParallel(copy.deepcopy(reference_model))
        loss, grads = loss_and_grads(model, *sides[rank], scoped, paired)  # DDP averages the grads
        losses = [None, None]
        dist.all_gather_object(losses, loss)
        if rank == 0:
            single = copy.deepcopy(reference_model)
            full_chosen = concatenate([chosen for chosen, _ in sides])
            full_rejected = concatenate([rejected for _, rejected in sides])
            single_loss, single_grads = loss_and_grads(single, full_chosen, full_rejected,
                                                       config.replace(contrast_scope="local"), paired)
            results[scope] = {
                "losses": losses, "single_loss": single_loss,
                "max_grad_difference": max((grads[k] - single_grads[k]).abs().max().item() for k in grads),
                "max_grad": max(g.abs().max().item() for g in single_grads.values()),
            }
    return {case: results}


def main() -> None:
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = tiny_model(VOCAB, hidden_size=16, num_layers=1, seed=0)
    results = {}
    results.update(check("paired", [(3, 3), (2, 2)], RPOConfig(loss="rpo", weighting="embedding", beta=0.5), model))
    results.update(check("unpaired", [(3, 1), (1, 2)],
                         RPOConfig(loss="rpo", paired=False, weighting="embedding", beta=0.5), model))
    results.update(check("kto", [(2, 1), (1, 3)], RPOConfig(loss="kto", beta=0.5), model))
    finish(results, sys.argv[1])


if __name__ == "__main__":
    main()
