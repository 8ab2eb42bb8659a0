"""Accumulated contrast: K micro-batches give the loss and gradients of one batch of all their rows."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from rpo_tutorial.models import tiny_model
from rpo_tutorial.training.accumulation import step_coefficients, surrogate_loss
from rpo_tutorial.training.config import RPOConfig
from rpo_tutorial.training.objectives import scoped_objective
from tests.training.dist_scripts.helpers import (
    DIM,
    VOCAB,
    as_logps,
    gradients,
    logps_of,
    make_micro_batch,
    whole_batch,
)

CASES = {
    "rpo-paired": (RPOConfig(loss="rpo", weighting="embedding", beta=0.5), [(2, 2), (1, 1), (3, 3), (2, 2)]),
    "rpo-unpaired": (RPOConfig(loss="rpo", paired=False, weighting="embedding", beta=0.5),
                     [(2, 1), (1, 3), (2, 2), (0, 2)]),
    "rpo-uniform+nll": (RPOConfig(loss="rpo", weighting="uniform", beta=0.5, nll_weight=0.3),
                        [(1, 1), (2, 2), (1, 1), (2, 2)]),
    "kto": (RPOConfig(loss="kto", beta=0.5), [(2, 1), (1, 2), (1, 1), (3, 1)]),
    "ipo": (RPOConfig(loss="ipo", beta=0.5), [(1, 1), (2, 2), (2, 2), (1, 1)]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_four_micro_batches_give_the_loss_and_gradients_of_the_concatenated_batch(case):
    config, sizes = CASES[case]
    generator = torch.Generator().manual_seed(7)
    batches = [make_micro_batch(m, n, config.is_paired, generator) for m, n in sizes]
    model = tiny_model(VOCAB, hidden_size=16, num_layers=1, seed=0)
    single = copy.deepcopy(model)

    with torch.no_grad():
        plan = step_coefficients([as_logps(b, logps_of(model, b)) for b in batches], config)
    values = []
    for index, batch in enumerate(batches):
        loss = surrogate_loss(logps_of(model, batch), plan.coefficients[index], plan.output.loss, len(batches))
        loss.backward()  # gradients accumulate over the micro-batches
        values.append(loss.item())

    whole = whole_batch(batches)
    expected, _ = scoped_objective(as_logps(whole, logps_of(single, whole)), config)
    expected.loss.backward()
    assert sum(values) == pytest.approx(expected.loss.item(), rel=1e-6)
    assert plan.output.loss.item() == pytest.approx(expected.loss.item(), rel=1e-6)
    got, want = gradients(model), gradients(single)
    assert set(got) == set(want)
    scale = max(g.abs().max().item() for g in want.values())
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-5 * scale, msg=name)


def test_per_micro_batch_contrast_is_a_different_objective():
    """The check above can fail: averaging four micro-batch RPO losses does not give the same gradients."""
    config, sizes = CASES["rpo-paired"]
    generator = torch.Generator().manual_seed(7)
    batches = [make_micro_batch(m, n, True, generator) for m, n in sizes]
    model = tiny_model(VOCAB, hidden_size=16, num_layers=1, seed=0)
    single = copy.deepcopy(model)
    for batch in batches:
        (scoped_objective(as_logps(batch, logps_of(model, batch)), config)[0].loss / len(batches)).backward()
    whole = whole_batch(batches)
    scoped_objective(as_logps(whole, logps_of(single, whole)), config)[0].loss.backward()
    got, want = gradients(model), gradients(single)
    difference = max((got[k] - want[k]).abs().max().item() for k in want)
    assert difference > 1e-3 * max(g.abs().max().item() for g in want.values())


def test_nll_weight_adds_the_chosen_responses_nll_per_token():
    generator = torch.Generator().manual_seed(3)
    batch = make_micro_batch(3, 3, True, generator)
    policy = -40 * torch.rand(6, generator=generator)
    logps = as_logps(batch, policy)
    plain, _ = scoped_objective(logps, RPOConfig(loss="dpo", beta=0.5))
    composed, _ = scoped_objective(logps, RPOConfig(loss="dpo", beta=0.5, nll_weight=0.25))
    chosen_tokens = int((batch["labels"][:3, 1:] != -100).sum())
    nll = -policy[:3].sum().item() / chosen_tokens
    assert composed.loss.item() == pytest.approx(plain.loss.item() + 0.25 * nll, rel=1e-6)
    assert composed.extras["nll/token"] == pytest.approx(nll, rel=1e-6)


def test_ipo_is_length_normalised_by_default_and_can_be_switched_off():
    generator = torch.Generator().manual_seed(4)
    batch = make_micro_batch(2, 2, True, generator)
    policy = -40 * torch.rand(4, generator=generator)
    tokens = (batch["labels"][:, 1:] != -100).sum(1).float()
    ratios = ((policy - batch["reference"]) / tokens).tolist()
    expected = sum((ratios[i] - ratios[2 + i] - 1 / (2 * 0.1)) ** 2 for i in range(2)) / 2
    normalised, _ = scoped_objective(as_logps(batch, policy), RPOConfig(loss="ipo", ipo_tau=0.1))
    assert normalised.loss.item() == pytest.approx(expected, rel=1e-5)
    summed, _ = scoped_objective(as_logps(batch, policy), RPOConfig(loss="ipo", ipo_tau=0.1, length_normalize=False))
    ratios = (policy - batch["reference"]).tolist()
    assert summed.loss.item() == pytest.approx(sum((ratios[i] - ratios[2 + i] - 5) ** 2 for i in range(2)) / 2,
                                               rel=1e-5)
    assert not math.isclose(normalised.loss.item(), summed.loss.item(), rel_tol=1e-3)


def test_surrogate_rejects_coefficients_of_another_micro_batch():
    with pytest.raises(ValueError, match="micro-batches changed"):
        surrogate_loss(torch.zeros(4), torch.zeros(6), torch.tensor(0.5), 2)


# ---- through RPOTrainer: one optimizer step of 2 x 2 micro-batches equals one step of 4 --------------------------
def token_examples(count: int, sft: bool, seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(count):
        prompt = torch.randint(1, VOCAB, (int(torch.randint(2, 6, (1,), generator=generator)),),
                               generator=generator).tolist()
        answers = [torch.randint(1, VOCAB, (int(torch.randint(1, 9, (1,), generator=generator)),),
                                 generator=generator).tolist() for _ in range(2)]
        if sft:
            rows.append({"input_ids": prompt + answers[0], "labels": [-100] * len(prompt) + answers[0]})
        else:
            rows.append({"chosen_input_ids": prompt + answers[0], "chosen_labels": [-100] * len(prompt) + answers[0],
                         "rejected_input_ids": prompt + answers[1],
                         "rejected_labels": [-100] * len(prompt) + answers[1],
                         "prompt_embedding": torch.randn(DIM, generator=generator).tolist()})
    return rows


def one_sgd_step(config: RPOConfig, batch_size: int, accumulation: int, tmp_path) -> dict[str, torch.Tensor]:
    from rpo_tutorial.data.collate import PreferenceCollator, SFTCollator
    from rpo_tutorial.training.trainer import RPOTrainer

    sft = config.loss == "sft"
    config = config.replace(per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation,
                            max_steps=1, learning_rate=1.0, optimizer="sgd", warmup_steps=0, max_grad_norm=0.0,
                            batch_sampling="sequential", output_dir=str(tmp_path / f"{batch_size}x{accumulation}"),
                            save_steps=0, logging_steps=1, progress=False)
    model = tiny_model(VOCAB, hidden_size=16, num_layers=1, seed=0)
    reference = None if sft else tiny_model(VOCAB, hidden_size=16, num_layers=1, seed=1)
    trainer = RPOTrainer(model=model, config=config, reference_model=reference,
                         train_dataset=token_examples(4, sft, seed=5),
                         data_collator=SFTCollator(0) if sft else PreferenceCollator(0))
    trainer.train()
    return {name: value.detach().clone() for name, value in trainer.model.state_dict().items()}


@pytest.mark.parametrize("loss", ["rpo", "sft"])
def test_trainer_step_of_two_micro_batches_equals_one_batch_of_all_rows(loss, tmp_path):
    extra = {} if loss == "sft" else {"accumulate_contrast": True, "weighting": "embedding"}
    config = RPOConfig(loss=loss, beta=0.5, max_length=32, max_prompt_length=16, **extra)
    accumulated = one_sgd_step(config, batch_size=2, accumulation=2, tmp_path=tmp_path)
    whole = one_sgd_step(config, batch_size=4, accumulation=1, tmp_path=tmp_path)
    start = tiny_model(VOCAB, hidden_size=16, num_layers=1, seed=0).state_dict()
    assert any(not torch.equal(whole[name], start[name]) for name in whole)  # the step moved the weights
    for name in whole:
        torch.testing.assert_close(accumulated[name], whole[name], rtol=1e-5, atol=1e-6, msg=name)


def test_rpo_with_accumulation_warns_that_the_matrix_is_per_micro_batch(tmp_path):
    from rpo_tutorial.data.collate import PreferenceCollator
    from rpo_tutorial.training.trainer import RPOTrainer

    config = RPOConfig(loss="rpo", weighting="uniform", gradient_accumulation_steps=2, output_dir=str(tmp_path),
                       optimizer="adamw_torch")
    model = tiny_model(VOCAB, hidden_size=16, num_layers=1, seed=0)
    with pytest.warns(UserWarning, match="accumulate_contrast=True"):
        RPOTrainer(model=model, config=config, reference_model=copy.deepcopy(model),
                   data_collator=PreferenceCollator(0))
