"""Sequence log-probs against per-token loops, and the reference precomputation against a direct pass."""
from __future__ import annotations

import random

import pytest
import torch

from rpo_tutorial import models
from rpo_tutorial.data.collate import PreferenceCollator
from rpo_tutorial.models.logprobs import batch_sequence_logps, precompute_reference_logps, sequence_logps

VOCAB = 97
PAD = 0


def brute_force_logps(logits, labels):
    """Loop over sequences and positions; log_softmax of one position at a time."""
    totals = []
    for b in range(logits.shape[0]):
        total = torch.zeros((), dtype=torch.float64)
        for t in range(1, logits.shape[1]):
            if labels[b, t] != -100:
                total = total + torch.log_softmax(logits[b, t - 1].double(), dim=-1)[labels[b, t]]
        totals.append(total)
    return torch.stack(totals)


def random_labels(generator, batch, length, vocab=VOCAB):
    labels = torch.randint(0, vocab, (batch, length), generator=generator)
    for b in range(batch):
        prompt = int(torch.randint(1, length // 2, (1,), generator=generator))
        padding = int(torch.randint(0, length // 3, (1,), generator=generator))
        labels[b, :prompt] = -100
        labels[b, length - padding:] = -100
    return labels


def test_sequence_logps_matches_a_per_token_loop():
    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(4, 11, VOCAB, generator=generator)
    labels = random_labels(generator, 4, 11)
    result = sequence_logps(logits, labels)
    assert result.shape == (4,) and result.dtype == torch.float32
    torch.testing.assert_close(result.double(), brute_force_logps(logits, labels), rtol=1e-5, atol=1e-5)


def test_sequence_logps_upcasts_bfloat16_logits():
    generator = torch.Generator().manual_seed(1)
    logits = (5 * torch.randn(3, 9, VOCAB, generator=generator)).bfloat16()
    labels = random_labels(generator, 3, 9)
    result = sequence_logps(logits, labels)
    assert result.dtype == torch.float32
    torch.testing.assert_close(result.double(), brute_force_logps(logits.float(), labels), rtol=1e-5, atol=1e-4)


def test_sequence_logps_gradient_matches_the_loop():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 7, VOCAB, generator=generator, requires_grad=True)
    labels = random_labels(generator, 2, 7)
    (grad,) = torch.autograd.grad(sequence_logps(logits, labels).sum(), logits)
    (expected,) = torch.autograd.grad(brute_force_logps(logits, labels).sum(), logits)
    torch.testing.assert_close(grad, expected.float(), rtol=1e-5, atol=1e-6)


def test_fully_masked_sequence_scores_zero():
    logits = torch.randn(2, 5, VOCAB)
    labels = torch.full((2, 5), -100)
    assert sequence_logps(logits, labels).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("logits_shape, labels, message", [
    ((2, 5), torch.zeros(2, 5, dtype=torch.long), "logits must be"),
    ((2, 5, VOCAB), torch.zeros(2, 4, dtype=torch.long), "logits must be"),
    ((1, 3, VOCAB), torch.tensor([[-100, 5, VOCAB]]), "labels must be in"),
    ((1, 3, VOCAB), torch.tensor([[-100, -7, 3]]), "labels must be in"),
])
def test_sequence_logps_rejects_bad_shapes_and_labels(logits_shape, labels, message):
    with pytest.raises(ValueError, match=message):
        sequence_logps(torch.randn(*logits_shape), labels)


@pytest.fixture(scope="module")
def tiny():
    return models.tiny_model(VOCAB, hidden_size=32, seed=0).eval()


def make_paired(count, seed=0):
    rng = random.Random(seed)
    examples = []
    for _ in range(count):
        prompt = [rng.randrange(1, VOCAB) for _ in range(rng.randrange(2, 6))]
        chosen = [rng.randrange(1, VOCAB) for _ in range(rng.randrange(1, 9))]
        rejected = [rng.randrange(1, VOCAB) for _ in range(rng.randrange(1, 9))]
        examples.append({"chosen_input_ids": prompt + chosen, "chosen_labels": [-100] * len(prompt) + chosen,
                         "rejected_input_ids": prompt + rejected,
                         "rejected_labels": [-100] * len(prompt) + rejected})
    return examples


def direct_logp(model, input_ids, labels):
    """One unpadded sequence through the model, scored position by position."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([input_ids])).logits
    return brute_force_logps(logits, torch.tensor([labels])).item()


def test_batch_sequence_logps_is_independent_of_padding(tiny):
    examples = make_paired(3)
    batch = PreferenceCollator(PAD)(examples)
    with torch.no_grad():
        result = batch_sequence_logps(tiny, batch)
    expected = [direct_logp(tiny, e["chosen_input_ids"], e["chosen_labels"]) for e in examples]
    expected += [direct_logp(tiny, e["rejected_input_ids"], e["rejected_labels"]) for e in examples]
    torch.testing.assert_close(result.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-4, atol=1e-4)


def test_precompute_reference_logps_paired_equals_a_direct_computation(tiny):
    examples = make_paired(5, seed=1)
    tiny.train()
    filled = precompute_reference_logps(tiny, examples, PreferenceCollator(PAD), batch_size=2, progress=False)
    assert tiny.training  # mode restored
    assert all("reference_chosen_logps" not in e for e in examples)  # inputs untouched
    tiny.eval()
    for example, result in zip(examples, filled):
        for side in ("chosen", "rejected"):
            expected = direct_logp(tiny, example[f"{side}_input_ids"], example[f"{side}_labels"])
            assert result[f"reference_{side}_logps"] == pytest.approx(expected, rel=1e-4, abs=1e-4)
        assert result["chosen_input_ids"] == example["chosen_input_ids"]


def test_precompute_reference_logps_unpaired_maps_back_to_each_example(tiny):
    paired = make_paired(4, seed=2)
    labels = [False, True, True, False, False, True, False]
    examples = [{"input_ids": paired[i % 4]["chosen_input_ids"], "labels": paired[i % 4]["chosen_labels"],
                 "label": label, "reference_logps": 123.0 if i == 0 else None} for i, label in enumerate(labels)]
    filled = precompute_reference_logps(tiny, examples, PreferenceCollator(PAD), batch_size=3, progress=False)
    for example, result in zip(examples, filled):
        expected = direct_logp(tiny, example["input_ids"], example["labels"])
        assert result["reference_logps"] == pytest.approx(expected, rel=1e-4, abs=1e-4)
        assert result["label"] == example["label"]


def test_precompute_reference_logps_rejects_mixed_examples(tiny):
    mixed = make_paired(1) + [{"input_ids": [1, 2], "labels": [-100, 2], "label": True}]
    with pytest.raises(ValueError, match="mixes"):
        precompute_reference_logps(tiny, mixed, PreferenceCollator(PAD), progress=False)


def test_precompute_reference_logps_runs_num_batches_forwards_through_the_given_forward(tiny):
    examples = make_paired(3, seed=3)
    shapes = []

    def forward(model, batch):
        shapes.append(tuple(batch["input_ids"].shape))
        return batch_sequence_logps(model, batch)

    expected = precompute_reference_logps(tiny, examples, PreferenceCollator(PAD), batch_size=2, progress=False)
    filled = precompute_reference_logps(tiny, examples, PreferenceCollator(PAD), batch_size=2, progress=False,
                                        forward=forward, num_batches=4)
    assert [rows for rows, _ in shapes] == [4, 2, 2, 2]  # 2 pairs, 1 pair, then 2 discarded repeats of example 0
    assert filled == expected
    with pytest.raises(ValueError, match="num_batches=1 cannot cover 3 examples"):
        precompute_reference_logps(tiny, examples, PreferenceCollator(PAD), batch_size=2, num_batches=1)
