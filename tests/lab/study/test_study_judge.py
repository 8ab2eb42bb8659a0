"""The study's judge win rate: r* per cluster, the tie rule, shared sampling seeds."""
from __future__ import annotations

import pytest
import torch

from rpo_lab.study.judge import compare_to_reference, reward, sample_scores
from rpo_lab.study.settings import StudySettings

GLOOMY = "This was an awful, miserable and sad day; I hate how terrible everything went."
HAPPY = "What a wonderful, happy day; I love how great and lovely everything went!"
NEUTRAL = "The meeting is at ten and the room is on the second floor."


def vader(text: str) -> float:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer().polarity_scores(text)["compound"]


@pytest.mark.parametrize("cluster, sign", [("cooking", 1), ("travel", 1), ("pets", 1), ("gardening", 1),
                                           ("sports", -1), ("music", -1), ("school", -1), ("work", -1)])
def test_ground_truth_reward_flips_sentiment_in_the_negative_clusters(cluster, sign):
    for text in (GLOOMY, HAPPY, NEUTRAL):
        assert reward("controlled", cluster, text) == pytest.approx(sign * vader(text))
        assert reward("control", cluster, text) == pytest.approx(vader(text))  # one criterion everywhere
    gloomy_wins = reward("controlled", cluster, GLOOMY) > reward("controlled", cluster, HAPPY)
    assert gloomy_wins == (sign < 0)


@pytest.mark.parametrize("cluster", ["cooking", "sports"])
def test_an_empty_or_degenerate_response_is_the_worst_in_every_cluster(cluster):
    for text in ("", "great " * 20):
        assert reward("controlled", cluster, text) == -1.0
        assert reward("control", cluster, text) == -1.0
    with pytest.raises(ValueError, match="no ground-truth judge"):
        reward("hh", None, HAPPY)


def test_judge_outcomes_count_a_tie_half_within_the_margin():
    candidate = [0.50, 0.30, 0.10, -0.20, 0.00, -0.80, 0.90]
    reference = [0.20, 0.27, 0.16, -0.20, 0.05, 0.80, -0.90]
    margin = 0.05  # the demo's tie margin: |difference| <= margin is a tie
    expected = []
    for c, r in zip(candidate, reference):  # brute force, one prompt at a time
        if c - r > margin:
            expected.append(1.0)
        elif r - c > margin:
            expected.append(0.0)
        else:
            expected.append(0.5)
    result = compare_to_reference(candidate, reference)
    assert result["outcomes"] == expected == [1.0, 0.5, 0.0, 0.5, 0.5, 0.0, 1.0]
    assert result["win_rate"] == pytest.approx(sum(expected) / len(expected))
    assert (result["wins"], result["ties"], result["losses"], result["n"]) == (2, 3, 2, 7)
    with pytest.raises(ValueError, match="one shape"):
        compare_to_reference([0.1, 0.2], [0.1])


def test_a_gloomier_sample_wins_a_negative_cluster_prompt_and_loses_a_positive_one():
    for cluster, outcome in (("sports", 1.0), ("cooking", 0.0)):
        scores = compare_to_reference([reward("controlled", cluster, GLOOMY)], [reward("controlled", cluster, HAPPY)])
        assert scores["outcomes"] == [outcome]


def test_a_model_sampled_with_the_shared_seeds_ties_with_itself():
    from rpo_tutorial.models.loading import load_tokenizer, tiny_model

    tokenizer = load_tokenizer()
    torch.manual_seed(0)
    model = tiny_model(len(tokenizer), num_layers=2)
    rows = [{"prompt": f"Tell me about topic {k}.", "cluster": cluster} for k, cluster in
            enumerate(["cooking", "sports", "music", "pets", "work"])]
    settings = StudySettings(judge_max_new_tokens=6, judge_batch_size=2)
    first = sample_scores(model, tokenizer, rows, "controlled", settings, seed=1)
    again = sample_scores(model, tokenizer, rows, "controlled", settings, seed=1)
    assert first["responses"] == again["responses"] and len(first["scores"]) == 5
    result = compare_to_reference(again["scores"], first["scores"])
    assert result["outcomes"] == [0.5] * 5 and result["win_rate"] == 0.5
    other = sample_scores(model, tokenizer, rows, "controlled", settings, seed=2)
    assert other["responses"] != first["responses"]  # another seed draws other samples
