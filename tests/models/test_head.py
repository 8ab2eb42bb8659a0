"""The response-rows-only head path gives the full-logits values and gradients (Llama, SmolLM2, Mistral shapes)."""
from __future__ import annotations

import random

import pytest
import torch

from rpo_tutorial.data.collate import PreferenceCollator
from rpo_tutorial.models import tiny_model
from rpo_tutorial.models.head import label_token_logps, model_sequence_logps, plain_linear_head
from rpo_tutorial.models.logprobs import batch_sequence_logps

VOCAB, PAD = 211, 0


def loop_logps(logits, labels):
    """The previous implementation: one row at a time over the full logits, float32 log-softmax."""
    totals = []
    for row in range(logits.shape[0]):
        row_logits = logits[row, :-1].float()  # (T-1, V)
        scored = labels[row, 1:] != -100
        targets = labels[row, 1:].masked_fill(~scored, 0)
        token = row_logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(row_logits, -1)
        totals.append((token * scored).sum())
    return torch.stack(totals)


def make_model(shape: str):
    """Tiny random models with the structure of each family (GQA, tied or untied head)."""
    if shape == "smollm2":  # Llama architecture with a tied head, like SmolLM2-135M
        return tiny_model(VOCAB, "llama", hidden_size=32, seed=1)
    if shape == "mistral":
        return tiny_model(VOCAB, "mistral", hidden_size=32, seed=2)
    from transformers import LlamaConfig, LlamaForCausalLM  # Llama-2/3: untied head

    torch.manual_seed(3)
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False))


def examples(count: int, paired: bool, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        prompt = [rng.randrange(1, VOCAB) for _ in range(rng.randrange(2, 9))]
        answers = [[rng.randrange(1, VOCAB) for _ in range(rng.randrange(1, 12))] for _ in range(2)]
        if paired:
            rows.append({"chosen_input_ids": prompt + answers[0], "chosen_labels": [-100] * len(prompt) + answers[0],
                         "rejected_input_ids": prompt + answers[1],
                         "rejected_labels": [-100] * len(prompt) + answers[1]})
        else:
            rows.append({"input_ids": prompt + answers[0], "labels": [-100] * len(prompt) + answers[0],
                         "label": index % 3 != 0})
    return rows


def to_left_padding(batch: dict) -> dict:
    """Move each row's right padding to the left (the attention mask says where the tokens are)."""
    out = {key: batch[key].clone() for key in ("input_ids", "attention_mask", "labels")}
    for row in range(out["input_ids"].shape[0]):
        shift = int((batch["attention_mask"][row] == 0).sum())
        for key in out:
            out[key][row] = torch.roll(batch[key][row], shifts=shift)
    return out


@pytest.mark.parametrize("shape", ["smollm2", "llama", "mistral"])
@pytest.mark.parametrize("paired", [True, False])
@pytest.mark.parametrize("padding", ["right", "left"])
def test_head_on_label_rows_equals_full_logits_values_and_gradients(shape, paired, padding):
    model = make_model(shape).train()
    assert plain_linear_head(model) is not None  # the fast path is the one under test
    collator = PreferenceCollator(PAD)  # paired: M chosen then M rejected rows; unpaired: by label
    batch = collator(examples(5, paired, seed=len(shape)))
    batch = to_left_padding(batch) if padding == "left" else batch
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    weights = torch.linspace(-1.0, 2.0, ids.shape[0])  # a loss that weights rows differently

    fast = model_sequence_logps(model, ids, mask, labels, chunk_rows=7)  # several chunks
    fast_grads = torch.autograd.grad((weights * fast).sum(), list(model.parameters()))
    expected = loop_logps(model(input_ids=ids, attention_mask=mask, use_cache=False).logits, labels)
    expected_grads = torch.autograd.grad((weights * expected).sum(), list(model.parameters()))

    assert fast.shape == (ids.shape[0],) and fast.dtype == torch.float32
    torch.testing.assert_close(fast, expected, rtol=1e-4, atol=1e-4)
    for got, want in zip(fast_grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_batch_sequence_logps_under_no_grad_equals_the_loop():
    model = make_model("mistral").eval()
    batch = PreferenceCollator(PAD)(examples(4, True, seed=9))
    with torch.no_grad():
        result = batch_sequence_logps(model, batch)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(result, loop_logps(logits, batch["labels"]), rtol=1e-4, atol=1e-4)


def test_unsupported_heads_fall_back_to_full_logits_with_the_same_values():
    model = make_model("smollm2").eval()
    model.config.model_type = "gemma2"  # soft-capped logits: the hook would skip the capping
    assert plain_linear_head(model) is None
    batch = PreferenceCollator(PAD)(examples(3, False, seed=4))
    with torch.no_grad():
        result = batch_sequence_logps(model, batch)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(result, loop_logps(logits, batch["labels"]), rtol=1e-4, atol=1e-4)


def test_label_token_logps_with_a_weight_equals_log_softmax_of_the_product():
    generator = torch.Generator().manual_seed(0)
    hidden, weight = torch.randn(9, 6, generator=generator), torch.randn(13, 6, generator=generator)
    bias, targets = torch.randn(13, generator=generator), torch.randint(0, 13, (9,), generator=generator)
    expected = [torch.log_softmax(hidden[k].double() @ weight.double().T + bias.double(), -1)[targets[k]]
                for k in range(9)]
    result = label_token_logps(hidden, targets, weight, bias, chunk_rows=4)
    torch.testing.assert_close(result.double(), torch.stack(expected), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="labels must be in"):
        label_token_logps(hidden, targets + 13, weight, bias)


@pytest.mark.parametrize("budget_chunks, checkpointed", [(0, 3), (1, 2), (100, 0)])
def test_logits_kept_within_the_budget_and_checkpointed_beyond_give_the_same_values_and_gradients(
        monkeypatch, budget_chunks, checkpointed):
    from rpo_tutorial.models import head as head_module

    calls = []

    def counting_checkpoint(*args, **kwargs):
        calls.append(1)
        return torch.utils.checkpoint.checkpoint(*args, **kwargs)

    monkeypatch.setattr(head_module, "checkpoint", counting_checkpoint)
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(9, 6, generator=generator, requires_grad=True)
    weight = torch.randn(13, 6, generator=generator, requires_grad=True)
    targets = torch.randint(0, 13, (9,), generator=generator)
    coefficients = torch.linspace(-1.0, 1.0, 9)
    chunk_bytes = 4 * 13 * 4  # 4 rows x V = 13 float32 logits: 3 chunks (4, 4, 1 rows)
    result = label_token_logps(hidden, targets, weight, chunk_rows=4, keep_logits_bytes=budget_chunks * chunk_bytes)
    grads = torch.autograd.grad((coefficients * result).sum(), [hidden, weight])
    expected = torch.stack([torch.log_softmax(hidden[k] @ weight.T, -1)[targets[k]] for k in range(9)])
    expected_grads = torch.autograd.grad((coefficients * expected).sum(), [hidden, weight])

    assert len(calls) == checkpointed
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
