"""2 processes x 2 micro-batches of accumulated global contrast == 1 process on all 4 micro-batches' rows.

    python -m torch.distributed.run --nproc_per_node 2 tests/training/dist_scripts/accumulated_equivalence.py OUT.json

Each process holds a DDP-wrapped tiny model and two micro-batches of one global step (unequal
sizes in the unpaired case). It runs ``accumulation.step_coefficients`` with
``contrast_scope="global"`` on no-grad log-probs, then per micro-batch a forward with gradient
and the backward of the surrogate (the first under ``no_sync``, as the Trainer does; DDP
averages the gradients at the second). Rank 0 then computes the loss of ONE process on the
concatenated rows of all four micro-batches with an unwrapped copy, and writes the largest
loss and gradient differences.
"""
from __future__ import annotations

import copy
import json
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from rpo_tutorial.models.head import model_sequence_logps
from rpo_tutorial.models.loading import tiny_model
from rpo_tutorial.training.accumulation import step_coefficients, surrogate_loss
from rpo_tutorial.training.config import RPOConfig
from rpo_tutorial.training.objectives import PreferenceLogps, scoped_objective

VOCAB, LENGTH, DIM = 97, 7, 5


def micro_batch(num_chosen: int, num_rejected: int, paired: bool, generator: torch.Generator) -> dict:
    rows = num_chosen + num_rejected
    ids = torch.randint(1, VOCAB, (rows, LENGTH), generator=generator)
    labels = ids.clone()
    labels[:, :2] = -100
    return {"ids": ids, "labels": labels, "m": num_chosen, "paired": paired,
            "reference": -20 * torch.rand(rows, generator=generator), "embeddings": torch.randn(rows, DIM,
                                                                                              generator=generator)}


def logps(model, batch: dict) -> torch.Tensor:
    return model_sequence_logps(model, batch["ids"], torch.ones_like(batch["ids"]), batch["labels"])


def as_logps(batch: dict, policy: torch.Tensor) -> PreferenceLogps:
    m, counts = batch["m"], (batch["labels"][:, 1:] != -100).sum(1)
    return PreferenceLogps(policy[:m], policy[m:], batch["reference"][:m], batch["reference"][m:],
                           batch["embeddings"][:m], batch["embeddings"][m:], batch["paired"], counts[:m], counts[m:])


def whole(batches: list[dict]) -> dict:
    """All chosen rows (process by process, micro-batch by micro-batch), then all rejected rows."""
    keys = ("ids", "labels", "reference", "embeddings")
    chosen = {k: torch.cat([b[k][:b["m"]] for b in batches]) for k in keys}
    rejected = {k: torch.cat([b[k][b["m"]:] for b in batches]) for k in keys}
    return {**{k: torch.cat([chosen[k], rejected[k]]) for k in keys}, "m": sum(b["m"] for b in batches),
            "paired": batches[0]["paired"]}


def check(sizes: list[list[tuple[int, int]]], config: RPOConfig, start) -> dict:
    rank = dist.get_rank()
    generator = torch.Generator().manual_seed(99)  # the same global step on every process
    steps = [[micro_batch(m, n, config.is_paired, generator) for m, n in per_rank] for per_rank in sizes]
    mine = steps[rank]
    model = DistributedDataParallel(copy.deepcopy(start))
    with torch.no_grad():
        plan = step_coefficients([as_logps(b, logps(model, b)) for b in mine], config)
    values = []
    for index, batch in enumerate(mine):
        last = index == len(mine) - 1
        with (model.no_sync() if not last else torch.enable_grad()):
            loss = surrogate_loss(logps(model, batch), plan.coefficients[index], plan.output.loss, len(mine))
            loss.backward()
        values.append(loss.item())
    grads = {name: p.grad.clone() for name, p in model.module.named_parameters()}
    totals = [None, None]
    dist.all_gather_object(totals, sum(values))
    if rank != 0:
        return {}
    single = copy.deepcopy(start)
    everything = whole([batch for per_rank in steps for batch in per_rank])
    expected, _ = scoped_objective(as_logps(everything, logps(single, everything)),
                                   config.replace(contrast_scope="local"))
    expected.loss.backward()
    single_grads = {name: p.grad for name, p in single.named_parameters()}
    return {"losses": totals, "single_loss": expected.loss.item(),
            "max_grad_difference": max((grads[k] - single_grads[k]).abs().max().item() for k in grads),
            "max_grad": max(g.abs().max().item() for g in single_grads.values())}


def main() -> None:
    dist.init_process_group("gloo")
    start = tiny_model(VOCAB, hidden_size=16, num_layers=1, seed=0)
    results = {
        "paired": check([[(2, 2), (1, 1)], [(3, 3), (2, 2)]],
                        RPOConfig(loss="rpo", weighting="embedding", beta=0.5, contrast_scope="global",
                                  accumulate_contrast=True), start),
        "unpaired": check([[(2, 1), (1, 2)], [(0, 2), (3, 1)]],
                          RPOConfig(loss="rpo", paired=False, weighting="embedding", beta=0.5,
                                    contrast_scope="global", accumulate_contrast=True), start),
    }
    if dist.get_rank() == 0:
        with open(sys.argv[1], "w") as handle:
            json.dump(results, handle)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
