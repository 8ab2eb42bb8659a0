"""The project's own demo preference dataset: loading, validating, and how its rows are built.

336 short user requests written for this project in 8 topic clusters, 4 responses each sampled
from the bundled SmolLM2-135M-Instruct, judged by ``sentiment.sentiment_score``: chosen = the
highest-scoring response, rejected = the lowest; prompts whose best and worst responses score
within ``MIN_SCORE_GAP`` are dropped (counted). A held-out split of whole prompts (5 per cluster)
is kept for evaluation. See ``demo_data/README.md`` for the counts.

Regenerate (about 12 min on 2 idle CPU cores; add `--threads 1` on a busy machine):

    python scripts/make_demo_dataset.py

Load:

    from rpo_tutorial.data.demo import load_demo
    rows = load_demo("train")   # [{"id", "cluster", "prompt", "chosen", "rejected", ...}, ...]
"""
from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from rpo_tutorial.data.errors import MAX_FIELD_CHARS, check_data_file, data_error
from rpo_tutorial.paths import DEMO_DATA_DIR

SPLITS = ("train", "heldout")
PROMPTS_FILE = DEMO_DATA_DIR / "prompts.json"
MIN_SCORE_GAP = 0.1  # a pair needs score(chosen) - score(rejected) >= this
HELDOUT_PER_CLUSTER = 5
# Sampling settings used to make the dataset; evaluation samples policies the same way.
DEMO_GENERATION = {"do_sample": True, "temperature": 1.0, "top_p": 0.95, "max_new_tokens": 48}
_STRING_FIELDS = ("id", "cluster", "prompt", "chosen", "rejected")
_SCORE_FIELDS = ("chosen_score", "rejected_score")


def demo_split_path(split: str) -> Path:
    """Path of the packaged JSONL for ``split`` ("train" or "heldout")."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return DEMO_DATA_DIR / f"{split}.jsonl"


def validate_demo_row(row: Any, where: str) -> dict:
    """Check one row's fields and types; raise ValueError naming ``where`` and the field.

    Args:
        row: a parsed JSON value.
        where: a location for messages, e.g. ``"train.jsonl row 12"``.
    """
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for field in _STRING_FIELDS + _SCORE_FIELDS:
        if field not in row:
            raise ValueError(f"{where}: missing field {field!r} (has {sorted(row)})")
    for field in _STRING_FIELDS:
        value = row[field]
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{where}: field {field!r} must be a non-empty string, got {value!r:.80}")
        if len(value) > MAX_FIELD_CHARS:
            raise ValueError(f"{where}: field {field!r} is longer than {MAX_FIELD_CHARS:,} characters")
    for field in _SCORE_FIELDS:
        value = row[field]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{where}: field {field!r} must be a finite number, got {value!r}")
    if row["chosen"] == row["rejected"]:
        raise ValueError(f"{where}: fields 'chosen' and 'rejected' are identical")
    if not row["chosen_score"] > row["rejected_score"]:
        raise ValueError(
            f"{where}: chosen_score ({row['chosen_score']}) must exceed rejected_score ({row['rejected_score']})"
        )
    return row


def read_demo_file(path: str | Path) -> list[dict]:
    """Read and validate a demo JSONL file; any bad line raises ValueError naming file, row, field."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"demo data file not found: {path} (regenerate: python scripts/make_demo_dataset.py)")
    check_data_file(path, "a demo JSONL file")
    if path.name.lower().endswith(".gz"):
        raise data_error(path, "demo data is plain JSONL; decompress it first")
    rows, seen_ids, seen_pairs = [], set(), {}
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            where = f"{path.name} row {line_number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise data_error(path, f"row {line_number} is not UTF-8 text (column {error.start + 1})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
            validate_demo_row(row, where)
            if row["id"] in seen_ids:
                raise ValueError(f"{where}: duplicate id {row['id']!r}")
            pair = (row["prompt"], row["chosen"], row["rejected"])
            if pair in seen_pairs:
                raise ValueError(f"{where}: duplicate row, same prompt, chosen and rejected as row {seen_pairs[pair]}")
            seen_ids.add(row["id"])
            seen_pairs[pair] = line_number
            rows.append(row)
    if not rows:
        raise data_error(path, "holds no rows (an empty file)")
    return rows


def load_demo(split: str = "train", path: str | Path | None = None) -> list[dict]:
    """The demo preference pairs of one split.

    Args:
        split: ``"train"`` or ``"heldout"`` (disjoint prompts).
        path: read this JSONL instead of the packaged file (same schema).

    Returns:
        Rows ``{"id", "cluster", "prompt", "chosen", "rejected", "chosen_score",
        "rejected_score"}``; ``prompt`` is the user request as a plain string (apply the chat
        template when tokenizing), ``chosen``/``rejected`` the responses without end-of-turn tokens.
    """
    return read_demo_file(path if path is not None else demo_split_path(split))


def demo_clusters() -> list[str]:
    """The topic clusters of the packaged demo data, sorted."""
    return sorted({row["cluster"] for split in SPLITS for row in load_demo(split)})


def load_demo_prompts(path: str | Path = PROMPTS_FILE) -> list[dict]:
    """The written prompts as ``[{"id", "cluster", "prompt"}, ...]``, ids like ``"pets-007"``."""
    with Path(path).open(encoding="utf-8") as handle:
        clusters = json.load(handle)["clusters"]
    prompts = []
    for cluster, texts in clusters.items():
        for index, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{path}: cluster {cluster!r} prompt {index} must be a non-empty string")
            prompts.append({"id": f"{cluster}-{index:03d}", "cluster": cluster, "prompt": text.strip()})
    return prompts


def build_pair(
    prompt: dict, responses: Sequence[str], scores: Sequence[float], min_gap: float = MIN_SCORE_GAP
) -> dict | None:
    """Chosen = the best-scoring response, rejected = the worst; None if the gap is below ``min_gap``.

    Ties for best or worst go to the earliest sample, so the result is deterministic.
    """
    if len(responses) != len(scores) or len(responses) < 2:
        raise ValueError(
            f"prompt {prompt['id']}: need >= 2 responses with one score each, "
            f"got {len(responses)} responses and {len(scores)} scores"
        )
    best = max(range(len(scores)), key=lambda k: (scores[k], -k))
    worst = min(range(len(scores)), key=lambda k: (scores[k], k))
    if scores[best] - scores[worst] < min_gap or responses[best] == responses[worst]:
        return None
    return {
        **prompt,
        "chosen": responses[best],
        "rejected": responses[worst],
        "chosen_score": float(scores[best]),
        "rejected_score": float(scores[worst]),
    }


def split_by_prompt(
    rows: Sequence[dict], heldout_per_cluster: int = HELDOUT_PER_CLUSTER, seed: int = 0
) -> tuple[list[dict], list[dict]]:
    """Split rows into (train, heldout) by prompt: ``heldout_per_cluster`` random prompts per cluster.

    Each prompt has one row, so no prompt lands in both splits. Both lists come out in a seeded
    random order, so that any prefix (``rows[:64]``) mixes the clusters.
    """
    by_cluster: dict[str, list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        by_cluster[row["cluster"]].append(index)
    rng = random.Random(seed)
    heldout_indexes = set()
    for cluster in sorted(by_cluster):
        indexes = by_cluster[cluster]
        if len(indexes) <= heldout_per_cluster:
            raise ValueError(f"cluster {cluster!r} has {len(indexes)} rows, too few to hold out {heldout_per_cluster}")
        heldout_indexes.update(rng.sample(indexes, heldout_per_cluster))
    train = [row for index, row in enumerate(rows) if index not in heldout_indexes]
    heldout = [row for index, row in enumerate(rows) if index in heldout_indexes]
    rng.shuffle(train)
    rng.shuffle(heldout)
    return train, heldout
