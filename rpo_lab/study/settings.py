"""What the real-model study compares (methods) and how big it is (``StudySettings``).

The methods are the synthetic study's (``rpo_lab.world.methods``: the same keys, labels and
``RPOConfig`` rules, so the two reports answer the same five questions): DPO, RPO embedding at the
matched beta x N, RPO uniform (matched), DPO at RPO's own-pair effective beta, RPO's own-pair terms
only (the diagonal), RPO on shuffled embeddings (the placebo), RPO at the paper's beta, and the
unpaired ones (RPO unpaired, KTO) on request. Older names are accepted as aliases
(``rpo-emb-matched`` is ``rpo-emb``).

Fair by construction:
- every method of a seed starts from the SAME reference (the pretrained model's top layers) and sees
  the SAME batches in the SAME order (``rpo_lab.world.batches.data_order``);
- each method gets its own learning rate, the one of ONE shared grid with the best validation
  accuracy on the tuning seeds (never the held-out pairs);
- the same budget (steps, batch) for all.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from rpo_lab.study.compare import MetricFormat
from rpo_lab.world.methods import FOCUS, METHODS, QUESTIONS

ALIASES = {"rpo-emb-matched": "rpo-emb", "rpo-uniform-matched": "rpo-uniform", "rpo-diagonal": "rpo-own-pair",
           "rpo-placebo-matched": "rpo-placebo", "rpo-unpaired-matched": "rpo-unpaired"}
FORMATS = {"accuracy": MetricFormat("held-out accuracy", 100.0, 1, " points")}  # how the report prints a metric
LABELS = {key: method.label for key, method in METHODS.items()}  # method key -> the name the report prints
DEFAULT_METHODS = ("dpo", "rpo-emb", "rpo-uniform", "dpo-own-beta", "rpo-own-pair", "rpo-placebo",
                   "rpo-emb-paper-beta")


def canonical_methods(names) -> tuple[str, ...]:
    """Method keys with aliases resolved; raises ValueError naming an unknown one."""
    keys = tuple(ALIASES.get(name, name) for name in names)
    unknown = [name for name, key in zip(names, keys) if key not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)} (aliases: "
                         f"{', '.join(f'{a} = {k}' for a, k in ALIASES.items())})")
    if len(set(keys)) != len(keys):
        raise ValueError(f"methods repeat (after aliases): {list(names)}")
    return keys


def questions(methods: tuple[str, ...]) -> list[tuple[str, str]]:
    """The primary questions this method list can answer: RPO embedding against each comparator present."""
    return [(FOCUS, other) for other in QUESTIONS if FOCUS in methods and other in methods]


@dataclass(frozen=True)
class StudySettings:
    """Sizes and hyper-parameters of a real-model study (defaults: the committed HH study, docs/study/hh/)."""

    model: str = "bundled"  # "bundled" (SmolLM2-135M-Instruct), a local folder, or "tiny-random:llama" (tests)
    dataset: str | None = None  # preference file; None: the HH harmless-base test file in ../shared/data
    heldout: str | None = None  # held-out preference file; None: split off the dataset by prompt
    strict: bool = False  # raise on the first invalid row of a file instead of skipping it (with a count)
    methods: tuple[str, ...] = DEFAULT_METHODS  # keys of rpo_lab.world.methods.METHODS
    # evaluation seeds, one data order (and placebo shuffle) each; 6, as in the committed HH study: with its
    # 1,000 held-out pairs, 3 seeds detected 3.7 points at 80 % power (t with 2 df), 6 seeds 2.3 points
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
    tuning_seeds: tuple[int, ...] = (1000,)  # seeds of the learning-rate choice on validation (never evaluated)
    learning_rates: tuple[float, ...] = (3e-5, 1e-4, 3e-4)  # the ONE grid every method chooses its rate from
    heldout_pairs: int = 1000  # held-out pairs split off the dataset (at most half of it)
    validation_pairs: int = 300  # validation pairs for the learning-rate choice (at most a sixth of the dataset)
    train_pairs: int | None = None  # cap on the train pairs (None: every pair left)
    split_seed: int = 0  # shuffles the distinct prompts before the split
    trainable_layers: int = 2  # top decoder layers trained (+ final norm); lower layers frozen
    batch_size: int = 8  # pairs per step (unpaired: B desirable + B undesirable rows)
    steps: int = 125  # Adam steps per run (125 x 8 = one pass over ~1,000 train pairs)
    beta: float = 0.1  # DPO's beta (also KTO and RPO at the paper's beta); matched RPO uses beta x batch_size
    max_grad_norm: float = 10.0  # clipping, as in the DPO reference code
    max_length: int = 80  # prompt + response tokens
    max_prompt_length: int = 48  # prompt tokens kept (left-truncated: the latest turns)
    eval_batch_size: int = 32  # sequences per forward pass (features, reference, evaluation)
    bootstrap_samples: int = 10000  # bootstrap replicates of every interval
    num_threads: int | None = 1  # torch threads, fixed so that a rerun gives the same numbers; None: by load

    def replace(self, **changes) -> "StudySettings":
        return dataclasses.replace(self, **changes)

    def check(self) -> None:
        for name in ("trainable_layers", "batch_size", "steps", "heldout_pairs", "validation_pairs", "max_length",
                     "max_prompt_length", "eval_batch_size", "bootstrap_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"StudySettings.{name} must be a positive integer, got {value!r}")
        if self.train_pairs is not None and (not isinstance(self.train_pairs, int) or self.train_pairs < 2):
            raise ValueError(f"StudySettings.train_pairs must be None or an integer >= 2, got {self.train_pairs!r}")
        for name in ("seeds", "tuning_seeds", "learning_rates"):
            values = getattr(self, name)
            if not values or len(set(values)) != len(values):
                raise ValueError(f"StudySettings.{name} must be distinct and non-empty, got {values!r}")
        if set(self.seeds) & set(self.tuning_seeds):
            raise ValueError(f"tuning seeds {self.tuning_seeds} must differ from the evaluation seeds {self.seeds}")
        for name in ("beta", "max_grad_norm") + tuple(f"learning_rates[{i}]" for i in range(len(self.learning_rates))):
            value = self.learning_rates[int(name[15:-1])] if name.startswith("learning_rates") else getattr(self, name)
            if not value > 0:
                raise ValueError(f"StudySettings.{name} must be > 0, got {value!r}")
        if self.max_length <= self.max_prompt_length:
            raise ValueError(f"max_length ({self.max_length}) must exceed max_prompt_length ({self.max_prompt_length})")
        if canonical_methods(self.methods) != tuple(self.methods):
            raise ValueError(f"StudySettings.methods must be canonical keys, got {self.methods!r}")
        if "dpo" not in self.methods:
            raise ValueError("the study compares every method with DPO: include 'dpo' in the methods")
