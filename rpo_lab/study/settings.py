"""What a study compares (methods) and how big it is (``StudySettings``), with the fairness rules.

Fair by construction:
- every method of a seed starts from the SAME SFT reference and sees the SAME pairs in the SAME
  order (unpaired methods: the same chosen and rejected responses, regrouped; see ``train``);
- one learning rate for every method (``learning_rate``), never tuned on one method;
- RPO at the paper's beta (0.1) AND at the matched effective beta ``beta x N`` (N = pairs per
  batch; each RPO weight row sums to 1, so one contrast acts like DPO with beta / N, notebook 03);
  both are in the table, labelled;
- the same budget (steps, batch) for all, short enough to leave held-out margins unsaturated.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """One trained method: a loss and its options. ``matched`` multiplies beta by the batch's N."""

    key: str  # cache and table key
    label: str  # shown in tables and figures
    loss: str  # "dpo", "rpo" or "kto"
    paired: bool = True  # paired batches (B pairs) or unpaired (B desirable + B undesirable rows)
    weighting: str = "embedding"  # RPO weights
    tau: float = 0.5  # embedding temperature (paper: 0.5 paired, 0.75 unpaired)
    matched: bool = False  # beta x N instead of beta

    def beta(self, beta: float, batch_size: int) -> float:
        return beta * batch_size if self.matched else beta


METHODS: dict[str, Method] = {method.key: method for method in (  # in the order a study runs them
    Method("dpo", "DPO", "dpo"),
    Method("rpo-emb-matched", "RPO embedding, matched beta x N", "rpo", matched=True),
    Method("rpo-uniform-matched", "RPO uniform, matched beta x N", "rpo", weighting="uniform", matched=True),
    Method("rpo-emb", "RPO embedding, paper beta", "rpo"),
    Method("rpo-diagonal-matched", "RPO diagonal, matched beta x N", "rpo", weighting="diagonal", matched=True),
    Method("rpo-unpaired-matched", "RPO unpaired (embedding, tau 0.75), matched beta x N", "rpo", paired=False,
           tau=0.75, matched=True),
    Method("kto", "KTO (unpaired)", "kto", paired=False),
)}
DEFAULT_METHODS = tuple(METHODS)
TAU_ABLATION = (0.25, 0.5, 0.75, 1.0)  # the paper's Table 2 shape: embedding weights, matched beta


def tau_method(tau: float) -> Method:
    """RPO paired embedding weights at ``tau``, matched beta (the tau ablation's rows)."""
    if tau == 0.5:
        return METHODS["rpo-emb-matched"]
    return Method(f"rpo-emb-matched-tau{tau:g}", f"RPO embedding tau {tau:g}, matched beta x N", "rpo",
                  tau=tau, matched=True)


SETTINGS_NAMES = ("controlled", "control", "hh")


@dataclass(frozen=True)
class StudySettings:
    """Sizes and hyper-parameters of a study (the defaults: the committed study, ~1 h on 2 busy cores)."""

    model: str = "bundled"  # "bundled" (SmolLM2-135M-Instruct), a local folder, or "tiny-random:llama" (tests)
    settings: tuple[str, ...] = SETTINGS_NAMES  # data settings (hh is skipped where its file is absent)
    methods: tuple[str, ...] = DEFAULT_METHODS  # keys of METHODS
    tau_ablation: tuple[float, ...] = TAU_ABLATION  # in the controlled setting only; () skips it
    seeds: tuple[int, ...] = (0, 1, 2)  # one SFT reference and one data order per seed
    trainable_layers: int = 2  # top decoder layers trained (+ final norm); lower layers frozen
    batch_size: int = 8  # pairs per step (unpaired: B desirable + B undesirable rows)
    steps: int = 16  # optimizer steps per method run
    eval_every: int = 16  # held-out evaluation every this many steps (and at the end); curves use train metrics
    learning_rate: float = 3e-4  # AdamW, every method (SFT: sft_learning_rate); 1e-4 left DPO at loss 0.69
    sft_learning_rate: float = 5e-5  # the shared SFT stage: one pass over the train pairs' chosen responses
    beta: float = 0.1  # the paper's beta (DPO, KTO, RPO "paper beta"); matched RPO uses beta x batch_size
    max_grad_norm: float = 10.0  # clipping, as in the DPO reference code
    train_pairs: int | None = 128  # cap on train pairs per demo setting (None: all 257); 16 x 8 = one epoch
    heldout_per_cluster: int = 8  # demo settings: held-out prompts per topic cluster (8 x 8 = 64)
    hh_train_pairs: int = 128  # HH: train pairs (split by prompt)
    hh_heldout_pairs: int = 64  # HH: held-out pairs
    max_length: int = 64  # prompt + response tokens (demo prompts take ~40 with the chat template)
    max_prompt_length: int = 48  # prompt tokens kept (left-truncated)
    hh_max_length: int = 96  # HH: longer dialogue prompts
    hh_max_prompt_length: int = 64
    eval_batch_size: int = 16  # sequences per forward pass in evaluation
    judge_max_new_tokens: int = 40  # judge win rate vs SFT (controlled, control): tokens sampled per prompt; 0: off
    judge_top_p: float = 0.95  # the judge's policy sampling (the paper's): nucleus top-p ...
    judge_temperature: float = 1.0  # ... at temperature 1
    judge_batch_size: int = 32  # prompts per generate call (seeded per batch: part of the result)
    bootstrap_samples: int = 2000  # paired-difference bootstrap over seeds and prompts
    num_threads: int | None = None  # torch threads; None: choose by machine load before each run

    def replace(self, **changes) -> "StudySettings":
        return dataclasses.replace(self, **changes)

    def method_list(self, setting: str) -> list[Method]:
        """The methods trained in ``setting``: the chosen ones, plus the tau ablation in "controlled"."""
        unknown = [key for key in self.methods if key not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
        methods = [METHODS[key] for key in self.methods]
        if setting == "controlled":
            methods += [m for m in map(tau_method, self.tau_ablation) if m.key not in {x.key for x in methods}]
        return methods

    def check(self) -> None:
        for name in ("trainable_layers", "batch_size", "steps", "eval_every", "heldout_per_cluster",
                     "hh_train_pairs", "hh_heldout_pairs", "max_length", "max_prompt_length", "eval_batch_size",
                     "bootstrap_samples", "judge_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"StudySettings.{name} must be a positive integer, got {value!r}")
        if isinstance(self.judge_max_new_tokens, bool) or not isinstance(self.judge_max_new_tokens, int) \
                or self.judge_max_new_tokens < 0:
            raise ValueError(f"StudySettings.judge_max_new_tokens must be an integer >= 0 (0: no judge), got "
                             f"{self.judge_max_new_tokens!r}")
        if not (0 < self.judge_top_p <= 1 and self.judge_temperature > 0):
            raise ValueError(f"StudySettings.judge_top_p must be in (0, 1] and judge_temperature > 0, got "
                             f"{self.judge_top_p!r} and {self.judge_temperature!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"StudySettings.seeds must be distinct and non-empty, got {self.seeds!r}")
        bad = [name for name in self.settings if name not in SETTINGS_NAMES]
        if bad or not self.settings:
            raise ValueError(f"StudySettings.settings must name some of {SETTINGS_NAMES}, got {self.settings!r}")
        for name in ("learning_rate", "sft_learning_rate", "beta"):
            if not getattr(self, name) > 0:
                raise ValueError(f"StudySettings.{name} must be > 0, got {getattr(self, name)!r}")
        self.method_list(self.settings[0])
