"""The forward layout of a run, decided once when the trainer is built: shared prompts or one forward.

A paired batch can run each prompt once and both responses on its key/value cache
(``models.shared_prompt``), or run all of its rows in one forward (``models.head``). Which one
is safe depends on the run, not on the batch, so it is decided once, here, and written into a
:class:`ForwardPlan` that ``build_trainer`` hands to the collator (its pad length), to
:class:`~rpo_tutorial.training.trainer.RPOTrainer` and, through it, to the reference pass. The
policy and the reference (live, or precomputed once) always take the SAME layout, so every
log-ratio log pi - log pi_ref is exactly 0 before the first optimizer step.

The first rule that applies decides (:func:`choose_forward_plan`):

=====================================================  =============  ==================
the run                                                share_prompts  pad_to_length
=====================================================  =============  ==================
precomputed reference under mixed precision (bf16)     False          longest example (1)
SFT (no pairs)                                         False          None
unpaired data (no pairs)                               False          None
``share_prompts=False`` in the config                  False          None
an FSDP or DeepSpeed engine (2)                        False          None
activation (gradient) checkpointing (3)                False          None
a model that cannot (``shared_prompt_problem``) (4)    False          None
otherwise                                              True           None
=====================================================  =============  ==================

(1) bf16 kernels round differently for another padded length, and a training batch is padded
to the longest of ITS rows: with one fixed length a row's arithmetic no longer depends on the
other rows (exactly, on CPU: ``tests/training/test_precision.py``), so the stored reference
log-prob is what the training step computes. Re-laying such batches as shared prompts (padded
per batch) would undo that. Without the examples (a trainer built by hand) the length is None.
(2) not tested with two forwards per backward (DDP is: ``tests/training/test_distributed.py``).
(3) it drops the key/value cache in the training forward. (4) its head is not a plain linear
layer, its model type or attention implementation is untested, or sdpa before torch 2.5.

A paired batch whose rows do not share their prompt still takes one forward: that is a
property of the batch (``shared_prompt.split_shared_prompts``), not of the run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from rpo_tutorial.data.collate import longest_sequence
from rpo_tutorial.models.shared_prompt import activation_checkpointing_on, shared_prompt_problem
from rpo_tutorial.training.config import RPOConfig
from rpo_tutorial.training.launch import requested_engine


@dataclass(frozen=True)
class ForwardPlan:
    """How every batch of a run is laid out for the policy's and the reference's forwards."""

    share_prompts: bool  # paired batches: each prompt's forward once, both responses on its cache
    pad_to_length: int | None  # every batch padded to this many tokens (None: to its own longest row)
    reason: str  # why, in one sentence (printed once when the trainer starts)


def _checkpointing(args) -> bool:
    """HF activation (gradient) checkpointing asked for in ``TrainingArguments`` (v5 renamed the field)."""
    return bool(getattr(args, "activation_checkpointing", False) or getattr(args, "gradient_checkpointing", False))


def choose_forward_plan(config: RPOConfig, args, models: Sequence[torch.nn.Module | None],
                        examples: Sequence[dict] | None = None) -> ForwardPlan:
    """The layout of a run (see the module table), from its config, arguments and models.

    Args:
        config: the run's :class:`RPOConfig`.
        args: its ``transformers.TrainingArguments`` (engine, mixed precision, checkpointing).
        models: the policy and, when there is one, the reference (None entries are skipped).
        examples: every tokenized example the run will batch (training + evaluation), to fix
            the pad length of a precomputed reference under mixed precision.
    """
    if config.needs_reference and config.reference == "precomputed" and (args.bf16 or args.fp16):
        length = longest_sequence(examples) if examples else None
        return ForwardPlan(False, length, f"a precomputed reference under mixed precision: one forward on all "
                                          f"rows, every batch padded to {length} tokens, as in the reference pass")
    engine = requested_engine(args)
    models = [model for model in models if model is not None]
    problems = [problem for problem in map(shared_prompt_problem, models) if problem is not None]
    rules = [
        (config.loss == "sft", "SFT batches have no pairs"),
        (not config.is_paired, "unpaired batches have no pairs"),
        (not config.share_prompts, "share_prompts=False in the config"),
        (engine is not None, f"the {engine} engine is not tested with two forwards per backward"),
        (_checkpointing(args) or any(map(activation_checkpointing_on, models)),
         "activation checkpointing drops the key/value cache in the training forward"),
        (bool(problems), f"the model cannot: {problems[0] if problems else ''}"),
    ]
    for applies, why in rules:
        if applies:
            return ForwardPlan(False, None, f"one forward on all rows: {why}")
    return ForwardPlan(True, None, "shared prompts: each prompt's forward once, both responses on its "
                                   "key/value cache (the reference takes the same layout)")
