"""Command-line interface: ``rpo-tutorial <command>`` (also ``python -m rpo_tutorial``).

Each feature module contributes its own sub-commands through a ``register(subparsers)``
function, so this file only assembles them.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Modules that contribute sub-commands, in the order `--help` lists them.
COMMAND_MODULES = (
    "rpo_tutorial.demo.cli",
    "rpo_tutorial.training.cli",
    "rpo_tutorial.evaluation.cli",
    "rpo_tutorial.evaluation.evaluate_cli",
    "rpo_tutorial.study.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rpo-tutorial",
        description="Relative Preference Optimization: training, evaluation and figures.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:  # a real missing dependency, not a module not yet written
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
