"""The training log on disk: ``metrics.jsonl``, one JSON object per logging step.

The trainer writes it (:class:`rpo_tutorial.training.metrics.MetricsJsonlCallback`); plots,
notebooks, tests and the demo read it. Reading lives here, below both, so plots never import
the trainer.
"""
from __future__ import annotations

import json
from pathlib import Path

METRICS_FILE = "metrics.jsonl"


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl file (for notebooks and tests)."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}: line {number} is not valid JSON ({error.msg})") from None
    return rows
