"""The mean training loss over every step of a run, also after a resume.

``transformers.Trainer`` reports ``train_loss`` as the mean over the steps taken by the current
``train()`` call, so a run resumed at step 6 of 10 reported the mean of steps 7-10 only (0.5408
instead of 0.6115 in the reliability sweep). This callback writes the running sum of the step
losses into every checkpoint (``run_loss.json``); a resumed run reads it back and reports
``(sum before the checkpoint + sum since) / global_step``, in the summary record of
``metrics.jsonl`` and in :class:`~rpo_tutorial.training.run.RunResult`.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

from transformers import TrainerCallback

LOSS_FILE = "run_loss.json"


def read_loss_sum(checkpoint: str | Path) -> tuple[float, int] | None:
    """(sum of the step losses, steps) saved in a checkpoint folder, or None when absent."""
    path = Path(checkpoint) / LOSS_FILE
    if not path.is_file():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    return float(saved["loss_sum"]), int(saved["global_step"])


class RunLossCallback(TrainerCallback):
    """Keeps ``train_loss`` the mean over all steps of the run (see the module docstring).

    Args:
        trainer: the trainer whose running loss is saved (read at each checkpoint).
        resumed_from: the checkpoint folder the run resumes from, or None.
    """

    def __init__(self, trainer, resumed_from: str | Path | None = None) -> None:
        self.trainer = trainer
        self.prior_sum, self.prior_steps = 0.0, 0
        self.mean_loss: float | None = None  # set at the end of training
        if resumed_from is not None:
            saved = read_loss_sum(resumed_from)
            if saved is None:
                warnings.warn(f"{resumed_from} has no {LOSS_FILE} (written by older versions): train_loss will be "
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
        logs["train_loss"] = self.mean_loss  # before metrics.jsonl records it (this callback runs first)
