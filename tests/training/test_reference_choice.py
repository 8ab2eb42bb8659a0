"""reference="auto": precomputed log-probs when the run repays the one-off pass, a live model otherwise."""
from __future__ import annotations

import pytest

from rpo_tutorial.training.config import get_preset
from rpo_tutorial.training.reference_choice import (
    MIN_PASSES,
    batch_tokens,
    choose_reference,
    decide_reference,
)


@pytest.mark.parametrize("case, visits, train, in_pass, live, pre, pass_tokens, expected", [
    # short run (the demo preset: 20 steps x 4 pairs of ~250 rows): the pass would cost more than it saves
    ("short run", 80, 250, 250, 100, 100, 100, "model"),
    # one epoch: the pass does exactly the live reference's work; no gain worth the pass
    ("one epoch", 1000, 1000, 1000, 100, 100, 100, "model"),
    ("just under two passes", 1999, 1000, 1000, 100, 100, 100, "model"),
    ("two passes", 2000, 1000, 1000, 100, 100, 100, "precomputed"),
    ("three epochs", 3000, 1000, 1000, 100, 100, 100, "precomputed"),
    # evaluation examples join the pass: 3 passes over 1000 training rows, 1000 more to precompute, still pays
    ("with eval rows", 3000, 1000, 2000, 100, 100, 100, "precomputed"),
    # bf16: padding every batch to the longest row costs 1.5 x the tokens: 3 x 1.5 > 4, never pays
    ("bf16 heavy padding", 10000, 1000, 1000, 100, 150, 150, "model"),
    # bf16 with little padding (lengths alike): pays after enough passes
    ("bf16 light padding", 10000, 1000, 1000, 100, 105, 105, "precomputed"),
])
def test_the_decision_rule_on_a_table_of_runs(case, visits, train, in_pass, live, pre, pass_tokens, expected):
    choice = decide_reference(visits, train, in_pass, live, pre, pass_tokens)
    assert choice.mode == expected, (case, choice)
    assert choice.passes == pytest.approx(visits / train)
    # the FLOP model itself: live = 4 V t_live, precomputed = n t_pass + 3 V t_pre
    assert choice.cost_ratio == pytest.approx((in_pass * pass_tokens + 3 * visits * pre) / (4 * visits * live))
    if expected == "precomputed":
        assert choice.passes >= MIN_PASSES and choice.cost_ratio < 1.0


def test_bf16_padding_is_named_as_the_reason():
    choice = decide_reference(10000, 1000, 1000, 100, 150, 150, bf16=True)
    assert choice.mode == "model" and "pads every batch" in choice.reason and "1.50 x" in choice.reason


def paired(prompt: int, chosen: int, rejected: int) -> dict:
    """A tokenized pair: ``prompt`` prompt tokens, then responses of the given lengths."""
    return {"chosen_input_ids": [1] * (prompt + chosen), "chosen_labels": [-100] * prompt + [1] * chosen,
            "rejected_input_ids": [1] * (prompt + rejected), "rejected_labels": [-100] * prompt + [1] * rejected}


def test_batch_tokens_count_the_layout_a_forward_runs():
    batch = [paired(10, 5, 3), paired(4, 8, 2)]
    # shared prompts: 2 prompts padded to 10, 4 responses padded to 8; one forward: 4 rows of 12 tokens
    assert batch_tokens(batch, share_prompts=True) == 2 * 10 + 4 * 8
    assert batch_tokens(batch, share_prompts=False) == 4 * 15
    assert batch_tokens(batch, share_prompts=True, pad_to=40) == 4 * 40


def test_choose_reference_counts_visits_from_steps_or_epochs(tmp_path):
    examples = [paired(10, 5 + i % 7, 3 + i % 5) for i in range(64)]
    short = get_preset("smoke", max_steps=4, per_device_train_batch_size=4, output_dir=str(tmp_path))
    assert choose_reference(short, examples).mode == "model"  # 16 visits of 64 examples
    long = short.replace(max_steps=-1, num_train_epochs=3.0)
    choice = choose_reference(long, examples)
    assert choice.mode == "precomputed" and choice.passes == pytest.approx(3.0)
    assert choose_reference(long.replace(max_steps=40), examples, world_size=2).passes == pytest.approx(5.0)
    assert choose_reference(long.replace(loss="sft"), examples).reason == "loss='sft' uses no reference"


def test_bf16_precomputed_pays_for_padding_to_the_longest_sequence(tmp_path):
    # one very long pair among short ones: padding every batch to it costs far more than the reference forward
    examples = [paired(8, 4, 4) for _ in range(63)] + [paired(8, 200, 4)]
    config = get_preset("smoke", max_steps=-1, num_train_epochs=10.0, per_device_train_batch_size=4,
                        output_dir=str(tmp_path))
    assert choose_reference(config, examples).mode == "precomputed"
    choice = choose_reference(config.replace(bf16=True), examples)
    assert choice.mode == "model" and "pads every batch" in choice.reason


def test_the_trainer_refuses_an_unresolved_auto(tmp_path):
    from rpo_tutorial.models.loading import load_tokenizer, tiny_model
    from rpo_tutorial.training.trainer import RPOTrainer

    tokenizer = load_tokenizer()
    config = get_preset("smoke", reference="auto", output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="reference='auto' is resolved by training.run.build_trainer"):
        RPOTrainer(model=tiny_model(len(tokenizer), hidden_size=16, num_layers=1), config=config)


def test_train_defaults_to_auto_and_prints_the_choice_at_start(tmp_path, capsys, monkeypatch):
    from rpo_lab.cli import main
    from rpo_tutorial.training import run

    class Stop(Exception):
        pass

    seen = {}

    def stop(*args, config, **kwargs):  # RPOTrainer is built after the choice: stop there
        seen["reference"] = config.reference
        raise Stop

    monkeypatch.setattr(run, "RPOTrainer", stop)
    with pytest.raises(Stop):
        main(["--debug", "train", "--preset", "smoke", "--output-dir", str(tmp_path / "run"), "--weighting",
              "uniform"])
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("reference: ")]
    # smoke: 4 steps x 4 pairs of the 16 demo rows = 1 pass: a live model
    assert lines == [lines[0]] and lines[0].startswith("reference: model (auto): each training example is seen 1")
    assert seen["reference"] == "model"
    with pytest.raises(Stop):
        main(["--debug", "train", "--preset", "smoke", "--output-dir", str(tmp_path / "run2"), "--weighting",
              "uniform", "--max-steps", "12"])
    assert "reference: precomputed (auto): each training example is seen 3 times" in capsys.readouterr().out
    assert seen["reference"] == "precomputed"
    with pytest.raises(Stop):  # a reference given on the command line is used as given, nothing printed
        main(["--debug", "train", "--preset", "smoke", "--output-dir", str(tmp_path / "run3"), "--weighting",
              "uniform", "--max-steps", "12", "--reference", "model"])
    assert "reference: " not in capsys.readouterr().out and seen["reference"] == "model"
