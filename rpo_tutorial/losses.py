"""Preference losses as pure functions: DPO, conservative DPO, IPO, KTO and RPO.

Every function takes summed response log-probabilities (one number per sequence) and returns
per-example losses plus the implicit rewards ``beta * log(pi / pi_ref)``. Nothing here touches a
model, a batch dict or a metrics logger, so the functions drop into any trainer.

Notation (paper, arXiv 2402.10958): a batch holds M chosen responses y_w,i (prompt x_i) and N
rejected responses y_l,j (prompt x'_j). Log-ratios are

    c_i = log pi(y_w,i | x_i) - log pi_ref(y_w,i | x_i)        (chosen,   shape (M,))
    r_j = log pi(y_l,j | x'_j) - log pi_ref(y_l,j | x'_j)      (rejected, shape (N,))

All arithmetic runs in float32 whatever the input dtype (bf16 log-probs in, fp32 loss out).

Equation numbers follow arXiv 2402.10958 v1: DPO loss Eq. 4, implicit reward Eq. 5, IPO Eq. 6,
KTO Eqs. 7-9, contrast score Eq. 10, weights Eqs. 11-12, constant log Z Eq. 13, diagonal
weights Eq. 14, RPO loss Eq. 15.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

PLACEMENTS = ("score", "loss")


def _logps(name: str, value: torch.Tensor, allow_empty: bool = False) -> torch.Tensor:
    """Validate a 1-D tensor of log-probs and return it as float32."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() != 1:
        raise ValueError(f"{name} must be 1-D (one summed log-prob per sequence), got shape {tuple(value.shape)}")
    if value.numel() == 0 and not allow_empty:
        raise ValueError(
            f"{name} is empty. For an unpaired micro-batch with one side missing, use "
            "zero_loss_like(...) so the step still takes part in backward."
        )
    if not torch.isfinite(value).all():
        bad = (~torch.isfinite(value)).nonzero()[0].item()
        raise ValueError(f"{name} has a non-finite value at index {bad}: {value[bad].item()}")
    return value.float()


def _same_length(**tensors: torch.Tensor) -> None:
    lengths = {name: t.shape[0] for name, t in tensors.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"length mismatch: {lengths}")


def _positive(name: str, value: float) -> None:
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _logratios(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    paired: bool,
    allow_empty: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate the four inputs and return (c, r) in float32."""
    policy_chosen = _logps("policy_chosen_logps", policy_chosen_logps, allow_empty)
    policy_rejected = _logps("policy_rejected_logps", policy_rejected_logps, allow_empty)
    reference_chosen = _logps("reference_chosen_logps", reference_chosen_logps, allow_empty)
    reference_rejected = _logps("reference_rejected_logps", reference_rejected_logps, allow_empty)
    _same_length(policy_chosen_logps=policy_chosen, reference_chosen_logps=reference_chosen)
    _same_length(policy_rejected_logps=policy_rejected, reference_rejected_logps=reference_rejected)
    if paired:
        _same_length(policy_chosen_logps=policy_chosen, policy_rejected_logps=policy_rejected)
    return policy_chosen - reference_chosen, policy_rejected - reference_rejected


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO (paper Eq. 4, implicit rewards Eq. 5); ``label_smoothing > 0`` gives conservative DPO (cDPO).

    cDPO assumes each label is flipped with probability ``label_smoothing`` and takes the
    expected loss under that noise.

    Shape:
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
        reference_rejected_logps: (B,)
        returns: losses (B,), chosen_rewards (B,), rejected_rewards (B,)
    """
    _positive("beta", beta)
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing!r}")
    chosen, rejected = _logratios(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, paired=True
    )
    logits = beta * (chosen - rejected)  # beta * h, the argument of sigma in Eq. 4
    losses = -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return losses, beta * chosen.detach(), beta * rejected.detach()


def ipo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    tau: float = 0.1,
    beta: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """IPO (paper Eq. 6): (h - 1 / (2 tau))^2 with h = c - r.

    ``tau`` is IPO's regulariser; ``beta`` only scales the reported rewards.

    Shape:
        the four log-prob inputs: (B,); returns losses (B,), chosen_rewards (B,), rejected_rewards (B,)
    """
    _positive("tau", tau)
    _positive("beta", beta)
    chosen, rejected = _logratios(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, paired=True
    )
    h = chosen - rejected  # Eq. 6
    losses = (h - 1.0 / (2.0 * tau)) ** 2
    return losses, beta * chosen.detach(), beta * rejected.detach()


def kto_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    kl_reference_point: float | torch.Tensor,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """KTO (paper Eqs. 7-9) for unpaired data: M desirable and N undesirable responses.

    The value of a response is sigma(beta (r - z_ref)) when desirable and sigma(beta (z_ref - r))
    when undesirable (Eq. 8), where z_ref = ``kl_reference_point`` is the caller's detached
    estimate of KL(pi || pi_ref) (Eq. 9). The loss is weight * (1 - value) (Eq. 7).
    Either side may be empty.

    Shape:
        policy_chosen_logps, reference_chosen_logps: (M,)
        policy_rejected_logps, reference_rejected_logps: (N,)
        returns: losses (M + N,) with the desirable ones first, chosen_rewards (M,),
        rejected_rewards (N,)
    """
    _positive("beta", beta)
    _positive("desirable_weight", desirable_weight)
    _positive("undesirable_weight", undesirable_weight)
    chosen, rejected = _logratios(
        policy_chosen_logps,
        policy_rejected_logps,
        reference_chosen_logps,
        reference_rejected_logps,
        paired=False,
        allow_empty=True,
    )
    z_ref = torch.as_tensor(kl_reference_point, dtype=torch.float32).detach()
    if z_ref.numel() != 1 or not torch.isfinite(z_ref):
        raise ValueError(f"kl_reference_point must be one finite number, got {kl_reference_point!r}")
    desirable = desirable_weight * (1.0 - torch.sigmoid(beta * (chosen - z_ref)))  # Eqs. 7-8
    undesirable = undesirable_weight * (1.0 - torch.sigmoid(beta * (z_ref - rejected)))
    return torch.cat([desirable, undesirable]), beta * chosen.detach(), beta * rejected.detach()


def contrast_matrix(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, beta: float) -> torch.Tensor:
    """The RPO contrast matrix s_ij = beta (c_i - r_j) (Eq. 10, log Z(x) taken constant, Eq. 13).

    Row i compares chosen response i with every rejected response j, whatever its prompt.
    The diagonal of a paired batch is exactly DPO's argument.

    Shape:
        chosen_logratios: (M,); rejected_logratios: (N,); returns (M, N)
    """
    _positive("beta", beta)
    chosen = _logps("chosen_logratios", chosen_logratios)
    rejected = _logps("rejected_logratios", rejected_logratios)
    return beta * (chosen[:, None] - rejected[None, :])  # (M, 1) - (1, N) -> (M, N)


def rpo_pair_losses(scores: torch.Tensor, weights: torch.Tensor, placement: str = "score") -> torch.Tensor:
    """The per-pair terms of RPO before they are summed over j.

    ``placement="score"`` (paper Eq. 15): -log sigma(w_ij s_ij); the weight rescales the
    contrast inside the sigmoid. ``placement="loss"`` (the official code's diagonal strategy):
    w_ij * (-log sigma(s_ij)); the weight rescales the loss term.

    Shape:
        scores, weights: (M, N); returns (M, N)
    """
    if placement == "score":
        return -F.logsigmoid(weights * scores)  # Eq. 15, inside the expectation
    if placement == "loss":
        return weights * -F.logsigmoid(scores)
    raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")


def rpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    weights: torch.Tensor,
    beta: float = 0.1,
    placement: str = "score",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Relative Preference Optimization (paper Eqs. 10-15), paired (M = N) or unpaired (M != N).

    ``placement="score"``:  losses_i = (1/N) sum_j -log sigma(w_ij s_ij)   (the paper)
    ``placement="loss"``:   losses_i = sum_j w_ij (-log sigma(s_ij))       (official diagonal)

    With embedding weights each row of w sums to 1, so w_ij ~ 1/N and the effective beta of
    one contrast under ``"score"`` is about beta / N; raise beta accordingly when comparing
    with DPO. ``weights`` are treated as constants (no gradient flows into them).

    Shape:
        policy_chosen_logps, reference_chosen_logps: (M,)
        policy_rejected_logps, reference_rejected_logps: (N,)
        weights: (M, N)
        returns: losses (M,), chosen_rewards (M,), rejected_rewards (N,)
    """
    chosen, rejected = _logratios(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, paired=False
    )
    expected = (chosen.shape[0], rejected.shape[0])
    if not isinstance(weights, torch.Tensor) or tuple(weights.shape) != expected:
        shape = tuple(weights.shape) if isinstance(weights, torch.Tensor) else type(weights).__name__
        raise ValueError(f"weights must have shape (M, N) = {expected}, got {shape}")
    if not torch.isfinite(weights).all():
        raise ValueError("weights contain non-finite values")
    scores = contrast_matrix(chosen, rejected, beta)  # (M, N), Eq. 10
    pair_losses = rpo_pair_losses(scores, weights.detach().float(), placement)  # (M, N)
    losses = pair_losses.mean(dim=1) if placement == "score" else pair_losses.sum(dim=1)  # (M,)
    return losses, beta * chosen.detach(), beta * rejected.detach()


def zero_loss_like(*tensors: torch.Tensor) -> torch.Tensor:
    """A scalar 0 that is connected to the autograd graph of every tensor given.

    Use it when an unpaired micro-batch has only one side (M = 0 or N = 0), where no contrast
    exists: returning this instead of skipping the step keeps ``backward()`` running on every
    process, so DDP / FSDP gradient all-reduces never wait on a rank that skipped (the
    official code can deadlock there). The gradients it produces are exactly zero.

    Shape:
        tensors: any shapes (typically the (M,) log-probs that exist); returns ()
    """
    zero = torch.zeros((), dtype=torch.float32)
    for tensor in tensors:
        if isinstance(tensor, torch.Tensor) and tensor.requires_grad:
            # nan_to_num keeps the product at exactly 0 even if a log-prob is -inf.
            zero = zero.to(tensor.device) + 0.0 * torch.nan_to_num(tensor.float()).sum()
    return zero


def _cdpo_loss(*args, label_smoothing: float = 0.1, **kwargs):
    """Conservative DPO: DPO with a default label-smoothing of 0.1."""
    return dpo_loss(*args, label_smoothing=label_smoothing, **kwargs)


# name -> pure loss function; trainers dispatch through this table.
LOSSES: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {
    "dpo": dpo_loss,
    "cdpo": _cdpo_loss,
    "ipo": ipo_loss,
    "kto": kto_loss,
    "rpo": rpo_loss,
}
