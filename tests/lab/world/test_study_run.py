"""The synthetic study end to end on the smoke preset: choice of rates, determinism, the report, the CLI."""
from __future__ import annotations

import json

import pytest

from rpo_lab.world.presets import SYNTHETIC_PRESETS
from rpo_lab.world.report import write_synthetic_report
from rpo_lab.world.run import choose_learning_rates, run_synthetic_study

SMOKE = SYNTHETIC_PRESETS["synthetic-smoke"].replace(workers=1, methods=("dpo", "rpo-emb", "rpo-uniform", "rpo-placebo"))


def test_the_rate_with_the_best_mean_validation_accuracy_wins_and_ties_go_to_the_smaller():
    tuning = [{"runs": [{"method": "dpo", "regime": "r", "arm": "a", "pairs_per_cluster": 2, "learning_rate": rate,
                         "validation_accuracy": score} for rate, score in runs]}
              for runs in ([(0.1, 0.5), (0.01, 0.75), (0.001, 0.75)], [(0.1, 1.0), (0.01, 0.5), (0.001, 0.5)])]
    assert choose_learning_rates(tuning, SMOKE) == {("dpo", "r", "a", 2): 0.1}  # means 0.75, 0.625, 0.625
    tuning[1]["runs"][0]["validation_accuracy"] = 0.75  # 0.625 everywhere (accuracies are k / 2n: exact floats)
    assert choose_learning_rates(tuning, SMOKE) == {("dpo", "r", "a", 2): 0.001}


def test_the_smoke_study_gives_identical_reports_twice_and_resumes_from_its_cache(tmp_path):
    reports = []
    for name in ("first", "second"):
        result = run_synthetic_study(tmp_path / name, SMOKE, progress=False)
        write_synthetic_report(result, SMOKE, [tmp_path / name / "report"], "python -m rpo_lab study --preset smoke")
        reports.append((tmp_path / name / "report" / "study.json").read_bytes())
    assert reports[0] == reports[1]
    assert (tmp_path / "first" / "report" / "study.md").read_bytes() == \
        (tmp_path / "second" / "report" / "study.md").read_bytes()
    cached = run_synthetic_study(tmp_path / "first", SMOKE, progress=False, train=False)  # the cache alone
    assert cached == result or cached["learning_rates"] == result["learning_rates"]
    report = json.loads(reports[0])
    primary = [c for c in report["analysis"]["comparisons"] if c["family"] == "primary"]
    assert {(c["method"], c["against"]) for c in primary} == {("rpo-emb", "dpo"), ("rpo-emb", "rpo-uniform"),
                                                              ("rpo-emb", "rpo-placebo")}
    assert len(primary) == 3 * 2 * 8 and all(c["family_size"] == len(primary) for c in primary)
    markdown = (tmp_path / "first" / "report" / "study.md").read_text()
    assert markdown.index("## Power") < markdown.index("## The five questions")  # power before any result
    with pytest.raises(ValueError, match="another study design"):
        run_synthetic_study(tmp_path / "first", SMOKE.replace(steps=7), progress=False)
    with pytest.raises(FileNotFoundError, match="missing from the cache"):
        run_synthetic_study(tmp_path / "empty", SMOKE, progress=False, train=False)


def test_the_cli_runs_a_synthetic_preset_and_refuses_flags_it_does_not_take(tmp_path, capsys):
    from rpo_lab.cli import main

    status = main(["study", "--preset", "synthetic-smoke", "--methods", "dpo,rpo-emb", "--seeds", "0 1",
                   "--workers", "1", "--output-dir", str(tmp_path / "out"), "--report-dir", str(tmp_path / "docs")])
    assert status == 0
    assert {"study.json", "study.md", "study_regimes.png", "timing.json"} <= {p.name for p in (tmp_path / "docs").iterdir()}
    assert main(["study", "--preset", "synthetic-smoke", "--learning-rate", "0.1"]) == 2
    assert "does not take --learning-rate" in capsys.readouterr().err
