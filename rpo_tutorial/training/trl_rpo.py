"""RPO inside TRL's ``DPOTrainer``: a subclass that keeps TRL's data pipeline, reference model,
optimiser and logging, and swaps only the loss for :func:`rpo_tutorial.losses.rpo_loss` with
embedding weights (paper Eqs. 11-12 and 15).

Tested with ``trl==1.16.0`` (``pip install "rpo-tutorial[trl]"``); ``import trl`` happens here, so
import this module only when TRL is installed. The prompt embeddings travel in the batch: give the
dataset a ``prompt_embedding`` column (``rpo_tutorial.data.embeddings.add_prompt_embeddings``) and
the collator below stacks it into ``prompt_embeddings`` (B, D) next to TRL's own keys.

    from trl import DPOConfig
    from rpo_tutorial.training.trl_rpo import RPODPOTrainer
    trainer = RPODPOTrainer(model=model, args=DPOConfig(output_dir="runs/trl-rpo", beta=0.1),
                            train_dataset=rows_with_embeddings, processing_class=tokenizer, tau=0.5)
    trainer.train()

Limits: the reference is TRL's live reference model (``precompute_ref_log_probs=False``, no PEFT
adapter-as-reference), and the contrast matrix is per device (``contrast_scope="local"``).
"""
from __future__ import annotations

import dataclasses

import torch
from trl import DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

from rpo_tutorial.accuracy import tie_half_accuracy
from rpo_tutorial.losses import rpo_loss
from rpo_tutorial.weighting import embedding_weights

TESTED_TRL_VERSION = "1.16.0"


@dataclasses.dataclass
class PreferenceCollatorWithEmbeddings(DataCollatorForPreference):
    """TRL's preference collator plus ``prompt_embeddings`` (B, D) float32 from each example's ``prompt_embedding``."""

    def torch_call(self, examples: list[dict]) -> dict:
        batch = super().torch_call(examples)  # input_ids (2B, T): B chosen rows, then B rejected rows
        batch["prompt_embeddings"] = torch.tensor([example["prompt_embedding"] for example in examples],
                                                  dtype=torch.float32)  # (B, D)
        return batch


class RPODPOTrainer(DPOTrainer):
    """``DPOTrainer`` whose loss is RPO with embedding weights at temperature ``tau`` (paired data)."""

    def __init__(self, *args, tau: float = 0.5, placement: str = "score", **kwargs) -> None:
        self.tau, self.placement = tau, placement
        super().__init__(*args, **kwargs)
        if self.precompute_ref_logps or self.ref_model is None:
            raise ValueError("RPODPOTrainer needs a live reference model: set precompute_ref_log_probs=False "
                             "and do not train a PEFT adapter against its own base")
        fields = {field.name: getattr(self.data_collator, field.name)
                  for field in dataclasses.fields(DataCollatorForPreference)}
        self.data_collator = PreferenceCollatorWithEmbeddings(**fields)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if "prompt_embedding" not in self._signature_columns:  # keep the column through remove_unused_columns
            self._signature_columns = [*self._signature_columns, "prompt_embedding"]

    @staticmethod
    def _completion_logps(model: torch.nn.Module, inputs: dict, labels: torch.Tensor) -> torch.Tensor:
        """Summed completion log-probs per row through TRL's fused LM head. Shape: returns (2B,)."""
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=labels,
                        fused_lm_head=True, use_cache=False)
        return outputs.log_probs.float().sum(dim=1)  # (2B, T-1) -> (2B,), zero off the completion

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)  # (2B, T)
        policy_chosen_logps, policy_rejected_logps = self._completion_logps(model, inputs, labels).chunk(2)
        with torch.no_grad():
            reference_chosen_logps, reference_rejected_logps = self._completion_logps(
                self.ref_model, inputs, labels).chunk(2)  # (B,), (B,)
        embeddings = inputs["prompt_embeddings"]  # (B, D): row i's prompt is shared by chosen i and rejected i
        weights = embedding_weights(embeddings, embeddings, tau=self.tau)  # (B, B), Eq. 12
        losses, chosen_rewards, rejected_rewards = rpo_loss(
            policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
            weights, beta=self.beta, placement=self.placement)  # (B,), Eq. 15
        mode = "train" if self.model.training else "eval"
        for name, value in (("rewards/chosen", chosen_rewards), ("rewards/rejected", rejected_rewards),
                            ("rewards/margins", chosen_rewards - rejected_rewards),
                            ("rewards/accuracies", tie_half_accuracy(chosen_rewards - rejected_rewards))):  # ties half
            self._metrics[mode][name].append(self.accelerator.gather(value).mean().item())
        loss = losses.mean()
        return (loss, {"losses": losses}) if return_outputs else loss
