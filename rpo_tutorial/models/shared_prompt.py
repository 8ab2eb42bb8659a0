"""Paired batches: each prompt's forward ONCE, both responses on top of its key/value cache.

A paired batch stacks M chosen rows and M rejected rows, and chosen row i and rejected row i
begin with the same prompt (the -100 prefix of their labels): the plain forward computes every
prompt twice. :func:`shared_prompt_sequence_logps` instead runs

1. a prompt pass over the M prompts, LEFT-padded to length P, with ``use_cache=True``: the
   key/value cache of every layer, and the final hidden state of each prompt's last token, which
   predicts the first token of both its responses;
2. a response pass over the 2M responses, RIGHT-padded to length R, on top of the cache repeated
   for the two halves (``prompt_of_row``), with ``attention_mask = cat(prompt_mask, response_mask)``
   (B, P + R). Gradients flow through the cache into the prompt pass.

Each token keeps its position in the original row (``position_ids``), so RoPE sees the same
positions as in the one-forward path; left-padded prompts end where the responses begin, so the
index distance between any two tokens is their true distance (sliding-window masks agree too).
The left padding's query rows attend to nothing; sdpa (torch >= 2.5) returns zeros for them and
eager attention a finite average, so no NaN reaches the real rows, forward or backward.
The LM head runs on the response-predicting rows only (``head.label_token_logps``). The values
equal those of ``head.model_sequence_logps`` up to float rounding (the sums and matmuls are
grouped differently); ``tests/models/test_shared_prompt.py`` checks values and gradients.

Whether a model may take this path is decided once per run (``training.forward_plan``, from
:func:`shared_prompt_problem` and the run's settings); :func:`prompt_sharing_sequence_logps` then
follows that decision, taking one forward (``head.model_sequence_logps``) only for a batch whose
rows do not share their prompts (:func:`split_shared_prompts`).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Mapping

import torch

from rpo_tutorial.data.collate import IGNORE_INDEX
from rpo_tutorial.models.head import (
    label_token_logps,
    model_sequence_logps,
    plain_linear_head,
    run_with_head_hook,
    sum_per_row,
    unwrap_model,
)

# RoPE decoders whose attention reads a transformers DynamicCache as tested here (tests/models/test_shared_prompt.py)
SHARED_PROMPT_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")  # flash-attention, flex and others take the one-forward path
# sharded engines: not tested with two forwards per backward (DDP is: tests/training/test_distributed.py)
ENGINE_WRAPPERS = ("FullyShardedDataParallel", "DeepSpeedEngine")


@dataclass(frozen=True)
class SharedPromptBatch:
    """A paired batch laid out as M left-padded prompts and B = 2M right-padded responses."""

    prompt_ids: torch.Tensor  # (M, P) long, left-padded
    prompt_mask: torch.Tensor  # (M, P), 1 on prompt tokens
    prompt_positions: torch.Tensor  # (M, P) long: each token's index in its original row
    response_ids: torch.Tensor  # (B, R) long, right-padded
    response_mask: torch.Tensor  # (B, R), 1 on response tokens
    response_positions: torch.Tensor  # (B, R) long: prompt length + offset, as in the original row
    response_labels: torch.Tensor  # (B, R) long: the original labels, -100 on padding
    prompt_of_row: torch.Tensor  # (B,) long: the prompt row each response continues


def split_shared_prompts(input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                         num_chosen: int | None) -> SharedPromptBatch | None:
    """Re-lay a paired batch as shared prompts + responses, or None when rows i and M + i do not share one.

    The prompt of a row is the tokens before its first label. Returns None (use the one-forward
    path) unless: B = 2 ``num_chosen``, rows are right-padded, every row has a label after at
    least one prompt token and none on padding, and rows i and M + i have the same prompt.

    Shape:
        input_ids, attention_mask, labels: (B, T) with B = 2M chosen-then-rejected rows
    """
    rows, length = input_ids.shape
    if not num_chosen or rows != 2 * num_chosen:
        return None
    pairs, device = num_chosen, input_ids.device
    positions = torch.arange(length, device=device)  # (T,)
    real = attention_mask.bool()  # (B, T)
    lengths = real.sum(dim=1)  # (B,)
    scored = labels != IGNORE_INDEX  # (B, T)
    if not torch.equal(real, positions[None, :] < lengths[:, None]) or bool((scored & ~real).any()):
        return None  # not right-padded, or labels on padding
    if not bool(scored.any(dim=1).all()):
        return None  # a row without labels has no response to split off
    starts = scored.int().argmax(dim=1)  # (B,) first labelled position = prompt length
    if bool((starts < 1).any()) or not torch.equal(starts[:pairs], starts[pairs:]):
        return None
    in_prompt = positions[None, :] < starts[:, None]  # (B, T)
    if not torch.equal(input_ids[:pairs] * in_prompt[:pairs], input_ids[pairs:] * in_prompt[pairs:]):
        return None  # chosen and rejected prompts differ

    prompt_length = int(starts.max())
    source = torch.arange(prompt_length, device=device)[None, :] - (prompt_length - starts[:pairs])[:, None]  # (M, P)
    prompt_mask = source >= 0  # (M, P): left padding where the source index is negative
    prompt_positions = source.clamp(min=0)  # (M, P)
    response_lengths = lengths - starts  # (B,), each >= 1
    offsets = torch.arange(int(response_lengths.max()), device=device)  # (R,)
    response_positions = starts[:, None] + offsets[None, :]  # (B, 1) + (1, R) -> (B, R)
    response_mask = offsets[None, :] < response_lengths[:, None]  # (B, R)
    gather_at = response_positions.clamp(max=length - 1)  # (B, R)
    return SharedPromptBatch(
        prompt_ids=input_ids[:pairs].gather(1, prompt_positions),
        prompt_mask=prompt_mask.to(attention_mask.dtype),
        prompt_positions=prompt_positions,
        response_ids=input_ids.gather(1, gather_at),
        response_mask=response_mask.to(attention_mask.dtype),
        response_positions=response_positions,
        response_labels=labels.gather(1, gather_at).masked_fill(~response_mask, IGNORE_INDEX),
        prompt_of_row=torch.arange(pairs, device=device).repeat(2),  # (B,): 0..M-1 twice
    )


def _cache_argument(model: torch.nn.Module) -> str | None:
    """The name under which ``model``'s forward takes a cache (``cache`` in transformers 5, else
    ``past_key_values``), or None when it takes none or no ``position_ids``."""
    parameters = inspect.signature(unwrap_model(model).forward).parameters
    if "position_ids" not in parameters:
        return None
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def activation_checkpointing_on(model: torch.nn.Module) -> bool:
    """transformers' activation (gradient) checkpointing is on (in the model inside any wrapper)."""
    model = unwrap_model(model)
    name = "is_activation_checkpointing" if hasattr(type(model), "is_activation_checkpointing") else \
        "is_gradient_checkpointing"
    return bool(getattr(model, name, False))


def shared_prompt_problem(model: torch.nn.Module) -> str | None:
    """Why ``model`` must take the one-forward path, or None when the shared-prompt path is safe."""
    if plain_linear_head(model) is None:
        return "its logits are not a plain linear head (or the head is sharded)"
    inner, wrapper = unwrap_model(model), model
    while True:  # FSDP / DeepSpeed engines
        if type(wrapper).__name__ in ENGINE_WRAPPERS:
            return f"it runs inside {type(wrapper).__name__}"
        if not (hasattr(wrapper, "module") and isinstance(wrapper.module, torch.nn.Module)):
            break
        wrapper = wrapper.module
    config = inner.config
    if config.model_type not in SHARED_PROMPT_MODEL_TYPES:
        return f"model_type {config.model_type!r} is not in {SHARED_PROMPT_MODEL_TYPES}"
    attention = getattr(config, "_attn_implementation", None)
    if attention not in ATTENTION_IMPLEMENTATIONS:
        return f"attention implementation {attention!r} is untested here"
    if attention == "sdpa" and torch.__version__ < "2.5":
        return "sdpa before torch 2.5 gives NaN on the fully masked rows of left padding"
    if activation_checkpointing_on(inner) and inner.training and torch.is_grad_enabled():
        return "gradient checkpointing drops the cache in training"
    if _cache_argument(model) is None:
        return "its forward takes no cache or no position_ids"
    return None


def shared_prompt_sequence_logps(model: torch.nn.Module, batch: SharedPromptBatch,
                                 chunk_rows: int | None = None) -> torch.Tensor:
    """Summed float32 log pi(label) of each row: the prompt pass, then the response pass on its cache.

    The caller checks :func:`shared_prompt_problem` first.

    Shape:
        batch as in :class:`SharedPromptBatch`; returns (B,) float32
    """
    from transformers import DynamicCache

    head, cache_argument = plain_linear_head(model), _cache_argument(model)
    cache = DynamicCache()
    last_prompt: dict[str, torch.Tensor] = {}

    def keep_last_token(hidden: torch.Tensor) -> None:  # (M, P, H)
        last_prompt["hidden"] = hidden[:, -1]  # (M, H): left padding puts every prompt's last token at P - 1

    run_with_head_hook(model, head, keep_last_token, input_ids=batch.prompt_ids, attention_mask=batch.prompt_mask,
                       position_ids=batch.prompt_positions, use_cache=True, **{cache_argument: cache})
    if cache.get_seq_length() != batch.prompt_ids.shape[1]:
        raise RuntimeError(f"the prompt pass cached {cache.get_seq_length()} tokens, expected "
                           f"{batch.prompt_ids.shape[1]}: set share_prompts=False")
    cache.batch_select_indices(batch.prompt_of_row)  # (M, ...) -> (B, ...): each response row's prompt
    mask = batch.response_labels != IGNORE_INDEX  # (B, R): response offset r is predicted by offset r - 1
    targets = batch.response_labels[mask]  # (K,)
    caught: dict[str, torch.Tensor] = {}

    def score_rows(hidden: torch.Tensor) -> None:  # (B, R, H)
        first = last_prompt["hidden"][batch.prompt_of_row, None]  # (B, 1, H): predicts response token 0
        predictors = torch.cat([first, hidden[:, :-1]], dim=1)  # (B, 1, H) + (B, R-1, H) -> (B, R, H)
        caught["logps"] = label_token_logps(predictors[mask], targets, head.weight, head.bias, chunk_rows)

    attention_mask = torch.cat([batch.prompt_mask[batch.prompt_of_row], batch.response_mask], dim=1)  # (B, P + R)
    run_with_head_hook(model, head, score_rows, input_ids=batch.response_ids, attention_mask=attention_mask,
                       position_ids=batch.response_positions, use_cache=True, **{cache_argument: cache})
    return sum_per_row(caught["logps"], mask)  # (B,)


def prompt_sharing_sequence_logps(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                                  labels: torch.Tensor, num_chosen: int | None = None, share_prompts: bool = True,
                                  chunk_rows: int | None = None) -> torch.Tensor:
    """Summed float32 log pi(label) of each row: shared prompts when asked, else ``head.model_sequence_logps``.

    ``share_prompts`` is the caller's decision, made once: the trainer's
    ``training.forward_plan.ForwardPlan``, or :func:`shared_prompt_problem` for direct use
    (``logprobs.batch_sequence_logps`` checks it). ``num_chosen`` = M marks a paired batch (M
    chosen rows, then M rejected rows); None means unpaired or SFT rows. Either way a batch
    whose rows do not share their prompts (:func:`split_shared_prompts` is None) takes one forward.

    Shape:
        input_ids, attention_mask, labels: (B, T); returns (B,) float32
    """
    if share_prompts and num_chosen:
        batch = split_shared_prompts(input_ids, attention_mask, labels, num_chosen)
        if batch is not None:
            return shared_prompt_sequence_logps(model, batch, chunk_rows)
    return model_sequence_logps(model, input_ids, attention_mask, labels, chunk_rows)


def collated_sequence_logps(model: torch.nn.Module, batch: Mapping[str, torch.Tensor], share_prompts: bool,
                            device: torch.device | str | None = None) -> torch.Tensor:
    """Summed float32 log-probs of each row of a collated batch, in the layout the caller decided.

    The trainer's forward for the policy and the reference (``share_prompts`` from its
    ``ForwardPlan``), and the precompute pass's. A paired batch (``paired`` and ``num_chosen``
    from ``PreferenceCollator``) runs each prompt once when ``share_prompts``
    (:func:`prompt_sharing_sequence_logps`); the head runs on the label rows only.
    ``device``: move the batch there first (None: it is there already).

    Shape:
        batch["input_ids"], batch["attention_mask"], batch["labels"]: (B, T); returns (B,) float32,
        M chosen rows then N rejected rows for a preference batch
    """
    for key in ("input_ids", "attention_mask", "labels"):
        if key not in batch:
            raise ValueError(f"batch lacks {key!r}; got keys {sorted(batch)}")
    ids, mask, labels = (batch[key] if device is None else batch[key].to(device)
                         for key in ("input_ids", "attention_mask", "labels"))
    paired = bool(batch.get("paired", False)) and "num_chosen" in batch
    return prompt_sharing_sequence_logps(model, ids, mask, labels, int(batch["num_chosen"]) if paired else None,
                                         share_prompts=share_prompts)
