"""Sphinx configuration of the tutorial's site; the source tree is assembled by scripts/build_docs.py.

Everything the pages need is served from the site itself: the Furo theme's assets, MathJax 2.7 from
the ``jupyter-server-mathjax`` package (copied to ``_static/mathjax`` by the build script), and the
notebooks' figures. Nothing is fetched from elsewhere at build time or when a page is viewed.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))
from rpo_lab.colab import read_project  # noqa: E402

PROJECT = read_project(REPO_ROOT / "pyproject.toml")
MODE = os.environ.get("RPO_DOCS_MODE", "real")

project = "rpo_tutorial"
author = "rpo_tutorial contributors"
copyright = "rpo_tutorial contributors, MIT licence"
release = version = PROJECT.version

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax"]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

# The notebooks arrive executed (scripts/build_docs.py caches the runs): never execute here.
nb_execution_mode = "off"
nb_merge_streams = True  # one block per cell for its printed lines
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
myst_update_mathjax = False  # the MathJax 2 configuration below is complete

# Autodoc: Google-style docstrings (Args / Returns / Shape), members in source order, no imports run twice.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_custom_sections = [("Shape", "params_style")]

# MathJax 2.7, served locally with its STIX web fonts (the package ships those, not the TeX ones).
html_static_path = ["_mathjax"]
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
mathjax2_config = {
    "tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]], "processEscapes": True},
    "HTML-CSS": {"availableFonts": ["STIX-Web"], "preferredFont": "STIX-Web", "webFont": "STIX-Web",
                 "imageFont": None},
    "showMathMenu": False,
    "messageStyle": "none",
}

html_theme = "furo"
html_title = f"rpo_tutorial {release}" + (" (smoke build)" if MODE == "smoke" else "")
html_baseurl = PROJECT.site_url
html_copy_source = False
html_show_sourcelink = False
suppress_warnings = ["myst.header", "misc.highlighting_failure"]
