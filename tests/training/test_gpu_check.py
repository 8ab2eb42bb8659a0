"""benchmarks/gpu_check.py in its --tiny mode (CPU): the script runs end to end and reports exact step-0 parity.

The full Mistral-7B-shaped check needs a GPU with ~110 GB and is never run in CI.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_gpu_check_tiny_mode_runs_the_paper_code_path_and_prints_its_numbers(tmp_path):
    output = tmp_path / "check.json"
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_PORT")}
    finished = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--tiny", "--pairs", "2", "--length", "32",
                               "--steps", "2", "--json", str(output)], cwd=ROOT, capture_output=True, text=True,
                              timeout=240, env={**environment, "OMP_NUM_THREADS": "1"})
    assert finished.returncode == 0, finished.stderr[-3000:]
    result = json.loads(output.read_text())
    assert result["shape"] == "tiny" and len(result["step_s"]) == 2
    assert result["step0_max_abs_log_ratio"] == 0.0
    assert "peak memory during the steps" in finished.stdout
