"""Build the tutorial notebooks from reviewable percent-format sources.

Each notebook ``notebooks/0N_name.ipynb`` is generated from ``scripts/notebook_sources/0N_name.py``,
a plain Python file in the "percent" cell format (the one Jupytext, VS Code and Spyder read):

    # %% [markdown]
    # # A title
    # Text with $\\LaTeX$ ...

    # %%
    code = "of the next cell"

Markdown lines lose their leading ``# ``. The notebooks are written with outputs stripped, the
``python3`` kernel spec and stable cell ids, so rebuilding an unchanged source gives an identical
file and ``git diff`` shows only real edits.

Every notebook also gets, from ``rpo_lab/colab.py`` (never by hand in a source), an "Open in Colab"
badge as its first cell and a Colab set-up cell as its first code cell (after the title cell). The
README's Colab and docs-site links are rewritten from the same place (``[project.urls] Repository``
and ``[project] version`` in pyproject.toml), so a fork changes one line and reruns this script.

Usage:
    python scripts/build_notebooks.py                 # rebuild every notebook that has a source
    python scripts/build_notebooks.py 02_contrast_matrix
    python scripts/build_notebooks.py --check         # exit 1 if a notebook is out of date
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from rpo_lab.colab import SETUP_CELL_METADATA, Project, badge_cell_source, read_project, setup_cell_source  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCES_DIR = REPO_ROOT / "scripts" / "notebook_sources"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
MARKER = re.compile(r"^# %%(?:\s*\[(?P<kind>\w+)\])?\s*$")
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def _trim(lines: list[str]) -> str:
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines)


def _markdown(lines: list[str], source: Path, start: int) -> str:
    text = []
    for offset, line in enumerate(lines):
        if line.strip() and not line.startswith("#"):
            raise ValueError(f"{source}:{start + offset}: markdown cell line must start with '#': {line!r}")
        text.append(line[2:] if line.startswith("# ") else line[1:])
    return _trim(text)


def parse_cells(source: Path) -> list[tuple[str, str]]:
    """Split a percent-format file into (kind, text) cells; kind is "markdown" or "code"."""
    cells: list[tuple[str, str]] = []
    kind, body, start = None, [], 1
    lines = source.read_text().splitlines()
    for number, line in enumerate(lines + ["# %%"], start=1):
        match = MARKER.match(line)
        if not match:
            body.append(line)
            continue
        if kind is not None:
            text = _markdown(body, source, start) if kind == "markdown" else _trim(body)
            if text:
                cells.append((kind, text))
        elif _trim(body):
            raise ValueError(f"{source}: text before the first '# %%' marker")
        kind = "markdown" if match.group("kind") == "markdown" else "code"
        if match.group("kind") not in (None, "markdown"):
            raise ValueError(f"{source}:{number}: unknown cell kind {match.group('kind')!r}")
        body, start = [], number + 1
    return cells


def build_notebook(source: Path, project: Project | None = None) -> nbformat.NotebookNode:
    """The notebook for one source file, outputs empty, stable cell ids, with the Colab badge and cell."""
    project = project or read_project()
    notebook = nbformat.v4.new_notebook()
    notebook.metadata = {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}
    prefix = source.stem[:2]
    for index, (kind, text) in enumerate(parse_cells(source)):
        maker = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        cell = maker(text)
        cell.id = f"{prefix}-{index:03d}"
        notebook.cells.append(cell)
    badge = nbformat.v4.new_markdown_cell(badge_cell_source(project, source.stem))
    badge.id = f"{prefix}-colab-badge"
    setup = nbformat.v4.new_code_cell(setup_cell_source(project), metadata=SETUP_CELL_METADATA)
    setup.id = f"{prefix}-colab-setup"
    first_code = next((i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"), len(notebook.cells))
    notebook.cells.insert(first_code, setup)  # the first code cell, after the title and introduction
    notebook.cells.insert(0, badge)
    nbformat.validate(notebook)
    return notebook


def render(source: Path, project: Project | None = None) -> str:
    return nbformat.writes(build_notebook(source, project), version=4) + "\n"


COLAB_LINK = re.compile(r"https://colab\.research\.google\.com/github/[^/\s]+/[^/\s]+/blob/[^/\s]+/notebooks/"
                        r"(?P<stem>[0-9A-Za-z_]+)\.ipynb")
SITE_LINK = re.compile(r"https://[A-Za-z0-9-]+\.github\.io/[A-Za-z0-9_.-]+/")


def update_readme_links(text: str, project: Project) -> str:
    """``text`` with every Colab notebook link and the docs-site URL pointing at ``project``."""
    text = COLAB_LINK.sub(lambda match: project.colab_url(match["stem"]), text)
    return SITE_LINK.sub(project.site_url, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook stems (default: every source)")
    parser.add_argument("--check", action="store_true", help="fail if a notebook differs from its source")
    args = parser.parse_args(argv)
    sources = [SOURCES_DIR / f"{name}.py" for name in args.names] or sorted(SOURCES_DIR.glob("[0-9]*.py"))
    stale = []
    project = read_project()
    readme = REPO_ROOT / "README.md"
    readme_text = update_readme_links(readme.read_text(), project)
    if readme_text != readme.read_text():
        if args.check:
            stale.append(str(readme))
        else:
            readme.write_text(readme_text)
            print("updated the Colab and docs-site links in README.md")
    for source in sources:
        if not source.exists():
            raise SystemExit(f"no source {source}")
        target = NOTEBOOKS_DIR / f"{source.stem}.ipynb"
        text = render(source, project)
        if args.check:
            if not target.exists() or target.read_text() != text:
                stale.append(str(target))
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(f"wrote {target.relative_to(REPO_ROOT)} ({len(parse_cells(source))} cells)")
    for path in stale:
        print(f"{path} is out of date; run: python scripts/build_notebooks.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
