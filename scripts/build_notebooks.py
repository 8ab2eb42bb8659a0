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


def build_notebook(source: Path) -> nbformat.NotebookNode:
    """The notebook for one source file, outputs empty, stable cell ids."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata = {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}
    for index, (kind, text) in enumerate(parse_cells(source)):
        maker = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        cell = maker(text)
        cell.id = f"{source.stem[:2]}-{index:03d}"
        notebook.cells.append(cell)
    nbformat.validate(notebook)
    return notebook


def render(source: Path) -> str:
    return nbformat.writes(build_notebook(source), version=4) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook stems (default: every source)")
    parser.add_argument("--check", action="store_true", help="fail if a notebook differs from its source")
    args = parser.parse_args(argv)
    sources = [SOURCES_DIR / f"{name}.py" for name in args.names] or sorted(SOURCES_DIR.glob("[0-9]*.py"))
    stale = []
    for source in sources:
        if not source.exists():
            raise SystemExit(f"no source {source}")
        target = NOTEBOOKS_DIR / f"{source.stem}.ipynb"
        text = render(source)
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
