"""One contrast matrix over every micro-batch of an optimizer step, with the exact gradient.

With gradient accumulation each micro-batch normally builds its own M x N contrast matrix, so
8 pairs x 2 micro-batches trains on two 8 x 8 matrices, not the 16 x 16 matrix of a batch of
16 (the RPO loss is not a sum over rows: every chosen response is weighed against every
rejected one). ``accumulate_contrast=True`` computes the loss of the WHOLE step (and, with
``contrast_scope="global"``, of every process) at the memory of one micro-batch:

1. a no-grad pass over the step's K micro-batches: reference and policy log-probs of all rows;
2. the full-step loss L of those log-probs, and its gradient with respect to each policy
   log-prob, g_k = dL / d log pi(y_k | x_k) (:func:`step_coefficients`, detached);
3. per micro-batch, a forward WITH gradient and the backward of the linear surrogate
   ``sum_k g_k log pi(y_k | x_k)`` (:func:`surrogate_loss`). By the chain rule its gradient
   with respect to the parameters is dL / dtheta restricted to those rows, so the accumulated
   gradient is exactly that of L on the concatenated batch.

Cost: one extra policy forward per micro-batch (step 1; the reference forward happens only in
step 1 and is reused), about 1.25x a plain accumulated step with a live reference model and
1.33x with precomputed reference log-probs; no extra memory beyond the (rows,) log-probs. The
log-probs of step 1 and step 3 must agree, so dropout must be off (as in the paper's runs) for
exactness; with dropout the coefficients come from another mask, as in any two-pass method.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from rpo_tutorial.training.config import RPOConfig
from rpo_tutorial.training.objectives import ObjectiveOutput, PreferenceLogps, scoped_objective


@dataclass
class StepCoefficients:
    """The full-step loss and, per micro-batch, dL / d(policy log-prob) of its stacked rows."""

    output: ObjectiveOutput  # the full-step objective (loss detached), for logging and metrics
    seen: PreferenceLogps  # the log-probs the loss saw (all micro-batches; all processes under "global")
    coefficients: list[torch.Tensor]  # per micro-batch (M_k + N_k,), chosen rows first, detached
    num_micro_batches: int


def concatenate(parts: list[PreferenceLogps]) -> PreferenceLogps:
    """The micro-batches' rows, chosen with chosen and rejected with rejected, in micro-batch order.

    Paired micro-batches stay paired: chosen row i and rejected row i come from the same example.
    """
    if not parts:
        raise ValueError("a step needs at least one micro-batch")
    def cat(name: str) -> torch.Tensor | None:
        values = [getattr(part, name) for part in parts]
        return None if any(value is None for value in values) else torch.cat(values)

    fields = ("policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps", "reference_rejected_logps",
              "chosen_prompt_embeddings", "rejected_prompt_embeddings", "chosen_token_counts", "rejected_token_counts")
    return PreferenceLogps(**{name: cat(name) for name in fields}, paired=all(part.paired for part in parts))


def step_coefficients(parts: list[PreferenceLogps], config: RPOConfig) -> StepCoefficients:
    """Full-step objective of the micro-batches' (no-grad) log-probs and the per-row gradients.

    Under ``contrast_scope="global"`` the objective gathers every process's rows and its gradient
    is already scaled for data-parallel averaging (``distributed.scale_for_gradient_averaging``),
    so the coefficients are used as they are.

    Shape:
        parts[k].policy_chosen_logps: (M_k,), policy_rejected_logps: (N_k,)
        returns coefficients[k]: (M_k + N_k,) float32
    """
    whole = concatenate(parts)
    chosen = whole.policy_chosen_logps.detach().float().requires_grad_(True)  # (sum M_k,)
    rejected = whole.policy_rejected_logps.detach().float().requires_grad_(True)  # (sum N_k,)
    leaves = PreferenceLogps(**{**vars(whole), "policy_chosen_logps": chosen, "policy_rejected_logps": rejected})
    with torch.enable_grad():
        output, seen = scoped_objective(leaves, config)
        grads = torch.autograd.grad(output.loss, [chosen, rejected], allow_unused=True)
    grad_chosen, grad_rejected = (torch.zeros_like(leaf) if grad is None else grad for leaf, grad in
                                  zip((chosen, rejected), grads))
    chosen_pieces = grad_chosen.split([part.num_chosen for part in parts])
    rejected_pieces = grad_rejected.split([part.num_rejected for part in parts])
    coefficients = [torch.cat([c, r]).detach() for c, r in zip(chosen_pieces, rejected_pieces)]
    output.loss = output.loss.detach()
    return StepCoefficients(output, seen, coefficients, len(parts))


def surrogate_loss(policy_logps: torch.Tensor, coefficients: torch.Tensor, step_loss: torch.Tensor,
                   num_micro_batches: int) -> torch.Tensor:
    """sum_k g_k log pi(y_k | x_k): gradient dL / dtheta through this micro-batch's rows.

    Its VALUE is ``step_loss / num_micro_batches``, so the values summed over the step's
    micro-batches log the full-step loss; only the gradient comes from the surrogate.

    Shape:
        policy_logps, coefficients: (M_k + N_k,); step_loss: (); returns ()
    """
    if policy_logps.shape != coefficients.shape:
        raise ValueError(f"micro-batch has {tuple(policy_logps.shape)} log-probs but the step pass computed "
                         f"{tuple(coefficients.shape)} coefficients: the micro-batches changed between the passes")
    surrogate = (coefficients.to(policy_logps) * policy_logps.float()).sum()
    return step_loss.to(surrogate) / num_micro_batches + (surrogate - surrogate.detach())
