"""CITATION.cff and LICENSE agree with pyproject.toml (validated against CFF 1.2.0 with cffconvert when written)."""
from __future__ import annotations

from pathlib import Path

import pytest

from rpo_lab.colab import read_project

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_citation_file_names_this_version_and_the_paper():
    yaml = pytest.importorskip("yaml")
    citation = yaml.safe_load((REPO_ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["message"] and citation["authors"]
    assert str(citation["version"]) == read_project().version
    paper = citation["references"][0]
    assert "arXiv:2402.10958" in paper["identifiers"][0]["value"]
    assert [author["family-names"] for author in paper["authors"]] == ["Yin", "Wang", "Gu", "Huang", "Chen", "Zhou"]


def test_the_licence_is_the_mit_licence_pyproject_declares():
    text = (REPO_ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "rpo_tutorial contributors" in text
    assert 'license = { text = "MIT" }' in (REPO_ROOT / "pyproject.toml").read_text()
