"""Will this run fit in memory? One line printed when ``rpo-tutorial train`` / ``sft`` starts.

The estimate reuses the arithmetic of :mod:`rpo_lab.estimates` (weights, gradients,
optimizer state, reference copy, activations, logits) for one process and one micro-batch, in
float32 unless ``bf16``. It is compared with what is free now: ``MemAvailable`` on a CPU, the
free memory of the GPU on CUDA. When the estimate does not fit and gradient checkpointing is
off, the line suggests ``--gradient-checkpointing`` with its estimate. (The reliability sweep
saw DPO on SmolLM2-135M with 8 pairs of <= 256 tokens peak at 10.3 GB on a CPU, and 6.5 GB with
checkpointing; this estimate, which puts every sequence at max_length, says 15.2 and 8.0 GB: an
upper bound, on the safe side.)
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from rpo_tutorial.training.config import TINY_MODEL_PREFIX, RPOConfig
from rpo_lab.estimates import GB, DecoderShape, activation_bytes, parameter_count, training_state_bytes

_ADAM_STATES = 2  # AdamW keeps two running averages; RMSprop one, SGD none (counting two is the safe side)
_OVERHEAD_BYTES = 1.5 * GB  # the Python process, torch, tokenizer, data: measured about 1-2 GB on a CPU


def decoder_shape(model_config) -> DecoderShape:
    """The :class:`DecoderShape` of a transformers model config (Llama / Mistral / SmolLM2 style)."""
    heads = model_config.num_attention_heads
    return DecoderShape(hidden_size=model_config.hidden_size, intermediate_size=model_config.intermediate_size,
                        num_layers=model_config.num_hidden_layers, num_heads=heads,
                        num_kv_heads=getattr(model_config, "num_key_value_heads", None) or heads,
                        vocab_size=model_config.vocab_size,
                        tie_embeddings=bool(getattr(model_config, "tie_word_embeddings", False)))


def model_shape(config: RPOConfig) -> DecoderShape | None:
    """The shape of ``config.model`` from its config.json only (no weights); None when unavailable."""
    if config.model.startswith(TINY_MODEL_PREFIX):
        return DecoderShape(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                            vocab_size=49152, tie_embeddings=True)  # models.tiny_model's defaults
    try:
        from transformers import AutoConfig

        from rpo_tutorial.models.loading import resolve_model_path

        return decoder_shape(AutoConfig.from_pretrained(resolve_model_path(config.model)))
    except Exception:  # offline hub id, unusual architecture: no estimate rather than a failed run
        return None


def estimate_bytes(shape: DecoderShape, config: RPOConfig) -> float:
    """Peak bytes of one process for one micro-batch of ``config`` (see the module docstring)."""
    value_bytes = 2 if config.bf16 else 4
    num_params = parameter_count(shape)
    state = training_state_bytes(num_params, optimizer_states=_ADAM_STATES)
    if config.reference == "lora":
        state["gradients"] = state["optimizer"] = 0.0  # adapters only: a small fraction of the model
    reference = num_params * value_bytes if config.needs_reference and config.reference in ("model", "auto") \
        else 0.0  # auto: at most a frozen model
    sides = 1 if config.loss == "sft" or not config.is_paired else 2
    sequences = config.per_device_train_batch_size * sides
    activations = activation_bytes(shape, sequences, config.max_length, config.gradient_checkpointing, value_bytes)
    return sum(state.values()) + reference + sum(activations.values()) + _OVERHEAD_BYTES


def available_bytes(device: str | None = None) -> float | None:
    """Free memory now: the GPU's on CUDA, else ``MemAvailable`` from /proc/meminfo; None if unknown."""
    import torch

    if (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda"):
        free, _ = torch.cuda.mem_get_info()
        return float(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def memory_line(config: RPOConfig, available: float | None = None, shape: DecoderShape | None = None) -> str:
    """``"memory estimate: ~X GB per process, Y GB free"`` plus a suggestion when it will not fit."""
    shape = shape or model_shape(config)
    if shape is None:
        return f"memory estimate: unavailable (cannot read the configuration of {config.model!r})"
    needed = estimate_bytes(shape, config)
    available = available_bytes() if available is None else available
    line = f"memory estimate: ~{needed / GB:.1f} GB per process"
    if available is None:
        return line
    line += f", {available / GB:.1f} GB free"
    if needed <= available:
        return line
    if not config.gradient_checkpointing:
        lower = estimate_bytes(shape, replace(config, gradient_checkpointing=True))
        return line + (f"; it may not fit: add --gradient-checkpointing (~{lower / GB:.1f} GB), or lower "
                       "--per-device-train-batch-size / --max-length")
    return line + "; it may not fit: lower --per-device-train-batch-size or --max-length"
