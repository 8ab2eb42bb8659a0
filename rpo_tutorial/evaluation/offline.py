"""Offline judges that need no API: a reward function, and the policy's own implicit reward.

Both return records in the format of :mod:`rpo_tutorial.evaluation`, so
:func:`rpo_tutorial.evaluation.winrate.win_rate` applies unchanged.

- :class:`RewardJudge` scores each response with any ``score_fn(text) -> float`` (the demo
  dataset's judge is ``rpo_tutorial.data.sentiment.sentiment_score``); the higher score wins, and a
  difference of at most ``margin`` is a tie. A reward has no position bias, so both order
  verdicts are the same.
- :func:`implicit_reward_accuracy` is the share of held-out preference pairs on which the
  implicit reward ``r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x))`` (DPO's reparametrisation,
  the quantity inside RPO's contrast matrix) ranks the chosen response above the rejected one;
  a tie (equal rewards, as for every pair of a model equal to its reference) counts half, never
  as a miss (TRL's ``rewards/accuracies`` counts it as a miss). :func:`implicit_reward_records` gives the per-pair
  records, so the accuracy can be reported with an interval (ties count half).
- :func:`response_logps` computes the log-probabilities those functions take: the sum over
  response tokens (EOS included) of log pi(token | prompt, previous tokens), in float32, with
  the prompt rendered and truncated exactly as in training.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from rpo_tutorial.accuracy import tie_half_accuracy
from rpo_tutorial.data.collate import SFTCollator
from rpo_tutorial.data.tokenization import tokenize_sft
from rpo_tutorial.evaluation.prompts import check_pairs, combine_verdicts
from rpo_tutorial.models.logprobs import batch_sequence_logps


class RewardJudge:
    """Pairwise judge from a scalar reward: ``score_fn(response)`` (or ``score_fn(prompt, response)``).

    Args:
        score_fn: any callable returning a number; higher is better.
        margin: score differences ``<= margin`` are ties.
        with_prompt: call ``score_fn(prompt, response)`` instead of ``score_fn(response)``.
        name: recorded as the record's ``"judge"`` (default: the function's name).
    """

    def __init__(self, score_fn: Callable[..., float], margin: float = 0.0, with_prompt: bool = False,
                 name: str | None = None) -> None:
        if not callable(score_fn):
            raise ValueError(f"score_fn must be callable, got {type(score_fn).__name__}")
        if not math.isfinite(margin) or margin < 0:
            raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
        self.score_fn, self.margin, self.with_prompt = score_fn, float(margin), with_prompt
        self.name = name or getattr(score_fn, "__name__", type(score_fn).__name__)

    def _score(self, prompt: object, text: str, where: str) -> float | None:
        try:
            value = self.score_fn(prompt, text) if self.with_prompt else self.score_fn(text)
        except Exception as error:
            raise RuntimeError(f"score_fn raised on {where}: {type(error).__name__}: {error}") from error
        try:
            value = float(value)
        except (TypeError, ValueError):
            return None
        return value if math.isfinite(value) else None

    def judge_pairs(self, prompts: Sequence, candidates: Sequence[str], baselines: Sequence[str]) -> list[dict]:
        """One record per pair; a non-numeric or non-finite score makes that pair "failed" (with a warning)."""
        check_pairs(prompts, candidates, baselines)
        records, failed = [], 0
        for index, (prompt, candidate, baseline) in enumerate(zip(prompts, candidates, baselines)):
            candidate_score = self._score(prompt, candidate, f"candidates[{index}]")
            baseline_score = self._score(prompt, baseline, f"baselines[{index}]")
            record = {"prompt": prompt, "candidate": candidate, "baseline": baseline, "judge": self.name,
                      "task": "reward", "candidate_score": candidate_score, "baseline_score": baseline_score}
            if candidate_score is None or baseline_score is None:
                verdict, failed = "failed", failed + 1
                record["error"] = "score_fn returned a non-finite or non-numeric value"
            elif abs(candidate_score - baseline_score) <= self.margin:
                verdict = "tie"
            else:
                verdict = "candidate" if candidate_score > baseline_score else "baseline"
            record.update(verdict_candidate_first=verdict, verdict_baseline_first=verdict,
                          winner=combine_verdicts(verdict, verdict))
            records.append(record)
        if failed:
            warnings.warn(f"{self.name}: {failed} of {len(records)} pairs got no usable score and are "
                          "recorded 'failed'", stacklevel=2)
        return records


def _implicit_rewards(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                      reference_chosen_logps: torch.Tensor, reference_rejected_logps: torch.Tensor,
                      beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = {"policy_chosen_logps": policy_chosen_logps, "policy_rejected_logps": policy_rejected_logps,
               "reference_chosen_logps": reference_chosen_logps, "reference_rejected_logps": reference_rejected_logps}
    shapes = {name: tuple(torch.as_tensor(value).shape) for name, value in tensors.items()}
    if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 1:
        raise ValueError(f"the four log-prob tensors must be 1-D of one length (one entry per pair); got {shapes}")
    if next(iter(shapes.values()))[0] == 0:
        raise ValueError("no pairs: the log-prob tensors are empty")
    if not math.isfinite(beta) or beta <= 0:
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
    values = {name: torch.as_tensor(value).detach().float().cpu() for name, value in tensors.items()}  # (N,) float32
    for name, value in values.items():
        if not torch.isfinite(value).all():
            bad = torch.nonzero(~torch.isfinite(value)).flatten()[:5].tolist()
            raise ValueError(f"{name} has non-finite values at pairs {bad}")
    chosen_rewards = beta * (values["policy_chosen_logps"] - values["reference_chosen_logps"])  # (N,)
    rejected_rewards = beta * (values["policy_rejected_logps"] - values["reference_rejected_logps"])  # (N,)
    return chosen_rewards, rejected_rewards


def implicit_reward_accuracy(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                             reference_chosen_logps: torch.Tensor, reference_rejected_logps: torch.Tensor,
                             beta: float) -> float:
    """Share of pairs with ``beta * log(pi/pi_ref)`` higher for the chosen response; ties count half.

    ``(wins + ties / 2) / n``: a model equal to its reference scores 0.5 (every pair a tie), not 0.
    :func:`rpo_tutorial.evaluation.evaluate.preference_accuracy` also gives the counts and an interval.

    Shape:
        each log-prob tensor: (N,), one summed response log-prob per pair; returns a float in [0, 1]
    """
    chosen_rewards, rejected_rewards = _implicit_rewards(policy_chosen_logps, policy_rejected_logps,
                                                         reference_chosen_logps, reference_rejected_logps, beta)
    return tie_half_accuracy(chosen_rewards - rejected_rewards).mean().item()  # (N,) -> ()


def implicit_reward_records(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                            reference_chosen_logps: torch.Tensor, reference_rejected_logps: torch.Tensor,
                            beta: float, prompts: Sequence | None = None) -> list[dict]:
    """Per-pair records: the "candidate" is the chosen response, the "baseline" the rejected one.

    ``winner`` is "candidate" when the chosen reward is higher, "baseline" when lower, "tie" when
    equal; ``chosen_reward`` and ``rejected_reward`` are stored.

    Shape:
        each log-prob tensor: (N,); ``prompts``: N entries or None
    """
    chosen_rewards, rejected_rewards = _implicit_rewards(policy_chosen_logps, policy_rejected_logps,
                                                         reference_chosen_logps, reference_rejected_logps, beta)
    if prompts is not None and len(prompts) != len(chosen_rewards):
        raise ValueError(f"prompts has {len(prompts)} entries for {len(chosen_rewards)} pairs")
    records = []
    for index, (chosen, rejected) in enumerate(zip(chosen_rewards.tolist(), rejected_rewards.tolist())):
        verdict = "candidate" if chosen > rejected else "baseline" if chosen < rejected else "tie"
        records.append({"prompt": prompts[index] if prompts is not None else None, "candidate": "chosen",
                        "baseline": "rejected", "judge": f"implicit_reward(beta={beta})", "task": "implicit_reward",
                        "chosen_reward": chosen, "rejected_reward": rejected, "verdict_candidate_first": verdict,
                        "verdict_baseline_first": verdict, "winner": verdict})
    return records


def response_logps(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: Sequence,
                   responses: Sequence[str], batch_size: int = 8, max_prompt_length: int = 256,
                   max_length: int = 512, template: str = "auto", progress: bool = True) -> torch.Tensor:
    """Summed log pi(response | prompt) per pair, tokenized and truncated as in training.

    Shape:
        returns (N,) float32 on the CPU, N = len(prompts) = len(responses)
    """
    if len(prompts) != len(responses):
        raise ValueError(f"prompts ({len(prompts)}) and responses ({len(responses)}) must have the same length")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    examples = []
    for index, (prompt, response) in enumerate(zip(prompts, responses)):
        try:
            examples.append(tokenize_sft({"prompt": prompt, "chosen": response}, tokenizer, max_prompt_length,
                                         max_length, "left", template))
        except ValueError as error:
            raise ValueError(f"pair {index}: {error}") from error
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    collator, totals, was_training = SFTCollator(pad_id), [], model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in tqdm(range(0, len(examples), batch_size), desc="log-probs", disable=not progress):
                totals.append(batch_sequence_logps(model, collator(examples[start:start + batch_size])).cpu())  # (B,)
    finally:
        model.train(was_training)
    return torch.cat(totals) if totals else torch.zeros(0, dtype=torch.float32)  # (N,)
