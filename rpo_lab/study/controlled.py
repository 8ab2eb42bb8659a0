"""The controlled setting: demo pairs whose preference depends on the prompt's topic cluster.

The paper's Table 1 claim is that contrasting responses across RELATED prompts helps and across
unrelated prompts hurts (uniform < DPO < embedding weights). To make that testable, the demo
data (8 topic clusters, responses scored by VADER sentiment) gets a preference whose criterion
depends on the cluster:

    ground-truth reward   r*(x, y) = sign(cluster(x)) * sentiment(y)
    sign = +1 in POSITIVE_CLUSTERS (cooking, travel, pets, gardening): the happier response wins
    sign = -1 in NEGATIVE_CLUSTERS (sports, music, school, work):     the gloomier response wins

``sentiment`` is the demo judge (``rpo_tutorial.data.sentiment.sentiment_score``, VADER compound in
[-1, 1]); each demo row stores it for both responses (``chosen_score``, ``rejected_score``), so
the controlled rows are the demo rows with chosen and rejected SWAPPED in the negative
clusters; ``chosen_score`` / ``rejected_score`` of a controlled row are r* of its responses
(the swapped VADER scores times the sign). Every pair keeps a gap of at least 0.1 in r*.

In this setting a response that is good for one cluster's prompts is bad for the other half's,
so a contrast between a chosen response of a cooking prompt and the rejected response of a
sports prompt compares texts judged by opposite criteria. The **control** setting
(:func:`control_rows`) is the demo data unchanged: the same criterion (happier wins) everywhere.

Both settings use one split by prompt (:func:`split_setting`): ``heldout_per_cluster`` prompts of
each cluster are held out, the rest train; the demo's own train / held-out files are pooled first.
"""
from __future__ import annotations

from typing import Sequence

from rpo_tutorial.data.demo import load_demo, split_by_prompt

POSITIVE_CLUSTERS = ("cooking", "travel", "pets", "gardening")  # preference: higher sentiment wins
NEGATIVE_CLUSTERS = ("sports", "music", "school", "work")  # preference: lower sentiment wins


def cluster_sign(cluster: str) -> int:
    """+1 where the controlled preference favours positive sentiment, -1 where it favours negative."""
    if cluster in POSITIVE_CLUSTERS:
        return 1
    if cluster in NEGATIVE_CLUSTERS:
        return -1
    raise ValueError(f"unknown cluster {cluster!r}; the controlled setting knows {POSITIVE_CLUSTERS + NEGATIVE_CLUSTERS}")


def controlled_reward(cluster: str, sentiment: float) -> float:
    """The ground-truth reward r*(x, y) = sign(cluster(x)) * sentiment(y) (module docstring)."""
    return cluster_sign(cluster) * float(sentiment)


def controlled_row(row: dict) -> dict:
    """One demo row under the cluster-dependent preference: swapped in the negative clusters."""
    sign = cluster_sign(row["cluster"])
    first, second = (row["chosen"], row["rejected"]) if sign > 0 else (row["rejected"], row["chosen"])
    first_score, second_score = ((row["chosen_score"], row["rejected_score"]) if sign > 0
                                 else (row["rejected_score"], row["chosen_score"]))
    return {**row, "chosen": first, "rejected": second, "chosen_score": sign * first_score,
            "rejected_score": sign * second_score, "preference": "cluster-dependent"}


def demo_pool(rows: Sequence[dict] | None = None) -> list[dict]:
    """All demo pairs (train + held-out files), or ``rows``."""
    return list(rows) if rows is not None else load_demo("train") + load_demo("heldout")


def control_rows(rows: Sequence[dict] | None = None) -> list[dict]:
    """The control: the demo preference (higher sentiment wins) in every cluster."""
    return [{**row, "preference": "same everywhere"} for row in demo_pool(rows)]


def controlled_rows(rows: Sequence[dict] | None = None) -> list[dict]:
    """The controlled setting: the cluster-dependent preference (module docstring)."""
    return [controlled_row(row) for row in demo_pool(rows)]


def split_setting(rows: Sequence[dict], heldout_per_cluster: int = 8, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, held-out) by prompt, ``heldout_per_cluster`` prompts per cluster held out (seeded)."""
    return split_by_prompt(rows, heldout_per_cluster=heldout_per_cluster, seed=seed)
