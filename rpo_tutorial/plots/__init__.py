"""Figures (matplotlib, Agg-safe) for the notebooks, the demo and the CLI; never used by the trainer.

    base.py       heatmaps, weight matrices, ``save``
    tutorial.py   notebooks 01-03 (loss curves, contrast matrices, weights across tau)
    training.py   training curves from metrics.jsonl, the demo's results figure
    winrates.py   win-rate bars with 95% intervals
"""
