"""Evaluation: sample, judge in both orders, count wins with intervals, export for AlpacaEval.

    sampling.py      batched generation from any causal LM
    prompts.py       judge templates, the answer parser, the both-orders tie rule
    judges.py        the GPT-4 (OpenAI-compatible) judge;  cache.py  its resumable answer cache
    offline.py       offline judges: a reward function, the policy's implicit reward
    evaluate.py      held-out implicit-reward accuracy against a reference (``rpo-tutorial evaluate``)
    winrate.py       win rates with Wilson intervals;  alpaca_eval.py  AlpacaEval 2.0

Ties count half everywhere (:mod:`rpo_tutorial.accuracy`). Evaluation never imports training.
"""
from rpo_tutorial.evaluation.judges import OpenAIJudge
from rpo_tutorial.evaluation.offline import RewardJudge, implicit_reward_accuracy, implicit_reward_records
from rpo_tutorial.evaluation.sampling import generate_responses
from rpo_tutorial.evaluation.winrate import markdown_table, wilson_interval, win_rate, win_rate_table

__all__ = ["OpenAIJudge", "RewardJudge", "generate_responses", "implicit_reward_accuracy",
           "implicit_reward_records", "markdown_table", "wilson_interval", "win_rate", "win_rate_table"]
