"""From a batch's summed log-probs to one scalar training loss, for every preference loss.

The trainer runs the models and hands the log-probs over as :class:`PreferenceLogps`; this
module picks the pure loss function from ``losses.LOSSES`` by name and builds its extra
arguments through the :data:`LOSS_ARGUMENTS` registry (beta, the RPO weight matrix, KTO's
reference point, ...), so adding a loss means adding two table entries, not an ``if`` branch.
Terms added to any preference loss with a weight (``nll_weight``: the NLL of the chosen
responses, TRL's ``rpo_alpha``) come from the :data:`AUXILIARY_TERMS` registry, and
``length_normalize`` (default on for IPO, as TRL does) divides every log-prob by its response's
token count before the loss sees it.

One step, as the trainer calls it: :meth:`PreferenceLogps.from_batch` (a collated batch's log-probs
split into chosen and rejected sides) -> :func:`scoped_objective` (local or global rows) ->
:func:`composed_objective` (length normalisation, auxiliary terms) -> :func:`preference_objective`,
the public "log-probs -> loss" step -> :func:`rpo_weights` (``weighting.compute_weights``, Eqs.
11-12) and ``losses.rpo_loss`` (Eq. 15). A hand-written loop calls the same pieces (notebook 07).

KTO's reference point z_ref (paper Eq. 9, an estimate of KL(pi || pi_ref)) is estimated as the
batch mean of the policy / reference log-ratios of ALL responses in the (micro-, or with
``contrast_scope="global"`` the global) batch, clamped at 0 and detached:
``z_ref = max(0, mean_k [log pi(y_k|x_k) - log pi_ref(y_k|x_k)])``. It needs no extra forward
pass, unlike the KTO paper's mismatched (x_i, y_j) pairs, and is what many implementations use
when those are unavailable; for responses drawn from the data rather than from pi it is a
proxy, not an unbiased KL estimate, which is all the loss needs (a baseline for the rewards).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping

import torch

from rpo_tutorial.data.collate import IGNORE_INDEX
from rpo_tutorial.losses import LOSSES, zero_loss_like
from rpo_tutorial.training.config import RPOConfig
from rpo_tutorial.training.distributed import all_gather_rows, scale_for_gradient_averaging, world_size
from rpo_tutorial.weighting import compute_weights


def _embeddings(batch: Mapping, key: str, rows: int, like: torch.Tensor) -> torch.Tensor:
    """The batch's (rows, D) float32 prompt embeddings, or an empty (rows, 0) matrix when absent."""
    if key in batch:
        return batch[key].float()
    return like.new_zeros((rows, 0), dtype=torch.float32)


@dataclass
class PreferenceLogps:
    """Summed response log-probs of one batch, chosen (desirable) and rejected (undesirable) sides.

    Shape:
        policy_chosen_logps, reference_chosen_logps: (M,); chosen_prompt_embeddings: (M, D)
        policy_rejected_logps, reference_rejected_logps: (N,); rejected_prompt_embeddings: (N, D)
        (D = 0 when the batch carries no embeddings)
    """

    policy_chosen_logps: torch.Tensor
    policy_rejected_logps: torch.Tensor
    reference_chosen_logps: torch.Tensor
    reference_rejected_logps: torch.Tensor
    chosen_prompt_embeddings: torch.Tensor
    rejected_prompt_embeddings: torch.Tensor
    paired: bool
    chosen_token_counts: torch.Tensor | None = None  # (M,) response tokens per row (length_normalize, nll)
    rejected_token_counts: torch.Tensor | None = None  # (N,)

    @classmethod
    def from_batch(cls, batch: Mapping, policy_logps: torch.Tensor, reference_logps: torch.Tensor) -> "PreferenceLogps":
        """Split a collated preference batch's stacked log-probs into its chosen and rejected sides.

        ``batch`` is a ``PreferenceCollator`` batch: ``num_chosen`` = M chosen rows first, then N
        rejected rows, ``labels`` (their response-token counts), ``paired`` and, when the rows had
        them, ``chosen_prompt_embeddings`` / ``rejected_prompt_embeddings`` (else (M, 0) / (N, 0)).

        Shape:
            policy_logps, reference_logps: (M + N,) float32, in the batch's row order
        """
        num_chosen, total = int(batch["num_chosen"]), policy_logps.shape[0]
        counts = (batch["labels"][:, 1:] != IGNORE_INDEX).sum(dim=1)  # (M + N,) response tokens per row
        return cls(
            policy_chosen_logps=policy_logps[:num_chosen], policy_rejected_logps=policy_logps[num_chosen:],
            reference_chosen_logps=reference_logps[:num_chosen], reference_rejected_logps=reference_logps[num_chosen:],
            chosen_prompt_embeddings=_embeddings(batch, "chosen_prompt_embeddings", num_chosen, policy_logps),
            rejected_prompt_embeddings=_embeddings(batch, "rejected_prompt_embeddings", total - num_chosen,
                                                   policy_logps),
            paired=bool(batch.get("paired", False)),
            chosen_token_counts=counts[:num_chosen], rejected_token_counts=counts[num_chosen:],
        )

    @property
    def num_chosen(self) -> int:
        return self.policy_chosen_logps.shape[0]

    @property
    def num_rejected(self) -> int:
        return self.policy_rejected_logps.shape[0]


@dataclass
class ObjectiveOutput:
    """The scalar loss plus what the metrics need (detached rewards, the weight matrix)."""

    loss: torch.Tensor  # () the value to backpropagate
    chosen_rewards: torch.Tensor  # (M,) beta * chosen log-ratios, detached
    rejected_rewards: torch.Tensor  # (N,)
    weights: torch.Tensor | None = None  # (M, N) RPO weights, None for other losses
    extras: dict | None = None  # further scalars to log, e.g. KTO's z_ref


def kto_reference_point(logps: PreferenceLogps) -> torch.Tensor:
    """z_ref = max(0, mean log-ratio over all M + N responses), detached (see module docstring).

    Shape:
        returns () float32
    """
    policy = torch.cat([logps.policy_chosen_logps, logps.policy_rejected_logps]).detach().float()  # (M + N,)
    reference = torch.cat([logps.reference_chosen_logps, logps.reference_rejected_logps]).float()  # (M + N,)
    return (policy - reference).mean().clamp_min(0.0)


def rpo_weights(logps: PreferenceLogps, config: RPOConfig) -> torch.Tensor:
    """The (M, N) weight matrix of ``config.weighting`` from the batch's precomputed embeddings.

    ``weighting.compute_weights``: embedding weights w_ij = softmax_j(-d_ij / tau) (Eqs. 11-12),
    uniform, diagonal (Eq. 14) or Sinkhorn. Uniform and diagonal weights only need M and N; when
    the batch carries no embeddings they get (M, 1) zero placeholders. Embedding and Sinkhorn
    weights need real embeddings.

    Shape:
        logps.chosen_prompt_embeddings (M, D), logps.rejected_prompt_embeddings (N, D); returns (M, N)
    """
    chosen, rejected = logps.chosen_prompt_embeddings, logps.rejected_prompt_embeddings
    if chosen.shape[1] == 0 or rejected.shape[1] == 0:
        if config.weighting in ("embedding", "sinkhorn"):
            raise ValueError(f"weighting={config.weighting!r} needs 'chosen_prompt_embeddings' and "
                             "'rejected_prompt_embeddings' in every batch: add 'prompt_embedding' to the rows "
                             "(embeddings.add_prompt_embeddings) before tokenizing")
        chosen = chosen.new_zeros((chosen.shape[0], 1))  # (M, 1)
        rejected = rejected.new_zeros((rejected.shape[0], 1))  # (N, 1)
    return compute_weights(config.weighting, chosen, rejected, tau=config.effective_tau, alpha=config.alpha,
                           convention=config.uniform_convention)


# name -> (config, log-probs) -> keyword arguments of losses.LOSSES[name] besides the four log-probs
LOSS_ARGUMENTS: dict[str, Callable[[RPOConfig, PreferenceLogps], dict]] = {
    "dpo": lambda config, logps: {"beta": config.beta},
    "cdpo": lambda config, logps: {"beta": config.beta, "label_smoothing": config.label_smoothing},
    "ipo": lambda config, logps: {"tau": config.ipo_tau, "beta": config.beta},
    "kto": lambda config, logps: {
        "beta": config.beta, "kl_reference_point": kto_reference_point(logps),
        "desirable_weight": config.kto_desirable_weight, "undesirable_weight": config.kto_undesirable_weight},
    "rpo": lambda config, logps: {"beta": config.beta, "placement": config.placement,
                                  "weights": rpo_weights(logps, config)},
}
# losses that contrast chosen with rejected responses and so need both sides in a batch
NEEDS_BOTH_SIDES = ("dpo", "cdpo", "ipo", "rpo")


def preference_objective(logps: PreferenceLogps, config: RPOConfig) -> ObjectiveOutput:
    """The mean loss of ``config.loss`` over the batch, dispatched through ``LOSSES``: log-probs -> loss.

    The public "log-probs -> loss" step (the trainer reaches it through :func:`scoped_objective`;
    a hand-written loop or the study calls it directly). For RPO: the weights of
    :func:`rpo_weights` (Eqs. 11-14), then ``losses.rpo_loss`` (Eq. 15), averaged over the M
    chosen rows. An unpaired batch with one side empty (M = 0 or N = 0) has no contrast: its loss
    is ``zero_loss_like`` of the log-probs, 0 with a graph, so backward (and the DDP gradient
    all-reduce) still runs on this process.

    Shape:
        logps: M chosen and N rejected rows (:class:`PreferenceLogps`); returns loss (), rewards
        (M,) and (N,), weights (M, N) for RPO
    """
    if config.loss not in LOSS_ARGUMENTS:
        raise ValueError(f"loss {config.loss!r} is not a preference loss; choose from {sorted(LOSS_ARGUMENTS)}")
    if config.loss in NEEDS_BOTH_SIDES and (logps.num_chosen == 0 or logps.num_rejected == 0):
        zero = zero_loss_like(logps.policy_chosen_logps, logps.policy_rejected_logps)
        chosen_rewards = config.beta * (logps.policy_chosen_logps.detach().float() - logps.reference_chosen_logps)
        rejected_rewards = config.beta * (logps.policy_rejected_logps.detach().float() - logps.reference_rejected_logps)
        return ObjectiveOutput(zero, chosen_rewards, rejected_rewards)
    arguments = LOSS_ARGUMENTS[config.loss](config, logps)
    losses, chosen_rewards, rejected_rewards = LOSSES[config.loss](
        logps.policy_chosen_logps, logps.policy_rejected_logps, logps.reference_chosen_logps,
        logps.reference_rejected_logps, **arguments)
    extras = {"kto/kl_reference_point": float(arguments["kl_reference_point"])} if config.loss == "kto" else None
    return ObjectiveOutput(losses.mean(), chosen_rewards, rejected_rewards, arguments.get("weights"), extras)


def length_normalized(logps: PreferenceLogps) -> PreferenceLogps:
    """Every log-prob divided by its response's token count: mean per-token log-probs (TRL's IPO).

    Shape:
        all four log-prob vectors keep their shapes (M,) / (N,)
    """
    if logps.chosen_token_counts is None or logps.rejected_token_counts is None:
        raise ValueError("length_normalize needs chosen_token_counts and rejected_token_counts in PreferenceLogps")
    chosen, rejected = logps.chosen_token_counts.clamp_min(1).float(), logps.rejected_token_counts.clamp_min(1).float()
    return replace(logps, policy_chosen_logps=logps.policy_chosen_logps / chosen,
                   reference_chosen_logps=logps.reference_chosen_logps / chosen,
                   policy_rejected_logps=logps.policy_rejected_logps / rejected,
                   reference_rejected_logps=logps.reference_rejected_logps / rejected)


def chosen_nll(logps: PreferenceLogps) -> torch.Tensor:
    """Negative log-likelihood per token of the chosen responses: -sum_i log pi(y_i^w) / sum_i |y_i^w|.

    Shape:
        returns () float32 (0 with a graph when there are no chosen tokens)
    """
    if logps.chosen_token_counts is None:
        raise ValueError("nll_weight > 0 needs chosen_token_counts in PreferenceLogps")
    tokens = logps.chosen_token_counts.float().sum().clamp_min(1.0)
    return -logps.policy_chosen_logps.float().sum() / tokens


# config field holding the weight -> (metric name the term is logged as, the term added as weight x term)
AUXILIARY_TERMS: dict[str, tuple[str, Callable[[PreferenceLogps], torch.Tensor]]] = {
    "nll_weight": ("nll/token", chosen_nll),
}


def composed_objective(logps: PreferenceLogps, config: RPOConfig) -> ObjectiveOutput:
    """``config.loss`` (on length-normalised log-probs when ``config.length_normalized``) plus the
    weighted :data:`AUXILIARY_TERMS` on the raw summed log-probs; the terms are logged in ``extras``.

    Shape:
        logps: M chosen and N rejected rows; returns the () loss of :func:`preference_objective`
        plus weight x term
    """
    output = preference_objective(length_normalized(logps) if config.length_normalized else logps, config)
    for field, (metric, term) in AUXILIARY_TERMS.items():
        weight = getattr(config, field)
        if weight:
            value = term(logps)
            output.loss = output.loss + weight * value
            output.extras = {**(output.extras or {}), metric: float(value.detach())}
    return output


def gather_global(logps: PreferenceLogps) -> PreferenceLogps:
    """All processes' rows, chosen and rejected sides separately, local rows keeping their gradient.

    Each side is packed as one (K, 2 + D) matrix [policy, reference, embedding] so one size
    exchange and one all-gather per side suffice. A paired batch stays paired: chosen row i and
    rejected row i still come from the same example.
    """
    if world_size() == 1:
        return logps

    def gather(policy: torch.Tensor, reference: torch.Tensor, embeddings: torch.Tensor, counts: torch.Tensor | None):
        count_column = policy.new_zeros(policy.shape[0]) if counts is None else counts  # (K,)
        packed = torch.cat([policy.float()[:, None], reference.float()[:, None], count_column.float()[:, None],
                            embeddings.float()], dim=1)
        rows, _ = all_gather_rows(packed)  # (K_global, 3 + D)
        return rows[:, 0], rows[:, 1].detach(), rows[:, 3:].detach(), None if counts is None else rows[:, 2].detach()

    chosen = gather(logps.policy_chosen_logps, logps.reference_chosen_logps, logps.chosen_prompt_embeddings,
                    logps.chosen_token_counts)
    rejected = gather(logps.policy_rejected_logps, logps.reference_rejected_logps, logps.rejected_prompt_embeddings,
                      logps.rejected_token_counts)
    return replace(logps, policy_chosen_logps=chosen[0], reference_chosen_logps=chosen[1],
                   chosen_prompt_embeddings=chosen[2], chosen_token_counts=chosen[3],
                   policy_rejected_logps=rejected[0], reference_rejected_logps=rejected[1],
                   rejected_prompt_embeddings=rejected[2], rejected_token_counts=rejected[3])


def scoped_objective(logps: PreferenceLogps, config: RPOConfig) -> tuple[ObjectiveOutput, PreferenceLogps]:
    """The objective over this process's rows ("local") or over every process's rows ("global").

    With "global" the returned loss has the value of the global loss and a gradient scaled so
    that data-parallel averaging yields the gradient of one process on the concatenated batch.
    Also returns the log-probs the loss saw (global ones under "global"), for the metrics.

    Shape:
        logps: this process's M chosen and N rejected rows; under "global" the loss sees
        M_global x N_global contrasts (every process's rows); returns the () loss
    """
    if config.contrast_scope == "local" or world_size() == 1:
        return composed_objective(logps, config), logps
    global_logps = gather_global(logps)
    output = composed_objective(global_logps, config)
    output.loss = scale_for_gradient_averaging(output.loss)
    return output, global_logps
