"""Sphinx configuration of the tutorial's site; the source tree is assembled by scripts/build_docs.py.

Everything the pages need is served from the site itself: the Furo theme's assets, MathJax 3 from
the ``django-static-mathjax`` package (copied to ``_static/mathjax`` by the build script), and the
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
SOURCE = Path(os.environ.get("RPO_DOCS_SOURCE", "."))  # the assembled source tree (scripts/build_docs.py sets it)

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

# Autodoc: Google-style docstrings (Args / Returns / Shape), members in source order, no imports run twice.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_custom_sections = [("Shape", "params_style")]

# MathJax 3 (SVG output: glyphs drawn from the script itself, no font files), served from the site. The
# files come from the django-static-mathjax package (a plain copy of MathJax 3.2.2's es5/ build); the build
# script copies what tex-svg.js loads into _static/mathjax/.
html_static_path = [str(SOURCE / "_mathjax")]
mathjax_path = "mathjax/tex-svg.js"
mathjax3_config = {"options": {"enableMenu": False}}

html_theme = "furo"
html_title = f"rpo_tutorial {release}" + (" (smoke build)" if MODE == "smoke" else "")
html_baseurl = PROJECT.site_url
html_favicon = "favicon.svg"
html_copy_source = False
html_show_sourcelink = False
suppress_warnings = ["myst.header", "misc.highlighting_failure"]


# ---- docstrings written for readers of the code, made safe for reStructuredText ------------------
# The package's docstrings are plain text with Google sections (napoleon reads those): a line ending in
# ":" before an indented example becomes a literal block ("::"), and "|" (absolute values, Markdown
# tables) is escaped so docutils does not read it as a substitution.

def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _literal_blocks(app, what, name, obj, options, lines: list[str]) -> None:
    result = []
    for index, line in enumerate(lines):
        line = line.replace("|", "\\|")
        previous = result[-1] if result else ""
        following = next((later for later in lines[index + 1:] if later.strip()), "")
        if line.lstrip().startswith("- ") and previous.strip() and not previous.lstrip().startswith(("- ", ":")) \
                and _indent(previous) == _indent(line):
            result.append("")  # a list right after its paragraph: docutils needs a blank line between
        if not previous.strip() and line.strip() and len(result) >= 2:  # a block after a blank line
            paragraph = next((earlier for earlier in reversed(result) if earlier.strip()), "")
            if _indent(line) > _indent(paragraph) and not paragraph.rstrip().endswith(":") \
                    and not paragraph.lstrip().startswith(("..", ":")):
                result += ["::", ""]  # an indented example after a plain paragraph: a literal block
        starts_block = (line.rstrip().endswith(":") and not line.rstrip().endswith("::") and following
                        and _indent(following) > _indent(line) and not line.lstrip().startswith((":", "..")))
        if starts_block:
            line = line.rstrip() + ":"
        result.append(line)
        if starts_block and index + 1 < len(lines) and lines[index + 1].strip():
            result.append("")  # a literal block needs a blank line after its "::"
    lines[:] = result


def setup(app):
    app.connect("autodoc-process-docstring", _literal_blocks, priority=600)  # after napoleon (500)
