"""The end-to-end demo pipeline on the smoke preset (a tiny random model), and its building blocks."""
from __future__ import annotations

import json
import math

import pytest
import torch

from rpo_lab import cli
from rpo_tutorial.data.demo import load_demo
from rpo_tutorial.data.run_logs import read_metrics
from rpo_tutorial.data.sentiment import DEFAULT_TIE_MARGIN, sentiment_score
from rpo_lab.demo.pipeline import PIPELINE_SETTINGS, DemoSettings, check_settings, run_demo_pipeline, stage_config
from rpo_lab.demo.margins import SATURATED, markdown_training, training_summary
from rpo_lab.demo.report import markdown_results, spread

METHOD_LABELS = ["SFT", "DPO", "RPO", "Instruct (start)"]


def short_rows(split: str, count: int) -> list[dict]:
    """Demo rows with responses cut to a few words (short sequences keep the tiny model fast) and
    one-hot cluster vectors as prompt embeddings (no embedder needed)."""
    rows = load_demo(split)
    clusters = sorted({row["cluster"] for row in rows})
    picked = rows[:: max(1, len(rows) // count)][:count]
    return [{**row, "chosen": " ".join(row["chosen"].split()[:6]), "rejected": " ".join(row["rejected"].split()[:6]),
             "prompt_embedding": [float(row["cluster"] == c) for c in clusters]} for row in picked]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One smoke run shared by the end-to-end tests: 2 steps each of SFT, DPO, RPO, 3 held-out prompts."""
    output_dir = tmp_path_factory.mktemp("demo")
    settings = PIPELINE_SETTINGS["smoke"].replace(sft_rows=4, train_rows=4, batch_size=2, heldout_prompts=3,
                                                  max_new_tokens=4, sample_batch_size=3)
    threads = torch.get_num_threads()
    results = run_demo_pipeline(output_dir, preset="smoke", settings=settings, train_rows=short_rows("train", 4),
                                heldout_rows=short_rows("heldout", 3), progress=False)
    assert torch.get_num_threads() == threads  # the pipeline restores the caller's thread count
    return output_dir, settings, results


@pytest.mark.slow
def test_smoke_pipeline_writes_every_output_file(smoke_run):
    output_dir, _, results = smoke_run
    for name in ("results.json", "results.md", "samples.jsonl", "training_and_winrates.png",
                 "sft/metrics.jsonl", "dpo/metrics.jsonl", "rpo/metrics.jsonl"):
        assert (output_dir / name).is_file(), name
        assert (output_dir / name).stat().st_size > 0, name
    assert json.loads((output_dir / "results.json").read_text()) == json.loads(json.dumps(results))
    assert not (output_dir / "dpo" / "model").exists()  # save_models=False in the smoke settings


@pytest.mark.slow
def test_smoke_results_table_has_one_row_per_model_with_finite_numbers(smoke_run):
    output_dir, settings, results = smoke_run
    rows = results["rows"]
    assert [row["method"] for row in rows] == METHOD_LABELS
    n = settings.heldout_prompts * settings.samples_per_prompt
    for row in rows:
        assert math.isfinite(row["mean_judge_score"]) and -1 <= row["mean_judge_score"] <= 1
        if row["model"] == "sft":
            assert row["win_rate"] is None  # the baseline
            continue
        assert row["n"] == n and row["wins"] + row["ties"] + row["losses"] == n
        assert row["win_rate"] == pytest.approx((row["wins"] + row["ties"] / 2) / n)
        assert 0 <= row["ci_low"] <= row["win_rate"] <= row["ci_high"] <= 1
    for row in rows[1:3]:  # DPO and RPO: trained, with implicit-reward accuracy on the held-out pairs
        assert row["train_time_s"] > 0 and 0 <= row["implicit_reward_accuracy"] <= 1
        assert row["implicit_pairs"] == settings.heldout_prompts
    for row in rows[1:3]:  # the unsaturation check, from each run's metrics.jsonl
        beta = settings.beta * (settings.batch_size if row["model"] == "rpo" else 1)
        assert row["beta"] == pytest.approx(beta)
        assert row["effective_beta"] == pytest.approx(settings.beta)  # matched: beta / N for RPO
        assert math.isfinite(row["train_margin_nats"]) and math.isfinite(row["train_loss"])
        assert row["effective_beta_x_margin"] == pytest.approx(settings.beta * row["train_margin_nats"])
    table = (output_dir / "results.md").read_text()
    assert "Setup: SFT on 4 chosen responses" in table
    assert "## Unsaturation check" in table and "matched" in table
    for label in METHOD_LABELS:
        assert f"| {label} |" in table


@pytest.mark.slow
def test_smoke_win_counts_match_a_rescoring_of_the_samples(smoke_run):
    output_dir, settings, results = smoke_run
    samples = [json.loads(line) for line in (output_dir / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 * settings.heldout_prompts * settings.samples_per_prompt
    by_model: dict[str, list[dict]] = {}
    for sample in samples:
        assert sample["score"] == sentiment_score(sample["response"])
        by_model.setdefault(sample["model"], []).append(sample)
    for row in results["rows"][1:]:
        wins = ties = losses = 0
        for candidate, baseline in zip(by_model[row["model"]], by_model["sft"]):
            assert (candidate["prompt_id"], candidate["sample"]) == (baseline["prompt_id"], baseline["sample"])
            difference = candidate["score"] - baseline["score"]
            if abs(difference) <= DEFAULT_TIE_MARGIN:
                ties += 1
            elif difference > 0:
                wins += 1
            else:
                losses += 1
        assert (row["wins"], row["ties"], row["losses"]) == (wins, ties, losses)


@pytest.mark.slow
def test_dpo_and_rpo_start_from_the_same_model_and_see_the_same_batches(smoke_run):
    output_dir, settings, _ = smoke_run
    dpo, rpo = (read_metrics(output_dir / name) for name in ("dpo", "rpo"))
    dpo_steps = [r for r in dpo if "loss" in r]
    rpo_steps = [r for r in rpo if "loss" in r]
    assert len(dpo_steps) == len(rpo_steps) == settings.train_rows // settings.batch_size
    first_dpo, first_rpo = dpo_steps[0], rpo_steps[0]  # logged before any update changed the policies
    assert first_dpo["logps/chosen"] == pytest.approx(first_rpo["logps/chosen"], rel=1e-5)
    assert first_dpo["logps/rejected"] == pytest.approx(first_rpo["logps/rejected"], rel=1e-5)
    assert "weights/row_entropy" in first_rpo and "weights/row_entropy" not in first_dpo
    for record in dpo_steps + rpo_steps:
        assert math.isfinite(record["loss"]) and math.isfinite(record["rewards/margins"])


def test_stage_configs_share_data_order_steps_and_learning_rate(tmp_path):
    settings = DemoSettings(learning_rate=3e-6, batch_size=4, rpo_beta=0.4)
    dpo, rpo = (stage_config("demo", settings, loss, tmp_path / loss, False) for loss in ("dpo", "rpo"))
    for field in ("learning_rate", "per_device_train_batch_size", "seed", "num_train_epochs", "max_steps",
                  "warmup_steps", "reference", "model", "max_length"):
        assert getattr(dpo, field) == getattr(rpo, field), field
    assert (dpo.beta, rpo.beta) == (settings.beta, 0.4)
    assert rpo.weighting == "embedding" and rpo.effective_tau == 0.5 and rpo.is_paired
    matched = stage_config("demo", DemoSettings(), "rpo", tmp_path, False)
    assert matched.beta == pytest.approx(DemoSettings().beta * DemoSettings().batch_size)


@pytest.mark.parametrize("preset", ["demo", "smoke"])
def test_rpo_beta_is_matched_to_dpo_unless_overridden(preset, tmp_path):
    settings = PIPELINE_SETTINGS[preset]
    assert settings.rpo_beta is None  # the presets compare DPO and RPO at the same effective beta
    rpo = stage_config("demo", settings, "rpo", tmp_path, False)
    assert rpo.beta == pytest.approx(settings.beta * settings.batch_size)  # one contrast ~ DPO at beta
    assert stage_config("demo", settings, "dpo", tmp_path, False).beta == settings.beta
    assert settings.replace(batch_size=4).rpo_training_beta == pytest.approx(settings.beta * 4)
    assert stage_config("demo", settings.replace(rpo_beta=0.1), "rpo", tmp_path, False).beta == 0.1  # paper's


@pytest.mark.parametrize("changes, methods, field", [
    ({"batch_size": 0}, ("dpo", "rpo"), "batch_size"),
    ({"heldout_prompts": 0}, ("dpo", "rpo"), "heldout_prompts"),
    ({"trainable_layers": True}, ("dpo", "rpo"), "trainable_layers"),
    ({"epochs": 0}, ("dpo", "rpo"), "epochs"),
    ({}, ("kto",), "methods"),
    ({}, ("rpo", "rpo"), "methods"),
])
def test_check_settings_rejects_bad_values(changes, methods, field):
    with pytest.raises(ValueError, match=field):
        check_settings(DemoSettings().replace(**changes), methods)


def test_markdown_results_marks_the_baseline_and_missing_values():
    rows = [{"method": "SFT", "model": "sft", "win_rate": None, "ci_low": None, "ci_high": None, "n": None,
             "wins": None, "ties": None, "losses": None, "implicit_reward_accuracy": None,
             "mean_judge_score": 0.25, "train_time_s": 12.4},
            {"method": "DPO", "model": "dpo", "win_rate": 0.625, "ci_low": 0.3, "ci_high": 0.86, "n": 8,
             "wins": 4, "ties": 2, "losses": 2, "implicit_reward_accuracy": 0.75, "mean_judge_score": 0.5,
             "train_time_s": 30.0}]
    lines = markdown_results(rows).splitlines()
    assert lines[2] == "| SFT | baseline | - | - | - | 0.250 | 12 |"
    assert lines[3] == "| DPO | 62.5 (30.0-86.0) | 8 | 4 / 2 / 2 | 75.0 | 0.500 | 30 |"


def test_training_summary_averages_the_last_epoch_in_nats():
    records = [{"step": step, "loss": 0.7 - 0.1 * step, "rewards/margins": 0.8 * step, "rewards/accuracies": 0.5,
                "weights/diagonal_mass": 0.1 * step} for step in range(1, 5)]  # RPO at beta 0.8: 1, 2, 3, 4 nats
    summary = training_summary(records, beta=0.8, effective=0.1, steps_per_epoch=2)
    assert summary["train_margin_nats"] == pytest.approx(3.5)  # steps 3 and 4
    assert summary["effective_beta_x_margin"] == pytest.approx(0.35)
    assert summary["own_pair_beta"] == pytest.approx(0.8 * 0.35)  # beta x mean w_ii of steps 3 and 4
    assert summary["own_pair_beta_x_margin"] == pytest.approx(0.8 * 0.35 * 3.5)
    dpo_records = [{"step": 1, "loss": 0.6, "rewards/margins": 0.2, "rewards/accuracies": 1.0}]  # no weights
    dpo = training_summary(dpo_records, beta=0.1, effective=0.1, steps_per_epoch=2)
    assert summary["train_loss"] == pytest.approx(0.35) and summary["train_steps_averaged"] == 2
    assert dpo["own_pair_beta"] == 0.1 and dpo["own_pair_beta_x_margin"] == pytest.approx(0.2)
    assert training_summary([], beta=0.1, effective=0.1, steps_per_epoch=2) == {}


@pytest.mark.parametrize("margin, verdict", [(4.0, "unsaturated"), (95.0, "SATURATED")])
def test_markdown_training_states_the_verdict(margin, verdict):
    row = {"method": "DPO", "beta": 0.1, "effective_beta": 0.1, "own_pair_beta": 0.1, "train_margin_nats": margin,
           "effective_beta_x_margin": 0.1 * margin, "own_pair_beta_x_margin": 0.1 * margin, "train_loss": 0.5,
           "train_reward_accuracy": 0.75}
    text = markdown_training([row, {"method": "SFT"}])
    scaled = f"{0.1 * margin:.2f}"
    assert text.splitlines()[2] == f"| DPO | 0.1 | 0.1 / 0.1 | {margin:.2f} | {scaled} / {scaled} | 0.500 | 75.0 |"
    assert text.endswith(f"largest mean beta x margin {scaled}, lowest train loss 0.500 ({verdict}).")
    assert 0.1 * margin != SATURATED
    assert markdown_training([{**row, "train_margin_nats": 1.0, "train_loss": 0.01}]).endswith("(SATURATED).")


def test_demo_command_passes_its_flags_to_the_pipeline(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr("rpo_lab.demo.pipeline.run_demo_pipeline",
                        lambda output_dir, **kwargs: calls.append((output_dir, kwargs)))
    assert cli.main(["demo", "--preset", "smoke", "--output-dir", str(tmp_path), "--train-rows", "6",
                     "--rpo-beta", "0.8", "--epochs", "3", "--instruct"]) == 0
    (output_dir, kwargs), = calls
    assert str(output_dir) == str(tmp_path) and kwargs["preset"] == "smoke"
    assert kwargs["figure_copy"] is None  # smoke runs never overwrite figures/demo_results.png
    expected = PIPELINE_SETTINGS["smoke"].replace(train_rows=6, rpo_beta=0.8, epochs=3.0, include_instruct=True)
    assert kwargs["settings"] == expected
    calls.clear()
    assert cli.main(["demo", "--output-dir", str(tmp_path)]) == 0
    assert calls[0][1]["settings"] == PIPELINE_SETTINGS["demo"]
    assert str(calls[0][1]["figure_copy"]).endswith("figures/demo_results.png")


def test_spread_takes_evenly_spaced_rows():
    rows = [{"index": i} for i in range(40)]
    assert [row["index"] for row in spread(rows, 20)] == list(range(0, 40, 2))
    assert [row["index"] for row in spread(rows, 3)] == [0, 13, 26]
    assert spread(rows, None) == rows and spread(rows, 50) == rows
