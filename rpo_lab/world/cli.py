"""``rpo-tutorial study --preset synthetic``: the synthetic study from the command line.

    python -m rpo_lab study --preset synthetic --report-dir docs/study     # the committed report (~30 min, 2 cores)
    python -m rpo_lab study --preset synthetic-notebook                    # notebook 04's CPU run
    python -m rpo_lab study --preset synthetic-smoke --output-dir /tmp/s   # seconds (tests, CI)
    python -m rpo_lab study --preset synthetic --report-only               # rewrite the report from the cache

Finished units are read back from ``OUTPUT_DIR`` (default ``outputs/<preset>``), so the same
command resumes an interrupted study. ``timing.json`` (wall times) is written next to the report;
``study.json`` and ``study.md`` hold no time and depend on the cache alone.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from rpo_lab.world.presets import SYNTHETIC_PRESETS
from rpo_lab.world.spec import StudyDesign
from rpo_tutorial.training.output_dir import UsageError

SYNTHETIC_FLAGS = {"seeds": int, "methods": str, "steps": int, "workers": int}  # flags a synthetic preset accepts


def design_from_args(args: argparse.Namespace, given: dict) -> StudyDesign:
    """The preset with the flags it accepts applied; any other flag is refused by name."""
    design = SYNTHETIC_PRESETS[args.preset]
    refused = sorted(set(given) - set(SYNTHETIC_FLAGS))
    if refused:
        raise UsageError(f"--preset {args.preset} does not take " + ", ".join("--" + n.replace("_", "-") for n in refused)
                         + f"; it takes --{', --'.join(SYNTHETIC_FLAGS)}")
    changes = {}
    for name, value in given.items():
        kind = SYNTHETIC_FLAGS[name]
        try:
            changes[name] = tuple(kind(w) for w in value.replace(",", " ").split()) if name in ("seeds", "methods") \
                else kind(value)
        except ValueError:
            raise SystemExit(f"--{name}: cannot read {value!r} as {kind.__name__}") from None
    design = dataclasses.replace(design, **changes)
    design.check()
    return design


def synthetic_command(args: argparse.Namespace, given: dict) -> int:
    from rpo_lab.world.report import write_synthetic_report
    from rpo_lab.world.run import run_synthetic_study

    design = design_from_args(args, given)
    # the report records the command that determines its numbers: the preset and the flags that change results
    # (not --output-dir, --report-dir or --workers), so every way of running the same study gives the same bytes
    command = f"python -m rpo_lab study --preset {args.preset}" + "".join(
        f" --{name} {given[name].replace(' ', ',')}" for name in SYNTHETIC_FLAGS if name in given and name != "workers")
    output_dir = Path(args.output_dir or f"outputs/{args.preset}")
    began = time.perf_counter()
    result = run_synthetic_study(output_dir, design, progress=True, train=not args.report_only)
    seconds = time.perf_counter() - began
    folders = [output_dir] + ([Path(args.report_dir)] if args.report_dir else [])
    timing = None if args.report_only else {"wall_seconds_of_this_command": round(seconds, 1),
                                            "workers": design.workers, "note": "wall time on a shared machine"}
    write_synthetic_report(result, design, folders, command, timing)
    print(f"report: study.md, study.json and figures in {', '.join(map(str, folders))} ({seconds / 60:.1f} min)")
    return 0


def preset_list() -> str:
    return ", ".join(SYNTHETIC_PRESETS)


