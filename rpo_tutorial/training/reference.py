"""The frozen reference policy: placed, sharded and computed exactly like the policy.

Log-ratios ``log pi(y|x) - log pi_ref(y|x)`` (paper Eq. 5) are exactly 0 before the first
optimizer step only if the reference runs the same arithmetic as the policy. Each launcher
has its own route (:func:`prepare_reference`):

=================  =========================================================  ====================
launcher           reference                                                  memory per GPU
=================  =========================================================  ====================
FSDP2              ``fully_shard`` with the policy's wrap policy, mesh and    2 N / G (bf16) or
                   mixed-precision policy; no optimizer state, no gradients   4 N / G (fp32)
DeepSpeed ZeRO-3   a DeepSpeed inference engine, sharded like the policy      2 N / G (bf16)
ZeRO-1/2, DDP, 1   a replicated copy on the device, in the policy's           4 N (fp32 weights)
process            parameter dtype, its forward under the same autocast
                   as the policy's (accelerate's bf16 wrapper)
=================  =========================================================  ====================

(N parameters, G processes.) Under FSDP2 mixed precision the policy's float32 shards are cast
to bf16 before every all-gather; the reference holds those bf16 values directly (half the
memory, the same arithmetic). Buffers (RoPE's ``inv_freq``) are never cast.

:func:`precompute_reference` runs the same prepared reference once over the data, each process
on its own share, with every process doing the same number of forwards (sharded models
all-gather inside each forward, so an extra batch on one process would hang the others). It
batches with the training collator and lays batches out as the run's ``ForwardPlan`` says
(which under mixed precision pads the one-off pass and every training step to one length), so
the stored log-probs are what a live reference computes (bit for bit on CPU).
"""
from __future__ import annotations

import copy
import math
import warnings
from types import MethodType

import torch

from rpo_tutorial.training.forward_plan import ForwardPlan


def cast_parameters(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast floating-point parameters (not buffers: RoPE frequencies stay float32) in place."""
    for parameter in model.parameters():
        if parameter.is_floating_point() and parameter.dtype != dtype:
            parameter.data = parameter.data.to(dtype)
    return model


def copy_buffers(source: torch.nn.Module, target: torch.nn.Module) -> None:
    """Give ``target`` the exact buffers of ``source`` (same names), e.g. float32 RoPE frequencies."""
    targets = dict(target.named_buffers())
    for name, buffer in source.named_buffers():
        if name in targets and targets[name].shape == buffer.shape:
            module_name, _, leaf = name.rpartition(".")
            module = target.get_submodule(module_name) if module_name else target
            persistent = leaf not in getattr(module, "_non_persistent_buffers_set", set())
            module.register_buffer(leaf, buffer.detach().clone(), persistent=persistent)


def parameter_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of the first floating-point parameter (float32 when there is none)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def prepare_reference(reference: torch.nn.Module, trainer) -> torch.nn.Module:
    """Freeze ``reference`` and place it as ``trainer`` places the policy (see the module docstring).

    Args:
        reference: the starting policy's weights (any device, any dtype).
        trainer: an ``RPOTrainer`` (its accelerator decides the route) whose model is the policy.
    """
    reference.eval()
    reference.requires_grad_(False)
    accelerator = trainer.accelerator
    if trainer.is_deepspeed_enabled:
        return deepspeed_reference(reference, accelerator)
    if trainer.is_fsdp_enabled:
        return fsdp_reference(reference, accelerator)
    policy_dtype = parameter_dtype(trainer.model)
    if parameter_dtype(reference) != policy_dtype:
        warnings.warn(f"the reference's parameters are {parameter_dtype(reference)} but the policy's are "
                      f"{policy_dtype}; casting them (log-ratios at step 0 are exactly 0 only if the reference "
                      "was the policy's own weights in its dtype)", stacklevel=2)
        cast_parameters(reference, policy_dtype)
    reference = reference.to(accelerator.device)
    return autocast_like_policy(reference, accelerator)


def autocast_like_policy(model: torch.nn.Module, accelerator) -> torch.nn.Module:
    """Wrap ``model.forward`` as accelerate wraps the policy's under bf16 / fp16 (autocast, fp32 outputs)."""
    if not accelerator.native_amp or getattr(model, "_reference_autocast", False):
        return model
    from accelerate.utils import convert_outputs_to_fp32, get_mixed_precision_context_manager

    autocast = get_mixed_precision_context_manager(accelerator.native_amp, accelerator.autocast_handler)
    forward = autocast(model.forward.__func__)
    model.forward = MethodType(convert_outputs_to_fp32(forward), model)
    model._reference_autocast = True
    return model


def fsdp_reference(reference: torch.nn.Module, accelerator) -> torch.nn.Module:
    """FSDP2: shard the frozen reference with the policy's plugin (wrap policy, mesh, mixed precision)."""
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model

    plugin = accelerator.state.fsdp_plugin
    if getattr(plugin, "fsdp_version", 1) != 2:
        raise ValueError("the frozen reference is sharded with FSDP2 only: set fsdp_version: 2 in the accelerate "
                         "config (configs/fsdp_mistral7b_8gpu.yaml does), or use --reference precomputed")
    policy_compute = getattr(plugin.mixed_precision_policy, "param_dtype", None)
    if policy_compute is not None:  # the policy's shards are cast to this dtype before each all-gather
        cast_parameters(reference, policy_compute)
    # The same function accelerate applies to the policy in Accelerator.prepare (FSDP2 path),
    # minus activation checkpointing and the optimizer: the reference never runs backward.
    sharded = fsdp2_prepare_model(accelerator, reference)
    units = [module for module in sharded.modules() if hasattr(module, "reshard")]
    # No backward follows, so units kept gathered after forward (the root, embeddings and head)
    # would stay gathered for good: reshard everything after each forward.
    def reshard(module, args, output) -> None:
        for unit in units:
            unit.reshard()

    sharded.register_forward_hook(reshard)
    return sharded


def deepspeed_reference(model: torch.nn.Module, accelerator) -> torch.nn.Module:
    """DeepSpeed: an inference engine, ZeRO-3 sharded like the policy, else a plain copy (stage 0).

    Not run in this repository's CI (DeepSpeed is not installed on the CPU machines).
    """
    import deepspeed

    config = copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
    if config.get("zero_optimization", {}).get("stage") != 3:
        config["zero_optimization"] = {"stage": 0}
    for key in ("optimizer", "scheduler"):
        config.pop(key, None)
    engine, *_ = deepspeed.initialize(model=model, config=config)
    engine.eval()
    return engine


def precompute_reference(trainer, reference: torch.nn.Module, examples: list[dict], collator, plan: ForwardPlan,
                         batch_size: int, progress: bool = True) -> list[dict]:
    """Reference log-probs of every example, computed as in training; each process does every W-th example.

    ``reference`` is placed with :func:`prepare_reference` (sharded under FSDP2 / ZeRO-3), so the
    pass never holds a full model per GPU. Each batch is the training ``collator``'s, on the
    trainer's device, in the layout of ``plan`` (the trainer's ``forward_plan``): the training
    step's forward. ``RPOTrainer`` calls this when given a reference with
    ``reference="precomputed"``; the per-batch work is ``models.logprobs.precompute_reference_logps``.
    Returns new example dicts (same order) carrying ``reference_chosen_logps`` /
    ``reference_rejected_logps`` (paired) or ``reference_logps``.
    """
    from rpo_tutorial.models.logprobs import precompute_reference_logps
    from rpo_tutorial.models.shared_prompt import collated_sequence_logps
    from rpo_tutorial.training.distributed import is_distributed, rank, world_size

    processes, me = world_size(), rank()
    share = examples[me::processes]
    batches = math.ceil(math.ceil(len(examples) / processes) / batch_size)  # the same count on every process

    def forward(model: torch.nn.Module, batch) -> torch.Tensor:
        return collated_sequence_logps(model, batch, plan.share_prompts, device=trainer.args.device)  # (M + N,)

    done = precompute_reference_logps(prepare_reference(reference, trainer), share or examples[:1], collator,
                                      batch_size, progress and me == 0, forward=forward, num_batches=batches)
    share = done if share else []  # a process with nothing to do still joined every forward
    if not is_distributed():
        return share
    shares = [None] * processes
    torch.distributed.all_gather_object(shares, share)
    gathered: list = [None] * len(examples)
    for index, part in enumerate(shares):
        gathered[index::processes] = part
    return gathered
