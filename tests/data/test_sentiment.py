"""The demo dataset's sentiment scorer: VADER compound sentiment with a degenerate-text floor."""
from __future__ import annotations

import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from rpo_tutorial.data.sentiment import DEGENERATE_SCORE, is_degenerate, prefer, score_responses, sentiment_score

POSITIVE = "What a wonderful, sunny morning! I love the fresh air and the happy birds."
NEGATIVE = "This is a terrible, miserable morning. The traffic is awful and I hate it."
NEUTRAL = "The train leaves the station at eight and arrives at nine."


def test_positive_text_scores_above_neutral_above_negative():
    assert sentiment_score(POSITIVE) > 0.5
    assert sentiment_score(NEGATIVE) < -0.5
    assert sentiment_score(POSITIVE) > sentiment_score(NEUTRAL) > sentiment_score(NEGATIVE)


def test_score_is_vader_compound_for_normal_text():
    analyzer = SentimentIntensityAnalyzer()  # an independent instance
    for text in (POSITIVE, NEGATIVE, NEUTRAL, "ok", "Not bad at all, honestly."):
        assert sentiment_score(text) == analyzer.polarity_scores(text)["compound"]


def test_scores_are_deterministic_and_in_range():
    texts = [POSITIVE, NEGATIVE, NEUTRAL, "", "meh"]
    first, second = score_responses(texts), score_responses(list(reversed(texts)))
    assert first == list(reversed(second))
    assert all(-1.0 <= score <= 1.0 for score in first)
    assert first == [sentiment_score(text) for text in texts]


@pytest.mark.parametrize("text", ["", "   \n", "!!! ... ???", "great " * 20, "good fun " * 10])
def test_empty_or_repetitive_text_gets_the_worst_score(text):
    assert is_degenerate(text)
    assert sentiment_score(text) == DEGENERATE_SCORE


def test_short_or_varied_text_is_not_degenerate():
    assert not is_degenerate("Great!")  # short: never called repetitive
    assert not is_degenerate(POSITIVE)
    assert not is_degenerate("yes yes yes")


def test_repetition_threshold_matches_a_word_count_by_hand():
    # 12 words, 3 distinct: share 0.25 < 0.3 -> degenerate; 12 words, 4 distinct: 0.33 -> not
    assert is_degenerate("nice day ok " * 4)
    assert not is_degenerate("nice day ok fine " * 3)


def test_prefer_picks_the_higher_score():
    assert prefer(POSITIVE, NEGATIVE) == "a"
    assert prefer(NEGATIVE, POSITIVE) == "b"
    assert prefer(NEUTRAL, NEUTRAL) == "tie"


def test_prefer_tie_margin_is_inclusive_and_respected():
    a, b = "It is good.", "It is okay."
    gap = sentiment_score(a) - sentiment_score(b)
    assert gap > 0
    assert prefer(a, b, tie_margin=0.0) == "a"
    assert prefer(a, b, tie_margin=gap / 2) == "a"
    assert prefer(a, b, tie_margin=gap) == "tie"
    assert prefer(b, a, tie_margin=gap) == "tie"
    assert prefer(b, a, tie_margin=gap / 2) == "b"


@pytest.mark.parametrize("margin", [-0.1, float("nan")])
def test_prefer_rejects_a_bad_tie_margin(margin):
    with pytest.raises(ValueError, match="tie_margin"):
        prefer("a", "b", tie_margin=margin)


def test_non_string_input_is_rejected_with_its_index():
    with pytest.raises(ValueError, match=r"texts\[1\]"):
        score_responses(["fine", None])
