"""The README's main job: the offline end-to-end demo, and the quick look at the weighting strategies.

    pipeline.py   SFT -> DPO and RPO -> sampling -> judged win rates (``settings.py``: its sizes)
    report.py     the demo's evaluation and its output files
    judge.py      the demo dataset's offline judge (VADER sentiment)
    weights.py    every weighting strategy on example prompts;  cli.py  ``demo`` / ``weights``
"""
