"""Let accelerate run FSDP on CPU processes (gloo), for the 2-process FSDP tests only.

accelerate 1.15 turns the FSDP plugin on only for accelerator devices: in
``AcceleratorState.__init__`` (accelerate/state.py, the ``elif self.distributed_type in
[DistributedType.MULTI_GPU, DistributedType.MULTI_MLU, ...]`` branch that sets
``self.distributed_type = DistributedType.FSDP``) ``MULTI_CPU`` is not in the list, so with CPU
processes a run that asked for FSDP silently becomes DDP. FSDP2's ``fully_shard`` itself works
on CPU tensors with gloo. :func:`enable` wraps that ``__init__`` and, when a plugin was given
and the state says ``MULTI_CPU``, does what the GPU branch does. Never imported by the package.
"""
from __future__ import annotations

import functools


def enable() -> None:
    """Patch ``AcceleratorState.__init__`` in this process (idempotent)."""
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    original = AcceleratorState.__init__
    if getattr(original, "_cpu_fsdp", False):
        return

    @functools.wraps(original)
    def init(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP  # what the GPU branch of the same method does
            if self._mixed_precision != "no":
                fsdp_plugin.set_mixed_precision(self._mixed_precision)
            self.fsdp_plugin = fsdp_plugin

    init._cpu_fsdp = True
    AcceleratorState.__init__ = init
