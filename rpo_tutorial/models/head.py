"""log pi(label) only where labels exist: the LM head applied to response rows, chunked.

A causal LM's head turns every position's hidden state into V logits, yet a preference loss
reads one number per response token: ``logit[label] - logsumexp(logits)``. On SmolLM2-135M
(V = 49,152) the head and the log-softmax over ALL positions of a (B, T) batch are a large share
of a training step, and autograd keeps the float32 (B, T, V) logits for backward. Here:

1. the decoder body runs as usual (through the model's own ``forward``, so DDP, peft and
   accelerate's autocast wrappers keep working); a forward pre-hook on the output head
   (:func:`run_with_head_hook`) catches the final hidden states h (B, T, H) and hands the head
   an empty (B, 0, H) slice instead;
2. the K rows of h that predict a label (position t predicts token t + 1) are gathered;
3. :func:`label_token_logps` applies the head to those K rows in chunks of ``chunk_rows``.
   With gradients on, the chunks' float32 logits are kept for backward while their total stays
   under ``KEEP_LOGITS_BYTES`` (512 MiB: no recompute); chunks beyond the budget run under
   activation checkpointing, so backward keeps only h's rows and the head weight and recomputes
   one chunk of logits at a time (one extra head matmul in backward for those chunks).

Models whose logits are not a plain ``head(h)`` (soft-capping, logit scales) or whose head is
not an ``nn.Linear`` (a LoRA-wrapped head), and sharded engines (FSDP, DeepSpeed) use the full
logits and :func:`label_token_logps` on their rows instead: the same values, without the head
savings. Paired batches can also run each prompt once (``shared_prompt.py``), on top of this.
See ``benchmarks/step_benchmark.py`` for what this saves.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from rpo_tutorial.data.collate import IGNORE_INDEX

CHUNK_ELEMENTS = 2 ** 23  # float32 logits per chunk (32 MiB): rows per chunk = CHUNK_ELEMENTS // V
KEEP_LOGITS_BYTES = 512 * 2 ** 20  # float32 logits kept for backward (no recompute); chunks beyond it are checkpointed
# model types whose logits are exactly lm_head(final hidden state), no soft-capping or scaling
PLAIN_HEAD_MODEL_TYPES = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "phi3", "olmo", "olmo2", "smollm3")


def _rows_logps(hidden: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                targets: torch.Tensor) -> torch.Tensor:
    """log-softmax at the target of each row. Shape: hidden (K, H) or logits (K, V); returns (K,) float32."""
    logits = hidden if weight is None else F.linear(hidden, weight, bias)  # (K, V)
    logits = logits.float()
    picked = logits.gather(-1, targets[:, None]).squeeze(-1)  # (K,)
    return picked - torch.logsumexp(logits, dim=-1)  # (K,)


def label_token_logps(hidden: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None,
                      bias: torch.Tensor | None = None, chunk_rows: int | None = None,
                      keep_logits_bytes: int | None = None) -> torch.Tensor:
    """Per-row log pi(target) = logit[target] - logsumexp(logits), float32, in row chunks.

    With ``weight`` the rows are hidden states and the logits are ``hidden @ weight.T + bias``;
    without, the rows are already logits. Under autograd the first chunks keep their float32
    logits for backward while the kept total stays within ``keep_logits_bytes`` (default
    ``KEEP_LOGITS_BYTES``); later chunks are checkpointed (recomputed in backward, so backward
    never holds more than one of them). The values and gradients are the same either way.

    Shape:
        hidden: (K, H) with weight (V, H), or (K, V) logits; targets: (K,) long; returns (K,) float32
    """
    vocab = hidden.shape[-1] if weight is None else weight.shape[0]
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= vocab):
        raise ValueError(f"labels must be in [0, {vocab}) or {IGNORE_INDEX}, got values in "
                         f"[{int(targets.min())}, {int(targets.max())}]")
    rows = chunk_rows or max(1, CHUNK_ELEMENTS // max(vocab, 1))
    needs_graph = torch.is_grad_enabled() and (hidden.requires_grad or (weight is not None and weight.requires_grad))
    budget = KEEP_LOGITS_BYTES if keep_logits_bytes is None else keep_logits_bytes
    pieces, kept_bytes = [], 0
    for start in range(0, hidden.shape[0], rows):
        chunk, chunk_targets = hidden[start:start + rows], targets[start:start + rows]
        chunk_bytes = chunk.shape[0] * vocab * 4  # the chunk's float32 (rows, V) logits
        if needs_graph and kept_bytes + chunk_bytes > budget:  # over budget: recompute in backward
            pieces.append(checkpoint(_rows_logps, chunk, weight, bias, chunk_targets, use_reentrant=False))
        else:
            kept_bytes += chunk_bytes if needs_graph else 0
            pieces.append(_rows_logps(chunk, weight, bias, chunk_targets))
    if not pieces:
        return hidden.new_zeros(0, dtype=torch.float32)
    return torch.cat(pieces)  # (K,)


def label_positions(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """Where a next token is scored, and which one.

    Returns ``(mask, targets)``: mask (B, T-1) bool, True where position t predicts label t + 1;
    targets (K,) long, the labels at those positions in row-major order (K = mask.sum()).

    Shape:
        labels: (B, T) long
    """
    if labels.dim() != 2:
        raise ValueError(f"labels must be (B, T); got shape {tuple(labels.shape)}")
    mask = labels[:, 1:] != ignore_index  # (B, T-1)
    return mask, labels[:, 1:][mask]  # (K,)


def sum_per_row(token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scatter (K,) per-token values back to their rows and sum. Shape: mask (B, T-1); returns (B,)."""
    rows = mask.nonzero()[:, 0]  # (K,) row of each scored token, row-major like mask's selection
    totals = token_logps.new_zeros(mask.shape[0])  # (B,)
    return totals.index_add(0, rows, token_logps)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside DDP / accelerate / peft wrappers."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def plain_linear_head(model: torch.nn.Module) -> torch.nn.Linear | None:
    """The model's output head when the logits are exactly ``head(h)`` and the fast path is safe, else None."""
    inner = unwrap_model(model)
    config = getattr(inner, "config", None)
    if getattr(config, "model_type", None) not in PLAIN_HEAD_MODEL_TYPES:
        return None
    if any(getattr(config, name, None) not in (None, 1.0) for name in ("final_logit_softcapping", "logit_scale")):
        return None
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if type(head) is not torch.nn.Linear:  # LoRA-wrapped or custom heads take the full-logits path
        return None
    sharded = any(hasattr(p, "ds_id") or type(p).__name__ in ("DTensor", "FlatParameter") for p in head.parameters())
    return None if sharded else head


def run_with_head_hook(model: torch.nn.Module, head: torch.nn.Linear, on_hidden: Callable[[torch.Tensor], None],
                       **forward_kwargs) -> None:
    """Run ``model(**forward_kwargs)`` handing the final hidden states to ``on_hidden`` instead of the head.

    The head itself computes (B, 0, V) logits: nothing.

    Shape:
        on_hidden receives (B, T, H), the input of ``head``
    """
    called = []

    def catch(module: torch.nn.Linear, args: tuple) -> tuple:
        on_hidden(args[0])
        called.append(True)
        return (args[0][:, :0],)

    handle = head.register_forward_pre_hook(catch)
    try:
        model(**forward_kwargs)
    finally:
        handle.remove()
    if not called:
        raise RuntimeError(f"{type(unwrap_model(model)).__name__}'s forward never called its output head")


def hidden_sequence_logps(hidden: torch.Tensor, labels: torch.Tensor, head: torch.nn.Linear,
                          chunk_rows: int | None = None) -> torch.Tensor:
    """Summed float32 log pi(label) of each row from the final hidden states: the head on label rows only.

    Position t predicts label t + 1; the K positions that predict a label are gathered and
    :func:`label_token_logps` applies ``head`` to them (no (B, T, V) logits). Use it with any
    forward that yields the final hidden states (after the last norm), e.g. a model run on
    cached lower-layer features.

    Shape:
        hidden: (B, T, H); labels: (B, T) long, -100 where nothing is scored; returns (B,) float32
    """
    mask, targets = label_positions(labels)  # (B, T-1), (K,)
    token_logps = label_token_logps(hidden[:, :-1][mask], targets, head.weight, head.bias, chunk_rows)  # (K,)
    return sum_per_row(token_logps, mask)  # (B,)


def model_sequence_logps(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         labels: torch.Tensor, chunk_rows: int | None = None) -> torch.Tensor:
    """Summed float32 log pi(label) of each row, from ONE forward of ``model`` (see module docstring).

    Shape:
        input_ids, attention_mask, labels: (B, T); returns (B,) float32
    """
    if not (input_ids.shape == attention_mask.shape == labels.shape) or input_ids.dim() != 2:
        raise ValueError(f"input_ids, attention_mask and labels must all be (B, T); got {tuple(input_ids.shape)}, "
                         f"{tuple(attention_mask.shape)} and {tuple(labels.shape)}")
    head = plain_linear_head(model)
    if head is None:  # full logits, then the same per-row computation on the scored positions
        mask, targets = label_positions(labels)  # (B, T-1), (K,)
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits  # (B, T, V)
        return sum_per_row(label_token_logps(logits[:, :-1][mask], targets, chunk_rows=chunk_rows), mask)
    caught: dict[str, torch.Tensor] = {}

    def score_rows(hidden: torch.Tensor) -> None:  # (B, T, H): the final hidden states
        caught["logps"] = hidden_sequence_logps(hidden, labels, head, chunk_rows)  # (B,)

    run_with_head_hook(model, head, score_rows, input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return caught["logps"]
