"""Held-out implicit-reward accuracy: the tie rule, the interval, the log-prob changes, the command."""
from __future__ import annotations

import json
import math

import pytest
import torch

from rpo_tutorial.evaluation.evaluate import evaluate_preferences, logprob_changes, preference_accuracy


def brute_force_wilson(p: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def test_ties_count_half_and_the_interval_is_wilson_on_that_share():
    chosen = torch.tensor([1.0, 2.0, 0.0, -1.0, 0.5, 3.0, 0.0])
    rejected = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.5, 4.0, -2.0])
    # by hand: wins at 0, 1, 6; ties at 2, 4; losses at 3, 5
    summary = preference_accuracy(chosen, rejected)
    assert (summary["wins"], summary["ties"], summary["losses"], summary["n"]) == (3, 2, 2, 7)
    assert summary["accuracy"] == pytest.approx((3 + 1) / 7)
    assert (summary["ci_low"], summary["ci_high"]) == pytest.approx(brute_force_wilson(4 / 7, 7))


def test_a_model_equal_to_its_reference_is_at_one_half_not_zero():
    zeros = torch.zeros(12)
    summary = preference_accuracy(zeros, zeros)
    assert summary["accuracy"] == 0.5 and summary["ties"] == 12
    assert summary["ci_low"] < 0.5 < summary["ci_high"]


def test_log_prob_changes_and_drift_match_a_loop():
    pc, pr = torch.tensor([-10.0, -20.0]), torch.tensor([-12.0, -25.0])
    rc, rr = torch.tensor([-11.0, -19.0]), torch.tensor([-11.0, -24.0])
    result = logprob_changes(pc, pr, rc, rr)
    assert result["chosen_logp_change"] == pytest.approx((1.0 - 1.0) / 2)
    assert result["rejected_logp_change"] == pytest.approx((-1.0 - 1.0) / 2)
    assert result["drift"] == pytest.approx((1 + 1 + 1 + 1) / 4)


def test_bad_log_ratios_are_refused():
    with pytest.raises(ValueError, match="one length"):
        preference_accuracy(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="finite"):
        preference_accuracy(torch.tensor([float("nan")]), torch.zeros(1))


def test_evaluate_a_model_against_itself_gives_only_ties():
    from rpo_tutorial.data.demo import load_demo
    from rpo_tutorial.models.loading import load_tokenizer, tiny_model

    tokenizer = load_tokenizer()
    model = tiny_model(len(tokenizer))
    rows = load_demo("heldout")[:4]
    summary = evaluate_preferences(model, model, tokenizer, rows, max_length=96, max_prompt_length=64,
                                   progress=False)
    assert (summary["ties"], summary["accuracy"], summary["drift"]) == (4, 0.5, 0.0)
    with pytest.raises(ValueError, match="missing field"):
        evaluate_preferences(model, model, tokenizer, [{"prompt": "hi", "chosen": "a"}], progress=False)


def test_evaluate_command_writes_the_summary(tmp_path, capsys):
    from rpo_lab.cli import main
    from rpo_tutorial.models.loading import load_tokenizer, tiny_model

    tokenizer = load_tokenizer()
    folder = tmp_path / "model"
    tiny_model(len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    output = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(folder), "--reference", str(folder), "--dataset", "demo:heldout",
                 "--max-rows", "3", "--max-length", "96", "--max-prompt-length", "64", "--output", str(output)]) == 0
    summary = json.loads(output.read_text())
    assert (summary["n"], summary["ties"], summary["accuracy"]) == (3, 3, 0.5)
    assert "3 ties" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no such file"):
        main(["evaluate", "--model", str(folder), "--reference", str(folder), "--dataset", str(tmp_path / "nope")])
