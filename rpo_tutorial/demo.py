"""The README's main job: ``make demo`` -> ``python -m rpo_tutorial demo``.

Runs offline with the bundled models. Currently: the weighting-strategy demo (embeddings of
related and unrelated prompts, every strategy's weight matrix printed and drawn).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .paths import figures_dir
from .weights_demo import run_weights_demo


def run_demo(output_dir: str | Path) -> int:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    run_weights_demo(output_dir)
    return 0


def _demo_command(args: argparse.Namespace) -> int:
    return run_demo(args.output_dir)


def _weights_command(args: argparse.Namespace) -> int:
    run_weights_demo(args.output_dir or figures_dir(), tau=args.tau, alpha=args.alpha)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser("demo", help="the offline end-to-end demo (the README's main command)")
    demo.add_argument("--output-dir", default="outputs/demo", help="where metrics, tables and figures go")
    demo.set_defaults(handler=_demo_command)
    weights = subparsers.add_parser("weights", help="show every weighting strategy on example prompts")
    weights.add_argument("--output-dir", default=None, help="folder for the PNG (default: figures/)")
    weights.add_argument("--tau", type=float, default=0.5, help="embedding / sinkhorn temperature")
    weights.add_argument("--alpha", type=float, default=0.5, help="diagonal weight")
    weights.set_defaults(handler=_weights_command)
