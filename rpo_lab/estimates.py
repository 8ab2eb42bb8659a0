"""Back-of-the-envelope memory and time estimates for training a decoder-only model (notebook 05).

Everything here is arithmetic on parameter counts and batch shapes, so a reader can check each
number by hand. The worked example is the paper's run: Mistral-7B, 8 GPUs, FSDP full shard,
bf16 compute with float32 master weights, RMSprop, 8 pairs (16 sequences) of up to 512 tokens
per GPU, activation checkpointing; the frozen reference's cost depends on the launcher
(:func:`reference_bytes`).

    from rpo_lab.estimates import MISTRAL_7B, parameter_count, per_gpu_memory
    n = parameter_count(MISTRAL_7B)                        # 7,241,732,096
    per_gpu_memory(MISTRAL_7B, num_gpus=8, sequences=16, sequence_length=512)             # FSDP2
    per_gpu_memory(MISTRAL_7B, num_gpus=8, sequences=16, sequence_length=512, launcher="zero3")

The numbers are estimates: allocator fragmentation, CUDA context (~0.5-1 GB), communication
buffers and the attention kernel's own workspace come on top.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

GB = 1e9  # decimal gigabytes, as GPU vendors count


@dataclass(frozen=True)
class DecoderShape:
    """The sizes of a Llama / Mistral style decoder (grouped-query attention, SwiGLU MLP)."""

    hidden_size: int  # d
    intermediate_size: int  # f, width of the SwiGLU MLP
    num_layers: int  # L
    num_heads: int  # query heads
    num_kv_heads: int  # key / value heads (grouped-query attention)
    vocab_size: int  # V
    tie_embeddings: bool = False  # the output projection reuses the input embedding

    @property
    def kv_size(self) -> int:
        """Width of the key (and of the value) projection: d * kv_heads / heads."""
        return self.hidden_size * self.num_kv_heads // self.num_heads


MISTRAL_7B = DecoderShape(hidden_size=4096, intermediate_size=14336, num_layers=32, num_heads=32,
                          num_kv_heads=8, vocab_size=32000)  # mistralai/Mistral-7B-v0.1 config.json


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")


def layer_parameter_count(shape: DecoderShape) -> int:
    """Parameters of one decoder layer: q, k, v, o projections, the SwiGLU MLP, two RMSNorms."""
    d, f, kv = shape.hidden_size, shape.intermediate_size, shape.kv_size
    attention = d * d + 2 * d * kv + d * d  # q (d x d), k and v (d x kv), o (d x d); no biases
    mlp = 3 * d * f  # gate, up (d x f) and down (f x d)
    return attention + mlp + 2 * d  # + input and post-attention RMSNorm weights


def parameter_count(shape: DecoderShape) -> int:
    """Total parameters: embeddings, L layers, the final norm and (untied) the output projection."""
    embeddings = shape.vocab_size * shape.hidden_size
    output = 0 if shape.tie_embeddings else embeddings
    return embeddings + shape.num_layers * layer_parameter_count(shape) + shape.hidden_size + output


def training_state_bytes(num_params: int, num_gpus: int = 1, weight_bytes: int = 4, gradient_bytes: int = 4,
                         optimizer_states: int = 1, state_bytes: int = 4) -> dict[str, float]:
    """Per-GPU bytes of weights, gradients and optimizer state, sharded evenly over ``num_gpus``.

    Defaults: float32 master weights and gradients and RMSprop's one float32 running average of
    squared gradients (Adam would be ``optimizer_states=2``). FSDP full shard / ZeRO-3 split all
    three; plain DDP is ``num_gpus=1`` (every GPU holds everything).
    """
    _check_positive(num_params=num_params, num_gpus=num_gpus)
    per_gpu = num_params / num_gpus
    return {"weights": per_gpu * weight_bytes, "gradients": per_gpu * gradient_bytes,
            "optimizer": per_gpu * optimizer_states * state_bytes}


def activation_bytes(shape: DecoderShape, sequences: int, sequence_length: int, checkpointing: bool = True,
                     value_bytes: int = 2) -> dict[str, float]:
    """Per-GPU activation bytes of one micro-batch (bf16 values; log-softmax in float32).

    With checkpointing only each layer's input (tokens x d) is kept, plus the working set of ONE
    layer being recomputed in backward; without it every layer keeps its working set. The
    working set counts, per token, the bf16-sized values a Llama / Mistral layer as written in
    ``transformers`` saves for backward: the two RMSNorms computed in float32 (input, float32
    copy, normalised product, output: 12 d), q and the attention output (2 d), k and v repeated
    to every query head for SDPA (2 d) plus the un-repeated k and v (2 kv), and the MLP's gate,
    up, activation and product (4 f): 16 d + 2 kv + 4 f. SDPA / flash attention stores no
    tokens x tokens matrix. Logits: 16 bytes per token and vocabulary entry (bf16 logits, their
    float32 copy, the log-softmax, its gradient, the bf16 gradient).

    Measured on an H200 (torch 2.11, a Mistral-7B-shaped layer, 16 x 512 tokens): one layer
    saved 2.048 GB (this formula: 2.047 GB); logits forward + backward peaked at 4.19 GB
    (formula: 4.19 GB).
    """
    _check_positive(sequences=sequences, sequence_length=sequence_length)
    tokens = sequences * sequence_length
    d, f, kv = shape.hidden_size, shape.intermediate_size, shape.kv_size
    layer_working_set = tokens * (16 * d + 2 * kv + 4 * f) * value_bytes
    if checkpointing:
        stored = {"layer_inputs": shape.num_layers * tokens * d * value_bytes, "one_layer_recompute": layer_working_set}
    else:
        stored = {"all_layers": shape.num_layers * layer_working_set}
    return {**stored, "logits": tokens * shape.vocab_size * 16}


LAUNCHERS = ("fsdp", "zero3", "ddp")


def reference_bytes(num_params: int, num_gpus: int, launcher: str = "fsdp", reference: str = "model") -> float:
    """Per-GPU bytes of the frozen reference under each launcher (``training/reference.py``).

    FSDP2 and ZeRO-3 shard it like the policy and hold the bf16 values the policy computes with:
    2 N / G. DDP (and ZeRO-1/2) keeps a replicated copy in the policy's float32 parameter dtype,
    so that its arithmetic matches the policy's under autocast: 4 N. Precomputed log-probs: 0.
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
    if reference not in ("model", "precomputed"):
        raise ValueError(f"reference must be 'model' or 'precomputed', got {reference!r}")
    if reference == "precomputed":
        return 0.0
    return num_params * 2 / num_gpus if launcher in ("fsdp", "zero3") else num_params * 4.0


def per_gpu_memory(shape: DecoderShape, num_gpus: int, sequences: int, sequence_length: int,
                   reference: str = "model", checkpointing: bool = True, optimizer_states: int = 1,
                   launcher: str = "fsdp") -> dict[str, float]:
    """Every per-GPU term in bytes, and their ``"total"``, for training on ``num_gpus`` GPUs.

    Args:
        sequences: sequences per GPU and micro-batch (chosen + rejected: twice the pairs).
        reference: ``"model"``: a frozen copy (see :func:`reference_bytes`); ``"precomputed"``:
            reference log-probs stored with the data, no second model in memory.
        launcher: ``"fsdp"`` (FSDP2 full shard, float32 master weights, bf16 all-gathers),
            ``"zero3"`` (DeepSpeed ZeRO-3 with bf16: bf16 weights and gradients, float32 master
            copy and optimizer state, all sharded) or ``"ddp"`` (everything replicated).
    """
    num_params = parameter_count(shape)
    layer = layer_parameter_count(shape)
    if launcher == "zero3":
        terms = {"weights": 2 * num_params / num_gpus, "gradients": 2 * num_params / num_gpus,
                 "optimizer": (4 + 4 * optimizer_states) * num_params / num_gpus}  # master copy + states
    else:
        terms = training_state_bytes(num_params, 1 if launcher == "ddp" else num_gpus,
                                     optimizer_states=optimizer_states)
    terms["reference"] = reference_bytes(num_params, num_gpus, launcher, reference)
    if launcher != "ddp":  # bf16 copies of the current and the prefetched layer, and the output head
        # that FSDP2 keeps gathered from the end of forward to the start of backward
        head = 0 if shape.tie_embeddings else shape.vocab_size * shape.hidden_size * 2
        terms["gathered_layers"] = 2 * layer * 2 + head
    terms.update(activation_bytes(shape, sequences, sequence_length, checkpointing))
    terms["total"] = sum(terms.values())
    return terms


def host_memory_per_node(num_params: int, processes: int, ram_efficient: bool = True,
                         reference: str = "model") -> float:
    """Host RAM (bytes) while the models load: float32 policy + bf16 reference per loading process.

    With RAM-efficient loading (``fsdp_cpu_ram_efficient_loading: true``) only rank 0 reads the
    weights and the others build empty models; without it every process holds both.
    """
    _check_positive(num_params=num_params, processes=processes)
    per_process = num_params * 4 + (num_params * 2 if reference == "model" else 0)
    return per_process * (1 if ram_efficient else processes)


def training_flops(num_params: int, tokens: float, reference_forward: bool = True, recompute: bool = True) -> float:
    """FLOPs of training on ``tokens`` tokens: 6 N per token (forward 2 N, backward 4 N),

    plus 2 N for the recomputed forward under activation checkpointing, plus 2 N for the
    reference model's forward (done live or once beforehand: the same count).
    """
    _check_positive(num_params=num_params, tokens=tokens)
    per_token = 6 + (2 if recompute else 0) + (2 if reference_forward else 0)
    return per_token * num_params * tokens


def optimizer_steps(num_rows: int, global_batch: int, epochs: float = 1.0) -> int:
    """Optimizer steps of ``epochs`` passes; the last, smaller batch still counts (no drop_last)."""
    _check_positive(num_rows=num_rows, global_batch=global_batch, epochs=epochs)
    return math.ceil(math.ceil(num_rows / global_batch) * epochs)


def training_hours(flops: float, num_gpus: int, peak_flops_per_gpu: float, utilization: float = 0.4) -> float:
    """Wall-clock hours at ``utilization`` of the GPUs' peak (model FLOPs utilisation, MFU)."""
    _check_positive(flops=flops, num_gpus=num_gpus, peak_flops_per_gpu=peak_flops_per_gpu)
    if not 0 < utilization <= 1:
        raise ValueError(f"utilization must be in (0, 1], got {utilization!r}")
    return flops / (num_gpus * peak_flops_per_gpu * utilization) / 3600
