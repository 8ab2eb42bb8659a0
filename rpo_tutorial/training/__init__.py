"""Training: a config with presets, the objectives, the trainer, and the run that ties them together.

    config.py        RPOConfig and its presets (smoke, demo, colab, paper)
    objectives.py    batch log-probs -> one loss (every method; local or global contrast scope)
    distributed.py   cross-process gathers for the global contrast matrix
    trainer.py       RPOTrainer on transformers.Trainer;  metrics.py  logged metrics
    reference.py     the frozen reference placed / sharded / computed like the policy; precompute pass
    launch.py        who decides FSDP / DeepSpeed, effective settings, NaN agreement, the final save
    run.py           build and run a job from a config (CLI, notebooks, demo)
    estimates.py     memory and time arithmetic for the paper's run;  cli.py  ``sft`` / ``train``
"""
from rpo_tutorial.training.config import PRESETS, RPOConfig, get_preset
from rpo_tutorial.training.run import RunResult, run_sft, run_training
from rpo_tutorial.training.trainer import NonFiniteLossError, RPOTrainer

__all__ = ["PRESETS", "NonFiniteLossError", "RPOConfig", "RPOTrainer", "RunResult", "get_preset", "run_sft",
           "run_training"]
