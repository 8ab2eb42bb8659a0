"""Whole-dataset checks before training: does every loss get the sides it needs?

The contrastive losses (DPO, IPO, cDPO, RPO; ``objectives.NEEDS_BOTH_SIDES``) compare desirable
(chosen) with undesirable (rejected) responses. Paired data always has both in every batch. On
unpaired data a micro-batch holding only one side has no contrast: its loss is 0 and it teaches
nothing. Unpaired RPO on data without a single undesirable row used to train silently to loss 0
(gradient norm 0, no warning); now it is refused before any model is loaded further, and the
micro-batches that will be one-sided are counted and announced.

The count is exact for ``batch_sampling="sequential"``; for random batches (the Trainer's own
shuffle, which cannot be replayed here) it is the expected number per epoch: a micro-batch of b
rows drawn without replacement from M desirable and N undesirable rows has only one side with
probability (C(M, b) + C(N, b)) / C(M + N, b) (hypergeometric). Similarity batches are exact too
(the same seeded grouping the sampler uses).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

from rpo_tutorial.data.errors import DataError
from rpo_tutorial.training.config import RPOConfig
from rpo_tutorial.training.objectives import NEEDS_BOTH_SIDES


@dataclass(frozen=True)
class SideCheck:
    """Desirable / undesirable counts of an unpaired dataset and its one-sided micro-batches."""

    desirable: int  # M over the whole dataset
    undesirable: int  # N over the whole dataset
    micro_batches: int  # per epoch (one process)
    one_sided: float  # micro-batches per epoch with one side only (expected, for random batches)
    exact: bool  # one_sided is an exact count (sequential / similarity batches)

    def summary(self) -> str:
        count = f"{self.one_sided:.0f}" if self.exact else f"about {self.one_sided:.1f}"
        return (f"unpaired data: {self.desirable} desirable and {self.undesirable} undesirable rows; "
                f"{count} of {self.micro_batches} micro-batches per epoch hold one side only (loss 0, no update)")


def expected_one_sided(desirable: int, undesirable: int, batch_size: int) -> float:
    """Expected one-sided micro-batches per epoch under a uniform shuffle (see the module docstring)."""
    total = desirable + undesirable
    sizes = [batch_size] * (total // batch_size) + ([total % batch_size] if total % batch_size else [])
    expected = 0.0
    for size in sizes:  # every position of a uniform shuffle is a uniform draw without replacement
        expected += (math.comb(desirable, size) + math.comb(undesirable, size)) / math.comb(total, size)
    return expected


def count_one_sided(labels: Sequence[bool], batches: Sequence[Sequence[int]]) -> int:
    """Batches (lists of row indexes) whose rows all have the same label."""
    return sum(1 for batch in batches if len({bool(labels[i]) for i in batch}) == 1)


def check_sides(examples: Sequence[dict], config: RPOConfig, batch_size: int | None = None) -> SideCheck | None:
    """Check an unpaired dataset (tokenized examples with a bool ``label``) before training.

    Returns None for paired data or SFT. Raises :class:`DataError` when ``config.loss`` needs
    both sides and the whole dataset lacks one; warns when some micro-batches will be one-sided.
    """
    if config.loss == "sft" or config.is_paired:
        return None
    labels = [bool(example["label"]) for example in examples]
    desirable = sum(labels)
    undesirable = len(labels) - desirable
    if config.loss in NEEDS_BOTH_SIDES and (desirable == 0 or undesirable == 0):
        missing = "undesirable (label false)" if undesirable == 0 else "desirable (label true)"
        raise DataError(f"loss={config.loss!r} on unpaired data needs desirable and undesirable rows, but the "
                        f"dataset {config.dataset!r} has {desirable} desirable and {undesirable} undesirable rows: "
                        f"no {missing} row at all, so every loss would be 0. Check the labels (or "
                        "undesirable_fraction / desirable_fraction), or use loss='kto'")
    batch_size = batch_size or config.per_device_train_batch_size
    batches_per_epoch = math.ceil(len(labels) / batch_size)
    if config.batch_sampling == "sequential":
        rows = len(labels)
        batches = [list(range(start, min(start + batch_size, rows))) for start in range(0, rows, batch_size)]
        one_sided, exact = count_one_sided(labels, batches), True
    elif config.batch_sampling == "similarity":
        from rpo_tutorial.data.embeddings import stack_prompt_embeddings
        from rpo_tutorial.data.sampler import similarity_batches

        batches = similarity_batches(stack_prompt_embeddings(examples), batch_size, seed=config.seed)
        one_sided, exact = count_one_sided(labels, batches), True
    else:
        one_sided, exact = expected_one_sided(desirable, undesirable, batch_size), False
    check = SideCheck(desirable, undesirable, batches_per_epoch, one_sided, exact)
    if config.loss in NEEDS_BOTH_SIDES and one_sided >= 0.5:
        warnings.warn(check.summary() + "; a larger per_device_train_batch_size makes them rarer", stacklevel=2)
    return check
