"""pytest configuration at the repository root: nbmake may reuse the docs build's smoke executions.

`make docs-smoke` executes every notebook with ``RPO_SMOKE=1`` (scripts/build_docs.py) and caches each
executed copy under ``.cache/docs/executed/smoke/``, keyed on the notebook file, the mode and every
source file of ``rpo_tutorial/`` and ``rpo_lab/``; a copy exists only when every cell ran without an
error. CI (``.ci/run``) builds that site right before ``make test``, so running each notebook again
through nbmake would repeat the same run in the same environment. With
``RPO_REUSE_DOCS_EXECUTIONS=1`` (set by ``.ci/run`` only), an nbmake item whose smoke execution is
cached under the current key checks that copy instead (every code cell executed, no error output);
a notebook without one runs through nbmake as usual. Without the variable nothing changes.
"""
from __future__ import annotations

import os
from pathlib import Path


def pytest_collection_modifyitems(config, items) -> None:
    if os.environ.get("RPO_REUSE_DOCS_EXECUTIONS") != "1" or os.environ.get("RPO_SMOKE") != "1":
        return
    notebooks = [item for item in items if getattr(item, "nbmake", False)]
    if not notebooks:
        return
    from scripts import build_docs

    packages = build_docs.package_hash()
    reused = []
    for item in notebooks:
        cached = build_docs.cached_execution(Path(item.filename), "smoke", packages)
        if cached.exists():
            def check(cached=cached, problems=build_docs.execution_problems) -> None:
                found = problems(cached)
                assert not found, f"{cached.name}: " + "; ".join(found)

            item.runtest = check
            reused.append(Path(item.filename).name)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"nbmake: {len(reused)} of {len(notebooks)} notebooks checked from the docs-smoke "
                            f"executions (RPO_REUSE_DOCS_EXECUTIONS=1): {', '.join(reused) or 'none'}")
