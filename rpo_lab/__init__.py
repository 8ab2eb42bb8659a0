"""rpo_lab: the lab around the ``rpo_tutorial`` library.

The library (``rpo_tutorial``: losses, weighting, data, models, training, evaluation, plots) is what
a user imports into their own code. The lab uses it and is never imported by it:

- ``rpo_lab.cli``: the ``rpo-tutorial`` command (``python -m rpo_lab``): train / sft / evaluate /
  sample / judge / winrate / alpaca-export / demo / weights / study;
- ``rpo_lab.demo``: the offline end-to-end demo (``make demo``) and its report;
- ``rpo_lab.study``: the seeded comparison of methods (``rpo-tutorial study``);
- ``rpo_lab.estimates`` / ``rpo_lab.memory_hint``: memory and time worked out for a run.
"""
