"""``rpo-tutorial sft`` and ``rpo-tutorial train``: a preset plus one flag per RPOConfig field.

    rpo-tutorial train --preset smoke --output-dir /tmp/smoke          # seconds, CPU
    rpo-tutorial sft   --preset demo --output-dir outputs/sft
    rpo-tutorial train --preset demo --model outputs/sft --loss rpo --tau 0.3 --no-paired
    torchrun --nproc_per_node 2 -m rpo_lab train --preset smoke --contrast-scope global  # 2 CPU processes

Flags are generated from the dataclass fields (``max_prompt_length`` -> ``--max-prompt-length``):
booleans get ``--flag`` / ``--no-flag``; optional fields also accept ``none``. A flag that is not
given keeps the preset's value.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import re
import types
import typing

from rpo_tutorial.training.config import FIELD_CHOICES, PRESETS, RPOConfig, get_preset
from rpo_tutorial.training.official import CONVENTION_NAMES, apply_convention

_NONE_WORDS = ("none", "null")


def _field_comments() -> dict[str, str]:
    """The ``# comment`` after each field in the RPOConfig source, used as the flag's help."""
    try:
        source = inspect.getsource(RPOConfig)
    except (OSError, TypeError):  # pragma: no cover - source unavailable (e.g. frozen app)
        return {}
    return {name: text.strip() for name, text in re.findall(r"^\s{4}(\w+): [^\n#]*#\s*(.*)$", source, re.M)}


def _base_type(annotation) -> tuple[type, bool]:
    """(scalar type, accepts None) of a field annotation such as ``float | None``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [member for member in typing.get_args(annotation) if member is not type(None)]
        return members[0], True
    return annotation, False


def _optional(kind: type):
    def parse(text: str):
        return None if text.lower() in _NONE_WORDS else kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def add_config_arguments(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = (),
                         preset: str | None = None) -> None:
    """One flag per RPOConfig field (default: not set, so the preset's value stays).

    ``preset``: show that preset's value of each field in the flag's help.
    """
    hints = typing.get_type_hints(RPOConfig)
    shown = get_preset(preset) if preset in PRESETS else None
    comments = _field_comments()
    group = parser.add_argument_group("configuration (overrides the preset)")
    for field in dataclasses.fields(RPOConfig):
        if field.name in exclude:
            continue
        kind, optional = _base_type(hints[field.name])
        flag = "--" + field.name.replace("_", "-")
        text = comments.get(field.name, "").replace("%", "%%")
        if shown is not None:
            text += f" ({preset} preset: {getattr(shown, field.name)!r})".replace("%", "%%")
        options = dict(dest=field.name, default=argparse.SUPPRESS, help=text)
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **options)
        else:
            choices = FIELD_CHOICES.get(field.name)
            metavar = kind.__name__.upper() + ("|none" if optional else "")
            metavar = "{" + ",".join(choices) + "}" if choices else metavar
            group.add_argument(flag, type=_optional(kind) if optional else kind, metavar=metavar, choices=choices,
                               **options)


def config_from_args(args: argparse.Namespace, **forced) -> RPOConfig:
    """The preset named by ``args.preset`` with every given flag (and ``forced`` values) applied."""
    names = {field.name for field in dataclasses.fields(RPOConfig)}
    overrides = {name: value for name, value in vars(args).items() if name in names}
    if "num_train_epochs" in overrides and "max_steps" not in overrides:
        overrides["max_steps"] = -1  # the epochs asked for win over a preset's max_steps
    overrides.update(forced)
    convention = getattr(args, "convention", "paper")
    if convention == "paper":
        return get_preset(args.preset, **overrides)
    return apply_convention(get_preset(args.preset), convention, **overrides)


def _run(args: argparse.Namespace, stage: str) -> int:
    from rpo_tutorial.training.run import run_sft, run_training

    from rpo_tutorial.training.output_dir import UsageError
    from rpo_lab.memory_hint import memory_line

    try:
        config = config_from_args(args, **({"loss": "sft"} if stage == "sft" else {}))
    except ValueError as error:
        raise UsageError(f"invalid configuration: {error}") from None
    from rpo_tutorial.training.threads import apply_num_threads

    resume = args.resume_from_checkpoint
    resume = True if resume == "last" else resume
    if os.environ.get("RANK", "0") == "0":  # torchrun / accelerate set RANK; the process group is not up yet
        print(memory_line(config), flush=True)
    runner = run_sft if stage == "sft" else run_training
    threads = apply_num_threads(None)
    budget = f"{config.max_steps} steps" if config.max_steps > 0 else f"{config.num_train_epochs:g} epoch(s)"
    print(f"{stage}: preset {args.preset}, model {config.model}, dataset {config.dataset}, {budget}, rows "
          f"{config.max_train_rows or 'all'}, lr {config.learning_rate:g}, beta {config.beta:g}, loss {config.loss}"
          + (f", weighting {config.weighting}, effective tau {config.effective_tau:g}" if config.loss == "rpo" else "")
          + f", {threads} torch thread(s)", flush=True)
    options = {"eval_rows": load_eval_rows(args.eval_dataset, args.strict)} if getattr(args, "eval_dataset", None) \
        else {}
    options["on_reference_choice"] = lambda choice: os.environ.get("RANK", "0") == "0" and print(choice.line())
    result = runner(config, resume_from_checkpoint=resume, overwrite=args.overwrite, strict=args.strict, **options)
    if result.trainer.is_world_process_zero():
        print(result.tokenization.summary())
        if result.sides is not None:
            print(result.sides.summary())
        print(f"{stage}: {result.global_step} steps, mean loss {result.train_loss:.4f}; model in "
              f"{result.output_dir}, metrics in {result.metrics_path}")
    _leave_process_group()
    return 0


def _leave_process_group() -> None:
    """Every rank leaves the process group together before exiting (under DeepSpeed a rank that exits with
    the group still up can abort in its communication threads: "terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _add_command(subparsers, name: str, help_text: str, exclude: tuple[str, ...]) -> None:
    parser = subparsers.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
    parser.add_argument("--preset", default="demo", choices=sorted(PRESETS),
                        help="starting configuration: smoke (seconds, tiny model), demo (bundled 135M model, CPU), "
                             "colab (one GPU), paper (Mistral-7B, 8 GPUs)")
    parser.add_argument("--convention", default="paper", choices=CONVENTION_NAMES,
                        help="official: the official code's behaviour (diagonal weights on the loss term, "
                             "uniform weights of 1, alpha 0.8, per-device contrasts, full-prompt embeddings)")
    parser.add_argument("--resume-from-checkpoint", default=None, metavar="PATH|last",
                        help="continue from a checkpoint folder, or 'last' for the latest one in --output-dir "
                             "(only with the configuration saved there)")
    parser.add_argument("--overwrite", action="store_true",
                        help="clear --output-dir first when it holds another run (otherwise such a folder is refused)")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first invalid row of a data file, naming it (default: skip and count them)")
    if name == "train":
        parser.add_argument("--eval-dataset", default=None, metavar="FILE|demo:heldout",
                            help="held-out preference rows: eval_rewards/accuracies, ... logged every logging_steps")
    add_config_arguments(parser, exclude=exclude, preset=_preset_from_argv())
    if name == "train":  # the CLI decides model / precomputed from the data (training/reference_choice.py)
        parser.set_defaults(reference="auto")
    parser.set_defaults(handler=lambda args: _run(args, name))


def _preset_from_argv() -> str:
    """The ``--preset`` given on the command line (default demo), so ``--help`` shows its values."""
    import sys

    argv = sys.argv[1:]
    for index, word in enumerate(argv):
        value = argv[index + 1] if word == "--preset" and index + 1 < len(argv) else (
            word.split("=", 1)[1] if word.startswith("--preset=") else None)
        if value in PRESETS:
            return value
    return "demo"


def load_eval_rows(name: str, strict: bool = False) -> list[dict]:
    """``--eval-dataset``: ``demo:<split>`` or a preference file (``strict``: raise on an invalid row)."""
    from pathlib import Path

    from rpo_tutorial.data.preferences import open_dataset

    if not name.startswith("demo:") and not Path(name).expanduser().is_file():
        raise SystemExit(f"--eval-dataset {name!r}: no such file (or use demo:heldout)")
    return open_dataset(name, strict=strict)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sft`` and ``train`` to the ``rpo-tutorial`` command line."""
    _add_command(subparsers, "sft", "supervised fine-tuning on the chosen responses (the paper's first stage)",
                 exclude=("loss",))
    _add_command(subparsers, "train", "preference training: rpo (default), dpo, ipo, cdpo, kto", exclude=())
