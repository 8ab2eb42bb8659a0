"""Cross-process helpers for the global contrast matrix (``contrast_scope="global"``).

The official RPO code builds the M x N contrast matrix from each device's own micro-batch, so
with 8 GPUs a chosen response is only ever contrasted with the 1/8 of the rejected responses
that happen to sit on its device. With ``contrast_scope="global"`` every process all-gathers
the chosen and rejected log-probs and prompt embeddings of every process and computes the loss
of the WHOLE global micro-batch:

1. sizes first (M_k and N_k may differ per process in unpaired data), then rows padded to the
   largest size, all-gathered, and unpadded;
2. the gathered copies carry no gradient, so each process puts its own rows (WITH gradient)
   back into their slot: process k's backward then yields g_k, the part of the global
   gradient that flows through its own rows; the true gradient is sum_k g_k;
3. DDP / FSDP / DeepSpeed AVERAGE gradients over the W processes, i.e. give (1/W) sum_k g_k,
   so :func:`scale_for_gradient_averaging` multiplies the gradient (not the logged value) by W.

The result equals one process running the concatenated batch (tested with 2 CPU processes).

Run it on CPU with ``torchrun --nproc_per_node 2 -m rpo_lab train ...`` (``accelerate launch``
with a ``use_cpu: true`` config starts gloo processes too, always under DDP) and on GPUs with
``accelerate launch --config_file configs/<ddp|fsdp|deepspeed>.yaml -m rpo_lab train ...``.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def all_gather_rows(local: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate every process's rows (dim 0, sizes may differ), keeping the local rows' gradient.

    Shape:
        local: ``(K_r, *rest)`` on process r (K_r may be 0; ``rest`` must match on every process)
        returns: ``(sum_r K_r, *rest)`` in rank order, and the offset of this process's rows in it
    """
    if not is_distributed():
        return local, 0
    count = torch.tensor([local.shape[0]], device=local.device, dtype=torch.long)
    counts = [torch.zeros_like(count) for _ in range(world_size())]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    padded = local.detach().new_zeros((max(sizes), *local.shape[1:]))  # (K_max, *rest)
    padded[: local.shape[0]] = local.detach()
    gathered = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded.contiguous())
    me = rank()
    pieces = [local if r == me else gathered[r][:size] for r, size in enumerate(sizes)]
    return torch.cat(pieces, dim=0), sum(sizes[:me])


def scale_for_gradient_averaging(loss: torch.Tensor, processes: int | None = None) -> torch.Tensor:
    """Same value as ``loss``, gradient multiplied by the number of processes W.

    Use it on a loss computed from globally gathered rows, each process holding the gradient of
    its own rows only: after the data-parallel AVERAGE over processes the parameters then
    receive sum_k g_k, the gradient of the global loss. Logged values stay unscaled.

    Shape:
        loss: (); returns ()
    """
    processes = world_size() if processes is None else processes
    if processes == 1:
        return loss
    return loss + (processes - 1) * (loss - loss.detach())  # value: loss; d/dtheta: W * dloss


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over processes (a copy; identity in a single process)."""
    values = values.clone()
    if is_distributed():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values
