"""Training: a config with presets, the objectives, the trainer, and the run that ties them together.

The modules::

    config.py         RPOConfig (its fields' checks) and its presets (smoke, demo, colab, paper)
    objectives.py     batch log-probs -> one loss (every method; local or global contrast scope)
    trainer.py        RPOTrainer on transformers.Trainer: one step reads trainer.py -> objectives.py
                      -> weighting.py / losses.py;  metrics.py  logged metrics, metrics.jsonl, train_loss
    forward_plan.py   the forward layout (shared prompts or one forward, pad length), decided once
    reference.py      the frozen reference placed / sharded / computed like the policy; precompute pass
    accumulation.py   one contrast matrix over every micro-batch of a step;  distributed.py  gathers
    launch.py         who decides FSDP / DeepSpeed, effective settings, NaN agreement, the FSDP save
    run.py            build and run a job from a config: the one training path (CLI, notebooks, demo)
    dataset_checks.py, output_dir.py   guards before training;  official.py  the official code's switch
    threads.py        torch threads by machine load;  trl_rpo.py  RPO inside TRL's DPOTrainer
"""
from rpo_tutorial.training.config import PRESETS, RPOConfig, get_preset
from rpo_tutorial.training.run import RunResult, run_sft, run_training
from rpo_tutorial.training.trainer import NonFiniteLossError, RPOTrainer

__all__ = ["PRESETS", "NonFiniteLossError", "RPOConfig", "RPOTrainer", "RunResult", "get_preset", "run_sft",
           "run_training"]
