"""benchmarks/perf_table.py: the README's performance table comes from the benchmark's JSON, between markers."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import perf_table  # noqa: E402
from protocol import paired_ratio, summary  # noqa: E402


def variant(samples: list[float], flops: float, peak_bytes: int, loss: float = float("nan")) -> dict:
    stats = summary(samples)
    return {"samples_s": samples, "median_s": stats["median"], "q1_s": stats["q1"], "q3_s": stats["q3"],
            "iqr_s": stats["iqr"], "flops": flops, "gflops_per_s": flops / stats["median"] / 1e9,
            "peak_fraction": flops / stats["median"] / 1e9 / 50.0, "peak_bytes": peak_bytes, "start_loss": loss}


def synthetic(sizes: dict[int, dict[str, list[float]]], date: str = "2026-12-04T10:00:00+00:00") -> dict:
    """A step_benchmark.py JSON (schema 2) with made-up samples: 7 rounds, 50 GFLOP/s peak."""
    blocks = {}
    for size, variants in sizes.items():
        built = {name: variant(samples, 1e10 * size, 2**20 * (100 + index), 0.69)
                 for index, (name, samples) in enumerate(variants.items())}
        ratio = paired_ratio(built["rpo"]["samples_s"], built["dpo"]["samples_s"])
        blocks[str(size)] = {"pairs": size, "max_tokens": 94, "rounds": 7, "variants": built,
                             "ratios": {"time rpo / dpo": {**ratio, "goal": 1.03, "met": ratio["median"] <= 1.03},
                                        "|loss dpo - loss trl_dpo|": {"median": 1.8e-6, "q1": 1.8e-6, "q3": 1.8e-6,
                                                                      "n": 1, "goal": None, "met": None}}}
    return {"schema": "rpo_tutorial.step_benchmark/2", "command": ["benchmarks/step_benchmark.py", "--rounds", "7"],
            "machine": {"date": date, "cpu_model": "AMD EPYC", "cpu_cores": 2, "load_average": [0.1, 0.2, 0.3],
                        "torch": "2.13.0", "torch_threads": 1},
            "pinning": {"pinned": True, "core": 1}, "matmul_peak": {"peak_gflops": 50.0},
            "protocol": {"rounds": 7, "warmup": 1, "order": "shuffled", "seed": 0}, "load_average_after": [0.4, 0.3, 0.3],
            "models": {"smollm2": {"sizes": blocks}}}


SAMPLES = {"dpo": [10.0, 11.0, 9.0, 10.5, 10.0, 12.0, 9.5], "rpo": [10.2, 11.0, 9.3, 10.4, 10.1, 12.5, 9.4],
           "trl_dpo": [20.0, 21.0, 19.0, 20.0, 22.0, 20.5, 19.5]}


def test_the_table_shows_median_iqr_rate_memory_and_the_per_round_ratio():
    block = perf_table.render([("b8.json", synthetic({8: SAMPLES}))])
    lines = block.splitlines()
    dpo = next(line for line in lines if line.startswith("| dpo (shared prompts"))
    # median 10.0, quartiles (inclusive) 9.75 and 10.75; 8e10 FLOPs / 10 s = 8 GFLOP/s = 16 % of 50
    assert dpo == "| dpo (shared prompts, the default) | 10.00 [9.75, 10.75] | 8.00 (16%) | 100 |"
    ratios = [a / b for a, b in zip(SAMPLES["rpo"], SAMPLES["dpo"])]
    rpo_dpo = next(line for line in lines if line.startswith("| time rpo / dpo"))
    assert f"{sorted(ratios)[3]:.3f} [" in rpo_dpo and "b8 <= 1.03: met" in rpo_dpo
    assert r"| \|loss dpo - loss trl_dpo\| | 1.8e-06 |" in block  # the pipes of |x| do not split the table
    assert "`b8.json`: 2026-12-04, AMD EPYC (2 cores)" in block and "pinned to core 1" in block
    assert "load average 0.1 before, 0.4 after" in block and "50.0 GFLOP/s" in block
    assert "FEWER THAN 7 ROUNDS" not in block


def test_two_runs_merge_into_one_table_with_a_column_group_per_batch_size():
    runs = [("b8.json", synthetic({8: SAMPLES})), ("b32.json", synthetic({32: SAMPLES}, date="2026-12-05T00:00Z"))]
    block = perf_table.render(runs)
    header = next(line for line in block.splitlines() if line.startswith("| variant"))
    assert "batch 8 (7 rounds)" in header and "batch 32 (7 rounds)" in header
    assert "`b8.json`: 2026-12-04" in block and "`b32.json`: 2026-12-05" in block


def test_a_check_run_with_few_rounds_is_labelled_as_such():
    data = synthetic({8: SAMPLES})
    data["protocol"]["rounds"] = 2
    assert "FEWER THAN 7 ROUNDS" in perf_table.render([("check.json", data)])


def test_only_the_marked_block_of_the_readme_is_rewritten(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n{perf_table.START}\nold table\n{perf_table.END}\nafter\n")
    source = tmp_path / "b8.json"
    source.write_text(json.dumps(synthetic({8: SAMPLES})))
    assert perf_table.main([str(source), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n" + perf_table.START) and text.endswith(perf_table.END + "\nafter\n")
    assert "old table" not in text and "| dpo (shared prompts, the default) | 10.00" in text
    once = text
    perf_table.main([str(source), "--readme", str(readme)])
    assert readme.read_text() == once  # regenerating is idempotent


def test_a_readme_without_the_markers_or_an_old_json_is_refused(tmp_path):
    with pytest.raises(ValueError, match="perf-table:start"):
        perf_table.replace_block("no markers here", "table")
    with pytest.raises(ValueError, match="schema 2"):
        perf_table.render([("old.json", {"tiny": {"sizes": {}}})])
