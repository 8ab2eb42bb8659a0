"""Guards before training (issue 13): output folders are never reused by accident, and unpaired
data that cannot give a contrast is refused before training instead of training to loss 0."""
from __future__ import annotations

import itertools
import json
import random

import pytest

from rpo_tutorial.data.errors import DataError
from rpo_tutorial.training.output_dir import UsageError
from rpo_tutorial.data.run_logs import read_metrics
from rpo_tutorial.models.loading import load_tokenizer, tiny_model
from rpo_tutorial.training.config import get_preset
from rpo_tutorial.training.dataset_checks import check_sides, count_one_sided, expected_one_sided
from rpo_tutorial.training.output_dir import CLEAR, RESUME, START, plan_output_dir
from rpo_tutorial.training.run import run_training


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def pairs(count: int = 8) -> list[dict]:
    return [{"prompt": f"Tell me about place {i}.", "chosen": "bright calm kind", "rejected": "grey cold loud"}
            for i in range(count)]


def small_run(tmp_path, tokenizer, **changes):
    settings = dict(max_steps=2, max_length=40, max_prompt_length=20, per_device_train_batch_size=2, loss="dpo",
                    output_dir=str(tmp_path / "run"))
    config = get_preset("smoke", **{**settings, **changes})
    return config, dict(policy=tiny_model(len(tokenizer), hidden_size=32, num_layers=1), tokenizer=tokenizer)


# ---- item 2: output folders ---------------------------------------------------------------------
def test_plan_refuses_a_folder_holding_a_run_and_says_how_to_go_on(tmp_path):
    config = get_preset("smoke", output_dir=str(tmp_path)).to_dict()
    assert plan_output_dir(tmp_path / "new", config, None, False) == START
    (tmp_path / "notes.txt").write_text("mine")
    assert plan_output_dir(tmp_path, config, None, False) == START  # nothing of a run in it
    (tmp_path / "checkpoint-6").mkdir()
    with pytest.raises(UsageError, match=r"holds an unfinished run \(last checkpoint-6\).*--overwrite"):
        plan_output_dir(tmp_path, config, None, False)
    assert plan_output_dir(tmp_path, config, None, True) == CLEAR
    with pytest.raises(UsageError, match="has no rpo_config.json"):
        plan_output_dir(tmp_path, config, True, False)
    (tmp_path / "rpo_config.json").write_text(json.dumps({**config, "beta": 0.3}))
    with pytest.raises(UsageError, match=r"another configuration \(beta: 0.3 saved, 0.1 now\)"):
        plan_output_dir(tmp_path, config, True, False)
    (tmp_path / "rpo_config.json").write_text(json.dumps({**config, "progress": True, "logging_steps": 50}))
    assert plan_output_dir(tmp_path, config, "last", False) == RESUME


def test_second_run_in_a_used_folder_is_refused_and_leaves_it_intact(tmp_path, tokenizer):
    config, models = small_run(tmp_path, tokenizer)
    run_training(config, rows=pairs(), **models)
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    config2, models2 = small_run(tmp_path, tokenizer, beta=0.5)
    with pytest.raises(UsageError, match="already holds a finished run"):
        run_training(config2, rows=pairs(), **models2)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before  # not truncated
    with pytest.raises(UsageError, match="another configuration"):
        run_training(config2, rows=pairs(), resume_from_checkpoint=True, **models2)


def test_overwrite_clears_the_old_run_first(tmp_path, tokenizer):
    config, models = small_run(tmp_path, tokenizer, save_steps=1)
    run_training(config, rows=pairs(), **models)
    assert (tmp_path / "run" / "checkpoint-2").is_dir()
    (tmp_path / "run" / "stale.txt").write_text("old")
    config2, models2 = small_run(tmp_path, tokenizer, max_steps=1)
    result = run_training(config2, rows=pairs(), overwrite=True, **models2)
    assert result.global_step == 1
    assert not (tmp_path / "run" / "checkpoint-2").exists() and not (tmp_path / "run" / "stale.txt").exists()
    assert [row["step"] for row in read_metrics(tmp_path / "run") if "loss" in row] == [1]
    assert json.loads((tmp_path / "run" / "rpo_config.json").read_text())["max_steps"] == 1


# ---- item 1: both sides before training --------------------------------------------------------
def test_unpaired_rpo_without_undesirable_rows_is_refused_before_training(tmp_path, tokenizer):
    rows = [{"prompt": f"q{i}", "completion": "bright calm kind", "label": True} for i in range(8)]
    config, models = small_run(tmp_path, tokenizer, loss="rpo", paired=False, weighting="uniform")
    with pytest.raises(DataError, match=r"8 desirable and 0 undesirable rows"):
        run_training(config, rows=rows, **models)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_expected_one_sided_batches_match_every_shuffle():
    for desirable, undesirable, batch in ((3, 2, 2), (4, 1, 3), (2, 2, 4), (5, 0, 2)):
        labels = [True] * desirable + [False] * undesirable
        orders = list(itertools.permutations(range(len(labels))))
        counts = [count_one_sided(labels, [order[i:i + batch] for i in range(0, len(order), batch)])
                  for order in orders]
        assert expected_one_sided(desirable, undesirable, batch) == pytest.approx(sum(counts) / len(counts))


def test_sequential_batches_count_one_sided_exactly_and_warn():
    labels = [True, True, False, True, False, False, True, True]  # batches of 2: TT FT FF TT -> 3 one-sided
    examples = [{"label": label} for label in labels]
    config = get_preset("smoke", loss="rpo", paired=False, weighting="uniform", batch_sampling="sequential",
                        per_device_train_batch_size=2)
    with pytest.warns(UserWarning, match="3 of 4 micro-batches"):
        check = check_sides(examples, config)
    assert (check.desirable, check.undesirable, check.one_sided, check.exact) == (5, 3, 3, True)
    assert check_sides(examples, config.replace(loss="kto")).one_sided == 3  # kto: counted, never refused
    assert check_sides([{"label": random.random() < 2} for _ in range(3)], config.replace(paired=True)) is None


# ---- item 5: a file of HH transcripts is still read as HH; any other prompt-less file is an error ----
def test_only_chosen_rejected_transcripts_fall_back_to_the_hh_loader(tmp_path):
    from rpo_tutorial.data.preferences import open_dataset

    hh = tmp_path / "hh.jsonl"
    hh.write_text(json.dumps({"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello.",
                              "rejected": "\n\nHuman: Hi?\n\nAssistant: Go."}) + "\n")
    rows = open_dataset(str(hh))
    assert rows[0]["prompt"] == [{"role": "user", "content": "Hi?"}] and rows[0]["chosen"] == "Hello."
    other = tmp_path / "qa.jsonl"
    other.write_text(json.dumps({"question": "Hi?", "chosen": "Hello."}) + "\n")
    with pytest.raises(DataError, match="no row has a 'prompt'"):
        open_dataset(str(other))
