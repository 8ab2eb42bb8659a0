"""A run interrupted and resumed from its checkpoint continues with the same data and the same losses."""
from __future__ import annotations

import random

import pytest

from rpo_tutorial.data.run_logs import read_metrics
from rpo_tutorial.models.loading import load_tokenizer, tiny_model
from rpo_tutorial.training.config import get_preset
from rpo_tutorial.training.run import run_training


def make_rows(count: int = 24) -> list[dict]:
    rng = random.Random(7)
    words = "bright calm kind warm lovely gentle grey cold loud late broken dull".split()
    return [{"prompt": f"Tell me about place number {i}.", "chosen": " ".join(rng.choices(words[:6], k=5)),
             "rejected": " ".join(rng.choices(words[6:], k=5)),
             "prompt_embedding": [rng.gauss(0.0, 1.0) for _ in range(4)]} for i in range(count)]


def losses_by_step(path) -> dict[int, float]:
    return {row["step"]: row["loss"] for row in read_metrics(path) if "loss" in row}


def test_resumed_run_repeats_the_losses_of_the_uninterrupted_run(tmp_path):
    config = get_preset("smoke", max_steps=6, save_steps=3, per_device_train_batch_size=2, max_length=40,
                        max_prompt_length=20, output_dir=str(tmp_path / "run"))
    rows = make_rows()
    tokenizer = load_tokenizer()

    def fresh_model():  # what the smoke preset builds, only smaller (fast checkpoints)
        return tiny_model(len(tokenizer), hidden_size=32, num_layers=1, seed=config.seed)

    run_training(config, rows=rows, policy=fresh_model(), tokenizer=tokenizer)
    uninterrupted = losses_by_step(tmp_path / "run")
    assert sorted(uninterrupted) == [1, 2, 3, 4, 5, 6]
    assert (tmp_path / "run" / "checkpoint-3").is_dir()

    # a fresh process would rebuild everything from the config, then resume from checkpoint-3
    resumed = run_training(config, rows=rows, resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-3"),
                           policy=fresh_model(), tokenizer=tokenizer)
    assert resumed.global_step == 6
    after = losses_by_step(tmp_path / "run")
    assert sorted(after) == [1, 2, 3, 4, 5, 6]  # steps 4-6 replaced, not duplicated
    rows_per_step = [row["step"] for row in read_metrics(tmp_path / "run") if "loss" in row]
    assert len(rows_per_step) == len(set(rows_per_step))
    for step in (4, 5, 6):
        assert after[step] == pytest.approx(uninterrupted[step], rel=1e-5, abs=1e-6), step
    assert len({round(uninterrupted[s], 6) for s in (4, 5, 6)}) > 1  # the losses actually move
    # the summary is the mean over all six steps, not over the three resumed ones (issue 13, item 9)
    true_mean = sum(uninterrupted.values()) / 6
    assert resumed.train_loss == pytest.approx(true_mean, rel=1e-5)
    assert abs(true_mean - sum(uninterrupted[s] for s in (4, 5, 6)) / 3) > 1e-4  # the two means differ here
    summary = [row for row in read_metrics(tmp_path / "run") if "train_loss" in row]
    assert summary[-1]["train_loss"] == pytest.approx(true_mean, rel=1e-5)
