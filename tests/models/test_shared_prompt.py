"""Shared prompts: each prompt run once, both responses on its cache, give the one-forward values and gradients."""
from __future__ import annotations

import pytest
import torch

from rpo_tutorial.data.collate import PreferenceCollator
from rpo_tutorial.models import shared_prompt
from rpo_tutorial.models.head import model_sequence_logps
from rpo_tutorial.models.logprobs import batch_sequence_logps
from rpo_tutorial.models.shared_prompt import (
    prompt_sharing_sequence_logps,
    shared_prompt_problem,
    split_shared_prompts,
)
from tests.models.test_head import PAD, VOCAB, examples, loop_logps, make_model

SHAPES = ["smollm2", "llama", "llama-eager", "mistral", "mistral-window-3", "qwen2", "qwen3"]


def make_shape(shape: str):
    """test_head's models, with eager attention, a Mistral whose sliding window (3) is shorter than the rows,
    and Qwen2 / Qwen3."""
    if shape in ("smollm2", "llama", "mistral"):
        return make_model(shape)
    if shape == "llama-eager":
        model = make_model("llama")
        model.config._attn_implementation = "eager"
        return model
    if shape == "mistral-window-3":
        model = make_model("mistral")
        model.config.sliding_window = 3
        return model
    import transformers

    config_class = getattr(transformers, "Qwen2Config" if shape == "qwen2" else "Qwen3Config")
    model_class = getattr(transformers, "Qwen2ForCausalLM" if shape == "qwen2" else "Qwen3ForCausalLM")
    torch.manual_seed(4)
    return model_class(config_class(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                    tie_word_embeddings=shape == "qwen3"))


def paired_batch(count: int = 5, seed: int = 0) -> dict:
    """M pairs with prompts of 2-8 tokens and responses of 1-11 tokens (every length differs)."""
    return PreferenceCollator(PAD)(examples(count, True, seed=seed))


@pytest.mark.parametrize("shape", SHAPES)
def test_shared_prompts_give_the_one_forward_values_and_gradients(shape):
    model = make_shape(shape).train()
    batch = paired_batch(seed=len(shape))
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert shared_prompt_problem(model) is None  # the shared path is the one under test
    assert split_shared_prompts(ids, mask, labels, int(batch["num_chosen"])) is not None
    weights = torch.linspace(-1.0, 2.0, ids.shape[0])  # a loss that weights rows differently

    shared = prompt_sharing_sequence_logps(model, ids, mask, labels, int(batch["num_chosen"]), chunk_rows=7)
    shared_grads = torch.autograd.grad((weights * shared).sum(), list(model.parameters()))
    one_forward = model_sequence_logps(model, ids, mask, labels)
    one_forward_grads = torch.autograd.grad((weights * one_forward).sum(), list(model.parameters()))
    with torch.no_grad():  # the brute-force loop over full logits
        expected = loop_logps(model(input_ids=ids, attention_mask=mask, use_cache=False).logits, labels)

    assert shared.shape == (ids.shape[0],) and shared.dtype == torch.float32
    torch.testing.assert_close(shared, one_forward, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(shared.detach(), expected, rtol=1e-5, atol=1e-4)
    for got, want in zip(shared_grads, one_forward_grads):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_shared_prompts_under_no_grad_in_eval_mode_equal_the_loop():
    model = make_shape("mistral").eval()
    batch = paired_batch(4, seed=9)
    with torch.no_grad():
        result = batch_sequence_logps(model, batch)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(result, loop_logps(logits, batch["labels"]), rtol=1e-5, atol=1e-4)


def test_split_lays_out_each_row_as_its_prompt_then_its_response():
    batch = paired_batch(4, seed=2)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    split = split_shared_prompts(ids, mask, labels, 4)
    for row in range(ids.shape[0]):  # rebuild every original row from the split, one token at a time
        prompt = split.prompt_of_row[row]
        tokens = [int(t) for t, m in zip(split.prompt_ids[prompt], split.prompt_mask[prompt]) if m]
        positions = [int(p) for p, m in zip(split.prompt_positions[prompt], split.prompt_mask[prompt]) if m]
        tokens += [int(t) for t, m in zip(split.response_ids[row], split.response_mask[row]) if m]
        positions += [int(p) for p, m in zip(split.response_positions[row], split.response_mask[row]) if m]
        length = int(mask[row].sum())
        assert tokens == ids[row, :length].tolist() and positions == list(range(length))
        response_labels = [int(v) for v, m in zip(split.response_labels[row], split.response_mask[row]) if m]
        assert labels[row, length - len(response_labels):length].tolist() == response_labels
        assert all(v == -100 for v in labels[row, :length - len(response_labels)].tolist())
    assert split.prompt_mask[:, -1].all()  # left padding: every prompt ends at the last column


def test_batches_without_shared_prompts_fall_back_to_one_forward(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the shared-prompt path ran")

    monkeypatch.setattr(shared_prompt, "shared_prompt_sequence_logps", refuse)
    model = make_shape("smollm2").eval()
    unpaired = PreferenceCollator(PAD)(examples(5, False, seed=1))
    paired = paired_batch(3, seed=5)
    other = paired["input_ids"].clone()
    other[3, 0] = (other[3, 0] + 1) % VOCAB  # rejected row 0's prompt differs from chosen row 0's
    cases = [(unpaired, None), (unpaired, int(unpaired["num_chosen"])), ({**paired, "input_ids": other}, 3)]
    with torch.no_grad():
        for batch, num_chosen in cases:
            ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
            result = prompt_sharing_sequence_logps(model, ids, mask, labels, num_chosen)
            torch.testing.assert_close(result, model_sequence_logps(model, ids, mask, labels))
        assert batch_sequence_logps(model, unpaired).shape == (5,)
        assert batch_sequence_logps(model, paired, share_prompts=False).shape == (6,)
    assert split_shared_prompts(other, paired["attention_mask"], paired["labels"], 3) is None


def test_models_where_sharing_is_unsafe_are_named():
    model = make_shape("llama").train()
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
    assert "checkpointing" in shared_prompt_problem(model)
    with torch.no_grad():  # no backward to replay: the cache is kept, sharing is safe
        assert shared_prompt_problem(model) is None
    other = make_shape("smollm2")
    other.config.model_type = "gemma2"
    assert shared_prompt_problem(other) is not None
