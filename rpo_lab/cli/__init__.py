"""Command-line interface: ``rpo-tutorial <command>`` (also ``python -m rpo_lab``).

Each feature module contributes its own sub-commands through a ``register(subparsers)``
function, so this file only assembles them.

Errors end as one line on stderr, ``rpo-tutorial <command>: error: <message>``, and an exit
status: 2 for a command used wrongly (argparse's own errors, an invalid configuration, an output
folder that holds another run), 1 for everything else (bad data, a missing file, a failure while
running). ``--debug`` (before or after the command) shows the full traceback instead. Warnings
(skipped rows, duplicates) are one ``warning:`` line each.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings

# Modules that contribute sub-commands, in the order `--help` lists them.
COMMAND_MODULES = (
    "rpo_lab.demo.cli",
    "rpo_lab.cli.train",
    "rpo_lab.cli.judge",
    "rpo_lab.cli.evaluate",
    "rpo_lab.study.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rpo-tutorial",
        description="Relative Preference Optimization: training, evaluation and figures.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:  # a real missing dependency, not a module not yet written
                raise
            continue
        module.register(subparsers)
    for command in subparsers.choices.values():  # `rpo-tutorial train --debug` works too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def one_line(error: BaseException) -> str:
    """The error's message on one line (exception type shown for unexpected kinds)."""
    from rpo_tutorial.training.output_dir import UsageError

    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, FileNotFoundError) and error.filename and str(error.filename) not in text:
        text = f"{text}: {error.filename}"
    expected = (ValueError, OSError, UsageError, ImportError)
    if isinstance(error, expected):
        return text
    return f"{type(error).__name__}: {text} (rerun with --debug for the traceback)"


def exit_status(error: BaseException) -> int:
    from rpo_tutorial.training.output_dir import UsageError

    return 2 if isinstance(error, UsageError) else 1


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {' '.join(str(message).split())}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.debug:
        return int(args.handler(args) or 0)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return int(args.handler(args) or 0)
        except KeyboardInterrupt:
            print(f"rpo-tutorial {args.command}: interrupted", file=sys.stderr)
            return 130
        except Exception as error:  # noqa: BLE001 - the CLI's one place that turns errors into one line
            print(f"rpo-tutorial {args.command}: error: {one_line(error)}", file=sys.stderr)
            return exit_status(error)


if __name__ == "__main__":
    sys.exit(main())
