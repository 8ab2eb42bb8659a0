"""Test helpers shared by the tests in ``tests/training`` and the scripts they launch in ``dist_scripts``.

The scripts run as ``python -m torch.distributed.run ... dist_scripts/<script>.py``, so their own
folder is first on ``sys.path`` and they ``import helpers``; the tests import
``tests.training.dist_scripts.helpers``. Never imported by the package.

- random stacked micro-batches (chosen rows first) and what the objective needs from them;
- :func:`recorded_log_ratios`: the log-ratios the trainer's objective sees, step by step;
- :func:`finish`: rank 0 writes a script's results, then every process leaves the process group.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Iterator

import torch

from rpo_tutorial.models.head import model_sequence_logps
from rpo_tutorial.training.objectives import PreferenceLogps

VOCAB, LENGTH, DIM = 97, 9, 5  # tiny-model vocabulary, tokens per row, prompt-embedding size


# ---- random micro-batches ----------------------------------------------------------------------
def make_micro_batch(num_chosen: int, num_rejected: int, paired: bool, generator: torch.Generator) -> dict:
    """Stacked rows (chosen first) with a 3-token prompt, padding at the end of some rows.

    Shape:
        input_ids, attention_mask, labels: (M + N, LENGTH); reference: (M + N,); embeddings: (M + N, DIM)
    """
    rows = num_chosen + num_rejected
    ids = torch.randint(1, VOCAB, (rows, LENGTH), generator=generator)
    labels = ids.clone()
    labels[:, :3] = -100
    for row in range(rows):
        padding = int(torch.randint(0, 4, (1,), generator=generator))
        if padding:
            labels[row, -padding:] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels, "num_chosen": num_chosen,
            "reference": -30 * torch.rand(rows, generator=generator), "embeddings": torch.randn(rows, DIM,
                                                                                              generator=generator),
            "paired": paired}


def as_logps(batch: dict, policy: torch.Tensor) -> PreferenceLogps:
    """The objective's input for ``batch`` with the policy log-probs ``policy`` (M + N,)."""
    m = batch["num_chosen"]
    counts = (batch["labels"][:, 1:] != -100).sum(1)
    return PreferenceLogps(policy[:m], policy[m:], batch["reference"][:m], batch["reference"][m:],
                           batch["embeddings"][:m], batch["embeddings"][m:], batch["paired"], counts[:m], counts[m:])


def logps_of(model, batch: dict) -> torch.Tensor:
    """Summed label log-probs of every row. Shape: returns (M + N,)."""
    return model_sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])


def whole_batch(batches: list[dict]) -> dict:
    """One batch of every micro-batch's rows: all chosen rows first, then all rejected rows."""
    chosen = {key: torch.cat([b[key][:b["num_chosen"]] for b in batches])
              for key in ("input_ids", "attention_mask", "labels", "reference", "embeddings")}
    rejected = {key: torch.cat([b[key][b["num_chosen"]:] for b in batches]) for key in chosen}
    whole = {key: torch.cat([chosen[key], rejected[key]]) for key in chosen}
    return {**whole, "num_chosen": sum(b["num_chosen"] for b in batches), "paired": batches[0]["paired"]}


def gradients(model) -> dict[str, torch.Tensor]:
    """A copy of every parameter gradient, by name."""
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


# ---- the trainer's log-ratios ------------------------------------------------------------------
@contextmanager
def recorded_log_ratios() -> Iterator[list[torch.Tensor]]:
    """Record, per objective call of ``RPOTrainer``, every chosen and rejected log pi - log pi_ref.

    Yields the list the records are appended to (one (M + N,) tensor per micro-batch); the
    trainer's ``scoped_objective`` is restored on exit.
    """
    from rpo_tutorial.training import trainer as trainer_module

    seen: list[torch.Tensor] = []
    original = trainer_module.scoped_objective

    def record(logps, config):
        seen.append(torch.cat([logps.policy_chosen_logps - logps.reference_chosen_logps,
                               logps.policy_rejected_logps - logps.reference_rejected_logps]).detach())
        return original(logps, config)

    trainer_module.scoped_objective = record
    try:
        yield seen
    finally:
        trainer_module.scoped_objective = original


# ---- the end of a distributed script -----------------------------------------------------------
def finish(results: dict, path: str) -> None:
    """Rank 0 writes ``results`` as JSON to ``path``; then every process waits and leaves the group."""
    import torch.distributed as dist

    if dist.get_rank() == 0:
        with open(path, "w") as handle:
            json.dump(results, handle)
    leave_group()


def leave_group() -> None:
    """Every process waits for the others, then leaves the process group before the interpreter exits.

    A gloo group still alive at exit can abort one process ("terminate called without an active exception",
    SIGABRT) after all its work succeeded; CI saw this once in ``fsdp_runs.py``.
    """
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()
