"""The packaged demo dataset, its loader's validation, and the pieces that build it."""
from __future__ import annotations

import fnmatch
import importlib.util
import json
import tomllib
from collections import Counter

import pytest

from rpo_tutorial.data.demo import (
    MIN_SCORE_GAP,
    build_pair,
    demo_clusters,
    demo_split_path,
    load_demo,
    load_demo_prompts,
    split_by_prompt,
)
from rpo_tutorial.data.sentiment import sentiment_score
from rpo_tutorial.paths import DEMO_DATA_DIR, REPO_ROOT


@pytest.fixture(scope="module")
def splits() -> dict[str, list[dict]]:
    return {split: load_demo(split) for split in ("train", "heldout")}


def test_packaged_files_exist_and_are_small():
    files = [demo_split_path("train"), demo_split_path("heldout"), DEMO_DATA_DIR / "README.md"]
    assert all(path.is_file() for path in files)
    assert sum(path.stat().st_size for path in files) < 1_000_000


def test_package_data_globs_cover_the_files_the_loader_reads():
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["rpo_tutorial.data"]
    for name in ("train.jsonl", "heldout.jsonl", "README.md"):
        assert any(fnmatch.fnmatch(f"demo_data/{name}", pattern) for pattern in globs), name


def test_dataset_has_enough_prompts_clusters_and_heldout(splits):
    rows = splits["train"] + splits["heldout"]
    clusters = Counter(row["cluster"] for row in rows)
    assert len(rows) >= 300
    assert len(clusters) >= 8 and sorted(clusters) == demo_clusters()
    assert len(splits["heldout"]) >= 40
    assert all(count >= 30 for count in clusters.values()), clusters


def test_packaged_rows_are_shuffled_so_a_prefix_mixes_clusters(splits):
    assert len({row["cluster"] for row in splits["train"][:32]}) == len(demo_clusters())
    assert len({row["cluster"] for row in splits["heldout"][:8]}) >= 4


def test_no_prompt_is_in_both_splits(splits):
    train, heldout = splits["train"], splits["heldout"]
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in heldout}
    assert not {r["id"] for r in train} & {r["id"] for r in heldout}
    all_prompts = [r["prompt"] for r in train + heldout]
    assert len(all_prompts) == len(set(all_prompts))


def test_rows_come_from_the_written_prompts(splits):
    written = {p["id"]: p for p in load_demo_prompts()}
    for row in splits["train"] + splits["heldout"]:
        assert written[row["id"]]["prompt"] == row["prompt"]
        assert written[row["id"]]["cluster"] == row["cluster"]


def test_chosen_beats_rejected_by_the_gap_in_every_row(splits):
    for row in splits["train"] + splits["heldout"]:
        assert row["chosen_score"] - row["rejected_score"] >= MIN_SCORE_GAP, row["id"]
        assert row["chosen"] != row["rejected"]


def test_stored_scores_equal_the_judges_rescoring(splits):
    for row in splits["train"] + splits["heldout"]:
        assert sentiment_score(row["chosen"]) == row["chosen_score"], row["id"]
        assert sentiment_score(row["rejected"]) == row["rejected_score"], row["id"]


def test_responses_carry_no_special_tokens(splits):
    for row in splits["train"] + splits["heldout"]:
        for text in (row["chosen"], row["rejected"]):
            assert "<|im_end|>" not in text and "<|im_start|>" not in text and text == text.strip()


GOOD_ROW = {"id": "pets-000", "cluster": "pets", "prompt": "Hi?", "chosen": "Lovely!", "rejected": "Awful.",
            "chosen_score": 0.6, "rejected_score": -0.5}


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ("{not json", r"bad\.jsonl row 2: not valid JSON"),
        (json.dumps({k: v for k, v in GOOD_ROW.items() if k != "rejected"}), r"row 2: missing field 'rejected'"),
        (json.dumps({**GOOD_ROW, "chosen": 3}), r"row 2: field 'chosen' must be a non-empty string"),
        (json.dumps({**GOOD_ROW, "prompt": "  "}), r"row 2: field 'prompt' must be a non-empty string"),
        (json.dumps({**GOOD_ROW, "chosen_score": "high"}), r"row 2: field 'chosen_score' must be a finite number"),
        (json.dumps({**GOOD_ROW, "rejected": "Lovely!"}), r"row 2: fields 'chosen' and 'rejected' are identical"),
        (json.dumps({**GOOD_ROW, "chosen_score": -0.9}), r"row 2: chosen_score \(-0.9\) must exceed"),
        (json.dumps(GOOD_ROW), r"row 2: duplicate id 'pets-000'"),
        ("[1, 2]", r"row 2: expected a JSON object"),
    ],
)
def test_loader_rejects_a_corrupted_row_naming_file_row_and_field(tmp_path, bad_line, expected):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD_ROW) + "\n" + bad_line + "\n")
    with pytest.raises(ValueError, match=expected):
        load_demo(path=path)


def test_loader_reads_a_valid_file_and_rejects_unknown_splits(tmp_path):
    path = tmp_path / "ok.jsonl"
    path.write_text(json.dumps(GOOD_ROW) + "\n\n")
    assert load_demo(path=path) == [GOOD_ROW]
    with pytest.raises(ValueError, match="split must be one of"):
        load_demo("test")
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_demo(path=tmp_path / "missing.jsonl")


def test_build_pair_takes_best_and_worst_like_a_loop():
    prompt = {"id": "x-000", "cluster": "x", "prompt": "p"}
    responses, scores = ["r0", "r1", "r2", "r3"], [0.2, -0.4, 0.7, -0.4]
    best_index, worst_index = 0, 0
    for k in range(len(scores)):  # first of equals wins, as documented
        if scores[k] > scores[best_index]:
            best_index = k
        if scores[k] < scores[worst_index]:
            worst_index = k
    pair = build_pair(prompt, responses, scores)
    assert (pair["chosen"], pair["rejected"]) == (responses[best_index], responses[worst_index]) == ("r2", "r1")
    assert (pair["chosen_score"], pair["rejected_score"]) == (0.7, -0.4)
    assert build_pair(prompt, responses, [0.1, 0.15, 0.12, 0.1]) is None  # gap 0.05 < 0.1
    with pytest.raises(ValueError, match="x-000"):
        build_pair(prompt, responses, [0.1])


def test_split_by_prompt_holds_out_the_asked_number_per_cluster_deterministically():
    rows = [{"id": f"{c}-{i}", "cluster": c} for c in "abc" for i in range(7)]
    train, heldout = split_by_prompt(rows, heldout_per_cluster=2, seed=3)
    assert Counter(r["cluster"] for r in heldout) == {"a": 2, "b": 2, "c": 2}
    assert sorted(r["id"] for r in train + heldout) == sorted(r["id"] for r in rows)
    assert not {r["id"] for r in train} & {r["id"] for r in heldout}
    assert split_by_prompt(rows, 2, seed=3) == (train, heldout)
    assert split_by_prompt(rows, 2, seed=4) != (train, heldout)
    assert len({r["cluster"] for r in train[:6]}) > 1  # shuffled: a prefix mixes clusters
    with pytest.raises(ValueError, match="cluster 'a' has 7 rows"):
        split_by_prompt(rows, heldout_per_cluster=7)


def _load_generator_script():
    spec = importlib.util.spec_from_file_location("make_demo_dataset", REPO_ROOT / "scripts" / "make_demo_dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_torch_thread():
    """The tiny model gains nothing from threads, and on a busy CPU they cost 30x (measured)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_sampling_is_seeded_batched_and_strips_special_tokens(one_torch_thread):
    from rpo_tutorial.models.loading import load_tokenizer, tiny_model

    script = _load_generator_script()
    tokenizer = load_tokenizer()
    tokenizer.padding_side = "right"
    model = tiny_model(len(tokenizer), seed=0).eval()
    prompts = ["Describe a dog.", "What do you think of rain on a long walk?", "Hi."]
    first = script.sample_responses(model, tokenizer, prompts, samples=2, batch_size=2, seed=1, max_new_tokens=6)
    again = script.sample_responses(model, tokenizer, prompts, samples=2, batch_size=2, seed=1, max_new_tokens=6)
    other_seed = script.sample_responses(model, tokenizer, prompts, samples=2, batch_size=2, seed=2, max_new_tokens=6)
    assert [len(r) for r in first] == [2, 2, 2]
    assert first == again and first != other_seed
    assert tokenizer.padding_side == "right"  # restored after the left-padded generation
    assert not any(tok in text for r in first for text in r for tok in ("<|im_end|>", "<|im_start|>"))
