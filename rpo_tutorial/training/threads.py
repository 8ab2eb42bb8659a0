"""How many torch CPU threads to use now: every core when the machine is idle, fewer when it is busy.

Measured on the 2-core development machine: with other processes keeping both cores busy, one
thread ran a training step ~2.5x and a sampling step ~10x faster than two, because PyTorch's
OpenMP threads wait for each other at every operation. Every command (``train``, ``sft``,
``evaluate``, ``study``, ``demo``) picks its thread count with :func:`choose_num_threads` unless
told otherwise: once (:func:`apply_num_threads`), or before each stage of a long job
(:func:`load_aware_threads`, the demo).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterator


def choose_num_threads(cores: int | None = None, load: float | None = None, own_threads: int = 0) -> int:
    """Torch threads for now: every core when the machine is idle, one per core other processes leave free.

    Args:
        cores: CPU cores (default ``os.cpu_count()``).
        load: 1-minute load average (default the system's).
        own_threads: threads this process kept busy lately; they are part of ``load`` and not
            counted as other processes.
    """
    cores = cores if cores is not None else os.cpu_count() or 1
    if load is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    others = max(0.0, load - own_threads)
    return max(1, min(cores, cores - int(others + 0.5)))


def apply_num_threads(requested: int | None = None) -> int:
    """Set torch's thread count to ``requested``, or to :func:`choose_num_threads` when None; returns it."""
    import torch

    threads = requested if requested is not None else choose_num_threads(own_threads=0)
    torch.set_num_threads(max(1, int(threads)))
    return torch.get_num_threads()


@contextmanager
def load_aware_threads(requested: int | None = None) -> Iterator[Callable[[], int]]:
    """Torch threads for a long job: ``requested``, or by machine load and never more than the caller had.

    Yields ``retune()``, which re-chooses the count for the load now (call it between stages;
    a no-op when ``requested`` is given) and returns it. The caller's count is restored on exit.
    """
    import torch

    previous = torch.get_num_threads()

    def retune() -> int:
        if requested is None:  # this process's own threads count as its own load, not another's
            torch.set_num_threads(min(previous, choose_num_threads(own_threads=torch.get_num_threads())))
        return torch.get_num_threads()

    torch.set_num_threads(requested or min(previous, choose_num_threads()))
    try:
        yield retune
    finally:
        torch.set_num_threads(previous)
