"""2 processes x 2 micro-batches of accumulated global contrast == 1 process on all 4 micro-batches' rows.

    python -m torch.distributed.run --nproc_per_node 2 tests/training/dist_scripts/accumulated_equivalence.py OUT.json

Each process holds a DDP-wrapped tiny model and two micro-batches of one global step (unequal
sizes in the unpaired case). It runs ``accumulation.step_coefficients`` with
``contrast_scope="global"`` on no-grad log-probs, then per micro-batch a forward with gradient
and the backward of the surrogate (the first under ``no_sync``, as the Trainer does; DDP
averages the gradients at the second). Rank 0 then computes the loss of ONE process on the
concatenated rows of all four micro-batches with an unwrapped copy, and writes the largest
loss and gradient differences. The micro-batches are those of tests/training/test_accumulation.py
(``helpers.make_micro_batch``).
"""
from __future__ import annotations

import copy
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from helpers import VOCAB, as_logps, finish, gradients, logps_of, make_micro_batch, whole_batch
from rpo_tutorial.models.loading import tiny_model
from rpo_tutorial.training.accumulation import step_coefficients, surrogate_loss
from rpo_tutorial.training.config import RPOConfig
from rpo_tutorial.training.objectives import scoped_objective


def check(sizes: list[list[tuple[int, int]]], config: RPOConfig, start) -> dict:
    rank = dist.get_rank()
    generator = torch.Generator().manual_seed(99)  # the same global step on every process
    steps = [[make_micro_batch(m, n, config.is_paired, generator) for m, n in per_rank] for per_rank in sizes]
    mine = steps[rank]
    model = DistributedDataParallel(copy.deepcopy(start))
    with torch.no_grad():
        plan = step_coefficients([as_logps(b, logps_of(model, b)) for b in mine], config)
    values = []
    for index, batch in enumerate(mine):
        last = index == len(mine) - 1
        with (model.no_sync() if not last else torch.enable_grad()):
            loss = surrogate_loss(logps_of(model, batch), plan.coefficients[index], plan.output.loss, len(mine))
            loss.backward()
        values.append(loss.item())
    grads = gradients(model.module)
    totals = [None, None]
    dist.all_gather_object(totals, sum(values))
    if rank != 0:
        return {}
    single = copy.deepcopy(start)
    everything = whole_batch([batch for per_rank in steps for batch in per_rank])
    expected, _ = scoped_objective(as_logps(everything, logps_of(single, everything)),
                                   config.replace(contrast_scope="local"))
    expected.loss.backward()
    single_grads = gradients(single)
    return {"losses": totals, "single_loss": expected.loss.item(),
            "max_grad_difference": max((grads[k] - single_grads[k]).abs().max().item() for k in grads),
            "max_grad": max(g.abs().max().item() for g in single_grads.values())}


def main() -> None:
    dist.init_process_group("gloo")
    start = tiny_model(VOCAB, hidden_size=16, num_layers=1, seed=0)
    finish({
        "paired": check([[(2, 2), (1, 1)], [(3, 3), (2, 2)]],
                        RPOConfig(loss="rpo", weighting="embedding", beta=0.5, contrast_scope="global",
                                  accumulate_contrast=True), start),
        "unpaired": check([[(2, 1), (1, 2)], [(0, 2), (3, 1)]],
                          RPOConfig(loss="rpo", paired=False, weighting="embedding", beta=0.5,
                                    contrast_scope="global", accumulate_contrast=True), start),
    }, sys.argv[1])


if __name__ == "__main__":
    main()
