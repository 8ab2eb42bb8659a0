"""rpo_tutorial: Relative Preference Optimization (Yin et al., arXiv 2402.10958), tested and explained.

The losses and weighting strategies are pure functions; import them into any trainer:

    from rpo_tutorial import rpo_loss, embedding_weights
    weights = embedding_weights(chosen_prompt_embeddings, rejected_prompt_embeddings, tau=0.5)
    losses, chosen_rewards, rejected_rewards = rpo_loss(
        policy_chosen_logps, policy_rejected_logps,
        reference_chosen_logps, reference_rejected_logps, weights, beta=0.1)
"""
from rpo_tutorial.losses import (
    LOSSES,
    contrast_matrix,
    dpo_loss,
    ipo_loss,
    kto_loss,
    rpo_loss,
    zero_loss_like,
)
from rpo_tutorial.weighting import (
    WEIGHTINGS,
    compute_weights,
    diagonal_weights,
    embedding_weights,
    sinkhorn_weights,
    uniform_weights,
)

__version__ = "0.1.0"

# Everything else loads on first use (PEP 562), so `import rpo_tutorial` stays light for people
# who only want the loss: name -> module that defines it.
_LAZY = {
    "RPOConfig": "rpo_tutorial.training.config",
    "get_preset": "rpo_tutorial.training.config",
    "official_convention": "rpo_tutorial.training.official",
    "RPOTrainer": "rpo_tutorial.training.trainer",
    "run_training": "rpo_tutorial.training.run",
    "run_sft": "rpo_tutorial.training.run",
    "load_hh": "rpo_tutorial.data.preferences",
    "load_tldr": "rpo_tutorial.data.preferences",
    "load_preferences": "rpo_tutorial.data.preferences",
    "load_alpaca_eval_prompts": "rpo_tutorial.data.preferences",
    "to_unpaired": "rpo_tutorial.data.preferences",
    "open_dataset": "rpo_tutorial.data.preferences",
    "load_demo": "rpo_tutorial.data.demo",
    "tokenize_pair": "rpo_tutorial.data.tokenization",
    "tokenize_unpaired": "rpo_tutorial.data.tokenization",
    "tokenize_dataset": "rpo_tutorial.data.tokenization",
    "PreferenceCollator": "rpo_tutorial.data.collate",
    "PromptEmbedder": "rpo_tutorial.data.embeddings",
    "add_prompt_embeddings": "rpo_tutorial.data.embeddings",
    "batch_sequence_logps": "rpo_tutorial.models.logprobs",
    "load_policy": "rpo_tutorial.models.loading",
    "load_tokenizer": "rpo_tutorial.models.loading",
    "OpenAIJudge": "rpo_tutorial.evaluation.judges",
    "RewardJudge": "rpo_tutorial.evaluation.offline",
    "win_rate": "rpo_tutorial.evaluation.winrate",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rpo_tutorial' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "LOSSES",
    "WEIGHTINGS",
    "compute_weights",
    "contrast_matrix",
    "diagonal_weights",
    "dpo_loss",
    "embedding_weights",
    "ipo_loss",
    "kto_loss",
    "rpo_loss",
    "sinkhorn_weights",
    "uniform_weights",
    "zero_loss_like",
    *_LAZY,
]
