"""Prompt-embedding throughput on the real HH file: a first run (the model) and a rerun (the cache).

    .venv/bin/python benchmarks/embedding_throughput.py
    .venv/bin/python benchmarks/embedding_throughput.py --mode full_prompt --batch-size 32

The first run uses a fresh, empty cache folder, so every distinct prompt goes through the
bundled all-MiniLM-L6-v2; the rerun is a new PromptEmbedder on the same folder, as a second
process would be, and must not load the model at all.
"""
from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import torch

from rpo_tutorial.data.embeddings import PROMPT_TEXT_MODES, PromptEmbedder, prompt_text
from rpo_tutorial.data import load_hh
from rpo_tutorial.paths import shared_data_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default=None,
                        help="HH .jsonl(.gz); default ../shared/data/hh-rlhf/harmless-base-test.jsonl.gz")
    parser.add_argument("--mode", default="last_user_turn", choices=PROMPT_TEXT_MODES)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N rows")
    args = parser.parse_args()
    path = args.path or (shared_data_dir() or "../shared/data") / "hh-rlhf" / "harmless-base-test.jsonl.gz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = load_hh(path=path)[: args.limit]
    texts = [prompt_text(row["prompt"], args.mode) for row in rows]
    with tempfile.TemporaryDirectory() as cache:
        embedder = PromptEmbedder(device=args.device, batch_size=args.batch_size, cache_dir=cache)
        start = time.perf_counter()
        embedder.model  # import sentence-transformers and load the weights
        load_seconds = time.perf_counter() - start
        start = time.perf_counter()
        first = embedder.embed(texts, show_progress=False)
        first_seconds = time.perf_counter() - start
        rerun = PromptEmbedder(device=args.device, batch_size=args.batch_size, cache_dir=cache)
        start = time.perf_counter()
        second = rerun.embed(texts, show_progress=False)
        second_seconds = time.perf_counter() - start
    assert rerun.encoded_texts == 0 and rerun._model is None and torch.equal(first, second)
    print(f"HH prompts: {len(texts)} rows, {len(set(texts))} distinct texts ({args.mode}); "
          f"device {args.device}, batch {args.batch_size}, torch threads {torch.get_num_threads()}")
    print("| run | seconds | prompts/s |")
    print("|---|---|---|")
    print(f"| import + load all-MiniLM-L6-v2 | {load_seconds:.2f} | |")
    rate = len(texts) / first_seconds
    print(f"| first run (model, {embedder.encoded_texts} encoded) | {first_seconds:.2f} | {rate:,.0f} |")
    print(f"| rerun (disk cache, model not loaded) | {second_seconds:.3f} | {len(texts) / second_seconds:,.0f} |")


if __name__ == "__main__":
    main()
