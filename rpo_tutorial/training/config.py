"""One dataclass for a training run (SFT, DPO, IPO, cDPO, KTO, RPO) and four named presets.

    from rpo_tutorial.training.config import get_preset
    config = get_preset("demo", loss="dpo")                 # a preset with overrides
    config = dataclasses.replace(config, beta=0.2)          # tweak in a notebook
    arguments = config.to_training_arguments()              # transformers.TrainingArguments

Every field carries a comment; invalid values and invalid combinations (diagonal weighting on
unpaired data, tau <= 0, KTO on paired data, unknown names) raise ``ValueError`` at construction.
Fields that depend on the pairing (``paired``, ``tau``) default to ``None`` and are resolved by
the properties ``is_paired`` and ``effective_tau``, so ``replace(config, paired=False)`` also
switches tau to the paper's unpaired value.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from rpo_tutorial.losses import PLACEMENTS
from rpo_tutorial.models.loading import BUNDLED_POLICY
from rpo_tutorial.weighting import CONVENTIONS, WEIGHTINGS

LOSS_NAMES = ("sft", "dpo", "ipo", "cdpo", "kto", "rpo")
PAIRED_ONLY_LOSSES = ("dpo", "ipo", "cdpo")  # need a chosen and a rejected response per prompt
UNPAIRED_ONLY_LOSSES = ("kto",)  # KTO's value function scores responses one at a time
WEIGHTING_NAMES = tuple(WEIGHTINGS)
CONTRAST_SCOPES = ("local", "global")
REFERENCE_MODES = ("model", "precomputed", "lora", "auto")
EMBED_TEXT_MODES = ("last_user_turn", "full_prompt")
BATCH_SAMPLINGS = ("random", "similarity", "sequential")
PROMPT_TRUNCATIONS = ("left", "right")
TINY_MODEL_PREFIX = "tiny-random:"  # "tiny-random:llama" / "tiny-random:mistral": models.tiny_model
PAPER_TAU = {True: 0.5, False: 0.75}  # paper, Sec. 5: tau for paired / unpaired data

FIELD_CHOICES = {
    "loss": LOSS_NAMES, "weighting": WEIGHTING_NAMES, "placement": PLACEMENTS,
    "uniform_convention": CONVENTIONS, "contrast_scope": CONTRAST_SCOPES, "reference": REFERENCE_MODES,
    "embed_text": EMBED_TEXT_MODES, "batch_sampling": BATCH_SAMPLINGS, "prompt_truncation": PROMPT_TRUNCATIONS,
}


# ---- validation of single fields (each raises ValueError naming the field and the value) -----
def _check_bool(name: str, value: object, optional: bool = False) -> None:
    if not (isinstance(value, bool) or (optional and value is None)):
        raise ValueError(f"{name} must be True or False{' or None' if optional else ''}, got {value!r}")


def _check_number(name: str, value: object, low: float | None = None, high: float | None = None,
                   low_open: bool = False, high_open: bool = False) -> None:
    """Raise unless ``value`` is a finite real number in the given (half-)open or closed range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        bounds = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise ValueError(f"{name} must be in {bounds}, got {value!r}")


def _check_int(name: str, value: object, low: int, why: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}{' (' + why + ')' if why else ''}, got {value!r}")


@dataclass
class RPOConfig:
    """Everything a training run needs; see the module docstring and :data:`PRESETS`."""

    # ---- objective ---------------------------------------------------------------------------
    loss: str = "rpo"  # sft | dpo | ipo | cdpo | kto | rpo
    paired: bool | None = None  # pairs share a prompt (True) or unpaired rows (False); None: False for kto only
    weighting: str = "embedding"  # RPO weights: embedding (Eq. 12) | uniform | diagonal (Eq. 14) | sinkhorn
    tau: float | None = None  # temperature of embedding / sinkhorn weights; None: 0.5 paired, 0.75 unpaired (paper)
    alpha: float = 0.5  # diagonal weighting: weight of a row's own pair, in [0, 1]
    placement: str = "score"  # weight inside the sigmoid ("score", paper Eq. 15) or on the loss term ("loss", official)
    uniform_convention: str = "paper"  # uniform weights 1/N ("paper") or 1 ("official")
    contrast_scope: str = "local"  # contrast matrix over each device's batch ("local") or the global batch ("global")
    accumulate_contrast: bool = False  # one loss over ALL micro-batches of an optimizer step (training/accumulation.py)
    nll_weight: float = 0.0  # weight of an added NLL term on the chosen responses (TRL's rpo_alpha); 0: none
    length_normalize: bool | None = None  # losses on per-token mean log-probs; None: True for ipo only (as TRL)
    beta: float = 0.1  # strength of the KL regularisation (DPO / RPO / KTO beta)
    label_smoothing: float = 0.1  # cdpo: assumed probability that a preference label is flipped, in (0, 0.5)
    ipo_tau: float = 0.1  # ipo: regulariser tau of paper Eq. 6 (target margin 1 / (2 tau))
    kto_desirable_weight: float = 1.0  # kto: weight lambda_D of desirable responses
    kto_undesirable_weight: float = 1.0  # kto: weight lambda_U of undesirable responses

    # ---- reference policy --------------------------------------------------------------------
    reference: str = "model"  # frozen copy ("model"), log-probs computed once ("precomputed"), LoRA base ("lora"),
    # or "auto": precomputed when the run sees each example often enough to repay the pass (reference_choice.py)
    lora_r: int = 16  # LoRA rank (reference="lora"; needs the optional peft package)
    lora_alpha: int = 32  # LoRA scaling numerator
    lora_dropout: float = 0.05  # dropout on the LoRA branch

    # ---- model and data ----------------------------------------------------------------------
    model: str = BUNDLED_POLICY  # hub id, local folder, "bundled:smollm2-135m-instruct" or "tiny-random:llama"
    tokenizer: str | None = None  # None: the model's own (the bundled SmolLM2 one for tiny-random models)
    dataset: str = "demo"  # "demo", "hh", "hh:<subset>,<subset>", a local file, or a hub dataset id
    dataset_split: str = "train"  # split to train on ("train" / "heldout" for demo, hub split otherwise)
    max_train_rows: int | None = None  # keep only the first rows of the dataset (None: all)
    desirable_fraction: float = 1.0  # unpaired: share of pairs whose chosen response is kept (to_unpaired)
    undesirable_fraction: float = 1.0  # unpaired: share of pairs whose rejected response is kept
    embedder: str | None = None  # sentence-transformers model for prompt embeddings; None: bundled all-MiniLM-L6-v2
    embed_text: str = "last_user_turn"  # which prompt text is embedded: last_user_turn | full_prompt
    batch_sampling: str = "random"  # "random" (paper), "similarity" (related prompts together), "sequential"
    max_length: int = 512  # prompt + response tokens (paper: 512)
    max_prompt_length: int = 256  # prompt tokens kept when a sequence is too long (paper: 256)
    prompt_truncation: str = "left"  # keep the end ("left", dialogues) or the start ("right", TL;DR) of long prompts

    # ---- optimisation (mapped onto transformers.TrainingArguments) ---------------------------
    output_dir: str = "outputs/run"  # checkpoints, final model, metrics.jsonl
    learning_rate: float = 5e-7  # peak learning rate (paper: 5e-7)
    optimizer: str = "rmsprop"  # any TrainingArguments.optim name, e.g. rmsprop (paper), adamw_torch
    lr_scheduler: str = "constant_with_warmup"  # linear warm-up then constant, as in the DPO reference code
    warmup_steps: int = 150  # optimizer steps of linear warm-up (paper: 150)
    num_train_epochs: float = 1.0  # passes over the data (paper: 1)
    max_steps: int = -1  # stop after this many optimizer steps; -1: use num_train_epochs
    per_device_train_batch_size: int = 8  # examples (pairs, or unpaired rows) per device and micro-batch
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step
    max_grad_norm: float = 10.0  # gradient clipping norm (DPO reference code: 10)
    share_prompts: bool = True  # paired batches: each prompt's forward once, both responses on its KV cache
    bf16: bool = False  # bfloat16 mixed precision (float32 master weights; log-probs and losses stay float32)
    gradient_checkpointing: bool = False  # recompute activations in backward to save memory
    fsdp: bool = False  # FSDP2 full shard when the launcher names no FSDP / DeepSpeed config (see launch.py)
    fsdp_layer_class: str | None = None  # layer class FSDP wraps, e.g. "MistralDecoderLayer"; used only with fsdp
    logging_steps: int = 10  # optimizer steps between metric logs
    save_steps: int = 500  # optimizer steps between checkpoints (also one at the end); 0: no checkpoints
    save_total_limit: int | None = None  # keep at most this many checkpoints (None: all)
    seed: int = 42  # model init (tiny-random), data order, unpaired split
    report_to: str = "none"  # "none", "tensorboard", "wandb", "all" (metrics.jsonl is always written)
    precompute_batch_size: int = 8  # batch size of the one-off reference / embedding passes
    progress: bool = True  # show progress bars

    def __post_init__(self) -> None:
        for name, choices in FIELD_CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        _check_bool("paired", self.paired, optional=True)
        _check_bool("length_normalize", self.length_normalize, optional=True)
        _check_number("nll_weight", self.nll_weight, low=0.0)
        for name in ("bf16", "gradient_checkpointing", "fsdp", "progress", "accumulate_contrast", "share_prompts"):
            _check_bool(name, getattr(self, name))
        for name in ("beta", "ipo_tau", "kto_desirable_weight", "kto_undesirable_weight", "learning_rate"):
            _check_number(name, getattr(self, name), low=0.0, low_open=True)
        if self.tau is not None:
            _check_number("tau", self.tau, low=0.0, low_open=True)
        _check_number("alpha", self.alpha, low=0.0, high=1.0)
        _check_number("label_smoothing", self.label_smoothing, low=0.0, high=0.5, high_open=True)
        _check_number("lora_dropout", self.lora_dropout, low=0.0, high=1.0, high_open=True)
        _check_number("max_grad_norm", self.max_grad_norm, low=0.0)
        _check_number("num_train_epochs", self.num_train_epochs, low=0.0, low_open=True)
        for name in ("desirable_fraction", "undesirable_fraction"):
            _check_number(name, getattr(self, name), low=0.0, high=1.0)
        for name in ("lora_r", "lora_alpha", "per_device_train_batch_size", "gradient_accumulation_steps",
                     "logging_steps", "precompute_batch_size", "max_prompt_length"):
            _check_int(name, getattr(self, name), low=1)
        _check_int("warmup_steps", self.warmup_steps, low=0)
        _check_int("save_steps", self.save_steps, low=0)
        _check_int("max_steps", self.max_steps, low=-1)
        _check_int("seed", self.seed, low=0)
        for name in ("max_train_rows", "save_total_limit"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), low=1)
        _check_int("max_length", self.max_length, low=self.max_prompt_length + 1,
                   why=f"it must exceed max_prompt_length={self.max_prompt_length}")
        self._check_combinations()

    def _check_combinations(self) -> None:
        """Reject settings that make no sense together, naming the fields to change."""
        if self.loss in UNPAIRED_ONLY_LOSSES and self.paired is True:
            raise ValueError(f"loss={self.loss!r} scores responses one at a time and needs unpaired data: "
                             "set paired=False (or leave it None); pairs are split with to_unpaired")
        if self.loss in PAIRED_ONLY_LOSSES and self.paired is False:
            raise ValueError(f"loss={self.loss!r} needs paired data (a chosen and a rejected response per prompt); "
                             "use loss='rpo' or 'kto' for unpaired data")
        if self.loss == "rpo" and self.weighting == "diagonal" and not self.is_paired:
            raise ValueError("weighting='diagonal' needs paired data (row i's own pair sits on the diagonal); "
                             "use 'embedding', 'uniform' or 'sinkhorn' with paired=False")
        if self.loss == "cdpo" and self.label_smoothing == 0.0:
            raise ValueError("loss='cdpo' needs label_smoothing in (0, 0.5); with 0 it is plain 'dpo'")
        if self.loss == "sft" and (self.accumulate_contrast or self.nll_weight or self.length_normalize):
            raise ValueError("accumulate_contrast, nll_weight and length_normalize apply to preference losses, not sft")
        if self.model.startswith(TINY_MODEL_PREFIX) and self.model[len(TINY_MODEL_PREFIX):] not in ("llama", "mistral"):
            raise ValueError(f"model {self.model!r}: tiny random models are "
                             "'tiny-random:llama' or 'tiny-random:mistral'")

    # ---- derived values ----------------------------------------------------------------------
    @property
    def is_paired(self) -> bool:
        """The pairing actually used: ``paired``, or False for KTO and True otherwise when None."""
        if self.paired is not None:
            return self.paired
        return self.loss not in UNPAIRED_ONLY_LOSSES

    @property
    def effective_tau(self) -> float:
        """``tau``, or the paper's value for the pairing (0.5 paired, 0.75 unpaired) when None."""
        return self.tau if self.tau is not None else PAPER_TAU[self.is_paired]

    @property
    def length_normalized(self) -> bool:
        """``length_normalize``, or True for IPO (per-token log-probs, TRL's convention) when None."""
        return self.length_normalize if self.length_normalize is not None else self.loss == "ipo"

    @property
    def needs_reference(self) -> bool:
        """Every loss but SFT compares the policy with a reference policy."""
        return self.loss != "sft"

    @property
    def needs_prompt_embeddings(self) -> bool:
        """Embedding and Sinkhorn weights, and similarity batches, read the prompts' embeddings."""
        uses_weights = self.loss == "rpo" and self.weighting in ("embedding", "sinkhorn")
        return uses_weights or self.batch_sampling == "similarity"

    def replace(self, **changes) -> "RPOConfig":
        """A copy with some fields changed (validated again); same as ``dataclasses.replace``."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_training_arguments(self, **overrides):
        """Build the ``transformers.TrainingArguments`` of this run (``overrides`` win).

        ``remove_unused_columns`` is always False: the batches carry extra keys (prompt
        embeddings, reference log-probs) that the model's forward does not take.
        """
        from transformers import TrainingArguments

        from rpo_tutorial.training.launch import FSDP_SETTINGS, environment_restored, launcher_distribution

        names = {f.name for f in dataclasses.fields(TrainingArguments)}
        transformers_5 = "activation_checkpointing" in names  # renamed from gradient_checkpointing in v5
        launcher = launcher_distribution()  # an accelerate config naming FSDP / DeepSpeed wins over self.fsdp
        fsdp, fsdp_config = None, None
        if self.fsdp and launcher is None:  # the settings of configs/fsdp_mistral7b_8gpu.yaml
            fsdp = True if transformers_5 else "full_shard auto_wrap"
            fsdp_config = {**FSDP_SETTINGS, "activation_checkpointing": self.gradient_checkpointing}
            if self.fsdp_layer_class:
                fsdp_config["transformer_layer_cls_to_wrap"] = [self.fsdp_layer_class]
        fsdp_checkpoints = launcher == "fsdp" or fsdp is not None  # FSDP's own activation checkpointing
        values = dict(
            output_dir=self.output_dir, learning_rate=self.learning_rate, optim=self.optimizer,
            lr_scheduler_type=self.lr_scheduler, warmup_steps=self.warmup_steps,
            num_train_epochs=self.num_train_epochs, max_steps=self.max_steps,
            per_device_train_batch_size=self.per_device_train_batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps, max_grad_norm=self.max_grad_norm,
            bf16=self.bf16,
            fsdp=fsdp, fsdp_config=fsdp_config, logging_steps=self.logging_steps,
            save_strategy="steps" if self.save_steps else "no", save_steps=self.save_steps or 500,
            save_total_limit=self.save_total_limit, seed=self.seed,
            data_seed=self.seed, report_to=self.report_to, remove_unused_columns=False,
            logging_nan_inf_filter=False, disable_tqdm=not self.progress, save_only_model=False,
            # without a GPU, train on the CPU; several CPU processes (torchrun) then use DDP over gloo
            use_cpu=not torch.cuda.is_available(),
        )
        # HF's own activation checkpointing (FSDP checkpoints through fsdp_config instead).
        prefix = "activation" if transformers_5 else "gradient"
        values[f"{prefix}_checkpointing"] = self.gradient_checkpointing and not fsdp_checkpoints
        if self.gradient_checkpointing and not fsdp_checkpoints:
            values[f"{prefix}_checkpointing_kwargs"] = {"use_reentrant": False}
        values.update(overrides)
        if values.get("remove_unused_columns"):
            raise ValueError("remove_unused_columns must stay False: the trainer reads extra batch keys")
        with environment_restored():  # FSDP arguments set FSDP_CPU_RAM_EFFICIENT_LOADING in os.environ
            return TrainingArguments(**values)


# ---- presets --------------------------------------------------------------------------------
PRESETS: dict[str, dict] = {
    # A tiny random Llama on a few demo rows: the whole pipeline in seconds on a CPU (tests, CI).
    "smoke": dict(
        model=TINY_MODEL_PREFIX + "llama", dataset="demo", max_train_rows=16, max_length=128,
        max_prompt_length=64, per_device_train_batch_size=4, max_steps=4, learning_rate=1e-3,
        optimizer="adamw_torch", warmup_steps=0, logging_steps=1, save_steps=0, beta=0.1,
        output_dir="outputs/smoke", precompute_batch_size=16, progress=False,
    ),
    # The bundled SmolLM2-135M-Instruct on the project's demo dataset, offline on a CPU (minutes):
    # a short run (20 steps of 4 pairs), so a live reference model is cheaper than precomputing
    # reference log-probs for the whole dataset.
    "demo": dict(
        model=BUNDLED_POLICY, dataset="demo", max_length=160, max_prompt_length=96,
        per_device_train_batch_size=4, max_steps=20, learning_rate=1e-5, optimizer="adamw_torch",
        warmup_steps=3, logging_steps=2, save_steps=0, reference="model", output_dir="outputs/demo",
    ),
    # SmolLM2-360M-Instruct on a subset of Anthropic HH, one Colab GPU (T4: no bf16; add --bf16 on
    # an L4 / A100), one 16 x 16 contrast matrix per step over both micro-batches (accumulate_contrast).
    # Add --reference lora (pip install peft) to train adapters only.
    "colab": dict(
        model="HuggingFaceTB/SmolLM2-360M-Instruct", dataset="hh:harmless-base,helpful-base",
        max_train_rows=4000, per_device_train_batch_size=8, gradient_accumulation_steps=2, accumulate_contrast=True,
        learning_rate=1e-6, optimizer="adamw_torch", warmup_steps=20, gradient_checkpointing=True,
        logging_steps=5, save_steps=100, save_total_limit=2, output_dir="outputs/colab",
    ),
    # The paper's run (Sec. 5): Mistral-7B on HH, 8 GPUs x 8 pairs x 1 accumulation = 64 per step,
    # RMSprop, lr 5e-7, 150 warm-up steps, one epoch, beta 0.1, tau 0.5 paired / 0.75 unpaired
    # (effective_tau), prompt 256 / total 512 tokens, bf16, FSDP full shard with activation
    # checkpointing on each MistralDecoderLayer. Launch with configs/fsdp_mistral7b_8gpu.yaml.
    "paper": dict(
        model="mistralai/Mistral-7B-v0.1", dataset="hh", max_length=512, max_prompt_length=256,
        per_device_train_batch_size=8, gradient_accumulation_steps=1, learning_rate=5e-7,
        optimizer="rmsprop", warmup_steps=150, num_train_epochs=1.0, beta=0.1, tau=None, bf16=True,
        gradient_checkpointing=True, fsdp=True, fsdp_layer_class="MistralDecoderLayer",
        logging_steps=10, save_steps=500, output_dir="outputs/paper",
    ),
}
PAPER_NUM_GPUS = 8  # the paper preset's global batch: 8 per device x 8 GPUs x 1 accumulation = 64


def get_preset(name: str, **overrides) -> RPOConfig:
    """The named preset (``smoke``, ``demo``, ``colab``, ``paper``) with ``overrides`` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(RPOConfig)})
    if unknown:
        raise ValueError(f"unknown RPOConfig field(s) {unknown}")
    return RPOConfig(**{**PRESETS[name], **overrides})
