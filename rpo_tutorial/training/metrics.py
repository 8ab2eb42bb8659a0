"""Training metrics: computed per micro-batch, averaged at each logging step, written to metrics.jsonl.

Names (TRL's, which users know, plus RPO's own):

| name                     | value                                                                  |
|--------------------------|------------------------------------------------------------------------|
| rewards/chosen, /rejected| mean implicit reward beta * (log pi - log pi_ref) of chosen / rejected |
| rewards/margins          | mean chosen - rejected reward (own pair if paired, all pairs if not)   |
| rewards/accuracies       | share of those pairs whose chosen reward is higher; a tie counts half  |
| rewards/ties             | share of those pairs whose two rewards are exactly equal               |
| logps/chosen, /rejected  | mean summed log-prob of the responses under the policy                 |
| contrast/accuracy        | share of ALL (i, j) with s_ij = beta (c_i - r_j) > 0, ties half (Eq. 10)|
| weights/row_entropy      | mean entropy of the rows of the RPO weight matrix (log N = uniform)    |
| weights/diagonal_mass    | mean share of a row's weight on its own pair (paired batches)          |
| kto/kl_reference_point   | KTO's z_ref                                                            |
| nll/token                | SFT: mean negative log-likelihood per response token                   |

Each metric is kept as a running (sum, count) over micro-batches and processes, so the logged
value is the exact mean over every row seen since the last log. A tie (equal rewards, e.g. every
pair while the policy still equals its reference) carries no preference either way, so it counts
half in the accuracies, never as a miss: a model equal to its reference reports 0.5 with
``rewards/ties`` 1.0, not 0.0. The pure loss functions never
see any of this. ``loss`` itself is logged by ``transformers.Trainer``.

``train_loss``, the run's mean training loss: ``transformers.Trainer`` reports the mean over the
steps taken by the current ``train()`` call, so a run resumed at step 6 of 10 reported the mean of
steps 7-10 only (0.5408 instead of 0.6115 in the reliability sweep). :class:`RunLossCallback`
writes the running sum of the step losses into every checkpoint (``run_loss.json``); a resumed
run reads it back and reports ``(sum before the checkpoint + sum since) / global_step``, in the
summary record of ``metrics.jsonl`` and in what ``RPOTrainer.train`` returns.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import torch
from transformers import TrainerCallback

from rpo_tutorial.accuracy import tie_half_accuracy
from rpo_tutorial.data.run_logs import METRICS_FILE, read_metrics
from rpo_tutorial.training.distributed import all_reduce_sum
from rpo_tutorial.training.objectives import ObjectiveOutput, PreferenceLogps
from rpo_tutorial.weighting import diagonal_mass, row_entropy

METRIC_NAMES = (
    "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "rewards/ties", "logps/chosen",
    "logps/rejected", "contrast/accuracy", "weights/row_entropy", "weights/diagonal_mass",
    "kto/kl_reference_point", "nll/token",
)


def _stat(stats: dict, name: str, values: torch.Tensor) -> None:
    """Add the sum and count of ``values`` (any shape) under ``name``."""
    if values.numel():
        stats[name] = (values.detach().float().sum(), values.numel())


def preference_metrics(logps: PreferenceLogps, output: ObjectiveOutput) -> dict[str, tuple[torch.Tensor, int]]:
    """(sum, count) of each metric for one batch (see the module table).

    Shape:
        logps: M chosen and N rejected rows; output.chosen_rewards (M,), rejected_rewards (N,)
    """
    chosen, rejected = output.chosen_rewards.detach().float(), output.rejected_rewards.detach().float()
    stats: dict[str, tuple[torch.Tensor, int]] = {}
    _stat(stats, "rewards/chosen", chosen)
    _stat(stats, "rewards/rejected", rejected)
    _stat(stats, "logps/chosen", logps.policy_chosen_logps)
    _stat(stats, "logps/rejected", logps.policy_rejected_logps)
    all_pairs = chosen[:, None] - rejected[None, :]  # (M, 1) - (N,) -> (M, N), sign of s_ij
    pairs = torch.diagonal(all_pairs) if logps.paired and chosen.shape == rejected.shape else all_pairs
    _stat(stats, "rewards/margins", pairs)
    _stat(stats, "rewards/accuracies", tie_half_accuracy(pairs))
    _stat(stats, "rewards/ties", (pairs == 0).float())
    _stat(stats, "contrast/accuracy", tie_half_accuracy(all_pairs))
    if output.weights is not None:
        _stat(stats, "weights/row_entropy", row_entropy(output.weights))
        if logps.paired and output.weights.shape[0] == output.weights.shape[1]:
            stats["weights/diagonal_mass"] = (torch.tensor(diagonal_mass(output.weights)), 1)
    for name, value in (output.extras or {}).items():
        stats[name] = (torch.tensor(float(value)), 1)
    return stats


def sft_metrics(sequence_logps: torch.Tensor, num_tokens: int) -> dict[str, tuple[torch.Tensor, int]]:
    """SFT: mean summed log-prob per response and mean NLL per token. Shape: sequence_logps (B,)."""
    stats: dict[str, tuple[torch.Tensor, int]] = {}
    _stat(stats, "logps/chosen", sequence_logps)
    if num_tokens:
        stats["nll/token"] = (-sequence_logps.detach().float().sum(), num_tokens)
    return stats


class MetricsAccumulator:
    """Running (sum, count) per metric between two logging steps."""

    def __init__(self, names: tuple[str, ...] = METRIC_NAMES) -> None:
        self.names = names
        self.index = {name: i for i, name in enumerate(names)}
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(len(self.names), dtype=torch.float64)
        self.counts = torch.zeros(len(self.names), dtype=torch.float64)

    def add(self, stats: dict[str, tuple[torch.Tensor, int]]) -> None:
        for name, (total, count) in stats.items():
            if name not in self.index:
                raise ValueError(f"unknown metric {name!r}; add it to METRIC_NAMES")
            self.sums[self.index[name]] += float(total)
            self.counts[self.index[name]] += count

    def pop_averages(self, device: torch.device | str = "cpu") -> dict[str, float]:
        """Sum over processes (a collective: call on every process), average, and reset."""
        totals = all_reduce_sum(torch.stack([self.sums, self.counts]).to(device))  # (2, K)
        self.reset()
        return {name: totals[0, i].item() / totals[1, i].item()
                for i, name in enumerate(self.names) if totals[1, i].item() > 0}


def _jsonable(value):
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsJsonlCallback(TrainerCallback):
    """Append every log record to ``OUTPUT_DIR/metrics.jsonl`` (main process only).

    One JSON object per logged step: ``{"step", "epoch", "loss", "rewards/...", ...}``; the last
    record of a run is the Trainer's summary (``train_loss``, ``train_runtime``, ...). A fresh
    run (step 0) starts a new file; a run resumed at step s keeps the records up to step s, so
    the file never holds two versions of a step.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None

    def _path(self, args) -> Path:
        return self.path if self.path is not None else Path(args.output_dir) / METRICS_FILE

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        path = self._path(args)
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = [row for row in read_metrics(path) if row.get("step", 0) <= state.global_step] \
            if state.global_step > 0 and path.exists() else []
        path.write_text("".join(json.dumps(row) + "\n" for row in kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch}
        record.update({key: _jsonable(value) for key, value in logs.items()})
        path = self._path(args)
        path.parent.mkdir(parents=True, exist_ok=True)  # e.g. evaluate() before any training
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


# ---- train_loss over every step of a run, also after a resume ---------------------------------
LOSS_FILE = "run_loss.json"  # in each checkpoint folder: the running sum of the step losses


def read_loss_sum(checkpoint: str | Path) -> tuple[float, int] | None:
    """(sum of the step losses, steps) saved in a checkpoint folder, or None when absent."""
    path = Path(checkpoint) / LOSS_FILE
    if not path.is_file():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    return float(saved["loss_sum"]), int(saved["global_step"])


class RunLossCallback(TrainerCallback):
    """Keeps ``train_loss`` the mean over all steps of the run (see the module docstring).

    ``RPOTrainer`` installs one, first among its callbacks, and calls :meth:`resume_from` at the
    start of each ``train()``.

    Args:
        trainer: the trainer whose running loss is saved (read at each checkpoint).
    """

    def __init__(self, trainer) -> None:
        self.trainer = trainer
        self.prior_sum, self.prior_steps = 0.0, 0
        self.mean_loss: float | None = None  # set at the end of training

    def resume_from(self, checkpoint: str | Path | None) -> None:
        """Start counting from the sums saved in ``checkpoint`` (None: a fresh run)."""
        self.prior_sum, self.prior_steps, self.mean_loss = 0.0, 0, None
        if checkpoint is None:
            return
        saved = read_loss_sum(checkpoint)
        if saved is None:
            warnings.warn(f"{checkpoint} has no {LOSS_FILE} (written by older versions): train_loss will be "
                          "the mean of the resumed steps only", stacklevel=2)
        else:
            self.prior_sum, self.prior_steps = saved

    def _this_call_sum(self) -> float | None:
        total, running = getattr(self.trainer, "_total_loss_scalar", None), getattr(self.trainer, "_tr_loss", None)
        if total is None or running is None:
            return None
        return float(total) + float(running.item() if hasattr(running, "item") else running)

    def on_save(self, args, state, control, **kwargs):
        this_call = self._this_call_sum()
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if this_call is None or not state.is_world_process_zero or not folder.is_dir():
            return
        saved = {"loss_sum": self.prior_sum + this_call, "global_step": state.global_step}
        (folder / LOSS_FILE).write_text(json.dumps(saved) + "\n")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "train_loss" not in logs:
            return
        steps_now = state.global_step - self.prior_steps
        total = self.prior_sum + float(logs["train_loss"]) * steps_now
        self.mean_loss = total / max(state.global_step, 1)
        logs["train_loss"] = self.mean_loss  # before metrics.jsonl and report_to see it (this callback runs first)
