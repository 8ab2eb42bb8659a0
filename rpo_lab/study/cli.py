"""``rpo-tutorial study``: train every method on every data setting and seed, then write the report.

    python -m rpo_lab study --output-dir outputs/study --report-dir docs/study/smollm2   # the SmolLM2 study
    python -m rpo_lab study --preset small --output-dir outputs/study-small     # notebook 04 on a CPU
    python -m rpo_lab study --preset smoke --output-dir /tmp/study              # tiny random model, tests
    python -m rpo_lab study --output-dir outputs/study --report-only            # rewrite the report
    python -m rpo_lab study --preset synthetic --report-dir docs/study          # the synthetic study (issue 20)

The ``synthetic*`` presets run the synthetic-world study (``rpo_lab.world``; see ``rpo_lab/world/cli.py``);
the others the SmolLM2 study below.

Interrupted? Run the same command again: finished runs are read from ``OUTPUT_DIR/runs`` and
never retrained.
"""
from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys

from rpo_lab.study.settings import METHODS, SETTINGS_NAMES, StudySettings
from rpo_lab.world.presets import SYNTHETIC_PRESETS

STUDY_PRESETS: dict[str, StudySettings] = {
    "full": StudySettings(),
    # notebook 04's CPU mode (~10 min on 2 idle cores): the controlled setting, DPO and RPO embedding at the paper's
    # and the matched beta, 3 seeds, the same per-run budget as the full study
    "small": StudySettings(settings=("controlled",), methods=("dpo", "rpo-emb-matched", "rpo-emb"), tau_ablation=(),
                           judge_max_new_tokens=0),  # no sampling: notebook 04 stays under 20 min on a CPU
    # a tiny random model: the whole machinery in about a minute (tests, CI)
    "smoke": StudySettings(model="tiny-random:llama", settings=("controlled",), methods=("dpo", "rpo-emb-matched"),
                           tau_ablation=(), seeds=(0, 1), steps=2, eval_every=1, train_pairs=16,
                           heldout_per_cluster=1, learning_rate=1e-3, judge_max_new_tokens=4),
}
_FLAGS = {  # flag -> (field, type, help)
    "--seeds": ("seeds", int, "seeds (one SFT reference and data order each)"),
    "--settings": ("settings", str, f"data settings, from {SETTINGS_NAMES}"),
    "--methods": ("methods", str, f"methods, from {tuple(METHODS)}"),
    "--tau-ablation": ("tau_ablation", float, "embedding taus of the ablation (controlled setting); 'none' skips"),
    "--steps": ("steps", int, "optimizer steps per run"),
    "--eval-every": ("eval_every", int, "held-out evaluation every this many steps"),
    "--learning-rate": ("learning_rate", float, "AdamW learning rate of every method"),
    "--beta": ("beta", float, "the paper's beta; matched RPO uses beta x batch size"),
    "--batch-size": ("batch_size", int, "pairs per step"),
    "--train-pairs": ("train_pairs", int, "train pairs per demo setting"),
    "--trainable-layers": ("trainable_layers", int, "top decoder layers trained"),
    "--judge-max-new-tokens": ("judge_max_new_tokens", int, "tokens sampled per held-out prompt for the judge "
                               "win rate vs SFT (0: no judge)"),
    "--num-threads": ("num_threads", int, "torch threads (default: by machine load)"),
}


def settings_from_args(args: argparse.Namespace) -> StudySettings:
    """The preset with every given flag applied."""
    settings = STUDY_PRESETS[args.preset]
    changes = {}
    for flag, (field, kind, _) in _FLAGS.items():
        value = getattr(args, field)
        if value is None:
            continue
        if field in ("seeds", "settings", "methods", "tau_ablation"):
            words = [] if value.strip().lower() == "none" else value.replace(",", " ").split()
            try:
                value = tuple(kind(word) for word in words)
            except ValueError:
                raise SystemExit(f"{flag}: cannot read {value!r} as a list of {kind.__name__}") from None
        else:
            try:
                value = kind(value)
            except ValueError:
                raise SystemExit(f"{flag}: cannot read {value!r} as {kind.__name__}") from None
        changes[field] = value
    settings = dataclasses.replace(settings, **changes)
    settings.check()
    return settings


def _study_command(args: argparse.Namespace) -> int:
    from rpo_lab.study.report import write_report
    from rpo_lab.study.runner import run_study

    words = [word for word in sys.argv[1:] if word != "--report-only"]  # the command that trains this study
    command = "python -m rpo_lab " + " ".join(shlex.quote(word) for word in words) \
        if words[:1] == ["study"] else f"python -m rpo_lab study --preset {args.preset}"
    if args.preset in SYNTHETIC_PRESETS:
        from rpo_lab.world.cli import synthetic_command

        given = {field: getattr(args, field) for _, (field, _, _) in {**_FLAGS, **_SYNTHETIC_ONLY}.items()
                 if getattr(args, field) is not None}
        return synthetic_command(args, given)
    if args.workers is not None:
        from rpo_tutorial.training.output_dir import UsageError

        raise UsageError(f"--workers applies to the synthetic presets only, not --preset {args.preset}")
    args.output_dir = args.output_dir or "outputs/study"
    settings = settings_from_args(args)
    print("study settings: " + ", ".join(f"{key}={value}" for key, value in dataclasses.asdict(settings).items()),
          flush=True)
    if not args.report_only:
        run_study(args.output_dir, settings, report=False)
    report = write_report(args.output_dir, settings, command=command, copy_to=args.report_dir)
    where = args.output_dir + (f" and {args.report_dir}" if args.report_dir else "")
    print(f"report: study.md, study.json and figures in {where}"
          + (f"; missing runs: {len(report['missing'])}" if report["missing"] else ""))
    return 0


_SYNTHETIC_ONLY = {"--workers": ("workers", int, "synthetic presets: processes of one torch thread each")}


def register(subparsers: argparse._SubParsersAction) -> None:
    preset = _preset_from_argv()
    defaults = STUDY_PRESETS.get(preset, STUDY_PRESETS["full"])
    parser = subparsers.add_parser("study", help="compare DPO, RPO variants and KTO across seeds; write a report",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="full", choices=tuple(STUDY_PRESETS) + tuple(SYNTHETIC_PRESETS),
                        help="full: the SmolLM2 study; small: its CPU size; smoke: tiny random model; synthetic: the "
                             "synthetic-world study (docs/study); synthetic-notebook: notebook 04's CPU run; "
                             "synthetic-smoke: seconds")
    parser.add_argument("--output-dir", default=None,
                        help="runs cache and report (default: outputs/study, or outputs/<preset> for synthetic ones)")
    parser.add_argument("--report-dir", default=None, help="also copy the report and figures here (e.g. docs/study)")
    parser.add_argument("--report-only", action="store_true", help="write the report from the cached runs only")
    for flag, (field, _, text) in _FLAGS.items():
        value = getattr(defaults, field)
        shown = " ".join(map(str, value)) if isinstance(value, tuple) else value
        parser.add_argument(flag, dest=field, default=None, help=f"{text} ({preset} preset: {shown})")
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
