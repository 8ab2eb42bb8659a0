"""benchmarks/flops.py: the FLOP formula against a brute-force count (FlopCounterMode) on tiny models.

FlopCounterMode sees every matmul torch runs (mm, addmm, bmm), so with eager attention (plain
matmuls) its total is the brute-force count of the same step. The recorder computes its count
from shapes only; the two must agree exactly, for every path a benchmark variant takes.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from flops import DecoderShape, FlopRecorder, checkpointed_head_rows, decoder_flops  # noqa: E402

from rpo_tutorial.models.head import model_sequence_logps  # noqa: E402
from rpo_tutorial.models.shared_prompt import prompt_sharing_sequence_logps  # noqa: E402

VOCAB = 101


def tiny(architecture: str = "llama", seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    classes = {"llama": (LlamaConfig, LlamaForCausalLM), "mistral": (MistralConfig, MistralForCausalLM)}
    config_class, model_class = classes[architecture]
    torch.manual_seed(seed)
    config = config_class(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                          tie_word_embeddings=architecture == "llama", attn_implementation="eager")
    return model_class(config)


def paired_batch(pairs: int = 3, seed: int = 0) -> dict:
    """Right-padded paired rows: the same prompt (4-6 tokens) in rows i and M + i, responses of 2-5 tokens."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(pairs):
        prompt = torch.randint(1, VOCAB, (int(torch.randint(4, 7, (1,), generator=generator)),), generator=generator)
        rows.append([prompt, torch.randint(1, VOCAB, (int(torch.randint(2, 6, (1,), generator=generator)),),
                                           generator=generator)])
    for index in range(pairs):
        rows.append([rows[index][0], torch.randint(1, VOCAB, (int(torch.randint(2, 6, (1,), generator=generator)),),
                                                   generator=generator)])
    length = max(len(p) + len(r) for p, r in rows)
    ids, mask, labels = (torch.zeros(len(rows), length, dtype=torch.long) for _ in range(3))
    labels.fill_(-100)
    for row, (prompt, response) in enumerate(rows):
        total = len(prompt) + len(response)
        ids[row, :total] = torch.cat([prompt, response])
        mask[row, :total] = 1
        labels[row, len(prompt):total] = response
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "num_chosen": pairs}


def brute_force_and_recorded(step, models, **recorder_options) -> tuple[int, int]:
    # in-place addmm_ (TRL's gradient accumulation) is not in FlopCounterMode's table: count it like addmm
    in_place = {torch.ops.aten.addmm_: lambda self_shape, a_shape, b_shape, *_, **__: 2 * a_shape[0] * a_shape[1]
                * b_shape[1]}
    with FlopCounterMode(display=False, custom_mapping=in_place) as counter, FlopRecorder(models, **recorder_options) as recorder:
        step()
    return counter.get_total_flops(), recorder.total


@pytest.mark.parametrize("share_prompts", [True, False], ids=["shared-prompts", "one-forward"])
@pytest.mark.parametrize("architecture", ["llama", "mistral"])
def test_a_dpo_step_with_a_live_reference_counts_what_the_matmuls_do(share_prompts, architecture):
    policy, reference = tiny(architecture), tiny(architecture, seed=1).requires_grad_(False)
    batch = paired_batch()

    def step():
        with torch.no_grad():
            prompt_sharing_sequence_logps(reference, batch["input_ids"], batch["attention_mask"], batch["labels"],
                                          batch["num_chosen"], share_prompts=share_prompts)
        logps = prompt_sharing_sequence_logps(policy, batch["input_ids"], batch["attention_mask"], batch["labels"],
                                              batch["num_chosen"], share_prompts=share_prompts)
        logps.sum().backward()

    brute, recorded = brute_force_and_recorded(step, [policy, reference])
    assert recorded == brute > 0


def test_checkpointed_head_chunks_count_their_recomputation(monkeypatch):
    from rpo_tutorial.models import head

    policy, batch = tiny(), paired_batch(pairs=4)
    monkeypatch.setattr(head, "KEEP_LOGITS_BYTES", 3 * VOCAB * 4)  # keep 3 rows' logits, recompute the rest
    monkeypatch.setattr(head, "CHUNK_ELEMENTS", 2 * VOCAB)  # chunks of 2 rows
    scored = int((batch["labels"][:, 1:] != -100).sum())
    assert checkpointed_head_rows(scored, VOCAB) == scored - 2  # the first chunk is kept, the second is over budget

    def step():
        model_sequence_logps(policy, batch["input_ids"], batch["attention_mask"], batch["labels"]).sum().backward()

    brute, recorded = brute_force_and_recorded(step, [policy])
    assert recorded == brute


def test_a_full_logits_forward_counts_the_head_on_every_position():
    policy, batch = tiny(), paired_batch()

    def step():  # the benchmark's *_before variants: full (B, T, V) logits
        policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits.sum() \
            .backward()

    brute, recorded = brute_force_and_recorded(step, [policy])
    rows, length = batch["input_ids"].shape
    shape = DecoderShape.from_config(policy.config)
    assert recorded == brute == 3 * (decoder_flops(shape, rows, length, length) + 2 * rows * length * 32 * VOCAB)


def test_trls_chunked_head_counts_its_backward_recomputation():
    trl_utils = pytest.importorskip("trl.trainer.utils")
    policy = tiny()
    hidden = torch.randn(7, 32, requires_grad=True)
    targets = torch.randint(0, VOCAB, (7,))
    head = policy.get_output_embeddings()

    def step():
        out = trl_utils._ChunkedLogProbFunction.apply(hidden, head.weight, None, targets, 1.0, 32)
        out[0].sum().backward()

    brute, recorded = brute_force_and_recorded(step, [policy])
    assert recorded == brute == 2 * 7 * 32 * VOCAB * 4  # forward, recompute, two gradients


def test_activation_checkpointing_adds_one_body_forward_but_each_layers_last_matmul():
    policy, batch = tiny(), paired_batch()
    policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    policy.train()

    def step():
        model_sequence_logps(policy, batch["input_ids"], batch["attention_mask"], batch["labels"]).sum().backward()

    brute, recorded = brute_force_and_recorded(step, [policy], recompute_body=True)
    assert recorded == brute
