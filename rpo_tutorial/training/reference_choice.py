"""``reference="auto"``: a frozen reference model run every step, or its log-probs precomputed once.

A live reference (``"model"``) runs one no-grad forward per example every time training sees the
example. A precomputed reference runs one forward per example ONCE (``run.build_trainer``), then
training reads the stored log-probs: a step loses its reference forward, about a quarter of its
matmul FLOPs (policy forward + backward = 3 forwards, reference = 1), and the reference's memory.
The pass pays back when training sees each example often enough.

The rule (:func:`decide_reference`), in token-forwards (a forward's matmul work grows with the
tokens it runs; attention's quadratic term is left out):

- V = example visits over the run (``max_steps`` x batch x accumulation x processes, or epochs x
  examples), n = examples in the pass (training + evaluation), r = V / n_train passes over the data;
- t_live, t_pre = tokens per visit of a training batch with a live / precomputed reference, and
  t_pass = tokens per example in the one-off pass. They differ only under mixed precision
  (``bf16``), where a precomputed reference pads the pass and every training batch to the
  dataset's longest sequence and gives up shared prompts (``forward_plan.choose_forward_plan``), so
  that stored and live log-probs are the same arithmetic;
- cost with a live reference: C_model = V (3 t_live + t_live); with a precomputed one,
  C_pre = n t_pass + 3 V t_pre.

``"precomputed"`` when r >= 2 (every example's reference forward is needed at least twice, so the
pass costs at most half of what it saves: the step's ~25 % FLOP saving is mostly kept) AND
C_pre < C_model (under bf16 the padding can cost more than the reference forward saves);
``"model"`` otherwise. SFT needs no reference. ``"lora"`` is never chosen: it changes what is
trained (adapters), so only the user picks it; with LoRA the reference is the base weights and
``"precomputed"`` can still be given by hand.

    choice = choose_reference(config, examples, world_size=1)
    print(choice.line())   # "reference: model (auto): each example is seen 0.3 times ..."
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Mapping, Sequence

from rpo_tutorial.data.collate import IGNORE_INDEX
from rpo_tutorial.training.config import RPOConfig

MIN_PASSES = 2.0  # precompute when training sees every example at least this many times (on average)
LAYOUT_SEED = 0  # the simulated batch order (token counts only)


@dataclass(frozen=True)
class ReferenceChoice:
    """What ``reference="auto"`` became, and why."""

    mode: str  # "model" | "precomputed"
    reason: str  # one sentence, printed by the CLI
    passes: float | None = None  # r: visits per training example over the run
    cost_ratio: float | None = None  # C_pre / C_model (token-forwards of the whole run)

    def line(self) -> str:
        return f"reference: {self.mode} (auto): {self.reason}"


def decide_reference(visits: float, train_examples: int, pass_examples: int, live_tokens: float,
                     precomputed_tokens: float, pass_tokens: float, bf16: bool = False) -> ReferenceChoice:
    """The rule of the module docstring, from counts alone.

    Args:
        visits: V, examples seen by training over the run.
        train_examples: training examples (n_train, for r = V / n_train).
        pass_examples: examples the one-off pass would run (training + evaluation).
        live_tokens, precomputed_tokens: t_live, t_pre, tokens per visit in training.
        pass_tokens: t_pass, tokens per example in the one-off pass.
    """
    if min(visits, train_examples, pass_examples, live_tokens, precomputed_tokens, pass_tokens) <= 0:
        raise ValueError("visits, example counts and token counts must be > 0, got "
                         f"{(visits, train_examples, pass_examples, live_tokens, precomputed_tokens, pass_tokens)}")
    passes = visits / train_examples
    live = visits * 4 * live_tokens
    precomputed = pass_examples * pass_tokens + visits * 3 * precomputed_tokens
    ratio = precomputed / live
    seen = f"each training example is seen {passes:.2g} times ({visits:.0f} visits of {train_examples} examples)"
    if passes < MIN_PASSES:
        return ReferenceChoice("model", f"{seen}: a one-off reference pass over {pass_examples} examples would "
                               f"not pay back (it does when they are seen >= {MIN_PASSES:g} times)", passes, ratio)
    if ratio >= 1.0:
        padding = precomputed_tokens / live_tokens
        return ReferenceChoice("model", f"{seen}, but under bf16 a precomputed reference pads every batch to the "
                               f"longest sequence ({padding:.2f} x the tokens of a live step): {ratio:.2f} x the "
                               "FLOPs of a live reference", passes, ratio)
    padding = " (bf16: batches padded to the longest sequence, included)" if bf16 else ""
    return ReferenceChoice("precomputed", f"{seen}: one reference pass replaces the reference forward of every "
                           f"step; estimated {ratio:.2f} x the run's FLOPs{padding}, and no reference model in "
                           "memory while training", passes, ratio)


def _prompt_and_length(example: Mapping) -> tuple[int, int, int]:
    """(prompt tokens, chosen length, rejected length) of a paired example; unpaired: (prompt, length, 0)."""
    if "chosen_input_ids" in example:
        labels = example["chosen_labels"]
        prompt = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))
        return prompt, len(example["chosen_input_ids"]), len(example["rejected_input_ids"])
    labels = example["labels"]
    prompt = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))
    return prompt, len(example["input_ids"]), 0


def batch_tokens(examples: Sequence[Mapping], share_prompts: bool, pad_to: int | None = None) -> int:
    """Tokens one forward over this collated batch runs (padding included).

    Paired with shared prompts: M prompts left-padded to the longest prompt, 2M responses padded to
    the longest response; otherwise every row padded to the longest row (or to ``pad_to``).
    """
    shapes = [_prompt_and_length(example) for example in examples]
    rows = sum(2 if rejected else 1 for _, _, rejected in shapes)
    if pad_to is not None:
        return rows * pad_to
    paired = all(rejected for _, _, rejected in shapes)
    if share_prompts and paired:
        prompt = max(p for p, _, _ in shapes)
        response = max(max(c - p, r - p) for p, c, r in shapes)
        return len(shapes) * prompt + rows * response
    return rows * max(max(c, r) for _, c, r in shapes)


def mean_tokens(examples: Sequence[Mapping], batch_size: int, share_prompts: bool, pad_to: int | None = None,
                shuffle: bool = True) -> float:
    """Tokens per example of ``examples`` collated in batches of ``batch_size`` (seeded random order)."""
    order = list(range(len(examples)))
    if shuffle:
        random.Random(LAYOUT_SEED).shuffle(order)
    total = 0
    for start in range(0, len(order), batch_size):
        total += batch_tokens([examples[i] for i in order[start:start + batch_size]], share_prompts, pad_to)
    return total / max(len(examples), 1)


def choose_reference(config: RPOConfig, examples: Sequence[Mapping], world_size: int = 1,
                     eval_examples: int = 0) -> ReferenceChoice:
    """``"model"`` or ``"precomputed"`` for a run of ``config`` on the tokenized ``examples`` (module docstring)."""
    if not config.needs_reference:
        return ReferenceChoice("model", f"loss={config.loss!r} uses no reference")
    if not examples:
        raise ValueError("choose_reference needs the tokenized training examples")
    from rpo_tutorial.data.collate import longest_sequence

    per_step = config.per_device_train_batch_size * config.gradient_accumulation_steps * world_size
    visits = config.max_steps * per_step if config.max_steps > 0 else math.ceil(config.num_train_epochs
                                                                                 * len(examples))
    share = config.share_prompts and not config.gradient_checkpointing  # checkpointing drops the prompt cache
    live = mean_tokens(examples, config.per_device_train_batch_size, share)
    longest = longest_sequence(examples) if config.bf16 else None
    precomputed = mean_tokens(examples, config.per_device_train_batch_size, share and longest is None, longest)
    pass_tokens = mean_tokens(examples, config.precompute_batch_size, share and longest is None, longest,
                              shuffle=False)
    return decide_reference(visits, len(examples), len(examples) + eval_examples, live, precomputed, pass_tokens,
                            bf16=config.bf16)
