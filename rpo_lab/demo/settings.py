"""The demo pipeline's sizes and hyper-parameters, their checks, the stage log.

See :mod:`rpo_lab.demo.pipeline` for what the stages do and why these numbers.
"""
from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

METHODS = ("dpo", "rpo")


@dataclass(frozen=True)
class DemoSettings:
    """Sizes and hyper-parameters of the demo pipeline (on top of the training preset)."""

    sft_rows: int = 32  # train pairs whose chosen response the SFT stage learns (one pass)
    train_rows: int = 80  # preference pairs DPO and RPO train on (the same examples and order for both)
    epochs: float = 2.0  # passes of DPO and RPO over their pairs (the SFT stage makes one pass)
    batch_size: int = 8  # pairs per optimizer step; RPO's contrast matrix is batch x batch
    sft_learning_rate: float = 3e-5  # AdamW, SFT stage
    learning_rate: float = 1e-4  # AdamW, DPO and RPO (the same for both); keeps training unsaturated (see below)
    warmup_steps: int = 0  # linear warm-up steps, then constant (a warm-up step at lr 0 is a lost step here)
    beta: float = 0.1  # DPO's beta (the paper's 0.1)
    rpo_beta: float | None = None  # RPO's beta; None: matched to DPO, beta x batch_size (see rpo_training_beta)
    tau: float = 0.5  # temperature of RPO's embedding weights (paper, paired: 0.5)
    trainable_layers: int | None = 4  # top decoder layers trained (+ final norm); None: all parameters
    heldout_prompts: int | None = None  # held-out prompts sampled and judged (None: all)
    samples_per_prompt: int = 2  # samples per held-out prompt and model (seeds shared across models)
    max_new_tokens: int = 48  # as when the demo dataset was generated
    temperature: float = 1.0  # sampling temperature (the dataset's; 0 = greedy)
    top_p: float = 0.95  # nucleus sampling (the dataset's, the paper's policies)
    sample_batch_size: int = 40  # prompts per generate() call (per-token cost is mostly fixed overhead on a CPU)
    logprob_batch_size: int = 16  # pairs per forward pass for reference / implicit-reward log-probs
    implicit_pairs: int | None = 20  # held-out pairs (spread over the clusters) for implicit-reward accuracy; None: all
    include_instruct: bool = False  # also sample the starting instruct model and judge it against SFT (+2 passes)
    save_models: bool = True  # save SFT / DPO / RPO (safetensors) under the output folder at the end
    seed: int = 0  # data order, sampling seeds
    num_threads: int | None = None  # torch CPU threads; None: choose_num_threads() (fewer on a busy machine)

    def replace(self, **changes) -> "DemoSettings":
        return dataclasses.replace(self, **changes)

    @property
    def rpo_training_beta(self) -> float:
        """RPO's beta: ``rpo_beta`` if set, else the matched ``beta x batch_size``.

        Each row of RPO's embedding weights sums to 1 (w_ij ~ 1/N, N = pairs per batch), so under the
        paper's score placement one contrast acts like DPO with beta / N (notebook 03). RPO at
        beta x N therefore pulls back to the reference as hard per contrast as DPO at beta does:
        the two are compared at the same effective beta. ``rpo_beta=0.1`` gives the paper's setting.
        """
        return self.rpo_beta if self.rpo_beta is not None else self.beta * self.batch_size


# Sizes per training preset: "demo" took 13.5 minutes on 2 CPU cores at load average 2-3 (~7.5 idle,
# estimated from stage times); "smoke" is for tests.
# The demo's learning rate, pairs and epochs were picked by probes that trained DPO AND RPO (matched
# beta 0.8) with the same lr and steps (batch 8, the top 4 layers, 2 epochs, judged on the 40 held-out
# prompts x 2 samples; margin = own-pair log-ratio margin in nats averaged over the last epoch; load
# average 3-8 on the 2 cores):
#   lr 5e-4, 40 pairs (10 steps; the previous demo, RPO at beta 0.1): margin ~95 nats, DPO beta x margin ~9.5, DPO loss
#     ~0.001: saturated; win rate vs SFT DPO 68.8 %, RPO 64.4 %;
#   lr 2e-4, 40 pairs: margin 31 nats (beta x margin 3.1), loss DPO 0.10 / RPO 0.15; win rate DPO 62.5 %
#     [51.5, 72.3], RPO 55.0 % [44.1, 65.4];
#   lr 1e-4, 40 pairs: margin 16 nats (1.6), loss 0.23 / 0.30; win rate DPO 56.9 % [46.0, 67.2], RPO 52.5 %;
#   lr 1e-4, 80 pairs (20 steps, chosen): margin 18 nats (1.8), loss 0.20 / 0.28; win rate DPO 58.1 %
#     [47.2, 68.3], RPO 58.8 % [47.8, 68.9], mean judge score 0.43 (SFT) -> 0.52 (both).
# Margins grow about linearly with the lr; the win rate moves with them, so a demo that keeps
# beta x margin near 1 moves it by only ~8 points (one seed, n = 80). Earlier DPO-only probes
# (1 epoch of 40 pairs) left it near 50 % at lr 1e-4 to 5e-4.
PIPELINE_SETTINGS: dict[str, DemoSettings] = {
    "demo": DemoSettings(),
    "smoke": DemoSettings(sft_rows=8, train_rows=8, epochs=1.0, batch_size=4, sft_learning_rate=1e-3,
                          learning_rate=1e-3, include_instruct=True, trainable_layers=None, heldout_prompts=4,
                          max_new_tokens=8, sample_batch_size=4, logprob_batch_size=8, save_models=False),
}


class StageLog:
    """Prints one line per stage with the elapsed time and records each stage's duration."""

    def __init__(self, total: int, enabled: bool = True, before_stage: Callable[[], None] | None = None) -> None:
        self.start, self.total, self.index, self.enabled = time.perf_counter(), total, 0, enabled
        self.before_stage = before_stage  # e.g. re-choose the thread count for the machine's load now
        self.timings: dict[str, float] = {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def say(self, message: str) -> None:
        if self.enabled:
            minutes, seconds = divmod(int(self.elapsed()), 60)
            print(f"[{minutes:02d}:{seconds:02d}] {message}", flush=True)

    @contextmanager
    def stage(self, name: str, detail: str = "") -> Iterator[None]:
        self.index += 1
        if self.before_stage is not None:
            self.before_stage()
        self.say(f"stage {self.index}/{self.total}: {name}" + (f" - {detail}" if detail else "")
                 + f" [{torch.get_num_threads()} torch thread(s)]")
        began = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - began
        self.say(f"{name}: done in {self.timings[name]:.0f} s")


def check_settings(settings: DemoSettings, methods: Sequence[str]) -> None:
    """Reject sizes and names that cannot work, naming the field."""
    for name in ("sft_rows", "train_rows", "batch_size", "samples_per_prompt", "max_new_tokens",
                 "sample_batch_size", "logprob_batch_size"):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"DemoSettings.{name} must be a positive integer, got {value!r}")
    for name in ("trainable_layers", "heldout_prompts", "implicit_pairs", "num_threads"):
        value = getattr(settings, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"DemoSettings.{name} must be a positive integer or None, got {value!r}")
    if not (isinstance(settings.epochs, (int, float)) and settings.epochs > 0):
        raise ValueError(f"DemoSettings.epochs must be a number > 0, got {settings.epochs!r}")
    if not methods or any(method not in METHODS for method in methods) or len(set(methods)) != len(methods):
        raise ValueError(f"methods must be distinct names from {METHODS}, got {tuple(methods)!r}")
