"""Formatting, tokenization and truncation, checked token by token against brute-force rebuilds."""
from __future__ import annotations

import copy
import gzip
import json

import pytest
from tokenizers import processors

from rpo_tutorial import models, paths
from rpo_tutorial.data.tokenization import (
    format_prompt,
    tokenize_dataset,
    tokenize_pair,
    tokenize_sft,
    tokenize_unpaired,
)

DIALOGUE = [
    {"role": "user", "content": "Hi there."},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "How do plants turn sunlight into energy?"},
]


@pytest.fixture(scope="module")
def tokenizer():
    return models.load_tokenizer()


@pytest.fixture(scope="module")
def plain_tokenizer(tokenizer):
    """The same vocabulary without a chat template, so the plain HH template is used."""
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    return plain


@pytest.fixture(scope="module")
def bos_tokenizer(plain_tokenizer):
    """A tokenizer that prepends a BOS token by default, like Llama / Mistral."""
    bos = copy.deepcopy(plain_tokenizer)
    bos._tokenizer.post_processor = processors.TemplateProcessing(
        single="<|im_start|> $A", pair="<|im_start|> $A $B", special_tokens=[("<|im_start|>", 1)])
    assert bos("a")["input_ids"][0] == 1
    return bos


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def long_dialogue(turns=40):
    messages = []
    for i in range(turns):
        messages.append({"role": "user", "content": f"Question number {i}: what about topic {i}?"})
        messages.append({"role": "assistant", "content": f"Answer number {i} talks about topic {i}."})
    messages.append({"role": "user", "content": "And finally, the last question?"})
    return messages


def brute_force_pair(tokenizer, prompt_text, chosen, rejected, max_prompt_length, max_length):
    """The DPO-reference truncation rule, written out with plain lists (left prompt cut)."""
    prompt = ids(tokenizer, prompt_text)
    responses = [ids(tokenizer, chosen) + [tokenizer.eos_token_id], ids(tokenizer, rejected) + [tokenizer.eos_token_id]]
    longest = max(len(responses[0]), len(responses[1]))
    if len(prompt) + longest > max_length:
        prompt = prompt[len(prompt) - max_prompt_length:] if len(prompt) > max_prompt_length else prompt
    out = []
    for response in responses:
        kept = []
        for token in response:
            if len(prompt) + len(kept) < max_length:
                kept.append(token)
        out.append((prompt + kept, [-100] * len(prompt) + kept))
    return out


# ----------------------------------------------------------------------------- formatting
def test_format_prompt_uses_chat_template_with_generation_prompt(tokenizer):
    text = format_prompt(DIALOGUE, tokenizer)
    assert text.endswith("How do plants turn sunlight into energy?<|im_end|>\n<|im_start|>assistant\n")
    assert "<|im_start|>assistant\nHello! How can I help?<|im_end|>" in text
    assert format_prompt("Explain photosynthesis.", tokenizer) == format_prompt(
        [{"role": "user", "content": "Explain photosynthesis."}], tokenizer)


def test_format_prompt_plain_template_is_the_hh_format(plain_tokenizer):
    expected = ("\n\nHuman: Hi there.\n\nAssistant: Hello! How can I help?"
                "\n\nHuman: How do plants turn sunlight into energy?\n\nAssistant:")
    assert format_prompt(DIALOGUE, plain_tokenizer) == expected
    assert format_prompt("Say hi.", plain_tokenizer) == "\n\nHuman: Say hi.\n\nAssistant:"


def test_format_prompt_template_choices(tokenizer, plain_tokenizer):
    assert format_prompt(DIALOGUE, tokenizer, template="hh") == format_prompt(DIALOGUE, plain_tokenizer)
    assert format_prompt(DIALOGUE, tokenizer, template="chat") == format_prompt(DIALOGUE, tokenizer)
    post = "POST: my tomatoes.\nTL;DR:"
    assert format_prompt(post, tokenizer, template="raw") == post
    with pytest.raises(ValueError, match="must be a string with template='raw'"):
        format_prompt(DIALOGUE, tokenizer, template="raw")
    with pytest.raises(ValueError, match="no chat template"):
        format_prompt(DIALOGUE, plain_tokenizer, template="chat")
    with pytest.raises(ValueError, match="template must be one of"):
        format_prompt(DIALOGUE, tokenizer, template="alpaca")


def test_format_prompt_drops_an_empty_final_assistant_turn(plain_tokenizer):
    with_slot = DIALOGUE + [{"role": "assistant", "content": ""}]
    assert format_prompt(with_slot, plain_tokenizer) == format_prompt(DIALOGUE, plain_tokenizer)


@pytest.mark.parametrize("prompt", [
    "", "   ", [], 42,
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
    [{"role": "robot", "content": "a"}],
    [{"role": "user", "content": 3}],
    [{"content": "no role"}],
])
def test_format_prompt_rejects_malformed_prompts(tokenizer, prompt):
    with pytest.raises(ValueError, match="'prompt'"):
        format_prompt(prompt, tokenizer)


# ----------------------------------------------------------------------------- pairs
def test_labels_mask_exactly_the_prompt_and_each_response_ends_with_eos(tokenizer):
    row = {"prompt": DIALOGUE, "chosen": "Plants use photosynthesis.", "rejected": "No idea."}
    example = tokenize_pair(row, tokenizer)
    prompt = ids(tokenizer, format_prompt(DIALOGUE, tokenizer))
    for side in ("chosen", "rejected"):
        response = ids(tokenizer, row[side]) + [tokenizer.eos_token_id]
        input_ids, labels = example[f"{side}_input_ids"], example[f"{side}_labels"]
        assert input_ids == prompt + response  # prompt and response tokenized separately, then joined
        for position in range(len(input_ids)):
            expected = -100 if position < len(prompt) else input_ids[position]
            assert labels[position] == expected
        assert input_ids[-1] == tokenizer.eos_token_id and labels[-1] == tokenizer.eos_token_id


def test_eos_is_not_doubled_when_the_response_already_ends_with_it(tokenizer):
    example = tokenize_pair({"prompt": "Hi", "chosen": "Hello<|im_end|>", "rejected": "Bye"}, tokenizer)
    assert example["chosen_input_ids"][-2:] != [tokenizer.eos_token_id] * 2
    assert example["chosen_input_ids"][-1] == tokenizer.eos_token_id


def test_left_truncation_keeps_the_end_of_the_dialogue_token_by_token(tokenizer):
    prompt = long_dialogue()
    chosen, rejected = "A short answer. " * 20, "Nope."
    text = format_prompt(prompt, tokenizer)
    assert len(ids(tokenizer, text)) > 300
    example = tokenize_pair({"prompt": prompt, "chosen": chosen, "rejected": rejected}, tokenizer,
                            max_prompt_length=64, max_length=128)
    expected = brute_force_pair(tokenizer, text, chosen, rejected, 64, 128)
    assert (example["chosen_input_ids"], example["chosen_labels"]) == expected[0]
    assert (example["rejected_input_ids"], example["rejected_labels"]) == expected[1]
    assert tokenizer.decode(example["rejected_input_ids"]).endswith(
        "the last question?<|im_end|>\n<|im_start|>assistant\nNope.<|im_end|>")


def test_response_is_cut_keeping_its_start_and_loses_its_eos(tokenizer):
    chosen = " ".join(f"word{i}" for i in range(400))
    text = format_prompt("Write a lot.", tokenizer)
    example = tokenize_pair({"prompt": "Write a lot.", "chosen": chosen, "rejected": "Short."}, tokenizer,
                            max_prompt_length=32, max_length=100)
    expected = brute_force_pair(tokenizer, text, chosen, "Short.", 32, 100)
    assert (example["chosen_input_ids"], example["chosen_labels"]) == expected[0]
    assert len(example["chosen_input_ids"]) == 100
    assert example["chosen_input_ids"][-1] != tokenizer.eos_token_id
    assert example["rejected_input_ids"][-1] == tokenizer.eos_token_id


def test_both_responses_share_the_prompt_cut_for_the_longer_one(tokenizer):
    prompt = long_dialogue(6)
    text = format_prompt(prompt, tokenizer)
    prompt_length = len(ids(tokenizer, text))
    short, long = "Fine.", " ".join(["long"] * 60)
    max_length = prompt_length + 10  # the short response fits beside the whole prompt, the long one not
    example = tokenize_pair({"prompt": prompt, "chosen": short, "rejected": long}, tokenizer,
                            max_prompt_length=prompt_length // 2, max_length=max_length)
    chosen_prompt = [t for t, label in zip(example["chosen_input_ids"], example["chosen_labels"]) if label == -100]
    rejected_prompt = [t for t, label in zip(example["rejected_input_ids"], example["rejected_labels"])
                       if label == -100]
    assert chosen_prompt == rejected_prompt == ids(tokenizer, text)[prompt_length - prompt_length // 2:]
    assert example == dict(zip(
        ["chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels"],
        [x for pair in brute_force_pair(tokenizer, text, short, long, prompt_length // 2, max_length) for x in pair]))


def test_a_prompt_over_its_limit_is_cut_even_when_the_pair_fits(tokenizer):
    prompt = long_dialogue(10)
    full = ids(tokenizer, format_prompt(prompt, tokenizer))
    assert len(full) > 64
    example = tokenize_pair({"prompt": prompt, "chosen": "Yes.", "rejected": "No."}, tokenizer,
                            max_prompt_length=64, max_length=512)
    prompt_length = example["chosen_labels"].count(-100)
    assert prompt_length == 64
    assert example["chosen_input_ids"][1:prompt_length] == full[len(full) - 63:]  # BOS + the END of the dialogue


def test_right_truncation_keeps_the_start_of_a_post_and_its_tldr_cue(tokenizer):
    post = "SUBREDDIT: r/gardening\nTITLE: My tomatoes\nPOST: " + " ".join(f"w{i}" for i in range(300)) + "\nTL;DR:"
    text = format_prompt(post, tokenizer)
    full = ids(tokenizer, text)
    tail = ids(tokenizer, "TL;DR:<|im_end|>\n<|im_start|>assistant\n")
    example = tokenize_pair({"prompt": post, "chosen": " Tomatoes grew.", "rejected": " idk"}, tokenizer,
                            max_prompt_length=100, max_length=150, prompt_truncation="right")
    prompt = [t for t, label in zip(example["chosen_input_ids"], example["chosen_labels"]) if label == -100]
    assert len(prompt) == 100
    head = 100 - len(tail)
    for position in range(head):  # the start of the post, token by token
        assert prompt[position] == full[position]
    assert prompt[head:] == tail  # the cue and the generation header survive
    left = tokenize_pair({"prompt": post, "chosen": " Tomatoes grew.", "rejected": " idk"}, tokenizer,
                         max_prompt_length=100, max_length=150, prompt_truncation="left")
    assert left["chosen_input_ids"][:100] == full[len(full) - 100:]


def test_right_truncation_of_a_raw_post_ends_with_the_cue(tokenizer):
    post = "SUBREDDIT: r/cooking\nTITLE: Bread\nPOST: " + " ".join(f"w{i}" for i in range(200)) + "\nTL;DR:"
    full = ids(tokenizer, post)
    example = tokenize_pair({"prompt": post, "chosen": " Bread rose.", "rejected": " no"}, tokenizer,
                            max_prompt_length=40, max_length=60, prompt_truncation="right", template="raw")
    cue = ids(tokenizer, "TL;DR:")
    assert example["chosen_input_ids"][:40] == full[: 40 - len(cue)] + cue
    assert example["chosen_labels"][40] == example["chosen_input_ids"][40] != -100


def test_left_truncation_keeps_a_default_bos_token(bos_tokenizer):
    prompt = long_dialogue(20)
    text = format_prompt(prompt, bos_tokenizer)
    full = ids(bos_tokenizer, text)
    example = tokenize_pair({"prompt": prompt, "chosen": "Yes.", "rejected": "No."}, bos_tokenizer,
                            max_prompt_length=50, max_length=80)
    prompt_ids = example["chosen_input_ids"][:50]
    assert prompt_ids == [1] + full[len(full) - 49:]
    assert example["chosen_labels"][:50] == [-100] * 50 and example["chosen_labels"][50] != -100
    assert text.endswith("\n\nHuman: And finally, the last question?\n\nAssistant:")


def test_unpaired_and_sft_rows(tokenizer):
    unpaired = tokenize_unpaired({"prompt": "Hi", "completion": "Hello!", "label": False,
                                  "reference_logps": -5.5, "prompt_embedding": [0.5, 0.25]}, tokenizer)
    pair = tokenize_pair({"prompt": "Hi", "chosen": "Hello!", "rejected": "Go."}, tokenizer)
    assert unpaired["input_ids"] == pair["chosen_input_ids"] and unpaired["labels"] == pair["chosen_labels"]
    assert unpaired["label"] is False and unpaired["reference_logps"] == -5.5
    assert unpaired["prompt_embedding"] == [0.5, 0.25]
    sft = tokenize_sft({"prompt": "Hi", "chosen": "Hello!", "rejected": "Go."}, tokenizer)
    assert sft == {"input_ids": pair["chosen_input_ids"], "labels": pair["chosen_labels"]}


def test_embedding_and_reference_logps_are_carried_unchanged(tokenizer):
    embedding = [0.1, -0.2, 0.3]
    row = {"prompt": "Hi", "chosen": "a", "rejected": "b", "prompt_embedding": embedding,
           "reference_chosen_logps": -1.25, "reference_rejected_logps": -7.0}
    example = tokenize_pair(row, tokenizer)
    assert example["prompt_embedding"] is embedding
    assert (example["reference_chosen_logps"], example["reference_rejected_logps"]) == (-1.25, -7.0)
    assert "prompt_embedding" not in tokenize_pair({"prompt": "Hi", "chosen": "a", "rejected": "b"}, tokenizer)


# ----------------------------------------------------------------------------- datasets and bad input
def test_tokenize_dataset_counts_truncation_like_a_brute_force_count(tokenizer):
    rows = [{"prompt": long_dialogue(n), "chosen": "ok " * (5 * n), "rejected": "no"} for n in range(1, 30, 3)]
    examples, report = tokenize_dataset(rows, tokenizer, max_prompt_length=96, max_length=160, progress=False)
    expected_prompts = expected_responses = 0
    for row, example in zip(rows, examples):
        text = format_prompt(row["prompt"], tokenizer)
        expected = brute_force_pair(tokenizer, text, row["chosen"], row["rejected"], 96, 160)
        assert example["chosen_input_ids"] == expected[0][0] and example["rejected_input_ids"] == expected[1][0]
        prompt_length = len(ids(tokenizer, text))
        kept_prompt = sum(label == -100 for label in example["chosen_labels"])
        expected_prompts += kept_prompt < prompt_length
        for side in ("chosen", "rejected"):
            expected_responses += len(example[f"{side}_input_ids"]) - kept_prompt < len(ids(tokenizer, row[side])) + 1
    assert report.num_examples == len(rows) and report.num_skipped == 0
    assert report.prompts_truncated == expected_prompts > 0
    assert report.responses_truncated == expected_responses > 0
    assert "prompts truncated" in report.summary()


BAD_ROWS = [
    ({"prompt": "Hi", "chosen": "a"}, "rejected", "is missing"),
    ({"prompt": "Hi", "chosen": 7, "rejected": "b"}, "chosen", "must be a string"),
    ({"prompt": "Hi", "chosen": "a", "rejected": "  "}, "rejected", "is empty"),
    ({"prompt": None, "chosen": "a", "rejected": "b"}, "prompt", "must be a string"),
    ({"prompt": "Hi", "chosen": "a", "rejected": "b", "reference_chosen_logps": "x"}, "reference_chosen_logps",
     "finite number"),
    ({"prompt": "Hi", "chosen": "a", "rejected": "b", "prompt_embedding": ["x"]}, "prompt_embedding", "numbers"),
    ("not a dict", "row", "must be a dict"),
]


@pytest.mark.parametrize("bad_row, field, message", BAD_ROWS)
def test_bad_row_is_skipped_and_counted_by_default(tokenizer, bad_row, field, message):
    good = {"prompt": "Hi", "chosen": "a", "rejected": "b"}
    with pytest.warns(UserWarning, match="skipped"):
        examples, report = tokenize_dataset([good, bad_row, good], tokenizer, progress=False)
    assert len(examples) == 2 and report.num_skipped == 1
    (reason, count), = report.skipped.items()
    assert f"'{field}'" in reason and message in reason and report.skipped_rows[reason] == [1]


@pytest.mark.parametrize("bad_row, field, message", BAD_ROWS)
def test_bad_row_raises_naming_row_and_field_when_strict(tokenizer, bad_row, field, message):
    good = {"prompt": "Hi", "chosen": "a", "rejected": "b"}
    with pytest.raises(ValueError, match=rf"row 1: field '{field}' .*{message}"):
        tokenize_dataset([good, bad_row], tokenizer, strict=True, progress=False)


def test_unpaired_label_must_be_a_bool(tokenizer):
    with pytest.raises(ValueError, match="row 0: field 'label' must be a bool"):
        tokenize_dataset([{"prompt": "Hi", "completion": "a", "label": "yes"}], tokenizer, kind="unpaired",
                         strict=True, progress=False)


def test_a_prompt_whose_protected_ending_cannot_fit_is_skipped_or_raises(tokenizer):
    post = "POST: " + "words " * 200 + "\nTL;DR:"
    rows = [{"prompt": post, "chosen": "x " * 50, "rejected": "y"}]
    settings = dict(max_prompt_length=5, max_length=60, prompt_truncation="right", progress=False)
    with pytest.warns(UserWarning, match="cannot fit"):
        examples, report = tokenize_dataset(rows, tokenizer, **settings)
    assert examples == [] and report.num_skipped == 1
    with pytest.raises(ValueError, match="row 0: field 'prompt' cannot fit"):
        tokenize_dataset(rows, tokenizer, strict=True, **settings)


def test_left_truncation_leaving_only_bos_cannot_fit(bos_tokenizer):
    row = {"prompt": long_dialogue(5), "chosen": "a", "rejected": "b"}
    with pytest.raises(ValueError, match="cannot fit"):
        tokenize_pair(row, bos_tokenizer, max_prompt_length=1, max_length=8)


@pytest.mark.parametrize("settings, message", [
    (dict(max_prompt_length=256, max_length=256), "max_length"),
    (dict(max_prompt_length=300, max_length=200), "max_length"),
    (dict(max_prompt_length=0, max_length=200), "max_prompt_length"),
    (dict(prompt_truncation="middle"), "prompt_truncation"),
    (dict(kind="triples"), "kind"),
    (dict(template="alpaca"), "template"),
])
def test_invalid_settings_raise_before_any_row(tokenizer, settings, message):
    with pytest.raises(ValueError, match=message):
        tokenize_dataset([{"prompt": "Hi", "chosen": "a", "rejected": "b"}], tokenizer, progress=False, **settings)


def _parse_hh(transcript: str) -> tuple[list[dict], str]:
    """Independent HH parse: messages up to the last Assistant turn, and the final response."""
    head, _, response = transcript.rpartition("\n\nAssistant:")
    messages = []
    for chunk in head.split("\n\nHuman: ")[1:]:
        user, *assistant = chunk.split("\n\nAssistant: ")
        messages.append({"role": "user", "content": user})
        messages.extend({"role": "assistant", "content": a} for a in assistant)
    return messages, response


def test_real_hh_rows_respect_the_paper_limits(tokenizer):
    data = paths.shared_data_dir()
    path = data / "hh-rlhf" / "harmless-base-test.jsonl.gz" if data else None
    if path is None or not path.exists():
        pytest.skip("../shared/data/hh-rlhf is absent")
    rows = []
    with gzip.open(path, "rt") as handle:
        for line in handle:
            record = json.loads(line)
            prompt, chosen = _parse_hh(record["chosen"])
            rejected = _parse_hh(record["rejected"])[1]
            if prompt and chosen.strip() and rejected.strip():
                rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
            if len(rows) == 300:
                break
    examples, report = tokenize_dataset(rows, tokenizer, progress=False)
    assert report.num_examples + report.num_skipped == len(rows)
    for example in examples:
        prompts = []
        for side in ("chosen", "rejected"):
            input_ids, labels = example[f"{side}_input_ids"], example[f"{side}_labels"]
            assert len(input_ids) <= 512 and len(input_ids) == len(labels)
            prompt_length = next(i for i, label in enumerate(labels) if label != -100)
            assert labels[prompt_length:] == input_ids[prompt_length:]  # no -100 inside the response
            prompts.append(input_ids[:prompt_length])
        assert prompts[0] == prompts[1]
        assert len(prompts[0]) <= 256 or len(example["rejected_input_ids"]) <= 512
    assert report.prompts_truncated > 0
