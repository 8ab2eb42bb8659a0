"""One method's training run on trunk features, and the per-pair outcomes it is judged by.

A run starts from the pretrained top layers (the reference of every method and seed) and takes
``steps`` Adam steps on the seed's data order (``rpo_lab.world.batches.data_order``: seeded
permutations of the train pairs, whole batches only; the placebo's shuffles and RPO's mean
own-pair weight fixed from the data before anything trains). A step follows one path:

1. the batch's M chosen and N rejected sequences (paired methods: the step's pairs; unpaired
   methods: the chosen responses of batch k and the rejected ones of batch k + 1) go through the
   top layers in ONE forward (``TopStack.logps``);
2. ``rpo_lab.world.methods.step_logps`` builds the ``PreferenceLogps`` the method hands to the
   library's ``preference_objective`` (the same losses and weights the trainer uses);
3. backward, clipping, Adam.

After the run, every pair of a split gets an outcome (``pair_outcomes``): 1 when the chosen
response's log-ratio to the reference exceeds the rejected one's, 0.5 on a tie, 0 below
(``rpo_tutorial.accuracy.tie_half_accuracy``), so a policy equal to its reference scores exactly 0.5.
"""
from __future__ import annotations

import math
import time

import torch

from rpo_lab.study.data import StudyData, pair_logps
from rpo_lab.study.settings import StudySettings
from rpo_lab.study.trunk import TopStack
from rpo_lab.world.batches import DataOrder, data_order
from rpo_lab.world.methods import METHODS, sigmoid_arguments, step_logps
from rpo_tutorial.accuracy import tie_half_accuracy
from rpo_tutorial.training.objectives import preference_objective


def seed_order(data: StudyData, settings: StudySettings, seed: int) -> DataOrder:
    """The seed's batches of train pairs, shared by every method trained with this seed (random batches)."""
    rows = torch.arange(len(data.pairs["train"]))
    return data_order(rows, data.train_embeddings, "random", settings.steps, settings.batch_size, seed, 0)


def pair_outcomes(policy: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """1 / 0.5 / 0 per pair: chosen log-ratio above / equal to / below the rejected one.

    Shape:
        policy, reference: (P, 2) log-probs (chosen, rejected); returns (P,)
    """
    ratios = policy - reference  # (P, 2) log pi - log pi_ref
    return tie_half_accuracy(ratios[:, 0] - ratios[:, 1])


def _step(stack: TopStack, data: StudyData, order: DataOrder, step: int, method_key: str, config):
    """The step's PreferenceLogps and the objective's output (with grad)."""
    method = METHODS[method_key]
    chosen = order.chosen[step]  # (N,) train pair rows
    rejected = chosen if method.paired else order.unpaired_rejected[step]
    train, reference = data.pairs["train"], data.reference["train"]
    policy = stack.logps(*data.batch(train[chosen, 0].tolist() + train[rejected, 1].tolist()))  # (M + N,)
    preference = step_logps(method, policy, reference[chosen, 0], reference[rejected, 1],
                            data.train_embeddings[chosen], data.train_embeddings[rejected], order.placebo[step])
    return preference, preference_objective(preference, config)


def train_run(stack: TopStack, data: StudyData, method_key: str, learning_rate: float, order: DataOrder,
              settings: StudySettings, pristine: dict, split: str) -> dict:
    """Train one method from the reference; returns its curve, last step and the outcomes on ``split``."""
    config = METHODS[method_key].config(settings.beta, settings.batch_size, order.mean_own_weight)
    stack.load_state(pristine)
    optimizer = torch.optim.Adam(stack.parameters(), lr=learning_rate)
    curve, began, diverged = [], time.perf_counter(), None
    for step in range(settings.steps):
        stack.model.train()
        preference, output = _step(stack, data, order, step, method_key, config)
        if not math.isfinite(output.loss.item()):
            diverged = step + 1  # a rate too large: the run stops; its outcomes are scored as they stand
            break
        optimizer.zero_grad()
        output.loss.backward()
        torch.nn.utils.clip_grad_norm_(stack.parameters(), settings.max_grad_norm)
        optimizer.step()
        arguments = sigmoid_arguments(preference, config, output)  # every sigmoid argument of the step's loss
        own = (preference.policy_chosen_logps - preference.reference_chosen_logps).detach() - \
            (preference.policy_rejected_logps - preference.reference_rejected_logps).detach()
        curve.append({"step": step + 1, "loss": round(output.loss.item(), 6),
                      "train_margin": round(own.mean().item(), 4),
                      "curvature_share": round((arguments.abs() > 1).float().mean().item(), 6)})
    seconds = time.perf_counter() - began
    policy = pair_logps(stack, data, data.pairs[split], settings.eval_batch_size)  # (P, 2)
    finite = torch.isfinite(policy).all(dim=1)
    outcomes = torch.where(finite, pair_outcomes(policy, data.reference[split]), torch.zeros(()))  # NaN: a loss
    change = (policy - data.reference[split])[finite]  # (P', 2) nats
    return {"method": method_key, "learning_rate": learning_rate, "beta": config.beta, "split": split,
            "outcomes2": [int(2 * value) for value in outcomes.tolist()],  # 2 x outcome: 0 / 1 / 2, exact in JSON
            "accuracy": round(outcomes.mean().item(), 6), "curve": curve, "diverged_at_step": diverged,
            "chosen_logp_change": round(change[:, 0].mean().item(), 4) if len(change) else math.nan,
            "rejected_logp_change": round(change[:, 1].mean().item(), 4) if len(change) else math.nan,
            "margin_abs_median": round((change[:, 0] - change[:, 1]).abs().median().item(), 4) if len(change)
            else math.nan, "train_seconds": round(seconds, 1)}
