"""Mean off-diagonal prompt similarity inside mini-batches: random vs similarity-aware batches.

    .venv/bin/python benchmarks/sampler_similarity.py
    .venv/bin/python benchmarks/sampler_similarity.py --batch-sizes 8 16 64 --epochs 5

On the real HH file (2,303 valid pairs), embeds every prompt with the bundled MiniLM (served
from the project cache after the first run), then for each batch size averages, over a few
epochs, the mean cosine similarity between different prompts of the same batch: what RPO's
off-diagonal contrasts see (paper Eqs. 11-12).
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

from rpo_tutorial.data.embeddings import (
    PROMPT_TEXT_MODES,
    PromptEmbedder,
    add_prompt_embeddings,
    stack_prompt_embeddings,
)
from rpo_tutorial.data import load_hh
from rpo_tutorial.data.sampler import mean_within_batch_similarity, random_batches, similarity_batches
from rpo_tutorial.paths import shared_data_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default=None,
                        help="HH .jsonl(.gz); default ../shared/data/hh-rlhf/harmless-base-test.jsonl.gz")
    parser.add_argument("--mode", default="last_user_turn", choices=PROMPT_TEXT_MODES)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--epochs", type=int, default=3, help="epochs (reshuffles) averaged per cell")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    path = args.path or (shared_data_dir() or "../shared/data") / "hh-rlhf" / "harmless-base-test.jsonl.gz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = load_hh(path=path)
    embeddings = stack_prompt_embeddings(add_prompt_embeddings(rows, PromptEmbedder(device="cpu"), mode=args.mode))
    print(f"HH prompts: {len(rows)} ({args.mode}), embeddings {tuple(embeddings.shape)}; "
          f"mean over {args.epochs} epochs of the mean off-diagonal cosine inside each batch")
    print("| batch size | random batches | similarity-aware | seconds per epoch (similarity) |")
    print("|---|---|---|---|")
    for batch_size in args.batch_sizes:
        shuffled, grouped, seconds = [], [], []
        for epoch in range(args.epochs):
            shuffled.append(mean_within_batch_similarity(
                embeddings, random_batches(len(rows), batch_size, args.seed, epoch, drop_last=True)))
            start = time.perf_counter()
            batches = similarity_batches(embeddings, batch_size, args.seed, epoch, drop_last=True)
            seconds.append(time.perf_counter() - start)
            grouped.append(mean_within_batch_similarity(embeddings, batches))
        print(f"| {batch_size} | {statistics.mean(shuffled):.3f} | {statistics.mean(grouped):.3f} | "
              f"{statistics.mean(seconds):.2f} |")


if __name__ == "__main__":
    main()
