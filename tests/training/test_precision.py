"""Precision parity: before the first optimizer step every log-ratio log pi - log pi_ref is exactly 0.

The policy trains with float32 weights (under bf16 autocast when ``bf16=True``); the frozen
reference must run the same arithmetic: same parameter dtype, same autocast, or the stored
log-probs of that same computation (``reference="precomputed"``: under bf16 the one-off pass and
every training batch are padded to one length, ``training.forward_plan``). The
check is exact (== 0), so any difference in dtype, autocast, padding or path shows up.

Exact equality is asserted only where it is a property of the code on every processor: the same
arithmetic on the same inputs. A precomputed reference is exact when the one-off pass sees the
batches training sees (``batch_sampling="sequential"``, ``precompute_batch_size`` = batch size).
When the batches are composed differently (3 rows in the one-off pass, 4 shuffled in training),
whether a row's result depends on how many other rows share its matrix multiply is a property of
the processor's GEMM kernels (bit-identical on the AMD EPYC CI, also with
``ATEN_CPU_CAPABILITY=default``; not promised by MKL / oneDNN / cuBLAS elsewhere), so that case
asserts the rows were matched to their stored values within float rounding instead.
"""
from __future__ import annotations

import pytest
import torch

from rpo_tutorial.data.collate import longest_sequence
from rpo_tutorial.models.loading import load_tokenizer, tiny_model
from rpo_tutorial.training.config import get_preset
from rpo_tutorial.training.run import build_trainer
from tests.training.dist_scripts.helpers import recorded_log_ratios
from tests.training.test_trainer import make_rows

BATCH = 4


def first_step_log_ratios(tmp_path, same_batches: bool = True, trainers: list | None = None,
                          **changes) -> torch.Tensor:
    """All (chosen and rejected) log-ratios the objective sees in the first micro-batch.

    ``same_batches``: the one-off reference pass runs the training batches (sequential order, the
    same batch size); otherwise batches of 3 there and shuffled batches of 4 in training.
    """
    tokenizer = load_tokenizer()
    order = dict(batch_sampling="sequential", precompute_batch_size=BATCH) if same_batches else \
        dict(batch_sampling="random", precompute_batch_size=3)
    config = get_preset("smoke", max_steps=1, per_device_train_batch_size=BATCH, max_length=48, max_prompt_length=24,
                        output_dir=str(tmp_path / "run"), **order, **changes)
    policy = tiny_model(len(tokenizer), architecture="mistral", hidden_size=32, num_layers=2, seed=3)
    with recorded_log_ratios() as seen:
        trainer, _ = build_trainer(config, rows=make_rows(8), policy=policy, tokenizer=tokenizer)
        trainer.train()
    assert seen, "the objective never ran"
    if trainers is not None:
        trainers.append(trainer)
    return seen[0]


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("reference", ["model", "precomputed"])
def test_log_ratios_are_exactly_zero_before_the_first_step(tmp_path, bf16, reference):
    ratios = first_step_log_ratios(tmp_path, bf16=bf16, reference=reference)
    assert ratios.numel() == 2 * BATCH
    assert ratios.abs().max().item() == 0.0, ratios


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-autocast"])
def test_stored_reference_log_probs_follow_their_rows_into_shuffled_batches_of_another_size(tmp_path, bf16):
    trainers: list = []
    ratios = first_step_log_ratios(tmp_path, same_batches=False, trainers=trainers, bf16=bf16,
                                   reference="precomputed")
    assert ratios.numel() == 2 * BATCH
    # a row matched to another row's stored value would be off by nats; float rounding of another batch
    # composition is at most ~3e-4 nats here (bf16, tiny model), and exactly 0 on CPUs whose GEMM rows do
    # not depend on the row count
    assert ratios.abs().max().item() < 1e-2, ratios
    # under mixed precision the one-off pass and training pad every batch to one length (the code's part)
    collator = trainers[0].data_collator
    expected = longest_sequence(trainers[0].train_dataset) if bf16 else None
    assert getattr(collator, "pad_to_length", None) == expected


def test_the_check_can_fail_a_stored_reference_one_float32_step_off(monkeypatch, tmp_path):
    """A precomputed reference that differs from the live computation by the smallest possible amount
    (one float32 step, on one row) must show up as exactly that log-ratio. The difference is injected,
    not left to a CPU's bf16 kernels (which round identically on some processors and not on others)."""
    from rpo_tutorial.training import trainer as trainer_module

    original = trainer_module.precompute_reference
    nudged: list[float] = []

    def one_row_nudged(*args, **kwargs):
        examples = original(*args, **kwargs)
        stored = torch.tensor(examples[0]["reference_chosen_logps"], dtype=torch.float32)  # a float32 value
        moved = torch.nextafter(stored, torch.tensor(float("inf")))  # one float32 step up
        nudged.append(float(moved - stored))
        examples[0] = {**examples[0], "reference_chosen_logps": float(moved)}
        return examples

    monkeypatch.setattr(trainer_module, "precompute_reference", one_row_nudged)
    ratios = first_step_log_ratios(tmp_path, bf16=True, reference="precomputed")  # the training batches
    assert nudged and nudged[0] > 0.0
    changed = ratios[ratios != 0]
    # policy - (reference + one step) is exact in float32 (Sterbenz), so exactly one row reads -step
    assert changed.tolist() == [-nudged[0]], ratios


def test_the_check_can_fail_a_bf16_copy_of_the_reference_is_not_the_policy(monkeypatch, tmp_path):
    from rpo_tutorial.training import reference as reference_module
    from rpo_tutorial.training import run as run_module

    # the route the trainer took before: a pure-bf16 reference copy next to an autocast policy
    monkeypatch.setattr(reference_module, "autocast_like_policy", lambda model, accelerator: model)
    monkeypatch.setattr(reference_module, "parameter_dtype", lambda model: torch.bfloat16)
    monkeypatch.setattr(run_module, "parameter_dtype", lambda model: torch.bfloat16)
    ratios = first_step_log_ratios(tmp_path, bf16=True, reference="model")
    assert ratios.abs().max().item() > 0.0
