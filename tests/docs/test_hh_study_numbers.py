"""The HH study's numbers quoted in the READMEs are the committed ``docs/study/hh/study.json``'s."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "docs" / "study" / "hh" / "study.json"
QUOTING = ["README.md", "docs/study/README.md", "docs/study/hh/README.md"]


def points(value: float, sign: bool = False) -> str:
    return f"{100 * value:+.1f}" if sign else f"{100 * value:.1f}"


@pytest.fixture(scope="module")
def quoted() -> dict[str, str]:
    report = json.loads(REPORT.read_text())
    comparison = next(c for c in report["analysis"]["comparisons"]
                      if c["method"] == "rpo-emb" and c["against"] == "dpo")
    accuracy = report["analysis"]["cells"][0]["summaries"]["accuracy"]
    low, high = points(comparison["ci_low_corrected"], sign=True), points(comparison["ci_high_corrected"], sign=True)
    return {"dpo": f"{points(accuracy['dpo']['mean'])} %", "rpo": f"{points(accuracy['rpo-emb']['mean'])} %",
            "difference": f"{points(comparison['mean'], sign=True)} points [{low}, {high}]",
            "power": f"{points(comparison['mdd'])} points", "seeds": str(len(report["settings"]["seeds"]))}


@pytest.mark.parametrize("document", QUOTING)
def test_every_document_quotes_the_committed_hh_result(document, quoted):
    text = " ".join((ROOT / document).read_text().split())  # line breaks as spaces
    for name in ("dpo", "rpo", "difference", "power"):
        assert quoted[name] in text, f"{document} does not quote the HH {name} as study.json gives it: {quoted[name]}"
    assert f"{quoted['seeds']} seeds" in text


def test_the_hh_readme_runs_the_command_that_wrote_the_report():
    report = json.loads(REPORT.read_text())
    assert report["command"] in (ROOT / "docs" / "study" / "hh" / "README.md").read_text()
