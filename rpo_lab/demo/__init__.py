"""The README's main job: the offline end-to-end demo, and the quick look at the weighting strategies.

    pipeline.py   SFT -> DPO and RPO -> sampling -> judged win rates (``settings.py``: its sizes)
    report.py     the demo's evaluation (judge: ``rpo_tutorial.data.sentiment``) and its output files
    weights.py    every weighting strategy on example prompts;  cli.py  ``demo`` / ``weights``
"""
