"""Where things live: resolved through the package so notebooks work from any folder.

nbmake runs each notebook from its own folder, so nothing here depends on the current
working directory unless the user asks for it.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
FIGURES_DIR = REPO_ROOT / "figures"
DEMO_DATA_DIR = PACKAGE_DIR / "data" / "demo_data"


def cache_dir() -> Path:
    """The project's on-disk cache (converted models, prompt embeddings).

    ``$RPO_CACHE_DIR`` wins; otherwise ``~/.cache/rpo_tutorial``.
    """
    root = Path(os.environ.get("RPO_CACHE_DIR", Path.home() / ".cache" / "rpo_tutorial"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def shared_data_dir() -> Path | None:
    """``../shared/data`` beside the repository (development machines and CI), else None.

    ``$RPO_SHARED_DATA`` overrides the location.
    """
    candidate = Path(os.environ.get("RPO_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    return candidate if candidate.is_dir() else None


def figures_dir() -> Path:
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    return FIGURES_DIR
