"""Collators: ordering (chosen first), padding, masks and the optional embedding / reference fields."""
from __future__ import annotations

import random

import pytest
import torch

from rpo_tutorial import models
from rpo_tutorial.data.collate import PreferenceCollator, SFTCollator
from rpo_tutorial.data.tokenization import tokenize_dataset

PAD = 0


def random_sequence(rng, prompt_length, response_length):
    ids = [rng.randrange(5, 100) for _ in range(prompt_length + response_length)]
    return ids, [-100] * prompt_length + ids[prompt_length:]


def paired_examples(count, dim=3, seed=0, reference=True):
    rng = random.Random(seed)
    examples = []
    for i in range(count):
        prompt_length = rng.randrange(1, 6)
        chosen_ids, chosen_labels = random_sequence(rng, prompt_length, rng.randrange(1, 8))
        rejected_ids = chosen_ids[:prompt_length] + [rng.randrange(5, 100) for _ in range(rng.randrange(1, 8))]
        example = {"chosen_input_ids": chosen_ids, "chosen_labels": chosen_labels,
                   "rejected_input_ids": rejected_ids,
                   "rejected_labels": [-100] * prompt_length + rejected_ids[prompt_length:],
                   "prompt_embedding": [rng.random() for _ in range(dim)]}
        if reference:
            example.update(reference_chosen_logps=-float(i), reference_rejected_logps=-10.0 - i)
        examples.append(example)
    return examples


def unpaired_examples(labels, dim=3, seed=0):
    rng = random.Random(seed)
    examples = []
    for i, label in enumerate(labels):
        ids, token_labels = random_sequence(rng, rng.randrange(1, 6), rng.randrange(1, 8))
        examples.append({"input_ids": ids, "labels": token_labels, "label": label, "reference_logps": -float(i),
                         "prompt_embedding": [float(i)] * dim})
    return examples


def brute_force_rows(sequences, width):
    """Padded rows built one position at a time."""
    input_ids, mask, labels = [], [], []
    for ids, token_labels in sequences:
        input_ids.append([ids[t] if t < len(ids) else PAD for t in range(width)])
        mask.append([1 if t < len(ids) else 0 for t in range(width)])
        labels.append([token_labels[t] if t < len(ids) else -100 for t in range(width)])
    return input_ids, mask, labels


def test_paired_batch_puts_chosen_rows_first_and_pads_right():
    examples = paired_examples(4)
    batch = PreferenceCollator(PAD)(examples)
    sequences = ([(e["chosen_input_ids"], e["chosen_labels"]) for e in examples]
                 + [(e["rejected_input_ids"], e["rejected_labels"]) for e in examples])
    width = max(len(ids) for ids, _ in sequences)
    input_ids, mask, labels = brute_force_rows(sequences, width)
    assert batch["input_ids"].tolist() == input_ids and batch["input_ids"].dtype == torch.long
    assert batch["attention_mask"].tolist() == mask and batch["labels"].tolist() == labels
    assert batch["num_chosen"].item() == 4 and batch["num_chosen"].dim() == 0
    assert batch["paired"].item() is True
    expected_embeddings = torch.tensor([e["prompt_embedding"] for e in examples])
    torch.testing.assert_close(batch["chosen_prompt_embeddings"], expected_embeddings)
    torch.testing.assert_close(batch["rejected_prompt_embeddings"], expected_embeddings)
    assert batch["reference_chosen_logps"].tolist() == [e["reference_chosen_logps"] for e in examples]
    assert batch["reference_rejected_logps"].tolist() == [e["reference_rejected_logps"] for e in examples]
    assert batch["reference_chosen_logps"].dtype == torch.float32


def test_unpaired_batch_groups_desirable_first_keeping_order():
    labels = [False, True, False, True, True]
    examples = unpaired_examples(labels)
    batch = PreferenceCollator(PAD)(examples)
    order = [i for i, label in enumerate(labels) if label] + [i for i, label in enumerate(labels) if not label]
    sequences = [(examples[i]["input_ids"], examples[i]["labels"]) for i in order]
    input_ids, mask, token_labels = brute_force_rows(sequences, max(len(ids) for ids, _ in sequences))
    assert batch["input_ids"].tolist() == input_ids and batch["labels"].tolist() == token_labels
    assert batch["attention_mask"].tolist() == mask
    assert batch["num_chosen"].item() == 3 and batch["paired"].item() is False
    assert batch["chosen_prompt_embeddings"][:, 0].tolist() == [1.0, 3.0, 4.0]
    assert batch["rejected_prompt_embeddings"][:, 0].tolist() == [0.0, 2.0]
    assert batch["reference_chosen_logps"].tolist() == [-1.0, -3.0, -4.0]
    assert batch["reference_rejected_logps"].tolist() == [-0.0, -2.0]


@pytest.mark.parametrize("labels", [[True, True], [False, False, False]])
def test_unpaired_batch_with_one_side_empty(labels):
    batch = PreferenceCollator(PAD)(unpaired_examples(labels, dim=5))
    chosen = sum(labels)
    rejected = len(labels) - chosen
    assert batch["num_chosen"].item() == chosen and batch["input_ids"].shape[0] == len(labels)
    assert batch["chosen_prompt_embeddings"].shape == (chosen, 5)
    assert batch["rejected_prompt_embeddings"].shape == (rejected, 5)
    assert batch["reference_chosen_logps"].shape == (chosen,)
    assert batch["reference_rejected_logps"].shape == (rejected,)


def test_optional_fields_are_omitted_when_absent():
    examples = paired_examples(2, reference=False)
    for example in examples:
        del example["prompt_embedding"]
    batch = PreferenceCollator(PAD)(examples)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "num_chosen", "paired"}


def test_label_pad_id_fills_padding_only():
    examples = paired_examples(3, seed=1)
    batch = PreferenceCollator(PAD, label_pad_id=-1)(examples)
    assert (batch["labels"][batch["attention_mask"] == 0] == -1).all()
    assert (batch["labels"][batch["attention_mask"] == 1] != -1).all()


def test_mixed_paired_and_unpaired_is_rejected():
    with pytest.raises(ValueError, match="mixes paired and unpaired"):
        PreferenceCollator(PAD)(paired_examples(1) + unpaired_examples([True]))


@pytest.mark.parametrize("mutate, message", [
    (lambda examples: examples[1].pop("prompt_embedding"), "example 1 lacks 'prompt_embedding'"),
    (lambda examples: examples[0].update(prompt_embedding=[1.0]), "dimensions differ"),
    (lambda examples: examples[2].pop("reference_rejected_logps"), "example 2 lacks 'reference_rejected_logps'"),
    (lambda examples: examples[1]["chosen_labels"].pop(), "example 1: chosen_input_ids"),
    (lambda examples: examples.append({"input_ids": [1], "labels": [1]}), "example 3 is neither"),
])
def test_inconsistent_examples_raise_naming_the_example(mutate, message):
    examples = paired_examples(3)
    mutate(examples)
    with pytest.raises(ValueError, match=message):
        PreferenceCollator(PAD)(examples)


def test_empty_batch_and_missing_pad_token_raise():
    with pytest.raises(ValueError, match="empty"):
        PreferenceCollator(PAD)([])
    with pytest.raises(ValueError, match="pad_token_id"):
        PreferenceCollator(None)


def test_sft_collator_pads_like_a_brute_force_loop():
    rng = random.Random(3)
    examples = [dict(zip(("input_ids", "labels"), random_sequence(rng, rng.randrange(1, 5), rng.randrange(1, 9))))
                for _ in range(5)]
    batch = SFTCollator(PAD)(examples)
    sequences = [(e["input_ids"], e["labels"]) for e in examples]
    input_ids, mask, labels = brute_force_rows(sequences, max(len(e["input_ids"]) for e in examples))
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert (batch["input_ids"].tolist(), batch["attention_mask"].tolist(), batch["labels"].tolist()) == (
        input_ids, mask, labels)
    with pytest.raises(ValueError, match="example 0 needs"):
        SFTCollator(PAD)([{"input_ids": [1]}])


def test_tokenized_pairs_collate_and_decode_back():
    tokenizer = models.load_tokenizer()
    rows = [{"prompt": "Name a fruit.", "chosen": "An apple.", "rejected": "A chair.", "prompt_embedding": [1.0, 0.0]},
            {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No.", "prompt_embedding": [0.0, 1.0]}]
    examples, _ = tokenize_dataset(rows, tokenizer, progress=False)
    batch = PreferenceCollator(tokenizer.pad_token_id)(examples)
    texts = [tokenizer.decode(row[mask.bool()]) for row, mask in zip(batch["input_ids"], batch["attention_mask"])]
    assert [text.rsplit("\n", 1)[-1] for text in texts] == [
        "An apple.<|im_end|>", "Hi!<|im_end|>", "A chair.<|im_end|>", "No.<|im_end|>"]
    responses = [tokenizer.decode(row[row != -100]) for row in batch["labels"]]
    assert responses == ["An apple.<|im_end|>", "Hi!<|im_end|>", "A chair.<|im_end|>", "No.<|im_end|>"]


@pytest.mark.parametrize("kind", ["paired", "unpaired"])
def test_pad_to_length_pads_every_batch_to_that_length_like_a_brute_force_loop(kind):
    examples = paired_examples(3) if kind == "paired" else unpaired_examples([True, False, True])
    width = 20
    batch = PreferenceCollator(PAD, pad_to_length=width)(examples)
    if kind == "paired":
        sequences = [(e["chosen_input_ids"], e["chosen_labels"]) for e in examples]
        sequences += [(e["rejected_input_ids"], e["rejected_labels"]) for e in examples]
    else:
        ordered = [e for e in examples if e["label"]] + [e for e in examples if not e["label"]]
        sequences = [(e["input_ids"], e["labels"]) for e in ordered]
    input_ids, mask, labels = brute_force_rows(sequences, width)
    assert batch["input_ids"].tolist() == input_ids
    assert batch["attention_mask"].tolist() == mask
    assert batch["labels"].tolist() == labels


def test_longest_sequence_and_a_pad_to_length_too_short_or_invalid():
    from rpo_tutorial.data.collate import longest_sequence

    examples = paired_examples(4)
    longest = longest_sequence(examples)
    assert longest == max(len(e[key]) for e in examples for key in ("chosen_input_ids", "rejected_input_ids"))
    assert longest_sequence(unpaired_examples([True, False])) == max(
        len(e["input_ids"]) for e in unpaired_examples([True, False]))
    assert PreferenceCollator(PAD, pad_to_length=longest)(examples)["input_ids"].shape == (8, longest)
    with pytest.raises(ValueError, match=f"{longest} tokens, more than pad_to_length={longest - 1}"):
        PreferenceCollator(PAD, pad_to_length=longest - 1)(examples)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="pad_to_length"):
            PreferenceCollator(PAD, pad_to_length=bad)
