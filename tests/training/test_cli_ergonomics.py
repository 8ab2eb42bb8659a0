"""CLI ergonomics: epochs are not overridden by a preset's max_steps, --help shows the preset's values,
--eval-dataset builds an evaluated trainer, and every command shares the load-based thread choice."""
from __future__ import annotations

import argparse

import pytest

from rpo_lab.cli.train import add_config_arguments, config_from_args


def parse(argv: list[str], preset: str = "demo") -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default=preset)
    add_config_arguments(parser, preset=preset)
    return parser.parse_args(argv)


def test_num_train_epochs_is_not_silently_overridden_by_the_presets_max_steps():
    config = config_from_args(parse(["--num-train-epochs", "1"]))
    assert config.max_steps == -1 and config.num_train_epochs == 1.0
    both = config_from_args(parse(["--num-train-epochs", "1", "--max-steps", "5"]))
    assert both.max_steps == 5  # both given: max_steps wins, as in transformers
    assert config_from_args(parse([])).max_steps == 20  # the demo preset's own budget when nothing is said


def test_help_shows_each_flags_value_in_the_chosen_preset():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, preset="smoke")
    text = parser.format_help()
    assert "(smoke preset: 4)" in text  # max_steps
    assert "(smoke preset: 0.001)" in text  # learning_rate


def test_eval_dataset_gives_the_trainer_an_evaluated_held_out_set(tmp_path):
    from rpo_tutorial.data.demo import load_demo
    from rpo_tutorial.training.config import get_preset
    from rpo_tutorial.training.run import build_trainer

    config = get_preset("smoke", loss="dpo", reference="precomputed", output_dir=str(tmp_path), max_train_rows=4)
    trainer, _ = build_trainer(config, eval_rows=load_demo("heldout")[:3])
    assert len(trainer.eval_dataset) == 3
    assert all("reference_chosen_logps" in example for example in trainer.eval_dataset)
    assert trainer.args.eval_strategy == "steps" and trainer.args.eval_steps == config.logging_steps


@pytest.mark.parametrize("cores, load, expected", [(2, 0.1, 2), (2, 1.2, 1), (2, 9.0, 1), (8, 3.0, 5)])
def test_thread_choice_leaves_cores_other_processes_use(cores, load, expected):
    from rpo_tutorial.training.threads import choose_num_threads

    assert choose_num_threads(cores=cores, load=load) == expected
