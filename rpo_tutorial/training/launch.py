"""Launch settings: who decides FSDP / DeepSpeed, what a run actually got, NaN agreement, the FSDP save.

One source of truth. ``accelerate launch --config_file configs/<x>.yaml`` exports the yaml as
environment variables (``ACCELERATE_USE_FSDP``, ``FSDP_STATE_DICT_TYPE``,
``ACCELERATE_USE_DEEPSPEED``, ...). When the launcher names FSDP or DeepSpeed, **the launcher's
config wins** and ``RPOConfig.fsdp`` steps aside (``to_training_arguments`` passes no FSDP
arguments, which would override the yaml's state-dict type and RAM-efficient loading). When it
names neither (``torchrun``, ``python``, a notebook), ``RPOConfig.fsdp=True`` builds the same
FSDP settings as ``configs/fsdp_mistral7b_8gpu.yaml`` (:data:`FSDP_SETTINGS`). Rank 0 prints
the effective settings at start (:func:`report_distribution`), and a run that asked for FSDP
but got DDP says so in a warning. Setting up FSDP in-process leaves ``os.environ`` as it was
(:func:`environment_restored`).
"""
from __future__ import annotations

import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

# What configs/fsdp_mistral7b_8gpu.yaml sets, as transformers' fsdp_config keys (torchrun / python route).
FSDP_SETTINGS = {"version": 2, "reshard_after_forward": True, "state_dict_type": "SHARDED_STATE_DICT",
                 "cpu_ram_efficient_loading": True, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP"}


# Written into os.environ by TrainingArguments / FullyShardedDataParallelPlugin / Accelerator(fsdp_plugin=...);
# left there, a later Accelerator in the same process (a notebook's next run) would build an FSDP plugin.
FSDP_ENVIRONMENT = ("ACCELERATE_USE_FSDP", "FSDP_CPU_RAM_EFFICIENT_LOADING")


@contextmanager
def environment_restored(names: tuple[str, ...] = FSDP_ENVIRONMENT) -> Iterator[None]:
    """Put ``os.environ[name]`` back as it was (set, or absent) on exit, for each of ``names``.

    Wraps where transformers and accelerate write these variables while an FSDP run is set up in
    this process; the values a launcher exported are what is restored. Nothing reads them after
    the accelerator exists, except ``from_pretrained`` (which should not see another run's FSDP).
    """
    previous = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _flag(name: str) -> bool:
    return os.environ.get(name, "false").strip().lower() in ("1", "true", "yes")


def launcher_distribution() -> str | None:
    """``"fsdp"`` or ``"deepspeed"`` when ``accelerate launch`` was given such a config, else None.

    Read from variables only the launcher exports (``accelerate.utils.launch``): an ``Accelerator``
    given a plugin also sets ``ACCELERATE_USE_FSDP`` / ``_DEEPSPEED`` itself, in this process.
    """
    if _flag("ACCELERATE_USE_DEEPSPEED") and "ACCELERATE_CONFIG_DS_FIELDS" in os.environ:
        return "deepspeed"
    if _flag("ACCELERATE_USE_FSDP") and "FSDP_VERSION" in os.environ:
        return "fsdp"
    return None


def fsdp_requested(config) -> bool:
    """True when this run should shard with FSDP: the launcher says so, or it names nothing and config.fsdp."""
    launcher = launcher_distribution()
    return launcher == "fsdp" or (launcher is None and config.fsdp)


def requested_engine(args) -> str | None:
    """``"deepspeed"`` or ``"fsdp"`` when these ``TrainingArguments`` (or the launcher) ask for that engine, else None.

    Known before the trainer exists, so the forward layout can be decided first
    (``training.forward_plan``). accelerate runs CPU processes with DDP even when FSDP is asked
    for (:func:`report_distribution` warns); the layout then stays the sharded engines' one
    forward, which is also exact under DDP.
    """
    if getattr(args, "deepspeed", None) or launcher_distribution() == "deepspeed" or _flag("ACCELERATE_USE_DEEPSPEED"):
        return "deepspeed"
    if getattr(args, "fsdp_plugin_args", None) is not None or getattr(args, "fsdp", None) \
            or launcher_distribution() == "fsdp" or _flag("ACCELERATE_USE_FSDP"):
        return "fsdp"
    return None


def effective_settings(trainer) -> dict:
    """What the accelerator actually does: the route, processes, precision, and FSDP / DeepSpeed details."""
    accelerator = trainer.accelerator
    route = "deepspeed" if trainer.is_deepspeed_enabled else "fsdp" if trainer.is_fsdp_enabled else (
        "ddp" if accelerator.num_processes > 1 else "single process")
    settings = {"route": route, "processes": accelerator.num_processes, "device": str(accelerator.device),
                "mixed_precision": accelerator.mixed_precision, "decided_by": launcher_distribution() and "launcher"
                or "RPOConfig"}
    if trainer.is_fsdp_enabled:
        plugin = accelerator.state.fsdp_plugin
        settings.update({
            "fsdp_version": plugin.fsdp_version, "reshard_after_forward": plugin.reshard_after_forward,
            "state_dict_type": str(plugin.state_dict_type).rsplit(".", 1)[-1],
            "cpu_ram_efficient_loading": plugin.cpu_ram_efficient_loading,
            "activation_checkpointing": plugin.activation_checkpointing,
            "wrap": getattr(plugin, "transformer_cls_names_to_wrap", None),
            "param_dtype": str(getattr(plugin.mixed_precision_policy, "param_dtype", None)),
        })
    if trainer.is_deepspeed_enabled:
        ds = accelerator.state.deepspeed_plugin.deepspeed_config
        settings.update({"zero_stage": ds.get("zero_optimization", {}).get("stage"),
                         "gradient_clipping": ds.get("gradient_clipping")})
    return settings


def report_distribution(trainer, config) -> dict:
    """Print the effective settings on rank 0; warn loudly when FSDP was asked for and DDP was used."""
    settings = effective_settings(trainer)
    distributed = settings["route"] != "single process" or fsdp_requested(config)  # one process: nothing to say
    if distributed and trainer.accelerator.is_main_process:
        print("[rpo-tutorial] distribution: " + ", ".join(f"{k}={v}" for k, v in settings.items()), file=sys.stderr)
    if fsdp_requested(config) and settings["route"] != "fsdp" and settings["processes"] > 1:
        message = (f"FSDP was requested ({'launcher config' if launcher_distribution() else 'RPOConfig.fsdp=True'}) "
                   f"but this run uses {settings['route'].upper()} on {settings['device']}: every process holds the "
                   "whole model. (accelerate runs CPU processes with DDP only.)")
        warnings.warn(message, stacklevel=2)
        if trainer.accelerator.is_main_process:
            print("\n" + "!" * 80 + f"\n[rpo-tutorial] WARNING: {message}\n" + "!" * 80 + "\n", file=sys.stderr)
    return settings


def any_process_flagged(flag: bool, device: torch.device) -> bool:
    """One all-reduce (MAX) of a local flag: True on every process when it is True on any."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


def save_fsdp_full_model(trainer, output_dir: str | Path) -> None:
    """Write an FSDP-trained model as a folder that ``AutoModelForCausalLM.from_pretrained`` loads.

    The sharded parameters are gathered once (every process takes part; rank 0 gets them on the
    CPU) into a plain model built on the meta device, which rank 0 saves with the tokenizer,
    whatever the checkpoint format (``SHARDED_STATE_DICT`` included). ``RPOTrainer.save_model``
    calls this under FSDP.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state_dict = get_model_state_dict(trainer.model, options=options)  # collective: every rank calls it
    if trainer.accelerator.is_main_process:
        from torch.distributed.fsdp import FSDPModule

        policy = trainer.accelerator.unwrap_model(trainer.model)
        plain_class = next(c for c in type(policy).__mro__ if not issubclass(c, FSDPModule))  # not FSDP<Model>
        with torch.device("meta"):
            plain = plain_class(policy.config)
        plain.load_state_dict(state_dict, strict=False, assign=True)
        if hasattr(plain, "tie_weights"):
            plain.tie_weights()
        for name, buffer in policy.named_buffers():  # non-persistent buffers (RoPE) are not in the state dict
            if name in state_dict:
                continue
            module_name, _, leaf = name.rpartition(".")
            module = plain.get_submodule(module_name) if module_name else plain
            module.register_buffer(leaf, buffer.detach().cpu().clone(), persistent=False)
        plain.save_pretrained(str(output_dir))
        if trainer.processing_class is not None:
            trainer.processing_class.save_pretrained(str(output_dir))
    trainer.accelerator.wait_for_everyone()


def paper_launch_commands(sft_dir: str = "runs/mistral-sft", rpo_dir: str = "runs/mistral-rpo") -> dict[str, list[str]]:
    """The paper run's command lines (README, notebook 05); each is parsed in tests/training/test_launch.py."""
    fsdp = ["accelerate", "launch", "--config_file", "configs/fsdp_mistral7b_8gpu.yaml", "-m", "rpo_lab"]
    zero3 = ["accelerate", "launch", "--config_file", "configs/deepspeed_zero3_8gpu.yaml", "-m", "rpo_lab"]
    rpo = ["train", "--preset", "paper", "--model", sft_dir, "--output-dir", rpo_dir]
    return {
        "1. SFT (FSDP2)": fsdp + ["sft", "--preset", "paper", "--output-dir", sft_dir],
        "2. RPO (FSDP2)": fsdp + rpo,
        "2'. RPO (DeepSpeed ZeRO-3; the launcher's config wins over the preset's fsdp)": zero3 + rpo,
        "2''. RPO with precomputed reference log-probs (no second model during training)":
            fsdp + rpo + ["--reference", "precomputed"],
        "resume an interrupted RPO run": fsdp + rpo + ["--resume-from-checkpoint", "last"],
    }
