"""The study's judge win rate against the SFT reference, in the settings with a ground-truth reward.

Ground truth r*(x, y) of a held-out prompt x and a sampled response y (``reward``):

- ``controlled``: r* = sign(cluster(x)) x sentiment(y) (``rpo_lab.study.controlled.controlled_reward``): the
  happier response wins in cooking / travel / pets / gardening, the gloomier one in sports / music /
  school / work;
- ``control``: r* = sentiment(y) (the happier response wins everywhere);
- ``hh``: no offline judge (``JUDGED_SETTINGS`` leaves it out; the report says so).

sentiment(y) is the demo judge (``demo.judge.sentiment_score``, VADER compound in [-1, 1]). An empty
or degenerate (highly repetitive) response scores -1, the worst r*, in EVERY cluster: flipping the
sign there would let an empty answer win every negative-cluster prompt.

Per seed, the SFT reference and every method sample each held-out prompt once with the same
settings and the same seeds (``sampling_seed``: batch b of seed s is drawn after seeding torch
with 1000 s + b), top-p ``judge_top_p``, temperature ``judge_temperature``. Per prompt p the
method's sample is compared with the SFT sample of p: outcome ``o_p = 1`` (r* higher by more than
``TIE_MARGIN``), ``0.5`` (within it: a tie counts half, as in the demo), ``0`` (lower). The win
rate of a run is mean_p o_p (the rule of the demo's ``RewardJudge`` and ``win_rate``); the per-prompt outcomes
feed the same seed interval and paired bootstrap against DPO as the implicit-reward accuracy.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch

from rpo_lab.study.controlled import controlled_reward
from rpo_tutorial.data.sentiment import DEFAULT_TIE_MARGIN, DEGENERATE_SCORE, is_degenerate, sentiment_score
from rpo_tutorial.evaluation.sampling import generate_responses
from rpo_lab.study.settings import StudySettings

JUDGED_SETTINGS = ("controlled", "control")  # settings with a ground-truth reward available offline
TIE_MARGIN = DEFAULT_TIE_MARGIN  # |r*(a) - r*(b)| <= this is a tie (the demo's rule)


def reward(setting: str, cluster: str | None, response: str) -> float:
    """r*(x, y) of one response (module docstring); -1 for an empty or degenerate response."""
    if setting not in JUDGED_SETTINGS:
        raise ValueError(f"setting {setting!r} has no ground-truth judge; judged settings: {JUDGED_SETTINGS}")
    if is_degenerate(response):
        return DEGENERATE_SCORE
    sentiment = sentiment_score(response)
    return controlled_reward(cluster, sentiment) if setting == "controlled" else sentiment


def sampling_seed(seed: int) -> int:
    """The first sampling seed of a study seed (its batches use this + batch index), shared by every model."""
    return 1000 * seed


def sample_scores(model: torch.nn.Module, tokenizer, rows: Sequence[dict], setting: str, settings: StudySettings,
                  seed: int) -> dict:
    """Sample one response per held-out prompt from ``model`` and score it with r*.

    Returns:
        ``{"responses": [P], "scores": [P], "stop_reasons": [P], "seconds": float}``
    """
    began = time.perf_counter()
    samples = generate_responses(model, tokenizer, [row["prompt"] for row in rows],
                                 max_new_tokens=settings.judge_max_new_tokens, temperature=settings.judge_temperature,
                                 top_p=settings.judge_top_p, batch_size=settings.judge_batch_size,
                                 seed=sampling_seed(seed), model_name="study", progress=False)
    responses = [sample["response"] for sample in samples]
    return {"responses": responses,
            "scores": [reward(setting, row.get("cluster"), text) for row, text in zip(rows, responses)],
            "stop_reasons": [sample["stop_reason"] for sample in samples],
            "seconds": time.perf_counter() - began}


def compare_to_reference(candidate_scores: Sequence[float], reference_scores: Sequence[float]) -> dict:
    """Per-prompt outcomes (1 / 0.5 / 0) of the candidate's r* against the reference's, and the win rate.

    Shape:
        candidate_scores, reference_scores: (P,) r* of the samples of the same P prompts
    """
    candidate, reference = np.asarray(candidate_scores, dtype=float), np.asarray(reference_scores, dtype=float)
    if candidate.shape != reference.shape or candidate.ndim != 1:
        raise ValueError(f"scores must be two (P,) arrays of one shape, got {candidate.shape} and {reference.shape}")
    difference = candidate - reference  # (P,)
    outcomes = np.where(difference > TIE_MARGIN, 1.0, np.where(difference < -TIE_MARGIN, 0.0, 0.5))  # (P,)
    return {"outcomes": outcomes.tolist(), "win_rate": float(outcomes.mean()) if outcomes.size else float("nan"),
            "wins": int((outcomes == 1.0).sum()), "ties": int((outcomes == 0.5).sum()),
            "losses": int((outcomes == 0.0).sum()), "n": int(outcomes.size),
            "mean_score": float(candidate.mean()) if candidate.size else float("nan"),
            "reference_mean_score": float(reference.mean()) if reference.size else float("nan")}
