"""RPOTrainer: ``transformers.Trainer`` with SFT, DPO, IPO, cDPO, KTO and RPO losses.

Everything around the loss (DDP / FSDP / DeepSpeed, gradient accumulation, mixed precision,
checkpoints and resume, logging, progress bars) comes from ``transformers.Trainer``; this class
only says how one collated batch becomes a loss:

1. the policy's float32 sum of response-token log-probs of the stacked batch (M chosen rows, then N
   rejected rows), the LM head run on response rows only (``models.head``): paired batches run each
   prompt once and both responses on its KV cache (``models.shared_prompt``, ``share_prompts``),
   other batches one forward on all rows;
2. the reference log-probs: read from the batch ("precomputed"), one no-grad forward of a frozen
   reference model ("model"), or of the policy with its LoRA adapters disabled ("lora");
3. the loss, from ``objectives.scoped_objective``: weights from the batch's precomputed prompt
   embeddings (no embedder runs during training), the pure loss function from the registry, and
   with ``contrast_scope="global"`` the rows of every process (see ``distributed``).

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

Launch on several processes with ``accelerate launch`` or ``torchrun`` (see ``launch.py`` for who
decides FSDP / DeepSpeed). The frozen reference takes the policy's route (``reference.py``):
FSDP2 shards it with the policy's wrap policy, mesh and mixed precision; DeepSpeed ZeRO-3 wraps
it in a sharded inference engine; ZeRO-1/2, DDP and a single process keep a replicated copy on
the device, in the policy's parameter dtype, its forward under the policy's autocast. So before
any optimizer step every log-ratio is exactly 0, in float32 and in bf16 mixed precision.
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
from transformers import Trainer

from rpo_tutorial.data.collate import IGNORE_INDEX
from rpo_tutorial.models.shared_prompt import prompt_sharing_sequence_logps, shared_prompt_problem
from rpo_tutorial.training.accumulation import StepCoefficients, step_coefficients, surrogate_loss
from rpo_tutorial.training.config import RPOConfig
from rpo_tutorial.training.distributed import all_reduce_sum, world_size
from rpo_tutorial.training.launch import any_process_flagged, environment_restored, report_distribution
from rpo_tutorial.training.metrics import (
    MetricsAccumulator,
    MetricsJsonlCallback,
    preference_metrics,
    sft_metrics,
)
from rpo_tutorial.training.objectives import PreferenceLogps, scoped_objective
from rpo_tutorial.training.reference import prepare_reference


class NonFiniteLossError(FloatingPointError):
    """Training produced NaN or inf; the message names the step."""


def _batch_embeddings(inputs: dict, key: str, rows: int, like: torch.Tensor) -> torch.Tensor:
    """The batch's (rows, D) prompt embeddings, or an empty (rows, 0) matrix when absent."""
    if key in inputs:
        return inputs[key].float()
    return like.new_zeros((rows, 0), dtype=torch.float32)


class RPOTrainer(Trainer):
    """A ``Trainer`` whose loss is ``config.loss`` (see the module docstring).

    Args:
        model: the policy (a causal LM; a peft model when ``config.reference == "lora"``).
        config: the run's :class:`RPOConfig`.
        reference_model: the frozen reference when ``config.reference == "model"``; None otherwise.
        args: ``TrainingArguments``; default ``config.to_training_arguments()``.
        **kwargs: passed to ``transformers.Trainer`` (train_dataset, data_collator, callbacks, ...).
    """

    @property
    def loss_is_scaled_for_ga(self) -> bool:
        """False: compute_loss returned a micro-batch mean and Trainer divides it by the accumulation
        steps. True after a step-normalised loss (SFT per token of the step, accumulated contrast)."""
        return getattr(self, "_loss_scaled_for_step", False)

    def __init__(self, model: torch.nn.Module, config: RPOConfig, reference_model: torch.nn.Module | None = None,
                 args=None, **kwargs: Any) -> None:
        args = args if args is not None else config.to_training_arguments()
        if args.remove_unused_columns:
            raise ValueError("TrainingArguments.remove_unused_columns must be False: batches carry prompt "
                             "embeddings and reference log-probs that the model's forward does not take")
        _check_reference(config, model, reference_model)
        with environment_restored():  # Accelerator(fsdp_plugin=...) sets ACCELERATE_USE_FSDP for good otherwise
            super().__init__(model=model, args=args, **kwargs)
        self.config = config
        self.model_accepts_loss_kwargs = False  # we never pass num_items_in_batch to the model
        self.distribution = report_distribution(self, config)  # printed on rank 0
        self.reference_model = prepare_reference(reference_model, self) if reference_model is not None else None
        self._non_finite: str | None = None  # the first non-finite value of this micro-batch
        self._metrics = {"train": MetricsAccumulator(), "eval": MetricsAccumulator()}
        self.add_callback(MetricsJsonlCallback())
        self._step_plan: list[tuple[StepCoefficients, int]] = []  # accumulated contrast, per micro-batch
        if config.loss == "rpo" and args.gradient_accumulation_steps > 1 and not config.accumulate_contrast:
            warnings.warn(f"loss='rpo' with gradient_accumulation_steps={args.gradient_accumulation_steps}: each "
                          "micro-batch builds its own contrast matrix; set accumulate_contrast=True for one matrix "
                          "over the whole optimizer step", stacklevel=2)

    # ---- reference model ------------------------------------------------------------------
    def _reference_logps(self, model: torch.nn.Module, inputs: dict) -> torch.Tensor:
        """Reference log-probs of the stacked batch. Shape: returns (M + N,) float32."""
        mode = self.config.reference
        if mode == "precomputed":
            missing = [k for k in ("reference_chosen_logps", "reference_rejected_logps") if k not in inputs]
            if missing:
                raise ValueError(f"reference='precomputed' but the batch lacks {missing}: run "
                                 "logprobs.precompute_reference_logps on the tokenized examples first")
            return torch.cat([inputs["reference_chosen_logps"], inputs["reference_rejected_logps"]]).float()
        with torch.no_grad():
            if mode == "model":
                return self._forward_logps(self.reference_model, inputs).detach()
            peft_model = self.accelerator.unwrap_model(model)
            with peft_model.disable_adapter():  # the base weights are the reference policy
                return self._forward_logps(model, inputs).detach()

    # ---- loss ---------------------------------------------------------------------------------
    def _forward_logps(self, model: torch.nn.Module, inputs: dict) -> torch.Tensor:
        """Summed float32 log-probs of each row's label tokens, the head applied to the label rows only;
        paired batches run each prompt once when ``config.share_prompts`` and it is safe
        (``shared_prompt.prompt_sharing_sequence_logps``), else one forward on all rows. Shape: (B,)."""
        paired = bool(inputs.get("paired", False)) and "num_chosen" in inputs
        return prompt_sharing_sequence_logps(model, inputs["input_ids"], inputs["attention_mask"], inputs["labels"],
                                             int(inputs["num_chosen"]) if paired else None,
                                             share_prompts=self._shares_prompts())

    def _shares_prompts(self) -> bool:
        """``config.share_prompts``, when the policy (with gradients as in its current mode) and the
        reference model can both share: both take the same path, so log-ratios start at exactly 0.

        A collator that pads every batch to one fixed length (``training.reference.reference_collator``,
        precomputed reference under mixed precision) asks for arithmetic that does not depend on the
        batch's other rows; re-laying the batch as shared prompts (padded per batch) would undo that,
        so such batches keep the one-forward layout."""
        if getattr(self.data_collator, "pad_to_length", None) is not None:
            return False
        policy = self.model_wrapped if self.model_wrapped is not None else self.model
        models = [policy] + ([self.reference_model] if self.reference_model is not None else [])
        with torch.set_grad_enabled(self.model.training):
            return self.config.share_prompts and all(shared_prompt_problem(m) is None for m in models)

    def get_batch_samples(self, epoch_iterator, num_batches: int, device: torch.device):
        """The step's micro-batches; SFT: their label-token count over all processes as
        ``num_items_in_batch``; ``accumulate_contrast``: the full-step pass of ``accumulation``."""
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self.config.loss == "sft" and batch_samples:
            tokens = sum(int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()) for batch in batch_samples)
            num_items_in_batch = all_reduce_sum(torch.tensor([float(tokens)], device=self.args.device))[0]
        elif self.config.accumulate_contrast and batch_samples:
            self._step_plan = self._plan_step([self._prepare_inputs(batch) for batch in batch_samples])
        return batch_samples, num_items_in_batch

    def _plan_step(self, micro_batches: list[dict]) -> list[tuple[StepCoefficients, int]]:
        """No-grad log-probs of every micro-batch -> full-step loss, metrics and per-row coefficients."""
        model, parts = self.model_wrapped, []
        with torch.no_grad(), self.compute_loss_context_manager():
            for inputs in micro_batches:
                reference = self._reference_logps(model, inputs)
                parts.append(self._preference_logps(inputs, self._forward_logps(model, inputs), reference))
        plan = step_coefficients(parts, self.config)
        self._check_finite(plan.output.loss, "the loss")
        self._stop_if_non_finite()
        self._metrics["train"].add(preference_metrics(plan.seen, plan.output))
        return [(plan, index) for index in range(len(parts))]

    def compute_loss(self, model: torch.nn.Module, inputs: dict, return_outputs: bool = False,
                     num_items_in_batch: torch.Tensor | int | None = None):
        """The loss of ``config.loss`` on one micro-batch.

        SFT in training: summed NLL / ``num_items_in_batch`` (the step's label tokens on all
        processes, times the process count since data-parallel training averages gradients), so
        the step's gradient is that of the per-token mean over the whole step. With
        ``accumulate_contrast``: the surrogate of ``accumulation`` for this micro-batch.
        """
        self._loss_scaled_for_step = False
        if self.config.loss == "sft":
            loss, stats = self._sft_loss(model, inputs, num_items_in_batch if model.training else None)
        elif model.training and self._step_plan:
            loss, stats = self._accumulated_loss(model, inputs, *self._step_plan.pop(0))
        else:
            loss, stats = self._preference_loss(model, inputs)
        self._check_finite(loss, "the loss")
        self._stop_if_non_finite()
        self._metrics["train" if model.training else "eval"].add(stats)
        return (loss, {"loss": loss.detach()}) if return_outputs else loss

    def _preference_logps(self, inputs: dict, policy: torch.Tensor, reference: torch.Tensor) -> PreferenceLogps:
        """Split the stacked (M + N,) log-probs of a batch into its chosen and rejected sides."""
        self._check_finite(reference, "reference log-probabilities")
        self._check_finite(policy, "policy log-probabilities")
        if self._non_finite is not None:  # finite stand-ins keep the global scope's all-gathers matched;
            policy, reference = policy.nan_to_num(0.0, 0.0, 0.0), reference.nan_to_num(0.0, 0.0, 0.0)  # raised later
        num_chosen, total = int(inputs["num_chosen"]), policy.shape[0]
        counts = (inputs["labels"][:, 1:] != IGNORE_INDEX).sum(dim=1)  # (M + N,) response tokens per row
        return PreferenceLogps(
            policy_chosen_logps=policy[:num_chosen], policy_rejected_logps=policy[num_chosen:],
            reference_chosen_logps=reference[:num_chosen], reference_rejected_logps=reference[num_chosen:],
            chosen_prompt_embeddings=_batch_embeddings(inputs, "chosen_prompt_embeddings", num_chosen, policy),
            rejected_prompt_embeddings=_batch_embeddings(inputs, "rejected_prompt_embeddings", total - num_chosen,
                                                         policy),
            paired=bool(inputs.get("paired", False)),
            chosen_token_counts=counts[:num_chosen], rejected_token_counts=counts[num_chosen:],
        )

    def _preference_loss(self, model: torch.nn.Module, inputs: dict):
        """Reference and policy log-probs of the stacked batch -> the (local or global) objective + metrics."""
        reference = self._reference_logps(model, inputs)  # (M + N,), before the policy graph exists
        policy = self._forward_logps(model, inputs)  # (M + N,): chosen + rejected, prompts shared when paired
        output, seen = scoped_objective(self._preference_logps(inputs, policy, reference), self.config)
        return output.loss, preference_metrics(seen, output)

    def _accumulated_loss(self, model: torch.nn.Module, inputs: dict, plan: StepCoefficients, index: int):
        """Micro-batch ``index`` of an accumulated-contrast step (metrics were added by the step pass)."""
        policy = self._forward_logps(model, inputs)  # (M_k + N_k,) with gradient
        self._check_finite(policy, "policy log-probabilities")
        self._loss_scaled_for_step = True
        return surrogate_loss(policy, plan.coefficients[index], plan.output.loss, plan.num_micro_batches), {}

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


def _check_reference(config: RPOConfig, model: torch.nn.Module, reference_model: torch.nn.Module | None) -> None:
    """The reference arguments must match ``config.reference``."""
    if config.needs_reference and config.reference == "auto":
        raise ValueError("reference='auto' is resolved by training.run.build_trainer (rpo-tutorial train), which "
                         "knows the data; RPOTrainer needs 'model', 'precomputed' or 'lora'")
    if not config.needs_reference or config.reference == "precomputed":
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
