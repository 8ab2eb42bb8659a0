"""Names the report, its markdown and its figures share: metric formats, method labels, condition labels."""
from __future__ import annotations

from rpo_lab.study.compare import MetricFormat
from rpo_lab.world.methods import METHODS

FORMATS = {"accuracy": MetricFormat("test accuracy", 100.0, 1, " points"),
           "gain": MetricFormat("true-reward gain", 1.0, 3, " (r* units)")}
LABELS = {key: method.label for key, method in METHODS.items()}
ARM_TEXT = {"random": "random batches", "stratified": "cluster-stratified batches"}


def cell_label(regime: str, arm: str, size: int) -> str:
    return f"{regime}, {ARM_TEXT[arm]}, {size} pairs/cluster"
