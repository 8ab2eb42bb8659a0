"""The docs build's pure parts: cache keys, link rewriting, the check of an executed notebook."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from scripts import build_docs


PAGES = {"README.md", "notebooks/01_x.ipynb", "docs/study/study.md", "figures/a.png"}
BLOB = "https://github.com/o/n/blob/main"


def test_the_cache_key_changes_with_the_notebook_the_mode_and_the_packages(tmp_path: Path):
    notebook = tmp_path / "01_x.ipynb"
    notebook.write_text("{}")
    key = build_docs.cache_key(notebook, "smoke", "abc")
    assert key == build_docs.cache_key(notebook, "smoke", "abc")
    assert len({key, build_docs.cache_key(notebook, "real", "abc"), build_docs.cache_key(notebook, "smoke", "abd")}) == 3
    notebook.write_text('{"changed": 1}')
    assert build_docs.cache_key(notebook, "smoke", "abc") != key


def test_package_hash_follows_the_package_sources(tmp_path: Path):
    (tmp_path / "rpo_tutorial").mkdir()
    (tmp_path / "rpo_lab").mkdir()
    source = tmp_path / "rpo_tutorial" / "losses.py"
    source.write_text("x = 1\n")
    before = build_docs.package_hash(tmp_path)
    source.write_text("x = 2\n")
    assert build_docs.package_hash(tmp_path) != before


@pytest.mark.parametrize("document, text, expected", [
    ("README.md", "[s](docs/study/study.md) ![f](figures/a.png)", "[s](docs/study/study.md) ![f](figures/a.png)"),
    ("README.md", "[code](rpo_tutorial/losses.py#L3)", f"[code]({BLOB}/rpo_tutorial/losses.py#L3)"),
    ("notebooks/01_x.ipynb", "[report](../docs/study/study.md)", "[report](../docs/study/study.md)"),
    ("notebooks/01_x.ipynb", "[readme](../README.md#tests)", "[readme](../index.md#tests)"),
    ("README.md", "[web](https://example.org/a) [here](#tests)", "[web](https://example.org/a) [here](#tests)"),
])
def test_links_that_leave_the_site_go_to_github(document: str, text: str, expected: str):
    assert build_docs.rewrite_links(text, document, PAGES, BLOB, "open-in-colab.svg") == expected


def test_the_colab_badge_image_becomes_the_local_copy():
    badge = f"[![Open In Colab]({build_docs.BADGE_IMAGE})](https://colab.research.google.com/github/o/n/blob/v1/x)"
    rewritten = build_docs.rewrite_links(badge, "notebooks/01_x.ipynb", PAGES, BLOB, "../open-in-colab.svg")
    assert "](../open-in-colab.svg)" in rewritten and "colab.research.google.com/github/o/n" in rewritten


def test_an_executed_copy_with_an_error_or_an_unexecuted_cell_is_not_a_clean_run(tmp_path: Path):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("1", execution_count=1), nbformat.v4.new_code_cell("2")]
    path = tmp_path / "x.ipynb"
    nbformat.write(notebook, path)
    problems = build_docs.execution_problems(path)
    assert len(problems) == 1 and problems[0].startswith("cell 1 ") and problems[0].endswith("was not executed")
    notebook.cells[1].execution_count = 2
    notebook.cells[1].outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="bad", traceback=[])]
    nbformat.write(notebook, path)
    assert any("raised ValueError: bad" in problem for problem in build_docs.execution_problems(path))
    notebook.cells[1].outputs = []
    nbformat.write(notebook, path)
    assert build_docs.execution_problems(path) == []
