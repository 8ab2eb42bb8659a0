"""``rpo-tutorial study``: train every method on every seed, then write the report with power and corrected intervals.

    python -m rpo_lab study --report-dir docs/study/hh                       # the HH study (SmolLM2, ../shared/data)
    python -m rpo_lab study --dataset my.jsonl --heldout my_heldout.jsonl \
        --methods dpo,rpo-emb-matched --seeds 0,1                            # your own preference pairs
    python -m rpo_lab study --preset smoke --output-dir /tmp/study           # tiny random model on the demo pairs
    python -m rpo_lab study --output-dir outputs/study-hh --report-only      # rewrite the report from the cache
    python -m rpo_lab study --preset synthetic --report-dir docs/study       # the synthetic study (issue 20)

The ``synthetic*`` presets run the synthetic-world study (``rpo_lab.world``; see ``rpo_lab/world/cli.py``);
the others the real-model study (``rpo_lab.study.runner``): SmolLM2's top layers trained on a
preference file split by prompt into train / validation (each method's learning rate, chosen from
one grid) / held-out (the comparison).

Interrupted? Run the same command again: finished runs are read from ``OUTPUT_DIR/runs`` and
never retrained.
"""
from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys

from rpo_lab.study.settings import METHODS, StudySettings, canonical_methods
from rpo_lab.world.presets import SYNTHETIC_PRESETS
from rpo_tutorial.training.output_dir import UsageError

STUDY_PRESETS: dict[str, StudySettings] = {
    "full": StudySettings(),  # the committed HH study (docs/study/hh/)
    # a tiny random model on the packaged demo pairs: the whole machinery in seconds (tests, CI)
    "smoke": StudySettings(model="tiny-random:llama", dataset="demo", methods=("dpo", "rpo-emb"), seeds=(0, 1),
                           learning_rates=(1e-3, 3e-3), heldout_pairs=24, validation_pairs=8, train_pairs=32,
                           steps=3, batch_size=4, max_length=48, max_prompt_length=32, bootstrap_samples=200),
}
_FLAGS = {  # flag -> (field, type, help)
    "--dataset": ("dataset", str, "preference file (paired JSONL / JSON / CSV / parquet, or HH transcripts); "
                  "default: the HH harmless-base test file in ../shared/data"),
    "--heldout": ("heldout", str, "held-out preference file (default: split off --dataset by prompt)"),
    "--model": ("model", str, "'bundled' (SmolLM2-135M-Instruct), a local model folder, or tiny-random:llama"),
    "--methods": ("methods", str, f"methods, from {tuple(METHODS)}"),
    "--seeds": ("seeds", int, "evaluation seeds (one data order each)"),
    "--tuning-seeds": ("tuning_seeds", int, "seeds of the learning-rate choice on validation"),
    "--learning-rates": ("learning_rates", float, "the grid each method chooses its rate from on validation"),
    "--steps": ("steps", int, "optimizer steps per run"),
    "--batch-size": ("batch_size", int, "pairs per step"),
    "--beta": ("beta", float, "DPO's beta; matched RPO uses beta x batch size"),
    "--heldout-pairs": ("heldout_pairs", int, "held-out pairs split off --dataset (at most half of it)"),
    "--validation-pairs": ("validation_pairs", int, "validation pairs (at most a sixth of --dataset)"),
    "--train-pairs": ("train_pairs", int, "cap on the train pairs"),
    "--trainable-layers": ("trainable_layers", int, "top decoder layers trained"),
    "--max-length": ("max_length", int, "prompt + response tokens"),
    "--max-prompt-length": ("max_prompt_length", int, "prompt tokens kept (its end)"),
    "--num-threads": ("num_threads", int, "torch threads (fixed: a rerun gives the same numbers)"),
}
_LISTS = ("seeds", "tuning_seeds", "learning_rates", "methods")


def _value(flag: str, field: str, kind: type, value: str):
    try:
        if field in _LISTS:
            return tuple(kind(word) for word in value.replace(",", " ").split())
        return kind(value)
    except ValueError:
        raise SystemExit(f"{flag}: cannot read {value!r} as {'a list of ' if field in _LISTS else ''}"
                         f"{kind.__name__}") from None


def settings_from_args(args: argparse.Namespace) -> StudySettings:
    """The preset with every given flag applied; an unknown method is a usage error."""
    changes = {field: _value(flag, field, kind, getattr(args, field)) for flag, (field, kind, _) in _FLAGS.items()
               if getattr(args, field) is not None}
    if "methods" in changes:
        try:
            changes["methods"] = canonical_methods(changes["methods"])
        except ValueError as error:
            raise UsageError(f"--methods: {error}") from None
    if args.strict:
        changes["strict"] = True
    settings = dataclasses.replace(STUDY_PRESETS[args.preset], **changes)
    settings.check()
    return settings


def _study_command(args: argparse.Namespace) -> int:
    words = [word for word in sys.argv[1:] if word != "--report-only"]  # the command that trains this study
    command = "python -m rpo_lab " + " ".join(shlex.quote(word) for word in words) \
        if words[:1] == ["study"] else f"python -m rpo_lab study --preset {args.preset}"
    if args.preset in SYNTHETIC_PRESETS:
        from rpo_lab.world.cli import synthetic_command

        given = {field: getattr(args, field) for _, (field, _, _) in {**_FLAGS, **_SYNTHETIC_ONLY}.items()
                 if getattr(args, field) is not None}
        return synthetic_command(args, given)
    return _real_command(args, settings_from_args(args), command)


def _real_command(args: argparse.Namespace, settings: StudySettings, command: str) -> int:
    """The real-model study: run (or resume) it, then write the report."""
    import time
    from pathlib import Path

    from rpo_lab.study.report import write_report
    from rpo_lab.study.runner import run_study

    output_dir = Path(args.output_dir or "outputs/study")
    print("study settings: " + ", ".join(f"{key}={value}" for key, value in dataclasses.asdict(settings).items()),
          flush=True)
    workers = 1 if args.workers is None else _value("--workers", "workers", int, args.workers)
    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    began = time.perf_counter()
    result = run_study(output_dir, settings, train=not args.report_only, workers=workers)
    seconds = time.perf_counter() - began
    folders = [output_dir] + ([Path(args.report_dir)] if args.report_dir else [])
    timing = None if args.report_only else {"wall_seconds_of_this_command": round(seconds, 1), **result["timing"],
                                            "num_threads": settings.num_threads, "workers": workers,
                                            "note": "wall times on a shared machine; a phase read from the cache "
                                                    "takes ~0 s (data_seconds null: the features were cached)"}
    write_report(result, settings, folders, command, timing)
    print(f"report: study.md, study.json and figures in {', '.join(map(str, folders))} ({seconds / 60:.1f} min)")
    return 0


_SYNTHETIC_ONLY = {"--workers": ("workers", int, "processes of one torch thread each (the numbers do not depend on "
                                                   "it)")}


def register(subparsers: argparse._SubParsersAction) -> None:
    preset = _preset_from_argv()
    defaults = STUDY_PRESETS.get(preset, STUDY_PRESETS["full"])
    parser = subparsers.add_parser("study",
                                   help="compare DPO and RPO variants across seeds, with power; write a report",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="full", choices=tuple(STUDY_PRESETS) + tuple(SYNTHETIC_PRESETS),
                        help="full: the SmolLM2 study on HH or --dataset (docs/study/hh); smoke: tiny random model "
                             "on the demo pairs; synthetic: the synthetic-world study (docs/study); "
                             "synthetic-notebook: notebook 04's CPU run; synthetic-smoke: seconds")
    parser.add_argument("--output-dir", default=None,
                        help="runs cache and report (default: outputs/study, or outputs/<preset> for synthetic ones)")
    parser.add_argument("--report-dir", default=None, help="also copy the report and figures here (e.g. docs/study)")
    parser.add_argument("--report-only", action="store_true", help="write the report from the cached runs only")
    parser.add_argument("--strict", action="store_true", help="raise on the first invalid row of a file instead of "
                        "skipping it (skipped rows are counted in a warning)")
    for flag, (field, _, text) in _FLAGS.items():
        value = getattr(defaults, field)
        shown = " ".join(map(str, value)) if isinstance(value, tuple) else value
        parser.add_argument(flag, dest=field, default=None, metavar="FILE" if field in ("dataset", "heldout")
                            else None, help=f"{text} ({preset} preset: {shown})")
    for flag, (field, _, text) in _SYNTHETIC_ONLY.items():
        parser.add_argument(flag, dest=field, default=None, help=text)
    parser.set_defaults(handler=_study_command)


def _preset_from_argv() -> str:
    """The ``--preset`` on the command line, so ``--help`` shows that preset's defaults."""
    argv = sys.argv[1:]
    for index, word in enumerate(argv):
        if word == "--preset" and index + 1 < len(argv) and argv[index + 1] in STUDY_PRESETS:
            return argv[index + 1]
        if word.startswith("--preset=") and word.split("=", 1)[1] in STUDY_PRESETS:
            return word.split("=", 1)[1]
    return "full"
