"""The study's methods: what each one feeds to the library's ``preference_objective``.

Every loss value comes from ``rpo_tutorial.training.objectives.preference_objective`` with an
``RPOConfig`` (the trainer's path); a method here only says which rows and embeddings the batch
holds and which beta it uses. beta is the regime's DPO beta, N the pairs per batch, w the
paper's embedding weights (Eq. 12, tau 0.5 paired) of the batch.

| key | what it is | loss, beta |
|---|---|---|
| dpo | DPO (Eq. 4) | dpo, beta |
| rpo-emb | RPO, embedding weights, matched beta | rpo, beta N |
| rpo-uniform | RPO, uniform weights 1/N, matched beta | rpo, beta N |
| dpo-own-beta | DPO at RPO's own-pair effective beta | dpo, beta N mean(w_ii) |
| rpo-own-pair | RPO's own-pair terms only: -log sigma(w_ii beta N h_i) | dpo on w_ii-scaled log-probs, beta N |
| rpo-placebo | RPO on embeddings shuffled inside each batch | rpo, beta N |
| rpo-emb-paper-beta | RPO, embedding weights, the paper's beta | rpo, beta |
| rpo-unpaired | RPO unpaired (tau 0.75): chosen of batch k vs rejected of batch k + 1 | rpo, beta N |
| kto | KTO on the same unpaired rows | kto, beta |

Two of them need a word:

- **rpo-own-pair** keeps, of matched RPO's loss (1/N) sum_j -log sigma(w_ij beta N (c_i - r_j)),
  only the j = i terms. Scaling all four log-probs of pair i by w_ii turns DPO's argument into
  beta N w_ii h_i, so the library's DPO loss computes exactly these terms (their mean instead of
  their sum / N: a constant factor that Adam removes; a test checks the gradients).
- **rpo-placebo** permutes the batch's prompt embeddings with a seeded permutation before the
  weights are computed (the same permutation on the chosen and the rejected side). The weight
  matrix becomes P W P^T: the same rows, diagonal entries and column sums as the real one, in
  every batch and both batch arms, but the high weights now fall on unrelated prompts.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from rpo_tutorial.training.config import RPOConfig
from rpo_tutorial.training.objectives import ObjectiveOutput, PreferenceLogps
from rpo_tutorial.weighting import embedding_weights

PAIRED_TAU, UNPAIRED_TAU = 0.5, 0.75  # the paper's taus (Sec. 5)


@dataclass(frozen=True)
class Method:
    """One method (module table)."""

    key: str
    label: str
    loss: str  # "dpo", "rpo" or "kto"
    beta_rule: str = "plain"  # "plain": beta; "matched": beta N; "own_pair": beta N mean(w_ii)
    weighting: str = "embedding"
    paired: bool = True
    shuffle_embeddings: bool = False  # the placebo
    own_pair_only: bool = False  # DPO loss on w_ii-scaled log-probs

    def config(self, beta: float, batch_size: int, mean_own_weight: float) -> RPOConfig:
        """The RPOConfig of this method in a regime of DPO beta ``beta``."""
        scale = {"plain": 1.0, "matched": batch_size, "own_pair": batch_size * mean_own_weight}[self.beta_rule]
        options = dict(loss=self.loss, beta=beta * scale, paired=self.paired)
        if self.loss == "rpo":
            options.update(weighting=self.weighting, tau=PAIRED_TAU if self.paired else UNPAIRED_TAU)
        return RPOConfig(**options)


METHODS: dict[str, Method] = {method.key: method for method in (
    Method("dpo", "DPO", "dpo"),
    Method("rpo-emb", "RPO embedding (matched beta N)", "rpo", "matched"),
    Method("rpo-uniform", "RPO uniform (matched)", "rpo", "matched", weighting="uniform"),
    Method("dpo-own-beta", "DPO at RPO's own-pair beta", "dpo", "own_pair"),
    Method("rpo-own-pair", "RPO own-pair terms only", "dpo", "matched", own_pair_only=True),
    Method("rpo-placebo", "RPO shuffled embeddings (placebo)", "rpo", "matched", shuffle_embeddings=True),
    Method("rpo-emb-paper-beta", "RPO embedding (paper beta)", "rpo", "plain"),
    Method("rpo-unpaired", "RPO unpaired (matched)", "rpo", "matched", paired=False),
    Method("kto", "KTO", "kto", "plain", paired=False),
)}
# the five questions of issue 20: RPO embedding against each of these
QUESTIONS = ("dpo", "dpo-own-beta", "rpo-own-pair", "rpo-uniform", "rpo-placebo")
FOCUS = "rpo-emb"


def own_weights(embeddings: torch.Tensor) -> torch.Tensor:
    """w_ii of the paired embedding weights of a batch (Eq. 12, tau 0.5). Shape: (N, D) -> (N,)."""
    return embedding_weights(embeddings, embeddings, PAIRED_TAU).diagonal()


def step_logps(method: Method, policy_logps: torch.Tensor, reference_chosen: torch.Tensor,
               reference_rejected: torch.Tensor, chosen_embeddings: torch.Tensor, rejected_embeddings: torch.Tensor,
               permutation: torch.Tensor) -> PreferenceLogps:
    """The PreferenceLogps one model's step hands to ``preference_objective``.

    Shape:
        policy_logps: (M + N,) chosen rows first; ``reference_*``: (M,), (N,); ``*_embeddings``: (M, D), (N, D);
        permutation: (N,) the placebo's shuffle of this step (paired batches, M = N)
    """
    m = reference_chosen.shape[0]
    chosen, rejected = policy_logps[:m], policy_logps[m:]
    if method.shuffle_embeddings:
        chosen_embeddings, rejected_embeddings = chosen_embeddings[permutation], rejected_embeddings[permutation]
    if method.own_pair_only:
        scale = own_weights(chosen_embeddings)  # (N,)
        chosen, rejected = chosen * scale, rejected * scale
        reference_chosen, reference_rejected = reference_chosen * scale, reference_rejected * scale
    return PreferenceLogps(chosen, rejected, reference_chosen, reference_rejected, chosen_embeddings,
                           rejected_embeddings, paired=method.paired)


def sigmoid_arguments(logps: PreferenceLogps, config: RPOConfig, output: ObjectiveOutput) -> torch.Tensor:
    """Every argument of a sigmoid in the step's loss (|.| > 1: the curvature regime). Shape: returns (Q,).

    DPO: beta h_i (own-pair-only: beta N w_ii h_i); RPO: w_ij beta (c_i - r_j) for all i, j (Eqs. 10, 15);
    KTO: beta (c_i - z_ref) and beta (z_ref - r_j) (Eq. 8).
    """
    chosen = (logps.policy_chosen_logps - logps.reference_chosen_logps).detach().float()  # (M,)
    rejected = (logps.policy_rejected_logps - logps.reference_rejected_logps).detach().float()  # (N,)
    if config.loss == "rpo":
        return (output.weights * config.beta * (chosen[:, None] - rejected[None, :])).reshape(-1)  # (M N,)
    if config.loss == "kto":
        z = output.extras["kto/kl_reference_point"]
        return torch.cat([config.beta * (chosen - z), config.beta * (z - rejected)])
    return config.beta * (chosen - rejected)
