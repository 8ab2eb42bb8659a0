"""Thread choice by machine load: one rule for every command, the demo and the notebooks."""
from __future__ import annotations

import pytest
import torch

from rpo_tutorial.training import threads
from rpo_tutorial.training.threads import choose_num_threads, load_aware_threads


@pytest.mark.parametrize("cores, load, expected", [(2, 0.1, 2), (2, 0.6, 1), (2, 1.2, 1), (2, 6.0, 1),
                                                   (16, 3.4, 13), (1, 0.0, 1)])
def test_choose_num_threads_leaves_busy_cores_alone(cores, load, expected):
    assert choose_num_threads(cores, load) == expected


def test_choose_num_threads_does_not_count_its_own_threads_as_other_load():
    assert choose_num_threads(2, 2.1, own_threads=2) == 2  # only this process was busy
    assert choose_num_threads(2, 3.0, own_threads=2) == 1  # and one more process
    assert choose_num_threads(2, 0.5, own_threads=2) == 2


def test_load_aware_threads_never_exceeds_the_callers_count_and_restores_it(monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(threads, "choose_num_threads", lambda own_threads=0: 8 if own_threads else 1)
        with load_aware_threads() as retune:
            assert torch.get_num_threads() == 1  # busy machine at the start: one thread
            assert retune() == 2  # the load went away: back up to the caller's 2, never 8
        assert torch.get_num_threads() == 2
        with load_aware_threads(1) as retune:  # asked for: kept whatever the load
            assert torch.get_num_threads() == 1 and retune() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
