"""benchmarks/step_benchmark.py end to end on the tiny model (2 rounds: a check of the script, not a result)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_benchmark_writes_the_protocols_json_and_the_table_renders_it(tmp_path):
    output = tmp_path / "bench.json"
    finished = subprocess.run([sys.executable, "benchmarks/step_benchmark.py", "--variants", "dpo", "rpo",
                               "--rounds", "2", "--warmup", "0", "--json", str(output)], cwd=ROOT,
                              capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stderr[-3000:]
    result = json.loads(output.read_text())
    assert result["schema"] == "rpo_tutorial.step_benchmark/2" and result["protocol"]["rounds"] == 2
    assert result["machine"]["cpu_model"] and result["matmul_peak"]["peak_gflops"] > 0
    assert result["machine"]["torch_threads"] == 1 and "pinned" in result["pinning"]
    block = result["models"]["tiny"]["sizes"]["8"]
    assert [sorted(order) for order in block["orders"]] == [["dpo", "rpo"]] * 2 and len(block["load_after_round"]) == 2
    for variant in block["variants"].values():
        assert len(variant["samples_s"]) == 2 and variant["q1_s"] <= variant["median_s"] <= variant["q3_s"]
        assert variant["flops"] > 0 and variant["gflops_per_s"] == pytest.approx(
            variant["flops"] / variant["median_s"] / 1e9)
    assert block["variants"]["rpo"]["flops"] == block["variants"]["dpo"]["flops"]  # the same forwards and head rows
    assert len(block["ratios"]["time rpo / dpo"]["samples"]) == 2
    table = subprocess.run([sys.executable, "benchmarks/perf_table.py", str(output), "--print"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60, check=True).stdout
    assert "| rpo |" in table and "FEWER THAN 7 ROUNDS" in table
