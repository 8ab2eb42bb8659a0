"""Build the tutorial's static site: executed notebooks, the README, figures, the study report, the API.

    python scripts/build_docs.py                # real mode: every notebook as a reader runs it (`make docs`)
    python scripts/build_docs.py --mode smoke   # RPO_SMOKE=1 runs, fast (`make docs-smoke`, what CI builds)
    python scripts/build_docs.py --mode smoke --no-execute   # reuse cached executions only (fails on a miss)
    python scripts/build_docs.py --rerun 02 06              # re-run these even if cached (data changed)

Steps:

1. **Execute** each ``notebooks/NN_*.ipynb`` with nbclient, from its own folder, in the chosen mode
   (``RPO_SMOKE=1`` or unset). An executed copy is cached under ``.cache/docs/executed/<mode>/`` keyed on a
   hash of the notebook file, the mode and every source file of the packages (``rpo_tutorial/``,
   ``rpo_lab/``, their data files); an unchanged notebook is not run again. A cell that raises stops the
   build (the site never shows a traceback). Each run's wall time and load average are kept beside it.
2. **Assemble** a Sphinx source tree in ``build/docs-src/<mode>/`` that mirrors the repository's layout
   (``index.md`` from README.md, ``notebooks/``, ``figures/``, ``docs/study/``, API pages), so the relative
   links in the README and the notebooks keep working; a link to any other file of the repository becomes
   a link to that file on GitHub. Colab badge images become a local copy (the site loads nothing from
   elsewhere: MathJax comes from the ``django-static-mathjax`` package).
3. **Build** HTML with Sphinx (configuration in ``docs/site/conf.py``) into ``build/site`` (real) or
   ``build/site-smoke``.

Why Sphinx + MyST-NB: see docs/site/README.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
from rpo_lab.colab import BADGE_IMAGE, read_project  # noqa: E402

CONF_DIR = REPO_ROOT / "docs" / "site"
CACHE_DIR = REPO_ROOT / ".cache" / "docs" / "executed"
BUILD_DIR = REPO_ROOT / "build"
PACKAGES = ("rpo_tutorial", "rpo_lab")
SOURCE_SUFFIXES = {".py", ".json", ".jsonl", ".md", ".txt", ".yaml", ".yml", ".toml"}
CELL_TIMEOUT_SECONDS = {"smoke": 600, "real": 3 * 3600}
LINK = re.compile(r"(?P<head>!?\[[^\]]*\]\()(?P<target>[^)\s]+)(?P<tail>\))")
BADGE_FILE = "open-in-colab.svg"
RENAMED = {"README.md": "index.md"}  # repository path -> its page in the site


def package_hash(root: Path = REPO_ROOT) -> str:
    """A hash of every source and data file of the packages: a change anywhere re-runs every notebook."""
    digest = hashlib.sha256()
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*")):
            if path.is_file() and path.suffix in SOURCE_SUFFIXES and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(root)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


def cache_key(notebook: Path, mode: str, packages: str) -> str:
    """The cache key of one executed notebook: its file, the mode and the packages' hash."""
    digest = hashlib.sha256(notebook.read_bytes())
    digest.update(mode.encode())
    digest.update(packages.encode())
    return digest.hexdigest()[:20]


def execute(notebook: Path, mode: str, target: Path) -> dict:
    """Run ``notebook`` in ``mode`` from its own folder; write the executed copy to ``target``."""
    from nbclient import NotebookClient

    environment = dict(os.environ)
    environment.pop("RPO_SMOKE", None)
    if mode == "smoke":
        environment["RPO_SMOKE"] = "1"
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), environment.get("PYTHONPATH")]))
    environment.setdefault("TOKENIZERS_PARALLELISM", "false")
    document = nbformat.read(notebook, as_version=4)
    client = NotebookClient(document, timeout=CELL_TIMEOUT_SECONDS[mode], kernel_name="python3",
                            resources={"metadata": {"path": str(notebook.parent)}})
    load_before, start = os.getloadavg()[0], time.perf_counter()
    client.execute(env=environment)  # the kernel's whole environment; raises CellExecutionError on an error
    record = {"notebook": notebook.name, "mode": mode, "seconds": round(time.perf_counter() - start, 1),
              "load_average_before": round(load_before, 2), "load_average_after": round(os.getloadavg()[0], 2)}
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    nbformat.write(document, partial)
    partial.replace(target)
    target.with_suffix(".json").write_text(json.dumps(record) + "\n")
    return record


def cached_execution(notebook: Path, mode: str, packages: str | None = None) -> Path:
    """Where the executed copy of ``notebook`` in ``mode`` is (or would be) cached."""
    key = cache_key(notebook, mode, packages if packages is not None else package_hash())
    return CACHE_DIR / mode / f"{notebook.stem}-{key}.ipynb"


def execution_problems(path: Path) -> list[str]:
    """Why an executed notebook does not count as a clean run: unexecuted code cells, error outputs."""
    problems = []
    for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        if cell.execution_count is None:
            problems.append(f"cell {index} ({cell.get('id')}) was not executed")
        problems += [f"cell {index} ({cell.get('id')}) raised {output.get('ename')}: {output.get('evalue')}"
                     for output in cell.outputs if output.output_type == "error"]
    return problems


def executed_notebooks(mode: str, run: bool = True, names: list[str] | None = None,
                       rerun: list[str] | None = None) -> dict[str, Path]:
    """Stem -> executed copy of every notebook, running only those whose cache key changed, and ``rerun``.

    The key does not cover the data a notebook finds (``../shared/data``, ``outputs/demo``): after those
    change, ``--rerun`` re-runs the notebooks named (stems or two-digit numbers).
    """
    packages = package_hash()
    result = {}
    for notebook in sorted((REPO_ROOT / "notebooks").glob("[0-9]*.ipynb")):
        if names and notebook.stem not in names and notebook.stem[:2] not in names:
            continue
        target = cached_execution(notebook, mode, packages)
        forced = bool(rerun) and (notebook.stem in rerun or notebook.stem[:2] in rerun)
        if target.exists() and not forced:
            print(f"[cached]   {notebook.name} ({target.name})")
        elif not run:
            raise SystemExit(f"{notebook.name}: no cached {mode} execution for this version (--no-execute)")
        else:
            print(f"[running]  {notebook.name} in {mode} mode ...", flush=True)
            from nbclient.exceptions import CellExecutionError

            try:
                record = execute(notebook, mode, target)
            except CellExecutionError as error:
                raise SystemExit(f"{notebook.name} failed in {mode} mode (nothing cached for it):\n{error}") from None
            for stale in target.parent.glob(f"{notebook.stem}-*"):  # executions of earlier versions
                if stale.stem != target.stem:
                    stale.unlink()
            print(f"[executed] {notebook.name}: {record['seconds']:.0f} s (load {record['load_average_before']:.1f}"
                  f" -> {record['load_average_after']:.1f})", flush=True)
        result[notebook.stem] = target
    return result


# ---- the source tree --------------------------------------------------------------------------

def site_files(root: Path = REPO_ROOT) -> set[str]:
    """Repository paths (posix) that the site holds: README, notebooks, figures, docs/study."""
    files = {"README.md"}
    files |= {f"notebooks/{p.name}" for p in (root / "notebooks").glob("[0-9]*.ipynb")}
    files |= {str(p.relative_to(root).as_posix()) for p in (root / "figures").glob("*") if p.is_file()}
    study = root / "docs" / "study"
    files |= {str(p.relative_to(root).as_posix()) for p in study.rglob("*") if p.is_file()} if study.exists() else set()
    return files


def rewrite_links(text: str, document: str, pages: set[str], github_blob: str, badge: str) -> str:
    """Relative links of ``document`` (a repository path) that leave the site point to GitHub instead.

    A link whose target is in ``pages`` (or an anchor, or absolute) is kept; the Colab badge image
    becomes ``badge`` (a path relative to ``document``).
    """
    folder = Path(document).parent

    def replace(match: re.Match) -> str:
        target = match["target"]
        if target == BADGE_IMAGE:
            return f"{match['head']}{badge}{match['tail']}"
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("#", "/")):
            return match.group(0)
        path, _, anchor = target.partition("#")
        resolved = os.path.normpath((folder / path).as_posix()).replace(os.sep, "/")
        if resolved in RENAMED:  # README.md is the site's index.md
            renamed = os.path.relpath(RENAMED[resolved], folder.as_posix() or ".").replace(os.sep, "/")
            return f"{match['head']}{renamed}{'#' + anchor if anchor else ''}{match['tail']}"
        if resolved in pages or resolved.startswith("../"):
            return match.group(0)
        return f"{match['head']}{github_blob}/{resolved}{'#' + anchor if anchor else ''}{match['tail']}"

    return LINK.sub(replace, text)


def api_pages() -> dict[str, str]:
    """One page per package and subpackage, ``automodule`` for each of its modules."""
    import pkgutil

    pages = {}
    for package in PACKAGES:
        module = __import__(package)
        groups: dict[str, list[str]] = {package: [package]}
        for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}."):
            if info.name.endswith("__main__"):
                continue
            parts = info.name.split(".")
            group = ".".join(parts[:2]) if len(parts) > 2 or info.ispkg else package
            groups.setdefault(group, []).append(info.name)
        packages = {package} | {name for name in groups}
        for group, modules in groups.items():
            body = [f"# `{group}`\n"]
            for name in modules:
                # a package's docstring only: its members are documented where they are defined
                members = "" if name in packages else "   :members:\n   :show-inheritance:\n"
                body.append(f"## `{name}`\n\n```{{eval-rst}}\n.. automodule:: {name}\n{members}```\n")
            pages[f"api/{group}.md"] = "\n".join(body)
    return pages


def api_index(pages: dict[str, str]) -> str:
    library = sorted((name for name in pages if name.startswith("api/rpo_tutorial")), key=lambda n: Path(n).stem)
    lab = sorted((name for name in pages if name.startswith("api/rpo_lab")), key=lambda n: Path(n).stem)
    toctree = lambda names: "\n".join(Path(name).stem for name in names)  # noqa: E731
    return ("# API reference\n\nGenerated from the docstrings. The library, `rpo_tutorial` (what you import):\n\n"
            f"```{{toctree}}\n:maxdepth: 1\n\n{toctree(library)}\n```\n\nThe lab, `rpo_lab` (the tutorial's "
            f"plumbing, which the library never imports):\n\n```{{toctree}}\n:maxdepth: 1\n\n{toctree(lab)}\n```\n")


def index_page(readme: str, notebooks: list[str], study_pages: list[str]) -> str:
    """The front page: the README, then a hidden table of contents for the navigation."""
    entries = "\n".join([*(f"notebooks/{stem}" for stem in notebooks), *study_pages, "api/index"])
    return f"{readme}\n\n```{{toctree}}\n:hidden:\n:maxdepth: 1\n\n{entries}\n```\n"


def assemble(mode: str, executed: dict[str, Path], source: Path) -> None:
    """Write the Sphinx source tree for ``mode`` into ``source`` (replacing what was there)."""
    project = read_project()
    github_blob = f"{project.url}/blob/main"
    pages = site_files()
    shutil.rmtree(source, ignore_errors=True)
    (source / "notebooks").mkdir(parents=True)
    shutil.copy(CONF_DIR / BADGE_FILE, source / BADGE_FILE)
    shutil.copytree(REPO_ROOT / "figures", source / "figures")
    study_pages = []
    if (REPO_ROOT / "docs" / "study").exists():
        shutil.copytree(REPO_ROOT / "docs" / "study", source / "docs" / "study",
                        ignore=shutil.ignore_patterns("*.json"))
        for path in sorted((source / "docs" / "study").rglob("*.md")):
            name = path.relative_to(source).as_posix()
            path.write_text(rewrite_links(path.read_text(), name, pages, github_blob, f"../../{BADGE_FILE}"))
            study_pages.append(name[:-3])
    readme = rewrite_links((REPO_ROOT / "README.md").read_text(), "README.md", pages, github_blob, BADGE_FILE)
    (source / "index.md").write_text(index_page(readme, sorted(executed), study_pages))
    for stem, path in executed.items():
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "markdown":
                cell.source = rewrite_links(cell.source, f"notebooks/{stem}.ipynb", pages, github_blob,
                                            f"../{BADGE_FILE}")
        nbformat.write(notebook, source / "notebooks" / f"{stem}.ipynb")
    pages_api = api_pages()
    for name, text in pages_api.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(text)
    (source / "api" / "index.md").write_text(api_index(pages_api))
    copy_mathjax(source / "_mathjax" / "mathjax")


MATHJAX_PARTS = ("tex-svg.js", "input", "ui", "a11y", "sre")  # tex-svg.js and what it may load on demand


def copy_mathjax(target: Path) -> None:
    """MathJax 3's SVG build from the django-static-mathjax package (a copy of MathJax 3.2.2's es5/)."""
    try:
        import mathjax
    except ImportError:
        raise SystemExit("MathJax is missing: pip install -e '.[docs]' (django-static-mathjax)") from None
    es5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    target.mkdir(parents=True)
    for part in MATHJAX_PARTS:
        (shutil.copytree if (es5 / part).is_dir() else shutil.copy)(es5 / part, target / part)


def build(mode: str, run: bool = True, names: list[str] | None = None, rerun: list[str] | None = None) -> Path:
    """Execute (cached), assemble and build; returns the site folder."""
    start = time.perf_counter()
    executed = executed_notebooks(mode, run=run, names=names, rerun=rerun)
    source = BUILD_DIR / "docs-src" / mode
    output = BUILD_DIR / ("site" if mode == "real" else "site-smoke")
    assemble(mode, executed, source)
    shutil.rmtree(output, ignore_errors=True)
    # -W --keep-going: a docstring the API pages cannot render (or a broken cross-reference) fails the build,
    # listing every such warning, instead of reaching readers as a garbled page
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-W", "--keep-going", "-c", str(CONF_DIR),
               str(source), str(output)]
    environment = {**os.environ, "RPO_DOCS_MODE": mode, "RPO_DOCS_SOURCE": str(source), "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run(command, check=True, env=environment)
    pages = sum(1 for _ in output.rglob("*.html") if "_static" not in _.parts)
    print(f"site: {output} ({pages} HTML pages, {time.perf_counter() - start:.0f} s including executions)")
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("real", "smoke"), default="real")
    parser.add_argument("--no-execute", action="store_true", help="use cached executions only")
    parser.add_argument("--rerun", nargs="+", default=[], metavar="NOTEBOOK",
                        help="re-run these even when cached (e.g. after ../shared/data or outputs/demo changed)")
    parser.add_argument("notebooks", nargs="*", help="only these notebooks (stems or two-digit numbers); the site "
                                                     "then holds only these")
    args = parser.parse_args(argv)
    build(args.mode, run=not args.no_execute, names=args.notebooks or None, rerun=args.rerun)
    return 0


if __name__ == "__main__":
    sys.exit(main())
