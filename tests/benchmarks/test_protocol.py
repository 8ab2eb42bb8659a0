"""benchmarks/protocol.py: orders, rounds, statistics and the machine record (no timing is asserted)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from protocol import Protocol, machine_state, paired_ratio, round_orders, run_rounds, summary  # noqa: E402

NAMES = ["trl_dpo", "dpo", "rpo", "rpo_accum"]


def test_shuffled_rounds_are_seeded_permutations_that_vary_who_follows_whom():
    orders = round_orders(NAMES, 7, "shuffled", seed=3)
    assert orders == round_orders(NAMES, 7, "shuffled", seed=3)  # reproducible
    assert orders != round_orders(NAMES, 7, "shuffled", seed=4)
    assert all(sorted(order) == sorted(NAMES) for order in orders)  # every variant once per round
    after_dpo = {order[order.index("dpo") + 1] for order in orders if order[-1] != "dpo"}
    assert len(after_dpo) > 1  # not a fixed cyclic order (rpo always right after dpo)


def test_abba_alternates_forward_and_backward():
    assert round_orders(["a", "b"], 4, "abba") == [["a", "b"], ["b", "a"], ["a", "b"], ["b", "a"]]
    orders = round_orders(NAMES, 2, "abba")
    assert orders[1] == list(reversed(orders[0]))


def test_run_rounds_warms_up_then_runs_every_variant_once_per_round_in_the_given_order():
    calls = []
    steps = {name: (lambda name=name: calls.append(name)) for name in NAMES}
    protocol = Protocol(rounds=7, warmup=2, order="shuffled", seed=1)
    result = run_rounds(steps, protocol)
    assert calls[:8] == NAMES * 2  # the warm-up
    assert calls[8:] == [name for order in result["orders"] for name in order]
    assert Counter(calls[8:]) == {name: 7 for name in NAMES}
    assert all(len(result["samples_s"][name]) == 7 for name in NAMES) and len(result["load_after_round"]) == 7


def test_summary_and_paired_ratio_against_a_hand_computation():
    samples = [5.0, 1.0, 4.0, 2.0, 3.0, 100.0, 6.0]
    stats = summary(samples)
    ordered = sorted(samples)  # inclusive quartiles of 7 values: positions 1.5, 3 and 4.5 (0-based)
    assert (stats["q1"], stats["median"], stats["q3"]) == ((ordered[1] + ordered[2]) / 2, ordered[3],
                                                           (ordered[4] + ordered[5]) / 2)
    assert stats["samples"] == samples and stats["n"] == 7
    ratio = paired_ratio([2.0, 4.0, 9.0], [1.0, 2.0, 3.0])
    assert ratio["median"] == 2.0 and ratio["ratio_of_medians"] == 2.0 and ratio["max"] == 3.0
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0, 2.0])


def test_invalid_protocols_are_refused():
    with pytest.raises(ValueError, match="order"):
        Protocol(order="cyclic")
    with pytest.raises(ValueError, match="rounds"):
        Protocol(rounds=0)


def test_the_machine_record_names_cpu_load_torch_and_threads():
    state = machine_state()
    assert state["cpu_model"] and state["torch"] and state["torch_threads"] >= 1 and state["date"][:2] == "20"
    assert state["load_average"] is None or len(state["load_average"]) == 3


def test_pinning_reports_what_happened_in_a_fresh_process():
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from protocol import pin_to_one_core, matmul_peak;"
            "import torch; state = pin_to_one_core(); peak = matmul_peak(size=64, repeats=2);"
            "print(json.dumps({**state, 'threads_now': torch.get_num_threads(), 'peak': peak['peak_gflops']}))")
    out = subprocess.run([sys.executable, "-c", code, str(BENCHMARKS)], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "2"})
    state = json.loads(out.stdout.strip().splitlines()[-1])
    assert state["threads_now"] == 1 and state["peak"] > 0
    if hasattr(os, "sched_setaffinity") and state["error"] is None:
        assert state["pinned"] and state["core"] in state["allowed_cores"]
    else:
        assert not state["pinned"] and state["error"]
