"""``rpo-tutorial evaluate``: held-out implicit-reward accuracy of a trained model against its reference.

    rpo-tutorial evaluate --model outputs/rpo --reference outputs/sft --dataset heldout.jsonl
    rpo-tutorial evaluate --model outputs/rpo --reference outputs/sft --dataset demo:heldout --output eval.json

``--dataset``: a preference file ({prompt, chosen, rejected} JSONL / JSON / CSV, or HH transcripts),
``demo:train`` / ``demo:heldout`` (the packaged demo splits). Prints n, wins / ties / losses, the
accuracy with ties counted half and its 95% Wilson interval, and the mean change of the chosen and
rejected log-probs (see :mod:`rpo_tutorial.evaluation.evaluate`).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from rpo_tutorial.evaluation.evaluate import evaluate_preferences, format_summary


def load_eval_rows(dataset: str, max_rows: int | None = None, strict: bool = False) -> list[dict]:
    """Paired rows of ``dataset`` (module docstring), first ``max_rows``; raises if there are none
    (``strict``: also at the first invalid row of a file, instead of skipping it)."""
    from rpo_tutorial.data.preferences import open_dataset

    if not dataset.startswith("demo:") and not Path(dataset).expanduser().exists():
        raise ValueError(f"--dataset {dataset!r}: no such file (or use demo:train / demo:heldout)")
    return list(open_dataset(dataset, strict=strict, paired=True))[:max_rows]


def _load(name: str):
    from rpo_tutorial.models.loading import load_policy, load_tokenizer

    return load_tokenizer(name), load_policy(name)


def _evaluate_command(args: argparse.Namespace) -> int:
    from rpo_tutorial.training.threads import apply_num_threads

    threads = apply_num_threads(args.num_threads)
    try:
        rows = load_eval_rows(args.dataset, args.max_rows, args.strict)
    except ValueError as error:
        raise SystemExit(f"rpo-tutorial evaluate: {error}") from None
    print(f"evaluate: {len(rows)} pairs from {args.dataset}; model {args.model} against reference "
          f"{args.reference}; max_length {args.max_length}, max_prompt_length {args.max_prompt_length}, "
          f"batch {args.batch_size}, {threads} torch thread(s)", flush=True)
    tokenizer, policy = _load(args.model)
    _, reference = _load(args.reference)
    summary = evaluate_preferences(policy, reference, tokenizer, rows, max_prompt_length=args.max_prompt_length,
                                   max_length=args.max_length, batch_size=args.batch_size, progress=True)
    print(format_summary(summary))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps({"model": args.model, "reference": args.reference,
                                                 "dataset": args.dataset, **summary}, indent=2) + "\n")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="held-out implicit-reward accuracy against a reference model",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="trained model folder (or hub id)")
    parser.add_argument("--reference", required=True, help="its reference, e.g. the SFT model folder")
    parser.add_argument("--dataset", required=True, help="preference file, or demo:heldout / demo:train")
    parser.add_argument("--max-rows", type=int, default=None, help="first rows only (default: all)")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first invalid row of --dataset, naming it (default: skip and count them)")
    parser.add_argument("--max-length", type=int, default=512, help="prompt + response tokens (default: %(default)s)")
    parser.add_argument("--max-prompt-length", type=int, default=256, help="prompt tokens (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per forward pass (default: %(default)s)")
    parser.add_argument("--num-threads", type=int, default=None, help="torch threads (default: by machine load)")
    parser.add_argument("--output", default=None, help="also write the summary as JSON here")
    parser.set_defaults(handler=_evaluate_command)
