"""Train one stack of K policies of one seed (every model its own method, regime, arm, size, learning rate).

A step follows one path: the data order gives each model its batch (``batches``), ONE batched
forward gives every model's summed log-probs, then for each model the library's
``preference_objective`` turns its slice into a loss (``methods.step_logps`` builds the
PreferenceLogps), the K losses are summed (the models share no parameter, so each model's
gradient is its own loss's), and ``StackedAdam`` applies each model's learning rate. Every model
starts from the seed's reference and sees exactly the batches of its (arm, size), whatever else
is in the stack.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rpo_lab.world.batches import DataOrder, data_order
from rpo_lab.world.methods import METHODS, sigmoid_arguments, step_logps
from rpo_lab.world.optim import StackedAdam
from rpo_lab.world.pairs import PairSet, arm_rows
from rpo_lab.world.policy import StackedPolicy
from rpo_lab.world.spec import StudyDesign
from rpo_lab.world.world import World
from rpo_tutorial.accuracy import tie_half_accuracy
from rpo_tutorial.training.objectives import preference_objective


@dataclass(frozen=True)
class RunSpec:
    """One model of a stack."""

    method: str
    regime: str
    beta: float  # the regime's DPO beta
    arm: str  # "random" or "stratified"
    pairs_per_cluster: int
    learning_rate: float


@dataclass
class SeedData:
    """Everything of one seed that exists before any preference training."""

    seed: int
    world: World
    reference: StackedPolicy
    pairs: dict[str, PairSet]  # "train", "validation", "test"
    temperature: float  # the Bradley-Terry noise temperature s


def _orders(data: SeedData, runs: list[RunSpec], design: StudyDesign) -> dict[tuple[str, int], DataOrder]:
    orders = {}
    for arm, size in sorted({(run.arm, run.pairs_per_cluster) for run in runs}):
        rows = arm_rows(data.world, size)
        orders[(arm, size)] = data_order(rows, data.pairs["train"].embeddings[rows], arm, design.steps,
                                         design.batch_size, data.seed, size)
    return orders


def _variants(data: SeedData, orders: dict, step: int) -> dict[str, torch.Tensor]:
    """Per (condition, paired / unpaired) variant: the step's tokens, reference log-probs and embeddings.

    Shape: prompts (V, 2N, T_p), responses (V, 2N, L), reference (V, 2N), embeddings (V, 2N, D)
    """
    train, world = data.pairs["train"], data.world
    parts = {"prompts": [], "responses": [], "reference": [], "embeddings": []}
    for order in orders.values():
        for rejected_rows in (order.chosen[step], order.unpaired_rejected[step]):
            rows = torch.cat([order.chosen[step], rejected_rows])  # (2N,)
            parts["prompts"].append(world.prompt_tokens(train.prompts[rows]))
            parts["responses"].append(torch.cat([train.chosen[order.chosen[step]], train.rejected[rejected_rows]]))
            parts["reference"].append(torch.cat([train.reference_chosen_logps[order.chosen[step]],
                                                 train.reference_rejected_logps[rejected_rows]]))
            parts["embeddings"].append(train.embeddings[rows])
    return {name: torch.stack(values) for name, values in parts.items()}


def pair_logratio_margins(policy: StackedPolicy, pairs: PairSet, world: World, chunk_rows: int = 32768
                          ) -> torch.Tensor:
    """h = (log pi - log pi_ref)(chosen) - (same)(rejected) of every model on every pair. Shape: (K, n)."""
    K, n = policy.num_models, len(pairs)
    step = max(1, chunk_rows // (2 * K))
    tokens, margins = world.prompt_tokens(pairs.prompts), []
    with torch.no_grad():
        for start in range(0, n, step):
            rows = slice(start, start + step)
            prompt = tokens[rows][None].expand(K, -1, -1)
            chosen = policy.response_logps(prompt, pairs.chosen[rows][None].expand(K, -1, -1))
            rejected = policy.response_logps(prompt, pairs.rejected[rows][None].expand(K, -1, -1))
            margins.append((chosen - pairs.reference_chosen_logps[rows]) - (rejected - pairs.reference_rejected_logps[rows]))
    return torch.cat(margins, dim=1)


def _curve_point(step: int, policy: StackedPolicy, curve_pairs: PairSet, world: World, losses: list[float],
                 details: list[dict]) -> list[dict]:
    accuracy = tie_half_accuracy(pair_logratio_margins(policy, curve_pairs, world)).mean(dim=1)  # (K,)
    return [{"step": step, "test_accuracy": round(accuracy[k].item(), 6), "loss": round(losses[k], 6), **details[k]}
            for k in range(policy.num_models)]


def _step_details(logps, config, output) -> dict:
    arguments = sigmoid_arguments(logps, config, output)
    own = (logps.policy_chosen_logps - logps.reference_chosen_logps).detach() - \
        (logps.policy_rejected_logps - logps.reference_rejected_logps).detach()
    return {"curvature_share": round((arguments.abs() > 1).float().mean().item(), 6),
            "max_argument": round(arguments.abs().max().item(), 4), "train_margin": round(own.mean().item(), 4)}


def train_stack(data: SeedData, runs: list[RunSpec], design: StudyDesign, curves: bool = True
                ) -> tuple[StackedPolicy, list[dict]]:
    """Train the K = len(runs) models; returns the trained stack and, per model, its curve and last step.

    Curve points (test subset accuracy, loss, train margin, share of sigmoid arguments beyond +-1) are
    taken at ``design.checkpoints`` evenly spaced steps (and step 0) when ``curves``. A model whose
    log-probs or loss stop being finite (a learning rate too large) leaves the summed loss from that
    step on; its ``diverged_at_step`` is recorded and its NaN margins score 0 on every pair.
    """
    orders = _orders(data, runs, design)
    keys = list(orders)
    configs = [METHODS[run.method].config(run.beta, design.batch_size, orders[(run.arm, run.pairs_per_cluster)]
                                          .mean_own_weight) for run in runs]
    variant = torch.tensor([2 * keys.index((run.arm, run.pairs_per_cluster)) + (not METHODS[run.method].paired)
                            for run in runs])  # (K,)
    policy = data.reference.repeat(len(runs))
    optimizer = StackedAdam(policy.params, torch.tensor([run.learning_rate for run in runs]))
    N, K = design.batch_size, len(runs)
    checkpoints = {round(design.steps * (i + 1) / design.checkpoints) for i in range(design.checkpoints)}
    curve_rows = torch.cat([torch.arange(c * data.world.spec.test_prompts_per_cluster,
                                         c * data.world.spec.test_prompts_per_cluster + design.curve_pairs_per_cluster)
                            for c in range(data.world.spec.num_clusters)])
    curve_pairs = data.pairs["test"].take(curve_rows)
    history = [[] for _ in runs]
    if curves:
        for k, point in enumerate(_curve_point(0, policy, curve_pairs, data.world, [math.log(2)] * K,
                                               [{"curvature_share": 0.0, "max_argument": 0.0, "train_margin": 0.0}] * K)):
            history[k].append(point)
    last, diverged = [{} for _ in runs], [None] * K
    for step in range(design.steps):
        batch = _variants(data, orders, step)
        logps = policy.response_logps(batch["prompts"][variant], batch["responses"][variant])  # (K, 2N)
        reference, embeddings = batch["reference"][variant], batch["embeddings"][variant]
        finite = torch.isfinite(logps).all(dim=1).tolist()  # (K,) a diverged model leaves the loss, not the stack
        total, losses, details = logps.new_zeros(()), [], []
        record = step + 1 in checkpoints
        for k, run in enumerate(runs):
            output = None
            if diverged[k] is None and finite[k]:
                method = METHODS[run.method]
                placebo = orders[(run.arm, run.pairs_per_cluster)].placebo[step]
                preference = step_logps(method, logps[k], reference[k, :N], reference[k, N:], embeddings[k, :N],
                                        embeddings[k, N:], placebo)
                output = preference_objective(preference, configs[k])
                if not math.isfinite(output.loss.item()):
                    output = None
            if output is None:
                diverged[k] = diverged[k] or step + 1
                if record:
                    losses.append(math.nan)
                    details.append({"curvature_share": math.nan, "max_argument": math.nan, "train_margin": math.nan})
                continue
            total = total + output.loss
            if record:
                losses.append(output.loss.item())
                details.append(_step_details(preference, configs[k], output))
        optimizer.zero_grad()
        if total.requires_grad:
            total.backward()
            optimizer.step()
        if record:
            last = [{"loss": round(loss, 6), **detail} for loss, detail in zip(losses, details)]
            if curves:
                for k, point in enumerate(_curve_point(step + 1, policy, curve_pairs, data.world, losses, details)):
                    history[k].append(point)
    return policy, [{"curve": history[k], "last_step": last[k], "config_beta": configs[k].beta,
                     "diverged_at_step": diverged[k]} for k in range(K)]
