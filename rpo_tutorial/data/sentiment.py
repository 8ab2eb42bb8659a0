"""The sentiment scorer that labelled the demo dataset: VADER, the controlled-sentiment task of the DPO paper.

The DPO paper's first experiment (Rafailov et al., 2023, Sec. 6.1) asks a policy to write more
positive text and scores it with a sentiment classifier. We do the same offline with VADER
(Hutto & Gilbert, 2014; package ``vaderSentiment``, which ships its lexicon): the score of a
response is VADER's *compound* polarity in [-1, 1], and the response with the higher score is
preferred. One adjustment, so the judge cannot be won by the cheapest trick: an empty response,
or one that keeps repeating the same few words, scores ``DEGENERATE_SCORE`` (-1, the worst).

It lives in the data layer because it defines the demo dataset: the same function labels the demo
dataset (``scripts/make_demo_dataset.py``, chosen = its highest-scoring response) and the lab's
demo and study use it to score the trained policies (win rate against the starting model), so the demo's win rate
is honest, and sentiment is a reward that a 135M model can learn to move in a few minutes of CPU
training, which is what a demo needs. It is NOT a proxy for helpfulness or harmlessness: a
cheerful wrong answer beats a sober right one. The paper's own evaluations (HH with a GPT-4
judge, AlpacaEval) measure those; this judge only shows that the training moves what it is told.

    >>> sentiment_score("What a lovely, sunny morning!") > sentiment_score("A grim, awful morning.")
    True
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable, Literal

DEGENERATE_SCORE = -1.0  # score of an empty or degenerate (highly repetitive) response
MIN_WORDS_FOR_REPETITION_CHECK = 12  # shorter texts are never called repetitive
MIN_DISTINCT_WORD_SHARE = 0.3  # below this share of distinct words a long text is degenerate
DEFAULT_TIE_MARGIN = 0.05  # |score(a) - score(b)| <= this counts as a tie in prefer()

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


@lru_cache(maxsize=1)
def _analyzer():
    """One VADER analyzer per process (loading its lexicon takes ~50 ms)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def is_degenerate(text: str) -> bool:
    """True for text with no words, or a long text made of very few distinct words.

    A model pushed towards positive sentiment can collapse into "great great great ..."; VADER
    would score that near +1. Normal prose of a dozen words or more has well over half of its
    words distinct, so the threshold only catches collapse.
    """
    words = [word.lower() for word in _WORD.findall(text)]
    if not words:
        return True
    if len(words) < MIN_WORDS_FOR_REPETITION_CHECK:
        return False
    return len(set(words)) / len(words) < MIN_DISTINCT_WORD_SHARE


def sentiment_score(text: str) -> float:
    """The judge's score of one response: VADER compound polarity, or -1 if degenerate.

    Args:
        text: the response only (not the prompt), special tokens already stripped.

    Returns:
        A float in [-1, 1]; higher is preferred. Deterministic.
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}: {text!r:.80}")
    if is_degenerate(text):
        return DEGENERATE_SCORE
    return float(_analyzer().polarity_scores(text)["compound"])


def score_responses(texts: Iterable[str]) -> list[float]:
    """``sentiment_score`` of each text, in order."""
    scores = []
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"texts[{index}] must be a string, got {type(text).__name__}: {text!r:.80}")
        scores.append(sentiment_score(text))
    return scores


def prefer(a: str, b: str, tie_margin: float = DEFAULT_TIE_MARGIN) -> Literal["a", "b", "tie"]:
    """Which of two responses the judge prefers.

    Args:
        a, b: two responses to the same prompt.
        tie_margin: score differences up to this (inclusive) are ties; 0 makes only equal
            scores ties.

    Returns:
        ``"a"`` if ``score(a) - score(b) > tie_margin``, ``"b"`` if below ``-tie_margin``,
        else ``"tie"``.
    """
    if not tie_margin >= 0:  # also rejects NaN
        raise ValueError(f"tie_margin must be >= 0, got {tie_margin!r}")
    difference = sentiment_score(a) - sentiment_score(b)
    if difference > tie_margin:
        return "a"
    if difference < -tie_margin:
        return "b"
    return "tie"
