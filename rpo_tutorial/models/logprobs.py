"""Summed response log-probabilities log pi(y | x): the quantity every preference loss consumes.

``sequence_logps`` turns logits into one float32 number per sequence; ``batch_sequence_logps`` runs
a causal LM on a collated batch, applying its head to the response rows only (``head.py``) and, for
paired batches, running each prompt once (``shared_prompt.py``) when the model allows it
(``shared_prompt.collated_sequence_logps`` is the same in a layout decided by the caller, the
trainer's ``ForwardPlan``); ``precompute_reference_logps``
fills in the frozen reference model's log-probs once per dataset (the trainer's "precomputed
reference" mode, which frees the reference model's memory during training);
``training.reference.precompute_reference`` runs it with the reference placed and sharded as the
policy is, each process on its share of the data.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from rpo_tutorial.data.collate import IGNORE_INDEX
from rpo_tutorial.models.head import label_positions, label_token_logps, sum_per_row
from rpo_tutorial.models.shared_prompt import collated_sequence_logps, shared_prompt_problem

REFERENCE_KEYS = ("reference_chosen_logps", "reference_rejected_logps", "reference_logps")


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                   chunk_rows: int | None = None) -> torch.Tensor:
    """Sum of log pi(label token | preceding tokens) over the response tokens of each sequence.

    Position t of the logits predicts token t + 1, so labels are shifted left by one; label
    positions equal to ``ignore_index`` (prompt and padding) contribute nothing. Only the K scored
    positions are read, vectorised in row chunks: each token's log-prob is computed in float32 as
    ``logit[label] - logsumexp(logits)`` (``head.label_token_logps``, checkpointed per chunk under
    autograd, so no float32 copy of the logits is kept for backward).

    Shape:
        logits: (B, T, V), any float dtype; labels: (B, T) long; returns (B,) float32
    """
    if logits.dim() != 3 or labels.dim() != 2 or logits.shape[:2] != labels.shape:
        raise ValueError(f"logits must be (B, T, V) and labels (B, T); got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    mask, targets = label_positions(labels, ignore_index)  # (B, T-1), (K,)
    token_logps = label_token_logps(logits[:, :-1][mask], targets, chunk_rows=chunk_rows)  # (K,)
    return sum_per_row(token_logps, mask)  # (B,)


def batch_sequence_logps(model: torch.nn.Module, batch: Mapping[str, torch.Tensor],
                         share_prompts: bool = True) -> torch.Tensor:
    """Run ``model`` on ``batch["input_ids"]`` / ``attention_mask`` and sum the label log-probs.

    For direct use (notebooks, evaluation). The batch tensors are moved to the model's device.
    The head runs on the label rows only (``head.model_sequence_logps``); a paired batch runs each
    prompt once when ``share_prompts`` and the model allows it (``shared_prompt.shared_prompt_problem``
    is None): the same values up to float rounding (``shared_prompt.collated_sequence_logps``).

    Shape:
        batch["input_ids"], batch["attention_mask"], batch["labels"]: (B, T); returns (B,) float32
    """
    share = share_prompts and shared_prompt_problem(model) is None
    return collated_sequence_logps(model, batch, share, device=next(model.parameters()).device)


def precompute_reference_logps(model: torch.nn.Module, tokenized_examples: Sequence[Mapping],
                               collator: Callable[[list], Mapping[str, torch.Tensor]], batch_size: int = 8,
                               progress: bool = True, *,
                               forward: Callable[[torch.nn.Module, Mapping], torch.Tensor] = batch_sequence_logps,
                               num_batches: int | None = None) -> list[dict]:
    """One pass of the reference model over tokenized examples, storing its log-probs per example.

    Paired examples get ``reference_chosen_logps`` and ``reference_rejected_logps``; unpaired ones
    get ``reference_logps``. The inputs are not modified: new dicts are returned in the same order.
    Runs under ``torch.no_grad`` with the model in eval mode (restored afterwards). Training calls
    this through ``training.reference.precompute_reference``, which places the model as the policy
    is placed and passes the trainer's own forward.

    Args:
        forward: ``(model, collated batch) -> (M + N,)`` summed log-probs, chosen rows first;
            the default moves the batch to the model's device (:func:`batch_sequence_logps`).
        num_batches: run exactly this many forwards (at least the ``ceil(len / batch_size)``
            needed); the extra ones collate the first example and are discarded. Sharded models
            all-gather inside each forward, so every process must run the same number.

    Shape:
        forward's result: (M + N,) for a batch of M chosen (desirable) and N rejected rows
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    paired = [("chosen_input_ids" in example) for example in tokenized_examples]
    if len(set(paired)) > 1:
        raise ValueError("tokenized_examples mixes paired and unpaired examples")
    results = [{key: value for key, value in example.items() if key not in REFERENCE_KEYS}
               for example in tokenized_examples]  # stale reference values are replaced
    needed = -(-len(results) // batch_size)  # ceil
    if num_batches is not None and (num_batches < needed or (num_batches and not results)):
        raise ValueError(f"num_batches={num_batches!r} cannot cover {len(results)} examples in batches of "
                         f"{batch_size} (needs >= {needed}, and an example to repeat)")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for index in tqdm(range(needed if num_batches is None else num_batches), desc="reference log-probs",
                              disable=not progress):
                chunk = results[index * batch_size:(index + 1) * batch_size]
                batch = collator(chunk or results[:1])  # past the data: a discarded forward
                logps = forward(model, batch).float().cpu().tolist()  # (M + N,)
                if chunk:
                    _store(chunk, logps, int(batch["num_chosen"]) if "num_chosen" in batch else None)
    finally:
        model.train(was_training)
    return results


def _store(chunk: list[dict], logps: list[float], num_chosen: int | None) -> None:
    """Write a collated batch's log-probs (chosen rows first) back onto its examples."""
    paired = "chosen_input_ids" in chunk[0]
    expected = (2 * len(chunk), len(chunk)) if paired else (len(chunk), sum(bool(e["label"]) for e in chunk))
    if (len(logps), num_chosen if num_chosen is not None else expected[1]) != expected:
        raise ValueError(f"the collator returned {len(logps)} rows with num_chosen={num_chosen} for "
                         f"{len(chunk)} examples; expected {expected[0]} rows, {expected[1]} chosen")
    if paired:
        for i, example in enumerate(chunk):
            example["reference_chosen_logps"] = logps[i]
            example["reference_rejected_logps"] = logps[len(chunk) + i]
        return
    order = [e for e in chunk if e["label"]] + [e for e in chunk if not e["label"]]  # the collator's order
    for example, value in zip(order, logps):
        example["reference_logps"] = value
