"""Build and run a training job from an :class:`RPOConfig`: the one training path (CLI, notebooks, the demo).

    from rpo_tutorial.training.config import get_preset
    from rpo_tutorial.training import run_sft, run_training
    sft = run_sft(get_preset("demo", output_dir="outputs/sft"))                  # stage 1
    rpo = run_training(get_preset("demo", model=str(sft.output_dir), output_dir="outputs/rpo"))

The pipeline (each step once, before training):
rows (demo / HH / a file / a hub id) -> prompt embeddings (once, cached on disk; only when the
weighting or the sampler needs them) -> unpaired split (``paired=False``) -> tokenize -> the
reference model (``"model"`` / ``"precomputed"``) or LoRA adapters (``"lora"``) -> the forward
layout (:mod:`~rpo_tutorial.training.forward_plan`: shared prompts or one forward, pad length) ->
:class:`RPOTrainer` (with ``reference="precomputed"`` it runs the reference once, placed and sharded
as in training, each process on its share of the data) -> train -> ``trainer.save_model``: a full
model (gathered once under FSDP, so the folder loads with ``from_pretrained``), tokenizer,
``rpo_config.json`` and ``metrics.jsonl`` in ``output_dir``.

Before any of that, ``output_dir`` is checked: a folder holding another run is refused unless
``overwrite=True`` (then cleared) or the run resumes with the same configuration
(:mod:`rpo_tutorial.training.output_dir`). After tokenization, unpaired data is checked for both
sides (:mod:`rpo_tutorial.training.dataset_checks`).

On several processes (``accelerate launch`` / ``torchrun``) every process runs the same pipeline;
the main process embeds first and the others read the embedding cache.
"""
from __future__ import annotations

import copy
import json
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from rpo_tutorial.data.collate import PreferenceCollator, SFTCollator
from rpo_tutorial.data.preferences import open_dataset
from rpo_tutorial.data.run_logs import METRICS_FILE
from rpo_tutorial.data.tokenization import TokenizationReport, tokenize_dataset
from rpo_tutorial.models.loading import BUNDLED_POLICY, load_policy, load_tokenizer, tiny_model
from rpo_tutorial.models.logprobs import REFERENCE_KEYS
from rpo_tutorial.training.config import TINY_MODEL_PREFIX, RPOConfig
from rpo_tutorial.training.dataset_checks import SideCheck, check_sides
from rpo_tutorial.training.forward_plan import choose_forward_plan
from rpo_tutorial.training.launch import fsdp_requested
from rpo_tutorial.training.output_dir import CONFIG_FILE, apply_plan, plan_output_dir
from rpo_tutorial.training.reference import cast_parameters, copy_buffers, parameter_dtype
from rpo_tutorial.training.reference_choice import ReferenceChoice, choose_reference
from rpo_tutorial.training.trainer import RPOTrainer


@dataclass
class RunResult:
    """What a finished run left behind."""

    output_dir: Path  # final model + tokenizer + rpo_config.json + metrics.jsonl
    metrics_path: Path  # output_dir / metrics.jsonl
    global_step: int  # optimizer steps taken
    train_loss: float  # mean training loss over every step of the run (resumed runs included)
    tokenization: TokenizationReport | None  # rows kept / truncated / skipped (None: examples were given)
    trainer: RPOTrainer  # for inspection in notebooks (trainer.model is the trained policy)
    sides: SideCheck | None = None  # unpaired data: desirable / undesirable counts, one-sided micro-batches


# ---- data -----------------------------------------------------------------------------------
def _config_rows(config: RPOConfig, strict: bool = False) -> list[dict]:
    """The first ``max_train_rows`` rows of ``config.dataset`` (``data.preferences.open_dataset``)."""
    rows = list(open_dataset(config.dataset, config.dataset_split, strict))[: config.max_train_rows]
    if not rows:
        raise ValueError(f"dataset {config.dataset!r} (split {config.dataset_split!r}) gave no rows")
    return rows


def prepare_rows(rows: Sequence[dict], config: RPOConfig) -> list[dict]:
    """Add prompt embeddings (once, when needed and missing) and split pairs when ``paired=False``."""
    rows = list(rows)
    unpaired_rows = all("completion" in row for row in rows)
    if config.loss != "sft" and config.is_paired and unpaired_rows:
        raise ValueError(f"loss={config.loss!r} with paired data, but the rows are unpaired "
                         "{prompt, completion, label}; set paired=False")
    if config.needs_prompt_embeddings and not all("prompt_embedding" in row for row in rows):
        from rpo_tutorial.data.embeddings import PromptEmbedder, add_prompt_embeddings

        rows = add_prompt_embeddings(rows, PromptEmbedder(config.embedder), mode=config.embed_text,
                                     show_progress=config.progress)
    if config.loss != "sft" and not config.is_paired and not unpaired_rows:
        from rpo_tutorial.data.preferences import to_unpaired

        rows = to_unpaired(rows, seed=config.seed, desirable_fraction=config.desirable_fraction,
                           undesirable_fraction=config.undesirable_fraction)
    return list(rows)


def tokenize_rows(rows: Sequence[dict], tokenizer, config: RPOConfig) -> tuple[list[dict], TokenizationReport]:
    """Tokenize for SFT (chosen responses), paired or unpaired training; invalid rows are skipped with a count."""
    kind = "sft" if config.loss == "sft" else ("paired" if config.is_paired else "unpaired")
    examples, report = tokenize_dataset(rows, tokenizer, kind=kind, max_prompt_length=config.max_prompt_length,
                                        max_length=config.max_length, prompt_truncation=config.prompt_truncation,
                                        progress=config.progress)
    if not examples:
        raise ValueError(f"no example survived tokenization: {report.summary()}")
    return examples, report


# ---- models ---------------------------------------------------------------------------------
def load_models(config: RPOConfig):
    """(tokenizer, policy): a tiny random model, the bundled SmolLM2, a hub id or a local folder."""
    tiny = config.model.startswith(TINY_MODEL_PREFIX)
    tokenizer = load_tokenizer(config.tokenizer or (BUNDLED_POLICY if tiny else config.model))
    if tiny:
        policy = tiny_model(len(tokenizer), architecture=config.model[len(TINY_MODEL_PREFIX):], seed=config.seed)
    else:
        policy = load_policy(config.model)  # float32 master weights; bf16 is autocast by the Trainer
    policy.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, policy


def load_reference(config: RPOConfig, policy: torch.nn.Module, from_config: bool) -> torch.nn.Module:
    """The frozen reference: the starting policy's weights, in the dtype the policy computes in.

    Under FSDP with bf16 that is bfloat16 (the policy's float32 shards are cast to bf16 before
    each all-gather, so a bf16 reference does the same arithmetic in half the memory); otherwise
    the policy's own parameter dtype. A hub / local model is loaded again in that dtype (no
    float32 copy in memory) and given the policy's buffers (RoPE frequencies stay float32);
    a tiny random model or a policy handed in by the caller is copied.
    """
    dtype = torch.bfloat16 if config.bf16 and fsdp_requested(config) else parameter_dtype(policy)
    if from_config and not config.model.startswith(TINY_MODEL_PREFIX):
        reference = load_policy(config.model, dtype=dtype)
        copy_buffers(policy, reference)
        return reference
    return cast_parameters(copy.deepcopy(policy), dtype)


def apply_lora(model: torch.nn.Module, config: RPOConfig) -> torch.nn.Module:
    """Wrap ``model`` with LoRA adapters on every linear layer (needs ``pip install peft``)."""
    try:
        import peft
    except ImportError as error:
        raise ImportError("reference='lora' needs the optional peft package: pip install 'rpo-tutorial[peft]'") \
            from error
    lora = peft.LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                           target_modules="all-linear", task_type="CAUSAL_LM")
    return peft.get_peft_model(model, lora)


# ---- build and run ----------------------------------------------------------------------------
def build_trainer(config: RPOConfig, rows: Sequence[dict] | None = None, policy: torch.nn.Module | None = None,
                  tokenizer=None, eval_rows: Sequence[dict] | None = None, strict: bool = False,
                  examples: Sequence[dict] | None = None,
                  on_reference_choice: Callable[[ReferenceChoice], None] | None = None,
                  ) -> tuple[RPOTrainer, TokenizationReport | None]:
    """Everything up to ``trainer.train()``: data, models, reference, forward plan, collator, trainer.

    The one way this package builds a trainer (the CLI, notebooks, the demo and ``run_training``).
    The forward layout is decided here, once (:func:`~rpo_tutorial.training.forward_plan.
    choose_forward_plan`), and given to the collator (its pad length) and to the trainer, which
    hands it to the reference pass.

    Args:
        rows: use these rows instead of loading ``config.dataset`` (notebooks, tests).
        policy, tokenizer: use these instead of loading ``config.model`` (both or neither).
        eval_rows: held-out rows, evaluated every ``logging_steps`` (``eval_loss``,
            ``eval_rewards/accuracies``, ... in metrics.jsonl).
        strict: loading ``config.dataset``, raise on the first invalid row instead of skipping it.
        examples: tokenized examples to train on instead of rows, e.g. another trainer's
            ``train_dataset``. With ``reference="precomputed"``, examples that already carry
            reference log-probs keep them and no reference pass runs (the demo's DPO and RPO share
            one pass). The returned tokenization report is then None.
        on_reference_choice: called with what ``reference="auto"`` became and why (the CLI prints it).
    """
    trainer, report, _ = _build(config, rows, policy, tokenizer, eval_rows, strict, examples, on_reference_choice)
    return trainer, report


def _build(config: RPOConfig, rows, policy, tokenizer, eval_rows, strict: bool, examples,
           on_reference_choice: Callable[[ReferenceChoice], None] | None = None,
           ) -> tuple[RPOTrainer, TokenizationReport | None, SideCheck | None]:
    """:func:`build_trainer`, also returning the unpaired data's side check (for :class:`RunResult`)."""
    if (policy is None) != (tokenizer is None):
        raise ValueError("pass both policy and tokenizer, or neither")
    if rows is not None and examples is not None:
        raise ValueError("pass rows or tokenized examples, not both")
    args, report = config.to_training_arguments(), None
    if examples is None:
        first = args.main_process_first if torch.distributed.is_initialized() else (lambda **_: nullcontext())
        with first(desc="prompt embeddings"):
            rows = prepare_rows(_config_rows(config, strict) if rows is None else rows, config)
    loaded_here = policy is None
    if loaded_here:
        tokenizer, policy = load_models(config)
    if examples is None:
        examples, report = tokenize_rows(rows, tokenizer, config)
    examples = list(examples)
    contrast_rows = (args.per_device_train_batch_size * (args.world_size if config.contrast_scope == "global" else 1)
                     * (args.gradient_accumulation_steps if config.accumulate_contrast else 1))
    sides = check_sides(examples, config, contrast_rows)  # refuses data lacking a side; counts one-sided batches
    eval_examples = None
    if eval_rows is not None:
        eval_examples, _ = tokenize_rows(prepare_rows(list(eval_rows), config), tokenizer, config)
        args = config.to_training_arguments(eval_strategy="steps", eval_steps=config.logging_steps,
                                            per_device_eval_batch_size=config.per_device_train_batch_size)
    if config.reference == "auto":  # model or precomputed, from the run's length and the data (reference_choice)
        choice = choose_reference(config, examples, args.world_size, len(eval_examples or ()))
        config = config.replace(reference=choice.mode)
        if on_reference_choice is not None:
            on_reference_choice(choice)
    everything = examples + (eval_examples or [])
    stored = all(any(key in example for key in REFERENCE_KEYS) for example in everything)
    reference = None
    if config.needs_reference and (config.reference == "model" or (config.reference == "precomputed" and not stored)):
        reference = load_reference(config, policy, from_config=loaded_here)
    elif config.reference == "lora":
        policy = apply_lora(policy, config)
        if config.gradient_checkpointing:
            policy.enable_input_require_grads()
    plan = choose_forward_plan(config, args, [policy, reference], everything)
    collator = SFTCollator(tokenizer.pad_token_id) if config.loss == "sft" else \
        PreferenceCollator(tokenizer.pad_token_id, pad_to_length=plan.pad_to_length)
    # with reference="precomputed" the trainer runs the reference once over both datasets, then drops it
    trainer = RPOTrainer(model=policy, config=config, reference_model=reference, args=args, forward_plan=plan,
                         train_dataset=examples, eval_dataset=eval_examples, data_collator=collator,
                         processing_class=tokenizer)
    return trainer, report, sides


def run_training(config: RPOConfig, rows: Sequence[dict] | None = None,
                 resume_from_checkpoint: str | bool | None = None, overwrite: bool = False,
                 **build_options) -> RunResult:
    """Build, train, save. ``resume_from_checkpoint``: a checkpoint folder, or True for the latest one.

    ``overwrite``: clear an ``output_dir`` that holds another run (otherwise such a folder is
    refused with a :class:`~rpo_tutorial.training.output_dir.UsageError`, before any work). With
    ``reference="lora"`` the saved model is the adapter (peft format), except after SFT, whose
    adapters are merged so that its folder can serve as the next run's model.
    """
    plan = plan_output_dir(config.output_dir, config.to_dict(), resume_from_checkpoint, overwrite)
    options = {"policy": None, "tokenizer": None, "eval_rows": None, "strict": False, "examples": None,
               "on_reference_choice": None, **build_options}
    trainer, report, sides = _build(config, rows, **options)
    if trainer.is_world_process_zero():
        apply_plan(config.output_dir, plan, config.to_dict())
    trainer.accelerator.wait_for_everyone()
    output = trainer.train(resume_from_checkpoint=resume_from_checkpoint)  # training_loss: over the whole run
    output_dir = Path(config.output_dir)
    if config.loss == "sft" and config.reference == "lora":  # an SFT model becomes the next reference: merge
        trainer.model = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
    trainer.save_model(str(output_dir))  # a from_pretrained folder, also under FSDP (RPOTrainer.save_model)
    if trainer.is_world_process_zero():
        (output_dir / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    return RunResult(output_dir, output_dir / METRICS_FILE, output.global_step, output.training_loss, report, trainer,
                     sides)


def run_sft(config: RPOConfig, rows: Sequence[dict] | None = None, **options) -> RunResult:
    """The paper's first stage: NLL on the chosen responses. Use its output_dir as the next run's model."""
    if config.loss != "sft":
        config = config.replace(loss="sft")
    return run_training(config, rows, **options)
