"""RPO inside TRL's DPOTrainer: trains, and its loss is the package's rpo_loss on the same batch."""
from __future__ import annotations

import math

import pytest
import torch

trl = pytest.importorskip("trl", reason="TRL is optional: pip install 'rpo-tutorial[trl]'")

from datasets import Dataset  # noqa: E402

from rpo_tutorial import batch_sequence_logps, embedding_weights, rpo_loss  # noqa: E402
from rpo_tutorial.data.demo import load_demo  # noqa: E402
from rpo_tutorial.models.loading import load_tokenizer, tiny_model  # noqa: E402
from rpo_tutorial.training.trl_rpo import TESTED_TRL_VERSION, RPODPOTrainer  # noqa: E402


def rows_with_embeddings(count: int) -> list[dict]:
    """Demo pairs with a deterministic stand-in embedding (two topics: rows 0, 2, .. and 1, 3, ..)."""
    rows = load_demo("train")[:count]
    return [{"prompt": row["prompt"], "chosen": " " + row["chosen"][:60], "rejected": " " + row["rejected"][:60],
             "prompt_embedding": [1.0, 0.1 * i] if i % 2 == 0 else [0.1 * i, 1.0]} for i, row in enumerate(rows)]


def make_trainer(tmp_path, steps: int) -> RPODPOTrainer:
    tokenizer = load_tokenizer()
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model, reference = tiny_model(len(tokenizer), seed=0), tiny_model(len(tokenizer), seed=1)  # log-ratios != 0
    args = trl.DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=steps,
                         learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to="none", beta=0.1,
                         use_cpu=True, disable_tqdm=True, max_length=64, dataset_num_proc=None)
    return RPODPOTrainer(model=model, ref_model=reference, args=args, processing_class=tokenizer, tau=0.5,
                         train_dataset=Dataset.from_list(rows_with_embeddings(8)))


def test_the_installed_trl_is_the_tested_version():
    assert trl.__version__ == TESTED_TRL_VERSION


def test_rpo_dpo_trainer_trains_and_logs_finite_rewards(tmp_path):
    trainer = make_trainer(tmp_path, steps=3)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    logged = [entry for entry in trainer.state.log_history if "rewards/margins" in entry]
    assert len(logged) == 3
    assert all(math.isfinite(entry["loss"]) and math.isfinite(entry["rewards/margins"]) for entry in logged)


def test_rpo_dpo_trainer_loss_is_rpo_loss_on_the_same_batch(tmp_path):
    trainer = make_trainer(tmp_path, steps=1)
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["prompt_embeddings"].shape == (4, 2)
    loss = trainer.compute_loss(trainer.model, batch)
    # The same loss through the package's own log-probs: labels are -100 off the completion.
    labelled = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                "labels": batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)}
    with torch.no_grad():
        policy = batch_sequence_logps(trainer.model, labelled)  # (8,): 4 chosen, then 4 rejected
        reference = batch_sequence_logps(trainer.ref_model, labelled)
    weights = embedding_weights(batch["prompt_embeddings"], batch["prompt_embeddings"], tau=0.5)
    expected = rpo_loss(policy[:4], policy[4:], reference[:4], reference[4:], weights, beta=0.1)[0].mean()
    assert abs(expected.item() - math.log(2)) > 1e-3  # policy != reference, so the check has teeth
    torch.testing.assert_close(loss.detach(), expected, atol=1e-4, rtol=1e-4)
