"""Precision parity: before the first optimizer step every log-ratio log pi - log pi_ref is exactly 0.

The policy trains with float32 weights (under bf16 autocast when ``bf16=True``); the frozen
reference must run the same arithmetic: same parameter dtype, same autocast, or the stored
log-probs of that same computation (``reference="precomputed"``: under bf16 the one-off pass and
every training batch are padded to one length, ``training.forward_plan``). The
check is exact (== 0), so any difference in dtype, autocast, padding or kernel shows up.
"""
from __future__ import annotations

import pytest
import torch

from rpo_tutorial.models.loading import load_tokenizer, tiny_model
from rpo_tutorial.training.config import get_preset
from rpo_tutorial.training.run import build_trainer
from tests.training.dist_scripts.helpers import recorded_log_ratios
from tests.training.test_trainer import make_rows


def first_step_log_ratios(tmp_path, **changes) -> torch.Tensor:
    """All (chosen and rejected) log-ratios the objective sees in the first micro-batch."""
    tokenizer = load_tokenizer()
    config = get_preset("smoke", max_steps=1, per_device_train_batch_size=4, max_length=48, max_prompt_length=24,
                        output_dir=str(tmp_path / "run"), precompute_batch_size=3, **changes)
    policy = tiny_model(len(tokenizer), architecture="mistral", hidden_size=32, num_layers=2, seed=3)
    with recorded_log_ratios() as seen:
        trainer, _ = build_trainer(config, rows=make_rows(8), policy=policy, tokenizer=tokenizer)
        trainer.train()
    assert seen, "the objective never ran"
    return seen[0]


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("reference", ["model", "precomputed"])
def test_log_ratios_are_exactly_zero_before_the_first_step(tmp_path, bf16, reference):
    # precomputed: batches of 3 in the one-off pass, of 4 (shuffled) in training
    ratios = first_step_log_ratios(tmp_path, bf16=bf16, reference=reference)
    assert ratios.numel() == 8
    assert ratios.abs().max().item() == 0.0, ratios


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
    ratios = first_step_log_ratios(tmp_path, bf16=True, reference="precomputed")
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
