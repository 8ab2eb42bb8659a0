"""Fail when a notebook is committed with outputs or execution counts.

Usage: python scripts/check_notebooks_stripped.py notebooks [--fix]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def dirty_cells(notebook: dict) -> int:
    """Number of code cells that carry outputs or an execution count."""
    return sum(
        1
        for cell in notebook.get("cells", [])
        if cell.get("cell_type") == "code" and (cell.get("outputs") or cell.get("execution_count"))
    )


def strip(notebook: dict) -> dict:
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"], cell["execution_count"] = [], None
    return notebook


def main(argv: list[str]) -> int:
    folder, fix = Path(argv[0] if argv else "notebooks"), "--fix" in argv
    bad = []
    for path in sorted(folder.glob("*.ipynb")):
        notebook = json.loads(path.read_text())
        if dirty_cells(notebook):
            if fix:
                path.write_text(json.dumps(strip(notebook), indent=1, ensure_ascii=False) + "\n")
                print(f"stripped {path}")
            else:
                bad.append(f"{path}: {dirty_cells(notebook)} code cells carry outputs")
    for line in bad:
        print(line, file=sys.stderr)
    if bad:
        print("Run: python scripts/check_notebooks_stripped.py notebooks --fix", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
