"""The README's main job: ``make demo`` -> ``python -m rpo_lab demo --output-dir outputs/demo``.

Runs offline with the bundled models, end to end (see :mod:`rpo_lab.demo.pipeline`): SFT of
SmolLM2-135M-Instruct on the demo set's preferred responses, DPO and RPO from the SFT model,
sampling on held-out prompts, the demo judge's win rates against SFT with intervals, and
metrics, a results table and a figure in the output folder (the figure is also copied to
``figures/demo_results.png``).

    python -m rpo_lab demo --output-dir outputs/demo            # ~8-14 min on 2 CPU cores
    python -m rpo_lab demo --preset smoke --output-dir /tmp/x   # tiny random model, seconds
    python -m rpo_lab weights                                   # the weighting strategies only
"""
from __future__ import annotations

import argparse
from pathlib import Path

from rpo_lab.demo.weights import run_weights_demo
from rpo_tutorial.paths import figures_dir

DEMO_FIGURE = "demo_results.png"


def run_demo(output_dir: str | Path, preset: str = "demo", **changes) -> int:
    """Run the end-to-end pipeline; ``changes`` override fields of its ``DemoSettings``."""
    from rpo_lab.demo.pipeline import PIPELINE_SETTINGS, DemoSettings, run_demo_pipeline

    settings = PIPELINE_SETTINGS.get(preset, DemoSettings()).replace(**changes)
    figure_copy = figures_dir() / DEMO_FIGURE if preset == "demo" else None  # smoke runs never overwrite it
    run_demo_pipeline(output_dir, preset=preset, settings=settings, figure_copy=figure_copy)
    return 0


def _demo_command(args: argparse.Namespace) -> int:
    names = ("sft_rows", "train_rows", "epochs", "learning_rate", "rpo_beta", "trainable_layers",
             "samples_per_prompt", "heldout_prompts")
    changes = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.no_save_models:
        changes["save_models"] = False
    if args.instruct:
        changes["include_instruct"] = True
    return run_demo(args.output_dir, preset=args.preset, **changes)


def _weights_command(args: argparse.Namespace) -> int:
    run_weights_demo(args.output_dir or figures_dir(), tau=args.tau, alpha=args.alpha)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser("demo", help="the offline end-to-end demo (the README's main command)")
    demo.add_argument("--output-dir", default="outputs/demo", help="where metrics, tables, samples and figures go")
    demo.add_argument("--preset", default="demo", choices=("demo", "smoke"),
                      help="demo: bundled SmolLM2-135M-Instruct; smoke: a tiny random model (seconds)")
    demo.add_argument("--sft-rows", type=int, default=None, help="chosen responses for the SFT stage")
    demo.add_argument("--train-rows", type=int, default=None, help="preference pairs for DPO and RPO")
    demo.add_argument("--epochs", type=float, default=None, help="DPO and RPO passes over their pairs")
    demo.add_argument("--learning-rate", type=float, default=None, help="DPO and RPO learning rate")
    demo.add_argument("--rpo-beta", type=float, default=None,
                      help="RPO's beta (default: matched to DPO's, beta x batch pairs; 0.1: the paper's)")
    demo.add_argument("--trainable-layers", type=int, default=None, help="top decoder layers trained")
    demo.add_argument("--samples-per-prompt", type=int, default=None, help="samples per held-out prompt")
    demo.add_argument("--heldout-prompts", type=int, default=None, help="held-out prompts evaluated")
    demo.add_argument("--no-save-models", action="store_true", help="do not save the trained models")
    demo.add_argument("--instruct", action="store_true",
                      help="also sample the starting instruct model and judge it against SFT")
    demo.set_defaults(handler=_demo_command)
    weights = subparsers.add_parser("weights", help="show every weighting strategy on example prompts")
    weights.add_argument("--output-dir", default=None, help="folder for the PNG (default: figures/)")
    weights.add_argument("--tau", type=float, default=0.5, help="embedding / sinkhorn temperature")
    weights.add_argument("--alpha", type=float, default=0.5, help="diagonal weight")
    weights.set_defaults(handler=_weights_command)
