"""One seed's shared SFT reference, and one method's training run, on trunk features.

Per seed, everything a method sees is fixed before any method runs:
- the SFT stage: one pass over the train pairs' chosen responses (NLL per token), in the seed's
  order, from the pretrained top layers; its weights are the reference of every method;
- reference log-probs of every train and held-out response, computed once;
- the data order: ``steps`` batches of ``batch_size`` pairs from seeded permutations of the train
  pairs (a new permutation each epoch). Paired methods take batch k as pairs. Unpaired methods
  (RPO unpaired, KTO) take the chosen responses of batch k as desirable rows and the rejected
  responses of batch k + 1 (cyclically) as undesirable rows: the same responses over a run, the
  same 2B sequences per step, but chosen and rejected of a step come from different prompts.

The loss of each step is ``training.objectives.preference_objective``: the same registry of pure
losses and weights the trainer uses. Held-out evaluation is forward passes only, in fixed batches
(the same batches for the reference), so a policy equal to its reference ties on every pair.
"""
from __future__ import annotations

import math
import random
import time

import torch

from rpo_lab.study.data import SettingData
from rpo_lab.study.settings import Method, StudySettings
from rpo_lab.study.trunk import TopStack
from rpo_tutorial.training.config import RPOConfig
from rpo_tutorial.training.objectives import PreferenceLogps, preference_objective


def pair_batches(num_pairs: int, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """``steps`` batches of pair indexes: seeded permutations, one per epoch, cut into batches."""
    if num_pairs < batch_size:
        raise ValueError(f"need at least batch_size={batch_size} train pairs, got {num_pairs}")
    generator, stream, epoch = random.Random(seed), [], 0
    while len(stream) < steps * batch_size:
        order = list(range(num_pairs))
        generator.shuffle(order)
        stream += order[: num_pairs - num_pairs % batch_size]  # whole batches only
        epoch += 1
    return [stream[k * batch_size: (k + 1) * batch_size] for k in range(steps)]


@torch.inference_mode()
def sequence_logps(stack: TopStack, data: SettingData, indexes: list[int], batch_size: int) -> torch.Tensor:
    """Log-probs of sequences in fixed consecutive batches (eval mode). Shape: returns (len(indexes),)."""
    stack.model.eval()
    parts = [stack.logps(*data.batch(indexes[start: start + batch_size]))
             for start in range(0, len(indexes), batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0)


def pair_logps(stack: TopStack, data: SettingData, pairs: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(chosen, rejected) log-probs of pairs. Shape: pairs (P, 2) -> (P, 2)."""
    return sequence_logps(stack, data, pairs.reshape(-1).tolist(), batch_size).reshape(-1, 2)


def run_sft(stack: TopStack, data: SettingData, settings: StudySettings, seed: int, pristine: dict) -> dict:
    """The seed's shared reference: SFT from the pretrained top layers; returns its state and log-probs."""
    stack.load_state(pristine)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(stack.parameters(), lr=settings.sft_learning_rate, weight_decay=0.0)
    order = list(range(len(data.train_pairs)))
    random.Random(seed).shuffle(order)
    losses, began = [], time.perf_counter()
    for start in range(0, len(order), settings.batch_size):
        stack.model.train()
        indexes = data.train_pairs[order[start: start + settings.batch_size], 0].tolist()
        features, mask, labels = data.batch(indexes)
        logps = stack.logps(features, mask, labels)  # (B,)
        loss = -logps.sum() / (labels[:, 1:] != -100).sum()  # mean NLL per response token
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(stack.parameters(), settings.max_grad_norm)
        optimizer.step()
        losses.append(loss.item())
    return {"state": stack.state(), "nll_per_token": losses, "seconds": time.perf_counter() - began,
            "train": pair_logps(stack, data, data.train_pairs, settings.eval_batch_size),
            "heldout": pair_logps(stack, data, data.heldout_pairs, settings.eval_batch_size)}


def method_config(method: Method, settings: StudySettings) -> RPOConfig:
    """The RPOConfig whose loss options (beta, weighting, tau, pairing) this method trains with."""
    options = dict(loss=method.loss, beta=method.beta(settings.beta, settings.batch_size), paired=method.paired)
    if method.loss == "rpo":
        options.update(weighting=method.weighting, tau=method.tau)
    return RPOConfig(**options)


def _step_logps(stack: TopStack, data: SettingData, chosen: list[int], rejected: list[int], reference: torch.Tensor,
                paired: bool) -> PreferenceLogps:
    """Policy (with grad) and reference log-probs of one step's M chosen and N rejected responses."""
    indexes = data.train_pairs[chosen, 0].tolist() + data.train_pairs[rejected, 1].tolist()
    policy = stack.logps(*data.batch(indexes))  # (M + N,)
    m = len(chosen)
    return PreferenceLogps(policy_chosen_logps=policy[:m], policy_rejected_logps=policy[m:],
                           reference_chosen_logps=reference[chosen, 0], reference_rejected_logps=reference[rejected, 1],
                           chosen_prompt_embeddings=data.train_embeddings[chosen],
                           rejected_prompt_embeddings=data.train_embeddings[rejected], paired=paired)


def heldout_summary(policy: torch.Tensor, reference: torch.Tensor) -> dict:
    """Accuracy (ties half), counts, drift of held-out (P, 2) log-probs against the reference."""
    from rpo_tutorial.evaluation.evaluate import summarize_logps

    return summarize_logps(policy[:, 0], policy[:, 1], reference[:, 0], reference[:, 1])


def train_method(stack: TopStack, data: SettingData, method: Method, settings: StudySettings, seed: int,
                 sft: dict) -> dict:
    """Train ``method`` from the seed's SFT weights; returns its curves and final held-out log-probs."""
    config = method_config(method, settings)
    stack.load_state(sft["state"])
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(stack.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    batches = pair_batches(len(data.train_pairs), settings.steps, settings.batch_size, seed)
    curve, evals = [], [{"step": 0, **heldout_summary(sft["heldout"], sft["heldout"])}]
    began = time.perf_counter()
    for step, batch in enumerate(batches, start=1):
        stack.model.train()
        rejected = batch if method.paired else batches[step % len(batches)]
        logps = _step_logps(stack, data, batch, rejected, sft["train"], method.paired)
        output = preference_objective(logps, config)
        if not math.isfinite(output.loss.item()):
            raise FloatingPointError(f"{method.key} seed {seed}: non-finite loss at step {step}")
        optimizer.zero_grad()
        output.loss.backward()
        torch.nn.utils.clip_grad_norm_(stack.parameters(), settings.max_grad_norm)
        optimizer.step()
        chosen_ratio = (logps.policy_chosen_logps - logps.reference_chosen_logps).detach()  # (M,)
        rejected_ratio = (logps.policy_rejected_logps - logps.reference_rejected_logps).detach()  # (N,)
        margins = chosen_ratio[:, None] - rejected_ratio[None, :]  # (M, N) log-ratio differences, nats
        own = torch.diagonal(margins) if method.paired else margins.reshape(-1)
        curve.append({"step": step, "loss": output.loss.item(), "margin_nats": own.mean().item(),
                      "accuracy": ((own > 0).float() + 0.5 * (own == 0).float()).mean().item()})
        if step % settings.eval_every == 0 or step == len(batches):
            heldout = pair_logps(stack, data, data.heldout_pairs, settings.eval_batch_size)
            evals.append({"step": step, **heldout_summary(heldout, sft["heldout"])})
    return {"method": method.key, "label": method.label, "seed": seed, "beta": config.beta,
            "config": {"loss": config.loss, "paired": method.paired, "weighting": method.weighting if
                       method.loss == "rpo" else None, "tau": method.tau if method.loss == "rpo" else None},
            "seconds": time.perf_counter() - began, "curve": curve, "evals": evals,
            "heldout_policy": heldout.tolist(), "heldout_reference": sft["heldout"].tolist(),
            "heldout_prompts": data.heldout_prompts}
