"""RPOTrainer: ``transformers.Trainer`` with SFT, DPO, IPO, cDPO, KTO and RPO losses.

Everything around the loss (DDP / FSDP / DeepSpeed, gradient accumulation, mixed precision,
checkpoints and resume, logging, progress bars) comes from ``transformers.Trainer``; this class
only says how one collated batch becomes a loss. Read one step from :meth:`RPOTrainer.compute_loss`:

1. ``_forward_logps``: the policy's float32 sum of response-token log-probs of the stacked batch
   (M chosen rows, then N rejected rows), the LM head run on response rows only; paired batches
   run each prompt once when the run's :class:`~rpo_tutorial.training.forward_plan.ForwardPlan`
   says so (decided once, when the trainer is built);
2. ``_reference_logps``: read from the batch ("precomputed"), one no-grad forward of a frozen
   reference model ("model"), or of the policy with its LoRA adapters disabled ("lora"), in the
   same layout as the policy;
3. ``objectives.scoped_objective``: weights from the batch's precomputed prompt embeddings
   (``weighting.py``, Eqs. 11-14), the pure loss function (``losses.py``, e.g. ``rpo_loss``,
   Eq. 15), and with ``contrast_scope="global"`` the rows of every process.

With gradient accumulation, ``accumulate_contrast=True`` makes the loss one objective over all
micro-batches of the optimizer step (``accumulation``: a no-grad pass over the step, then per
micro-batch a surrogate whose gradient is exact); SFT is normalised per response token over the
whole step (``num_items_in_batch``).

A non-finite log-prob or loss raises :class:`NonFiniteLossError` naming the step, on EVERY process:
the processes agree with one all-reduce per micro-batch, before backward. The metrics of
``metrics.METRIC_NAMES`` are accumulated per micro-batch, averaged at each logging step, sent to
``report_to`` and appended to ``OUTPUT_DIR/metrics.jsonl``.

    trainer = RPOTrainer(model=policy, config=config, reference_model=reference,
                         train_dataset=examples, data_collator=PreferenceCollator(tokenizer.pad_token_id))
    trainer.train()
    trainer.save_model("outputs/rpo")  # a folder from_pretrained loads, also under FSDP

Launch on several processes with ``accelerate launch`` or ``torchrun`` (see ``launch.py`` for who
decides FSDP / DeepSpeed). The frozen reference takes the policy's route (``reference.py``):
FSDP2 shards it with the policy's wrap policy, mesh and mixed precision; DeepSpeed ZeRO-3 wraps
it in a sharded inference engine; ZeRO-1/2, DDP and a single process keep a replicated copy on
the device, in the policy's parameter dtype, its forward under the policy's autocast. So before
any optimizer step every log-ratio is exactly 0, in float32 and in bf16 mixed precision. With
``reference="precomputed"`` a ``reference_model`` given here is run ONCE over ``train_dataset`` and
``eval_dataset``, placed the same way and in the same layout, and then dropped.
"""
from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

import torch
from transformers import Trainer

from rpo_tutorial.data.collate import IGNORE_INDEX
from rpo_tutorial.models.shared_prompt import collated_sequence_logps
from rpo_tutorial.training.accumulation import StepCoefficients, step_coefficients, surrogate_loss
from rpo_tutorial.training.config import RPOConfig
from rpo_tutorial.training.distributed import all_reduce_sum, world_size
from rpo_tutorial.training.forward_plan import ForwardPlan, choose_forward_plan
from rpo_tutorial.training.launch import (
    any_process_flagged,
    environment_restored,
    report_distribution,
    save_fsdp_full_model,
)
from rpo_tutorial.training.metrics import (
    MetricsAccumulator,
    MetricsJsonlCallback,
    RunLossCallback,
    preference_metrics,
    sft_metrics,
)
from rpo_tutorial.training.objectives import PreferenceLogps, scoped_objective
from rpo_tutorial.training.reference import precompute_reference, prepare_reference

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Training produced NaN or inf; the message names the step."""


class RPOTrainer(Trainer):
    """A ``Trainer`` whose loss is ``config.loss`` (see the module docstring).

    Args:
        model: the policy (a causal LM; a peft model when ``config.reference == "lora"``).
        config: the run's :class:`RPOConfig`.
        reference_model: the frozen reference when ``config.reference == "model"``; with
            ``"precomputed"``, a reference whose log-probs are computed here once over
            ``train_dataset`` and ``eval_dataset`` (lists of tokenized examples); None otherwise.
        args: ``TrainingArguments``; default ``config.to_training_arguments()``.
        forward_plan: the batches' layout (``build_trainer`` chooses it, and pads its collator to
            ``forward_plan.pad_to_length``); default :func:`~rpo_tutorial.training.forward_plan.
            choose_forward_plan` of this config, these arguments and models (no fixed pad length).
        **kwargs: passed to ``transformers.Trainer`` (train_dataset, data_collator, callbacks, ...).
    """

    @property
    def loss_is_scaled_for_ga(self) -> bool:
        """False: compute_loss returned a micro-batch mean and Trainer divides it by the accumulation
        steps. True after a step-normalised loss (SFT per token of the step, accumulated contrast)."""
        return getattr(self, "_loss_scaled_for_step", False)

    def __init__(self, model: torch.nn.Module, config: RPOConfig, reference_model: torch.nn.Module | None = None,
                 args=None, forward_plan: ForwardPlan | None = None, **kwargs: Any) -> None:
        args = args if args is not None else config.to_training_arguments()
        if args.remove_unused_columns:
            raise ValueError("TrainingArguments.remove_unused_columns must be False: batches carry prompt "
                             "embeddings and reference log-probs that the model's forward does not take")
        has_data = kwargs.get("train_dataset") is not None or kwargs.get("eval_dataset") is not None
        _check_reference(config, model, reference_model, has_data)
        with environment_restored():  # Accelerator(fsdp_plugin=...) sets ACCELERATE_USE_FSDP for good otherwise
            super().__init__(model=model, args=args, **kwargs)
        self.config = config
        self.model_accepts_loss_kwargs = False  # we never pass num_items_in_batch to the model
        self.distribution = report_distribution(self, config)  # printed on rank 0
        self.forward_plan = forward_plan or choose_forward_plan(config, self.args, [model, reference_model])
        self._announce_plan()
        self._non_finite: str | None = None  # the first non-finite value of this micro-batch
        self._metrics = {"train": MetricsAccumulator(), "eval": MetricsAccumulator()}
        self._run_loss = RunLossCallback(self)  # train_loss over the whole run, also after a resume
        self.callback_handler.callbacks.insert(0, self._run_loss)  # before report_to and metrics.jsonl see it
        self.add_callback(MetricsJsonlCallback())
        self._accumulated: list[tuple[StepCoefficients, int]] = []  # accumulated contrast, per micro-batch
        if config.loss == "rpo" and args.gradient_accumulation_steps > 1 and not config.accumulate_contrast:
            warnings.warn(f"loss='rpo' with gradient_accumulation_steps={args.gradient_accumulation_steps}: each "
                          "micro-batch builds its own contrast matrix; set accumulate_contrast=True for one matrix "
                          "over the whole optimizer step", stacklevel=2)
        self.reference_model = None
        if reference_model is not None and config.reference == "precomputed":
            self._precompute_reference(reference_model)  # the datasets now carry its log-probs
        elif reference_model is not None:
            self.reference_model = prepare_reference(reference_model, self)

    def _announce_plan(self) -> None:
        """Refuse a plan the engine cannot run; say the layout and why, once, on the main process."""
        engine = "FSDP" if self.is_fsdp_enabled else "DeepSpeed" if self.is_deepspeed_enabled else None
        if self.forward_plan.share_prompts and engine is not None:
            raise ValueError(f"the forward plan shares prompts but this trainer runs under {engine}, which takes "
                             "one forward on all rows; choose the plan with training.forward_plan.choose_forward_plan")
        logger.info("forward layout: %s", self.forward_plan.reason)
        if self.config.progress and self.accelerator.is_main_process:
            print(f"[rpo-tutorial] forward layout: {self.forward_plan.reason}", file=sys.stderr)

    # ---- reference model ------------------------------------------------------------------
    def _precompute_reference(self, reference: torch.nn.Module) -> None:
        """Store the reference's log-probs in the training and evaluation examples (one pass, then dropped)."""
        if isinstance(self.eval_dataset, dict):
            raise ValueError("reference='precomputed' with a reference_model takes one eval_dataset (a list of "
                             "examples), not a dict of them; precompute each with training.reference."
                             "precompute_reference first")
        train, evaluation = list(self.train_dataset or []), list(self.eval_dataset or [])
        done = precompute_reference(self, reference, train + evaluation, self.data_collator, self.forward_plan,
                                    self.config.precompute_batch_size, self.config.progress)
        if self.train_dataset is not None:
            self.train_dataset = done[:len(train)]
        if self.eval_dataset is not None:
            self.eval_dataset = done[len(train):]

    def _reference_logps(self, model: torch.nn.Module, inputs: dict) -> torch.Tensor:
        """Reference log-probs of the stacked batch, in the policy's layout. Shape: returns (M + N,) float32."""
        mode = self.config.reference
        if mode == "precomputed":
            missing = [k for k in ("reference_chosen_logps", "reference_rejected_logps") if k not in inputs]
            if missing:
                raise ValueError(f"reference='precomputed' but the batch lacks {missing}: pass reference_model to "
                                 "RPOTrainer (or build_trainer), or run logprobs.precompute_reference_logps on the "
                                 "tokenized examples first")
            return torch.cat([inputs["reference_chosen_logps"], inputs["reference_rejected_logps"]]).float()
        with torch.no_grad():
            if mode == "model":
                return self._forward_logps(self.reference_model, inputs).detach()
            peft_model = self.accelerator.unwrap_model(model)
            with peft_model.disable_adapter():  # the base weights are the reference policy
                return self._forward_logps(model, inputs).detach()

    # ---- loss ---------------------------------------------------------------------------------
    def compute_loss(self, model: torch.nn.Module, inputs: dict, return_outputs: bool = False,
                     num_items_in_batch: torch.Tensor | int | None = None):
        """The loss of ``config.loss`` on one micro-batch: log-probs -> :class:`PreferenceLogps` -> objective.

        Preference losses: :meth:`_preference_loss` (reference, then policy log-probs, then
        ``objectives.scoped_objective``, which reaches ``weighting.compute_weights`` and the
        ``losses.LOSSES`` function, e.g. ``rpo_loss``). SFT in training: summed NLL /
        ``num_items_in_batch`` (the step's label tokens on all processes, times the process count
        since data-parallel training averages gradients), so the step's gradient is that of the
        per-token mean over the whole step. With ``accumulate_contrast``: the surrogate of
        ``accumulation`` for this micro-batch.

        Shape:
            inputs: a collated batch, input_ids / attention_mask / labels (M + N, T), M chosen rows
            first; returns () float32
        """
        self._loss_scaled_for_step = False
        if self.config.loss == "sft":
            loss, stats = self._sft_loss(model, inputs, num_items_in_batch if model.training else None)
        elif model.training and self._accumulated:
            loss, stats = self._accumulated_loss(model, inputs, *self._accumulated.pop(0))
        else:
            loss, stats = self._preference_loss(model, inputs)
        self._check_finite(loss, "the loss")
        self._stop_if_non_finite()
        self._metrics["train" if model.training else "eval"].add(stats)
        return (loss, {"loss": loss.detach()}) if return_outputs else loss

    def _preference_loss(self, model: torch.nn.Module, inputs: dict):
        """Reference and policy log-probs of the stacked batch -> the (local or global) objective + metrics.

        Shape:
            reference, policy: (M + N,) float32; returns the () loss and the metrics' (sum, count) pairs
        """
        reference = self._reference_logps(model, inputs)  # (M + N,), before the policy graph exists
        policy = self._forward_logps(model, inputs)  # (M + N,): chosen + rejected, in the plan's layout
        output, seen = scoped_objective(self._preference_logps(inputs, policy, reference), self.config)
        return output.loss, preference_metrics(seen, output)

    def _forward_logps(self, model: torch.nn.Module, inputs: dict) -> torch.Tensor:
        """Summed float32 log-probs of each row's label tokens, the head applied to the label rows only, in
        the layout of ``self.forward_plan`` (shared prompts or one forward). Shape: returns (M + N,)."""
        return collated_sequence_logps(model, inputs, self.forward_plan.share_prompts)

    def _preference_logps(self, inputs: dict, policy: torch.Tensor, reference: torch.Tensor) -> PreferenceLogps:
        """Check both (M + N,) log-prob vectors, then split them into the batch's chosen and rejected sides."""
        self._check_finite(reference, "reference log-probabilities")
        self._check_finite(policy, "policy log-probabilities")
        if self._non_finite is not None:  # finite stand-ins keep the global scope's all-gathers matched;
            policy, reference = policy.nan_to_num(0.0, 0.0, 0.0), reference.nan_to_num(0.0, 0.0, 0.0)  # raised later
        return PreferenceLogps.from_batch(inputs, policy, reference)

    def get_batch_samples(self, epoch_iterator, num_batches: int, device: torch.device):
        """The step's micro-batches; SFT: their label-token count over all processes as
        ``num_items_in_batch``; ``accumulate_contrast``: the full-step pass of ``accumulation``."""
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self.config.loss == "sft" and batch_samples:
            tokens = sum(int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()) for batch in batch_samples)
            num_items_in_batch = all_reduce_sum(torch.tensor([float(tokens)], device=self.args.device))[0]
        elif self.config.accumulate_contrast and batch_samples:
            self._accumulated = self._accumulate_step([self._prepare_inputs(batch) for batch in batch_samples])
        return batch_samples, num_items_in_batch

    def _accumulate_step(self, micro_batches: list[dict]) -> list[tuple[StepCoefficients, int]]:
        """No-grad log-probs of every micro-batch -> full-step loss, metrics and per-row coefficients."""
        model, parts = self.model_wrapped, []
        with torch.no_grad(), self.compute_loss_context_manager():
            for inputs in micro_batches:
                reference = self._reference_logps(model, inputs)
                parts.append(self._preference_logps(inputs, self._forward_logps(model, inputs), reference))
        step = step_coefficients(parts, self.config)
        self._check_finite(step.output.loss, "the loss")
        self._stop_if_non_finite()
        self._metrics["train"].add(preference_metrics(step.seen, step.output))
        return [(step, index) for index in range(len(parts))]

    def _accumulated_loss(self, model: torch.nn.Module, inputs: dict, step: StepCoefficients, index: int):
        """Micro-batch ``index`` of an accumulated-contrast step (metrics were added by the step pass)."""
        policy = self._forward_logps(model, inputs)  # (M_k + N_k,) with gradient
        self._check_finite(policy, "policy log-probabilities")
        self._loss_scaled_for_step = True
        return surrogate_loss(policy, step.coefficients[index], step.output.loss, step.num_micro_batches), {}

    def _sft_loss(self, model: torch.nn.Module, inputs: dict, num_items_in_batch: torch.Tensor | int | None = None):
        """Negative log-likelihood per response token (the paper's SFT stage): of the micro-batch,
        or of the whole optimizer step when ``num_items_in_batch`` counts the step's tokens."""
        logps = self._forward_logps(model, inputs)  # (B,)
        self._check_finite(logps, "policy log-probabilities")
        num_tokens = int((inputs["labels"][:, 1:] != IGNORE_INDEX).sum())
        if num_items_in_batch is None:
            return -logps.sum() / max(num_tokens, 1), sft_metrics(logps, num_tokens)
        self._loss_scaled_for_step = True
        step_tokens = float(num_items_in_batch)
        return -logps.sum() * world_size() / max(step_tokens, 1.0), sft_metrics(logps, num_tokens)

    def _check_finite(self, value: torch.Tensor, what: str) -> None:
        """Remember the first non-finite value; :meth:`_stop_if_non_finite` raises on every process."""
        if self._non_finite is None and not bool(torch.isfinite(value).all()):
            self._non_finite = what

    def _stop_if_non_finite(self) -> None:
        """One all-reduce per micro-batch, before backward: any process non-finite -> all raise."""
        local, self._non_finite = self._non_finite, None
        if any_process_flagged(local is not None, self.args.device):
            phase = "training" if self.model.training else "evaluation at"
            what = local or "a value on another process"
            raise NonFiniteLossError(
                f"{what} became non-finite (nan/inf) at {phase} step {self.state.global_step + 1} "
                f"(epoch {self.state.epoch or 0:.3f}); training stopped on every process. Try a lower "
                "learning_rate, bf16 instead of fp16, or check the data of this step.")

    # ---- training and saving ----------------------------------------------------------------
    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        """``transformers.Trainer.train``, whose ``training_loss`` (and the logged ``train_loss``) is the
        mean over every step of the run, also after a resume (``metrics.RunLossCallback``)."""
        checkpoint = resume_from_checkpoint
        if checkpoint is True:
            from transformers.trainer_utils import get_last_checkpoint

            checkpoint = get_last_checkpoint(self.args.output_dir)
        self._run_loss.resume_from(checkpoint or None)
        output = super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        mean = self._run_loss.mean_loss
        return output if mean is None else output._replace(training_loss=mean)

    # ---- saving ---------------------------------------------------------------------------
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Write a folder that ``AutoModelForCausalLM.from_pretrained`` loads, as HF users expect.

        Call it on every process (as ``transformers.Trainer.save_model``). Under FSDP the sharded
        parameters are gathered once into a plain model that the main process saves with the
        tokenizer (``launch.save_fsdp_full_model``; ``run_training`` saves through here too);
        ``Trainer.save_model`` would write nothing loadable with a sharded state dict. Checkpoints
        (``_internal_call``) keep transformers' own sharded format, which resumes.

        DeepSpeed and DDP / one process: ``Trainer.save_model``. Under ZeRO-1/2 that writes the
        full model. Under ZeRO-3 it gathers 16-bit weights when the DeepSpeed config sets
        ``stage3_gather_16bit_weights_on_model_save`` (``zero3_save_16bit_model: true`` in
        configs/deepspeed_zero3_8gpu.yaml); without it transformers logs a warning and writes a
        DeepSpeed checkpoint instead, which ``zero_to_fp32.py`` converts and ``from_pretrained``
        cannot load. (DeepSpeed is not installed on this project's CI machines: that path is
        transformers', untested here.)
        """
        if self.is_fsdp_enabled and not _internal_call:
            save_fsdp_full_model(self, output_dir if output_dir is not None else self.args.output_dir)
            return
        super().save_model(output_dir, _internal_call)

    # ---- logging and sampling -------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the averaged metrics to each training / evaluation log (all processes call this)."""
        mode = "eval" if any(key.startswith("eval_") for key in logs) else "train"
        if mode == "eval" or "loss" in logs:
            averages = self._metrics[mode].pop_averages(self.args.device)
            prefix = "eval_" if mode == "eval" else ""
            logs = {**logs, **{prefix + name: value for name, value in averages.items()}}
        super().log(logs, start_time)

    def _get_train_sampler(self, train_dataset=None):
        """Random batches (default), related prompts together ("similarity"), or dataset order ("sequential")."""
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.config.batch_sampling == "random":
            return super()._get_train_sampler(train_dataset)
        if self.config.batch_sampling == "sequential":
            return torch.utils.data.SequentialSampler(dataset)
        from rpo_tutorial.data.embeddings import stack_prompt_embeddings
        from rpo_tutorial.data.sampler import SimilaritySampler

        return SimilaritySampler(stack_prompt_embeddings(dataset), batch_size=self.args.per_device_train_batch_size,
                                 seed=self.args.seed, drop_last=self.args.dataloader_drop_last)


def _check_reference(config: RPOConfig, model: torch.nn.Module, reference_model: torch.nn.Module | None,
                     has_data: bool) -> None:
    """The reference arguments must match ``config.reference`` (precomputed: a model only to precompute with)."""
    if config.needs_reference and config.reference == "auto":
        raise ValueError("reference='auto' is resolved by training.run.build_trainer (rpo-tutorial train), which "
                         "knows the data; RPOTrainer needs 'model', 'precomputed' or 'lora'")
    if config.needs_reference and config.reference == "precomputed" and reference_model is not None and not has_data:
        raise ValueError("reference_model was given but reference='precomputed' without a train_dataset or "
                         "eval_dataset to precompute its log-probs on does not use one; pass None (or the datasets)")
    if not config.needs_reference:
        if reference_model is not None:
            raise ValueError(f"reference_model was given but loss={config.loss!r} with reference="
                             f"{config.reference!r} does not use one; pass None")
    elif config.reference == "model" and reference_model is None:
        raise ValueError("reference='model' needs reference_model (a frozen copy of the starting policy)")
    elif config.reference == "lora":
        if reference_model is not None:
            raise ValueError("reference='lora' uses the policy's base weights; pass reference_model=None")
        if not hasattr(model, "disable_adapter"):
            raise ValueError("reference='lora' needs a peft model (peft.get_peft_model(...)); got "
                             f"{type(model).__name__}")
