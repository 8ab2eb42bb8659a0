"""Launch settings: every launch command of the README and notebook 05 parses and validates, the
launcher's config wins over the preset, and the preset's own FSDP settings equal the yaml's."""
from __future__ import annotations

import importlib.util
import os
import re
import shlex
from pathlib import Path

import pytest
import yaml

from rpo_lab.cli import build_parser
from rpo_lab.cli.train import config_from_args
from rpo_tutorial.training.config import get_preset
from rpo_tutorial.training.launch import FSDP_SETTINGS, launcher_distribution, paper_launch_commands

ROOT = Path(__file__).parents[2]
LAUNCHER_ENV = ("ACCELERATE_USE_FSDP", "FSDP_VERSION", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_CONFIG_DS_FIELDS")


def readme_commands() -> list[list[str]]:
    """Every ``accelerate launch`` / ``torchrun`` line of the README (continuations joined)."""
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    lines = [line.split("#")[0].strip() for line in text.splitlines()]
    return [shlex.split(line) for line in lines if line.startswith(("accelerate launch", "torchrun"))]


COMMANDS = [*paper_launch_commands().values(), *readme_commands()]


def launcher_environment(command: list[str]) -> tuple[dict, list[str]]:
    """What the launcher would export, and the rpo_tutorial arguments after ``-m rpo_lab``."""
    if command[0] == "torchrun":
        from torch.distributed.run import get_args_parser

        args = get_args_parser().parse_args(command[1:])
        assert args.module and args.training_script == "rpo_lab"
        return {}, args.training_script_args
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(command[2:])
    assert (ROOT / args.config_file).exists(), args.config_file
    args, _, _ = _validate_launch_command(args)
    assert args.module and args.training_script == "rpo_lab" and args.num_processes == 8
    if args.use_deepspeed:  # prepare_deepspeed_cmd_env needs deepspeed installed; the two flags it sets
        return {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_CONFIG_DS_FIELDS": "zero_stage"}, \
            args.training_script_args
    return prepare_multi_gpu_env(args), args.training_script_args


@pytest.fixture
def clean_environment(monkeypatch):
    for name in LAUNCHER_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_there_are_readme_and_notebook_commands():
    assert len(readme_commands()) >= 6 and len(paper_launch_commands()) >= 5


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c[3:5] + c[-6:]) for c in COMMANDS])
def test_every_launch_command_validates_up_to_the_training_arguments(command, clean_environment, tmp_path):
    environment, script_args = launcher_environment(command)
    for name, value in environment.items():
        if name.startswith(("ACCELERATE_USE", "FSDP_VERSION", "ACCELERATE_CONFIG")):
            clean_environment.setenv(name, value)
    parsed = build_parser().parse_args(script_args)
    stage = script_args[0]
    config = config_from_args(parsed, **({"loss": "sft"} if stage == "sft" else {}))
    launcher = launcher_distribution()
    if launcher != "deepspeed" or importlib.util.find_spec("deepspeed"):  # TrainingArguments imports it
        arguments = config.replace(output_dir=str(tmp_path)).to_training_arguments()
        if launcher is not None:  # the yaml decides: no FSDP arguments that would override it
            assert arguments.fsdp_plugin_args is None
            # FSDP's yaml checkpoints the layers itself; ZeRO-3's does not, so there HF's checkpointing stays on
            assert arguments.activation_checkpointing == (launcher == "deepspeed" and config.gradient_checkpointing)
    if launcher == "deepspeed":
        settings = yaml.safe_load((ROOT / command[3]).read_text())["deepspeed_config"]
        assert settings["gradient_clipping"] == config.max_grad_norm  # no mismatch error at Trainer start
        assert settings["zero3_save_16bit_model"] is True  # the final folder gets a consolidated model
        assert settings["gradient_accumulation_steps"] == config.gradient_accumulation_steps


def test_the_fsdp_yaml_and_the_presets_own_fsdp_settings_agree():
    settings = yaml.safe_load((ROOT / "configs/fsdp_mistral7b_8gpu.yaml").read_text())["fsdp_config"]
    assert settings["fsdp_version"] == FSDP_SETTINGS["version"]
    assert settings["fsdp_state_dict_type"] == FSDP_SETTINGS["state_dict_type"]
    assert settings["fsdp_cpu_ram_efficient_loading"] == FSDP_SETTINGS["cpu_ram_efficient_loading"]
    assert settings["fsdp_reshard_after_forward"] == FSDP_SETTINGS["reshard_after_forward"]
    assert settings["fsdp_auto_wrap_policy"] == FSDP_SETTINGS["auto_wrap_policy"]
    paper = get_preset("paper")
    assert settings["fsdp_transformer_layer_cls_to_wrap"] == paper.fsdp_layer_class
    assert settings["fsdp_activation_checkpointing"] == paper.gradient_checkpointing


def test_without_a_launcher_config_the_preset_builds_the_yamls_fsdp_settings(clean_environment, tmp_path):
    plugin = get_preset("paper", output_dir=str(tmp_path)).to_training_arguments().fsdp_plugin_args
    assert plugin["fsdp_version"] == 2 and plugin["state_dict_type"] == "SHARDED_STATE_DICT"
    assert plugin["cpu_ram_efficient_loading"] is True and plugin["activation_checkpointing"] is True


def test_an_accelerator_given_a_plugin_is_not_mistaken_for_the_launcher(clean_environment):
    clean_environment.setenv("ACCELERATE_USE_FSDP", "true")  # what Accelerator(fsdp_plugin=...) sets
    assert launcher_distribution() is None
    clean_environment.setenv("FSDP_VERSION", "2")  # only accelerate launch exports this one
    assert launcher_distribution() == "fsdp"


def test_no_fsdp_with_a_layer_class_is_valid_for_deepspeed():
    assert get_preset("paper", fsdp=False).fsdp_layer_class == "MistralDecoderLayer"


def test_readme_has_no_placeholder_in_launch_commands():
    assert not any("..." in " ".join(command) for command in readme_commands())
    assert not re.search(r"accelerate starts CPU processes only (through|via) MPI", (ROOT / "README.md").read_text())


def test_environment_restored_puts_back_set_and_absent_variables(clean_environment):
    from rpo_tutorial.training.launch import environment_restored

    clean_environment.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")  # e.g. exported by a launcher
    with environment_restored():
        os.environ["ACCELERATE_USE_FSDP"] = "true"
        os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = "True"
    assert "ACCELERATE_USE_FSDP" not in os.environ
    assert os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] == "false"


def test_an_fsdp_trainer_set_up_in_process_leaves_the_environment_as_it_was(clean_environment, tmp_path):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    from rpo_tutorial.models.loading import tiny_model
    from rpo_tutorial.training.trainer import RPOTrainer

    clean_environment.delenv("FSDP_CPU_RAM_EFFICIENT_LOADING", raising=False)
    seen = {}
    original = Accelerator.__init__

    def spy(self, *args, **kwargs):  # what accelerate writes while the trainer is set up
        original(self, *args, **kwargs)
        seen.update({name: os.environ.get(name) for name in ("ACCELERATE_USE_FSDP", "FSDP_CPU_RAM_EFFICIENT_LOADING")})

    clean_environment.setattr(Accelerator, "__init__", spy)
    config = get_preset("smoke", fsdp=True, fsdp_layer_class="LlamaDecoderLayer", reference="precomputed",
                        output_dir=str(tmp_path))
    try:  # one process: transformers refuses FSDP, but only after the accelerator was made (and the variables set);
        # the 2-process runs of dist_scripts/fsdp_runs.py check the same after successful FSDP set-ups
        with pytest.raises(ValueError, match="only works in distributed training"):
            RPOTrainer(model=tiny_model(64, hidden_size=16, num_layers=1), config=config)
    finally:
        AcceleratorState._reset_state()
        GradientState._reset_state()
    assert seen == {"ACCELERATE_USE_FSDP": "true", "FSDP_CPU_RAM_EFFICIENT_LOADING": "True"}  # the check can fail
    assert "ACCELERATE_USE_FSDP" not in os.environ and "FSDP_CPU_RAM_EFFICIENT_LOADING" not in os.environ
