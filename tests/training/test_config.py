"""RPOConfig validation, presets, TrainingArguments, and the CLI flags generated from the fields."""
from __future__ import annotations

import dataclasses

import pytest

from rpo_lab.cli import build_parser
from rpo_lab.cli.train import config_from_args
from rpo_tutorial.training.config import PAPER_NUM_GPUS, PRESETS, RPOConfig, get_preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_a_valid_config(name):
    config = get_preset(name)
    assert isinstance(config, RPOConfig)
    assert dataclasses.replace(config, beta=0.2).beta == 0.2


def test_paper_preset_matches_the_paper_settings():
    config = get_preset("paper")
    assert config.model == "mistralai/Mistral-7B-v0.1" and config.dataset == "hh"
    assert config.per_device_train_batch_size * PAPER_NUM_GPUS * config.gradient_accumulation_steps == 64
    assert (config.optimizer, config.learning_rate, config.warmup_steps, config.num_train_epochs) == ("rmsprop", 5e-7,
                                                                                                     150, 1.0)
    assert (config.beta, config.max_length, config.max_prompt_length) == (0.1, 512, 256)
    assert config.bf16 and config.fsdp and config.gradient_checkpointing
    assert config.effective_tau == 0.5
    assert config.replace(paired=False).effective_tau == 0.75


def test_paper_preset_training_arguments_use_fsdp_full_shard_with_activation_checkpointing():
    arguments = get_preset("paper").to_training_arguments()
    assert arguments.fsdp_config["activation_checkpointing"] is True
    assert arguments.fsdp_config["transformer_layer_cls_to_wrap"] == ["MistralDecoderLayer"]
    assert arguments.fsdp_config["reshard_after_forward"] is True  # full shard
    assert arguments.optim == "rmsprop" and arguments.bf16


def test_training_arguments_never_remove_unused_columns():
    arguments = get_preset("smoke", output_dir="somewhere").to_training_arguments()
    assert arguments.remove_unused_columns is False
    assert arguments.output_dir == "somewhere" and arguments.max_steps == 4
    assert arguments.save_strategy == "no"  # smoke: save_steps=0, only the final model is written
    assert get_preset("smoke", save_steps=3).to_training_arguments().save_steps == 3
    with pytest.raises(ValueError, match="remove_unused_columns"):
        get_preset("smoke").to_training_arguments(remove_unused_columns=True)


def test_pairing_defaults_depend_on_the_loss():
    assert RPOConfig(loss="kto").is_paired is False
    assert RPOConfig(loss="rpo").is_paired is True
    assert RPOConfig(loss="rpo", paired=False).effective_tau == 0.75
    assert RPOConfig(loss="rpo", tau=0.3, paired=False).effective_tau == 0.3


@pytest.mark.parametrize("changes, message", [
    ({"weighting": "diagonal", "paired": False}, "diagonal"),
    ({"tau": 0.0}, "tau"),
    ({"tau": -1.0}, "tau"),
    ({"alpha": 1.5}, "alpha"),
    ({"alpha": -0.1}, "alpha"),
    ({"loss": "kto", "paired": True}, "kto"),
    ({"loss": "dpo", "paired": False}, "paired"),
    ({"loss": "cdpo", "label_smoothing": 0.0}, "label_smoothing"),
    ({"loss": "ppo"}, "loss"),
    ({"weighting": "cosine"}, "weighting"),
    ({"contrast_scope": "world"}, "contrast_scope"),
    ({"reference": "none"}, "reference"),
    ({"placement": "inside"}, "placement"),
    ({"beta": 0.0}, "beta"),
    ({"beta": float("nan")}, "beta"),
    ({"max_length": 100, "max_prompt_length": 100}, "max_length"),
    ({"per_device_train_batch_size": 0}, "per_device_train_batch_size"),
    ({"save_steps": -1}, "save_steps"),
    ({"paired": "yes"}, "paired"),
    ({"model": "tiny-random:gpt2"}, "tiny"),
])
def test_invalid_settings_raise_at_construction(changes, message):
    with pytest.raises(ValueError, match=message):
        RPOConfig(**changes)


def test_replace_validates_again():
    config = RPOConfig(loss="rpo", weighting="diagonal")
    with pytest.raises(ValueError, match="diagonal"):
        dataclasses.replace(config, paired=False)


def test_get_preset_rejects_unknown_names_and_fields():
    with pytest.raises(ValueError, match="preset"):
        get_preset("huge")
    with pytest.raises(ValueError, match="betta"):
        get_preset("smoke", betta=0.1)


def _subcommand(name: str):
    parser = build_parser()
    commands = next(action for action in parser._actions if hasattr(action, "choices") and action.choices)
    return commands.choices[name]


def test_every_field_has_a_cli_flag():
    options = {option for action in _subcommand("train")._actions for option in action.option_strings}
    for field in dataclasses.fields(RPOConfig):
        flag = "--" + field.name.replace("_", "-")
        assert flag in options
        if isinstance(field.default, bool):
            assert "--no-" + field.name.replace("_", "-") in options


def test_cli_flags_override_the_preset_with_typed_values():
    parser = build_parser()
    args = parser.parse_args(["train", "--preset", "smoke", "--loss", "rpo", "--no-paired", "--tau", "0.3",
                              "--max-steps", "7", "--embedder", "none", "--bf16", "--weighting", "sinkhorn"])
    config = config_from_args(args)
    assert (config.paired, config.tau, config.max_steps, config.embedder, config.bf16) == (False, 0.3, 7, None, True)
    assert config.weighting == "sinkhorn"
    assert config.learning_rate == PRESETS["smoke"]["learning_rate"]  # not given: the preset's value


def test_cli_rejects_unknown_choices():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--loss", "ppo"])


def test_sft_command_forces_the_sft_loss():
    args = build_parser().parse_args(["sft", "--preset", "smoke", "--output-dir", "x"])
    config = config_from_args(args, loss="sft")
    assert config.loss == "sft" and config.output_dir == "x"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sft", "--loss", "dpo"])
