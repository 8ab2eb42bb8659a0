"""Sampling: left padding, greedy and seeded top-p, stop handling, recorded settings, the bundled model."""
from __future__ import annotations

import json

import pytest
import torch

from rpo_tutorial.data.tokenization import tokenize_sft
from rpo_tutorial.evaluation.sampling import (
    _StopOnText,
    cut_response,
    encode_prompts,
    generate_responses,
    left_pad,
)
from rpo_tutorial.models.loading import load_policy, load_tokenizer, tiny_model

PROMPTS = ["hi", [{"role": "user", "content": "tell me a much longer story about a cat and a dog"}],
           "what is two plus two?"]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    """A tiny random model with large weights: greedy decoding then gives varied tokens, not blank lines."""
    model = tiny_model(len(tokenizer), seed=1)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return model


def test_prompts_are_encoded_exactly_like_training(tokenizer):
    for prompt, ids in zip(PROMPTS, encode_prompts(PROMPTS, tokenizer)):
        example = tokenize_sft({"prompt": prompt, "chosen": "ok"}, tokenizer)
        prompt_length = sum(label == -100 for label in example["labels"])
        assert ids == example["input_ids"][:prompt_length]


def test_left_pad_puts_padding_before_each_prompt():
    input_ids, attention_mask = left_pad([[5, 6, 7], [8]], pad_token_id=0)
    assert input_ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_greedy_batched_equals_one_at_a_time_and_tokenizer_is_untouched(model, tokenizer):
    side = tokenizer.padding_side
    greedy = {"max_new_tokens": 6, "temperature": 0.0, "progress": False, "stop_strings": ()}
    batched = generate_responses(model, tokenizer, PROMPTS, batch_size=3, **greedy)
    single = generate_responses(model, tokenizer, PROMPTS, batch_size=1, **greedy)
    assert [row["response"] for row in batched] == [row["response"] for row in single]
    assert all(row["response"] for row in batched) and tokenizer.padding_side == side


def test_seeded_sampling_is_reproducible_and_seed_dependent(model, tokenizer):
    def run(seed):
        rows = generate_responses(model, tokenizer, PROMPTS[:2], max_new_tokens=6, temperature=1.0, top_p=0.95,
                                  batch_size=2, seed=seed, progress=False)
        return [row["response"] for row in rows]

    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = run(3)
    assert torch.rand(1) == expected_next  # the caller's random state is left alone
    assert first == run(3) and first != run(4)


def test_rows_record_prompt_model_and_settings_and_are_written(model, tokenizer, tmp_path):
    path = tmp_path / "samples.jsonl"
    rows = generate_responses(model, tokenizer, PROMPTS, max_new_tokens=3, temperature=0.7, top_p=0.9, seed=11,
                              batch_size=3, model_name="tiny", output_path=path, progress=False)
    assert [row["prompt"] for row in rows] == PROMPTS
    settings = rows[0]["settings"]
    assert (settings["temperature"], settings["top_p"], settings["max_new_tokens"], settings["seed"]) == (0.7, 0.9, 3, 11)
    assert settings["do_sample"] is True and rows[0]["model"] == "tiny"
    assert all(row["stop_reason"] in {"eos", "stop_string", "length"} for row in rows)
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows


def test_cut_response_stops_at_eos_then_at_a_next_user_turn(tokenizer):
    eos = tokenizer.eos_token_id
    text_ids = tokenizer("Sure, here it is.\n\nHuman: and now?", add_special_tokens=False)["input_ids"]
    assert cut_response(text_ids, tokenizer, [eos], ["\n\nHuman:"]) == ("Sure, here it is.", "stop_string")
    ids = tokenizer("Done.", add_special_tokens=False)["input_ids"] + [eos] + tokenizer("junk")["input_ids"]
    assert cut_response(ids, tokenizer, [eos], ["\n\nHuman:"]) == ("Done.", "eos")
    chat = tokenizer("Fine.<|im_start|>user\nmore", add_special_tokens=False)["input_ids"]
    assert cut_response(chat, tokenizer, [eos], ["<|im_start|>user"]) == ("Fine.", "stop_string")
    assert cut_response(tokenizer("no end")["input_ids"], tokenizer, [eos], []) == ("no end", "length")


def test_stop_criterion_only_looks_at_generated_text(tokenizer):
    prompt = tokenizer("\n\nHuman: hi\n\nAssistant:", add_special_tokens=False)["input_ids"]
    clean = tokenizer(" Hello there", add_special_tokens=False)["input_ids"]
    stop = tokenizer(" Hello\n\nHuman: more", add_special_tokens=False)["input_ids"]
    width = max(len(clean), len(stop))
    rows = [prompt + clean + [0] * (width - len(clean)), prompt + stop + [0] * (width - len(stop))]
    criterion = _StopOnText(tokenizer, ["\n\nHuman:"], prompt_length=len(prompt))
    assert criterion(torch.tensor(rows), None).tolist() == [False, True]


def test_bad_prompts_and_settings_raise_value_errors(model, tokenizer):
    with pytest.raises(ValueError, match=r"prompts\[1\]"):
        generate_responses(model, tokenizer, ["ok", ""], progress=False)
    with pytest.raises(ValueError, match="top_p"):
        generate_responses(model, tokenizer, ["ok"], top_p=0.0, progress=False)
    with pytest.raises(ValueError, match="temperature"):
        generate_responses(model, tokenizer, ["ok"], temperature=-1.0, progress=False)
    with pytest.raises(ValueError, match="list of prompts"):
        generate_responses(model, tokenizer, "just one string", progress=False)


@pytest.mark.slow
def test_bundled_model_answers_two_prompts_and_stops_cleanly(tokenizer):
    policy = load_policy()
    rows = generate_responses(policy, tokenizer, ["What is the capital of France?", "Name a colour."],
                              max_new_tokens=16, temperature=0.0, batch_size=2, progress=False)
    for row in rows:
        assert row["response"].strip() and row["stop_reason"] in {"eos", "stop_string", "length"}
        assert "<|im_end|>" not in row["response"] and "<|im_start|>" not in row["response"]
    assert "paris" in rows[0]["response"].lower()
