"""Precision, activation checkpointing and batch size for the hardware a notebook finds.

Every notebook that trains or samples decides these once, at the top, and prints the decision:

    from rpo_lab.hardware import detect_device, plan_training, SMOLLM2_135M
    plan = plan_training(detect_device(), SMOLLM2_135M, pairs=8, max_length=256)
    print(plan.describe())   # e.g. "CPU: fp32, no activation checkpointing, 8 pairs per step (...)"

The rules:

* **Precision.** bf16 only where it is fast: a CUDA GPU of compute capability 8.0 or newer (A100,
  L4, H100). A T4 (7.5) has no native bf16 (torch may emulate it, slowly), so it gets fp16
  mixed precision where the trainer supports it (TRL / transformers' ``fp16=True``) and fp32
  otherwise. A CPU gets fp32: bf16 autocast on a CPU without native bf16 kernels (most laptops,
  the project's AMD EPYC) ran a TRL step about 17x slower than fp32.
* **Checkpointing and batch.** From the project's memory estimates
  (:mod:`rpo_lab.estimates`: weights, gradients, AdamW state, a frozen reference,
  activations, logits): off when the run fits in ``MEMORY_HEADROOM`` of the device's memory, on
  when only the checkpointed run fits, and the batch halved until it fits. These are estimates
  (the estimate puts every sequence at ``max_length``: an upper bound), not measurements.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from rpo_lab.estimates import DecoderShape, activation_bytes, parameter_count, training_state_bytes

MEMORY_HEADROOM = 0.8  # plan for this share of the device's memory (CUDA context, allocator, fragmentation)
PRECISIONS = ("bf16", "fp16", "fp32")
ADAMW_STATES = 2  # AdamW's two running averages per trainable parameter

# transformers config.json values of the models the notebooks train.
SMOLLM2_135M = DecoderShape(hidden_size=576, intermediate_size=1536, num_layers=30, num_heads=9, num_kv_heads=3,
                            vocab_size=49152, tie_embeddings=True)
SMOLLM2_360M = DecoderShape(hidden_size=960, intermediate_size=2560, num_layers=32, num_heads=15, num_kv_heads=5,
                            vocab_size=49152, tie_embeddings=True)


@dataclass(frozen=True)
class Device:
    """What the planner needs to know about one device."""

    kind: str  # "cuda" or "cpu"
    name: str  # e.g. "Tesla T4", or the CPU's description
    memory_bytes: float  # total memory of the GPU; available RAM on a CPU
    compute_capability: tuple[int, int] | None = None  # CUDA only, e.g. (7, 5) for a T4

    @property
    def native_bf16(self) -> bool:
        """Fast bfloat16 matmuls: CUDA compute capability 8.0 or newer."""
        return self.kind == "cuda" and self.compute_capability is not None and self.compute_capability >= (8, 0)


def device_from_properties(properties) -> Device:
    """A :class:`Device` from ``torch.cuda.get_device_properties(i)`` (or anything with its fields)."""
    return Device("cuda", properties.name, float(properties.total_memory), (properties.major, properties.minor))


def _available_ram() -> float:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 8e9  # unknown: a laptop's worth


def detect_device() -> Device:
    """The first CUDA GPU if there is one, else the CPU (with the RAM available now)."""
    import torch

    if torch.cuda.is_available():
        return device_from_properties(torch.cuda.get_device_properties(0))
    return Device("cpu", f"CPU ({os.cpu_count()} cores)", _available_ram())


@dataclass(frozen=True)
class TrainingPlan:
    """The decisions for one training run on one device."""

    device: Device
    precision: str  # "bf16" | "fp16" | "fp32": mixed precision with float32 master weights, or none
    gradient_checkpointing: bool  # recompute activations in backward
    pairs: int  # preference pairs per step (the contrast matrix is pairs x pairs)
    estimated_bytes: float  # the memory estimate of this plan

    @property
    def torch_dtype(self):
        """The dtype to load a model in for inference (sampling, scoring) under this plan."""
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[self.precision]

    def trainer_flags(self, fp16_supported: bool = True) -> dict[str, bool]:
        """``bf16`` / ``fp16`` / ``gradient_checkpointing`` for transformers / TRL arguments, all explicit."""
        fp16 = self.precision == "fp16" and fp16_supported
        return {"bf16": self.precision == "bf16", "fp16": fp16, "gradient_checkpointing": self.gradient_checkpointing}

    def describe(self) -> str:
        checkpointing = "activation checkpointing" if self.gradient_checkpointing else "no activation checkpointing"
        return (f"{self.device.name}: {self.precision}, {checkpointing}, {self.pairs} pairs per step "
                f"(memory estimate {self.estimated_bytes / 1e9:.1f} of {self.device.memory_bytes / 1e9:.1f} GB)")


def choose_precision(device: Device) -> str:
    """bf16 on CUDA with native bf16, fp16 on older CUDA GPUs (T4, V100), fp32 on a CPU."""
    if device.kind == "cuda":
        return "bf16" if device.native_bf16 else "fp16"
    return "fp32"


def training_bytes(shape: DecoderShape, pairs: int, max_length: int, precision: str, checkpointing: bool,
                   trainable_fraction: float = 1.0, reference: bool = True) -> float:
    """Estimated peak bytes of one training step: float32 weights, gradients and AdamW state of the trained

    share of the model, a frozen reference in the compute precision, and the activations of
    ``2 * pairs`` sequences of ``max_length`` tokens (:func:`rpo_lab.estimates.activation_bytes`).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if not 0 < trainable_fraction <= 1:
        raise ValueError(f"trainable_fraction must be in (0, 1], got {trainable_fraction!r}")
    value_bytes = 4 if precision == "fp32" else 2
    num_params = parameter_count(shape)
    state = training_state_bytes(num_params, optimizer_states=ADAMW_STATES)
    trained = state["gradients"] + state["optimizer"]
    total = state["weights"] + trainable_fraction * trained + (num_params * value_bytes if reference else 0.0)
    return total + sum(activation_bytes(shape, 2 * pairs, max_length, checkpointing, value_bytes).values())


def plan_training(device: Device, shape: DecoderShape, pairs: int, max_length: int,
                  trainable_fraction: float = 1.0, precision: str | None = None) -> TrainingPlan:
    """Precision, checkpointing and pairs per step for ``device`` (see the module docstring)."""
    if pairs < 1 or max_length < 1:
        raise ValueError(f"pairs and max_length must be positive, got {pairs!r} and {max_length!r}")
    precision = precision or choose_precision(device)
    budget = MEMORY_HEADROOM * device.memory_bytes
    while True:
        for checkpointing in (False, True):
            needed = training_bytes(shape, pairs, max_length, precision, checkpointing, trainable_fraction)
            if needed <= budget or (pairs == 1 and checkpointing):
                return TrainingPlan(device, precision, checkpointing, pairs, needed)
        pairs //= 2


# ---- the colab preset on Colab's GPUs (estimates; never measured here: no GPU) -------------------
COLAB_GPUS = {  # name -> (memory in bytes, precision the package trainer uses there, dense peak FLOP/s)
    "T4": (16e9, "fp32", 8.1e12),  # no native bf16 and RPOConfig has no fp16: fp32 (8.1 TFLOP/s fp32)
    "L4": (24e9, "bf16", 121e12),  # bf16 tensor cores, dense
    "A100 40GB": (40e9, "bf16", 312e12),
}
ASSUMED_UTILIZATION = 0.3  # share of peak a 360M model reaches (an assumption, not a measurement)


def colab_preset_estimates(utilization: float = ASSUMED_UTILIZATION) -> list[dict]:
    """Memory and optimizer-step time of ``get_preset("colab")`` on each of :data:`COLAB_GPUS`.

    Memory: :func:`rpo_lab.memory_hint.estimate_bytes` (what ``rpo-tutorial train``
    prints at start). Time: :func:`rpo_lab.estimates.training_flops` of one optimizer
    step's tokens (every sequence at ``max_length``), plus the extra no-grad policy forward of
    ``accumulate_contrast`` (2 N per token), at ``utilization`` of the GPU's peak.
    """
    from rpo_tutorial.training.config import get_preset
    from rpo_lab.estimates import training_flops
    from rpo_lab.memory_hint import estimate_bytes

    rows = []
    for gpu, (memory, precision, peak) in COLAB_GPUS.items():
        config = get_preset("colab", bf16=precision == "bf16")
        num_params = parameter_count(SMOLLM2_360M)
        tokens = 2 * config.per_device_train_batch_size * config.max_length * config.gradient_accumulation_steps
        flops = training_flops(num_params, tokens, recompute=config.gradient_checkpointing)
        flops += 2 * num_params * tokens if config.accumulate_contrast else 0.0
        rows.append({"gpu": gpu, "precision": precision, "memory_gb": estimate_bytes(SMOLLM2_360M, config) / 1e9,
                     "gpu_memory_gb": memory / 1e9, "step_seconds": flops / (peak * utilization),
                     "tokens_per_step": tokens})
    return rows
