"""Regenerate the demo preference dataset in rpo_tutorial/demo_data/ (offline, CPU).

    .venv/bin/python scripts/make_demo_dataset.py                       # the packaged data
    .venv/bin/python scripts/make_demo_dataset.py --limit-per-cluster 6 --output-dir /tmp/demo

For every prompt in rpo_tutorial/demo_data/prompts.json it samples ``--samples`` responses from
the bundled SmolLM2-135M-Instruct (chat template, temperature 1.0, top-p 0.95, 48 new tokens),
scores them with the demo judge (VADER sentiment), keeps best vs worst when their gap is at least
``MIN_SCORE_GAP``, holds out 5 prompts per cluster, and writes train.jsonl and heldout.jsonl.
Deterministic given ``--seed`` and ``--batch-size`` on the same software and hardware (each batch
reseeds torch). About 12 minutes on 2 idle CPU cores (add ``--threads 1`` on a busy machine).
Finished batches are cached under ~/.cache/rpo_tutorial, so an interrupted run resumes
(``--no-cache`` samples afresh).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rpo_tutorial.data.demo import (
    DEMO_GENERATION,
    HELDOUT_PER_CLUSTER,
    MIN_SCORE_GAP,
    PROMPTS_FILE,
    build_pair,
    load_demo_prompts,
    split_by_prompt,
)
from rpo_tutorial.data.sentiment import is_degenerate, score_responses
from rpo_tutorial.models.loading import BUNDLED_POLICY, load_policy, load_tokenizer
from rpo_tutorial.paths import DEMO_DATA_DIR, cache_dir


def chat_prompt(tokenizer, prompt: str) -> str:
    """The prompt as the policy sees it: chat template with the assistant turn opened."""
    messages = [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _load_cache(path: Path | None) -> dict[str, list[list[str]]]:
    if path is None or not path.is_file():
        return {}
    cache = {}
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                entry = json.loads(line)
                cache[entry["key"]] = entry["responses"]
            except (json.JSONDecodeError, KeyError, TypeError):  # a line cut by an interrupted run
                continue
    return cache


def _batch_key(model, batch: list[str], samples: int, seed: int, batch_index: int, settings: dict) -> str:
    """What a batch's samples depend on, hashed: a cached batch is reused only if all match."""
    identity = [
        model.config._name_or_path, torch.__version__, batch, samples, seed, batch_index, sorted(settings.items())
    ]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()


@torch.inference_mode()
def sample_responses(
    model,
    tokenizer,
    prompts: list[str],
    samples: int,
    batch_size: int,
    seed: int,
    cache_path: Path | None = None,
    **generation,
) -> list[list[str]]:
    """``samples`` responses per prompt, in prompt order, left-padded batches, special tokens stripped.

    Each batch reseeds torch with (seed, batch index), so a batch's samples do not depend on
    how many batches ran before it. With ``cache_path``, finished batches are appended there
    and an interrupted run resumes where it stopped.
    """
    settings = {**DEMO_GENERATION, **generation}
    cache = _load_cache(cache_path)
    responses: list[list[str]] = []
    progress = tqdm(total=len(prompts), desc=f"sampling {samples} responses/prompt", unit="prompt")
    cached_batches = 0
    for batch_index, start in enumerate(range(0, len(prompts), batch_size)):
        batch = prompts[start : start + batch_size]
        key = _batch_key(model, batch, samples, seed, batch_index, settings)
        if key in cache:
            cached_batches += 1
            progress.set_postfix(cached_batches=cached_batches)
        else:
            padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"  # generate from the right edge
            chats = [chat_prompt(tokenizer, prompt) for prompt in batch]
            encoded = tokenizer(chats, return_tensors="pt", padding=True, add_special_tokens=False)
            tokenizer.padding_side = padding_side
            torch.manual_seed(seed * 100_003 + batch_index)
            output = model.generate(
                **encoded, num_return_sequences=samples, pad_token_id=tokenizer.pad_token_id, **settings
            )  # (B * samples, T_prompt + T_new), the samples of one prompt adjacent
            new_tokens = output[:, encoded["input_ids"].shape[1] :]  # (B * samples, T_new)
            texts = [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
            cache[key] = [texts[k * samples : (k + 1) * samples] for k in range(len(batch))]
            if cache_path is not None:
                cache_path.parent.mkdir(parents=True, exist_ok=True)
                with cache_path.open("a", encoding="utf-8") as handle:
                    entry = {"key": key, "responses": cache[key]}
                    handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        responses.extend(cache[key])
        progress.update(len(batch))
    progress.close()
    return responses


def write_jsonl(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def summarize(
    prompts: list[dict], rows: list[dict], train: list[dict], heldout: list[dict], all_scores: list[float]
) -> str:
    """A markdown summary of the counts and scores (pasted into demo_data/README.md)."""
    written = Counter(p["cluster"] for p in prompts)
    kept, in_train, in_heldout = (Counter(r["cluster"] for r in part) for part in (rows, train, heldout))
    lines = ["| cluster | prompts | skipped (gap < %.2f) | train | held-out |" % MIN_SCORE_GAP, "|---|---|---|---|---|"]
    for cluster, count in written.items():
        skipped = count - kept[cluster]
        lines.append(f"| {cluster} | {count} | {skipped} | {in_train[cluster]} | {in_heldout[cluster]} |")
    lines.append(f"| **total** | {len(prompts)} | {len(prompts) - len(rows)} | {len(train)} | {len(heldout)} |")
    chosen = [r["chosen_score"] for r in rows]
    rejected = [r["rejected_score"] for r in rows]
    gaps = [c - r for c, r in zip(chosen, rejected)]
    quartiles = statistics.quantiles(gaps, n=4)
    lines += [
        "",
        f"- all sampled responses: mean score {statistics.mean(all_scores):+.3f}, "
        f"{sum(s > 0.05 for s in all_scores) / len(all_scores):.0%} positive (> 0.05), "
        f"{sum(s < -0.05 for s in all_scores) / len(all_scores):.0%} negative (< -0.05)",
        f"- chosen: mean {statistics.mean(chosen):+.3f}; rejected: mean {statistics.mean(rejected):+.3f}",
        f"- gap chosen - rejected: mean {statistics.mean(gaps):.3f}, quartiles "
        f"{quartiles[0]:.3f} / {quartiles[1]:.3f} / {quartiles[2]:.3f}, min {min(gaps):.3f}, max {max(gaps):.3f}",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=BUNDLED_POLICY, help="policy that writes the responses")
    parser.add_argument("--prompts", type=Path, default=PROMPTS_FILE, help="JSON file of prompts by cluster")
    parser.add_argument("--output-dir", type=Path, default=DEMO_DATA_DIR, help="where train/heldout.jsonl go")
    parser.add_argument("--samples", type=int, default=4, help="responses sampled per prompt")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per generate() call")
    parser.add_argument("--max-new-tokens", type=int, default=DEMO_GENERATION["max_new_tokens"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--heldout-per-cluster", type=int, default=HELDOUT_PER_CLUSTER, help="prompts kept out per cluster"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (1 is much faster on a busy machine)"
    )
    parser.add_argument("--no-cache", action="store_true", help="do not reuse or store finished batches")
    parser.add_argument(
        "--limit-per-cluster", type=int, default=None, help="first N prompts of each cluster (quick runs)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, model=None, tokenizer=None) -> int:
    """Generate, judge, split, write. ``model``/``tokenizer`` override ``--model`` (tests)."""
    args = parse_args(argv)
    if args.samples < 2 or args.batch_size < 1:
        raise ValueError(f"need --samples >= 2 and --batch-size >= 1, got {args.samples} and {args.batch_size}")
    prompts = load_demo_prompts(args.prompts)
    if args.limit_per_cluster is not None:
        prompts = [p for p in prompts if int(p["id"].rsplit("-", 1)[1]) < args.limit_per_cluster]
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(args.model)
    model = (model if model is not None else load_policy(args.model)).eval()
    print(f"{len(prompts)} prompts, {args.samples} samples each, torch threads: {torch.get_num_threads()}")

    start = time.perf_counter()
    responses = sample_responses(
        model,
        tokenizer,
        [p["prompt"] for p in prompts],
        args.samples,
        args.batch_size,
        args.seed,
        cache_path=None if args.no_cache else cache_dir() / "demo_generation_cache.jsonl",
        max_new_tokens=args.max_new_tokens,
    )
    generation_seconds = time.perf_counter() - start
    all_scores, rows = [], []
    for prompt, candidates in zip(prompts, tqdm(responses, desc="judging", unit="prompt")):
        scores = score_responses(candidates)
        all_scores.extend(scores)
        pair = build_pair(prompt, candidates, scores)
        if pair is not None:
            rows.append(pair)
    train, heldout = split_by_prompt(rows, args.heldout_per_cluster, seed=args.seed)
    write_jsonl(train, args.output_dir / "train.jsonl")
    write_jsonl(heldout, args.output_dir / "heldout.jsonl")

    degenerate = sum(is_degenerate(text) for candidates in responses for text in candidates)
    print(f"\ngeneration: {generation_seconds:.0f} s ({generation_seconds / len(prompts):.2f} s/prompt; "
          "cached batches take no time, --no-cache to time all)")
    print(f"kept {len(rows)} of {len(prompts)} prompts; skipped {len(prompts) - len(rows)} with gap < {MIN_SCORE_GAP}")
    print(f"degenerate (empty or repetitive) responses: {degenerate} of {len(all_scores)}")
    print(f"wrote {len(train)} train rows and {len(heldout)} held-out rows to {args.output_dir}\n")
    print(summarize(prompts, rows, train, heldout, all_scores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
