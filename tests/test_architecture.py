"""The package layout is the architecture: imports point one way and never form a cycle.

Layers, from the bottom (a module may import its own layer and those its layer lists):

    core        losses.py, weighting.py, paths.py     the paper's maths and where files live
    data        rpo_tutorial/data/                    files -> rows -> tokens -> batches
    models      rpo_tutorial/models/                  model loading, summed log-probs
    training    rpo_tutorial/training/                config, objectives, trainer, runs
    plots       rpo_tutorial/plots/                   figures (reads data files, never the trainer)
    evaluation  rpo_tutorial/evaluation/              sampling, judges, win rates
    api         rpo_tutorial/__init__.py              the public surface
    lab         rpo_lab/                              the CLI, the demo, the study, estimates: uses the
                                                      library and is never imported (or named) by it

Every import counts, including those inside functions. The checker is tested on a small
synthetic package too, so it is known to fail when it should.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "rpo_tutorial"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE
LAB = "rpo_lab"
LAB_DIR = Path(__file__).resolve().parents[1] / LAB
MAX_MODULE_LINES = 320  # "modules under ~300 lines"

ALLOWED = {
    "core": {"core"},
    "data": {"core", "data"},
    "models": {"core", "data", "models"},
    "training": {"core", "data", "models", "training"},
    "plots": {"core", "data", "plots"},
    "evaluation": {"core", "data", "models", "training", "plots", "evaluation"},
}
ALLOWED["api"] = set(ALLOWED) | {"api"}
ALLOWED["lab"] = set(ALLOWED) | {"lab"}  # the lab uses the whole library; nothing in the library uses the lab
CORE = {"losses", "weighting", "paths"}
API = {"__init__"}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] == LAB:
        return "lab"
    if len(parts) == 1:
        return "api"  # the package's own __init__
    if len(parts) == 2 and parts[1] in CORE:
        return "core"
    if len(parts) == 2 and parts[1] in API:
        return "api"
    if parts[1] in ALLOWED:
        return parts[1]
    raise AssertionError(f"{module}: no layer; add it to ALLOWED in this test or move it")


def imported_modules(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Project modules named by every import statement of a module (absolute or relative)."""
    found = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import submodule` names the submodule; `from pkg import name` the package
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def import_graph(*roots: Path) -> dict[str, set[str]]:
    paths = {module_name(path, root): path for root in roots for path in root.rglob("*.py")}
    known = set(paths)
    return {module: imported_modules(ast.parse(path.read_text()), module, path.name == "__init__.py", known)
            - {module} for module, path in paths.items()}


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        layer = layer_of(module)
        for target in sorted(targets):
            if layer_of(target) not in ALLOWED[layer]:
                problems.append(f"{module} ({layer}) imports {target} ({layer_of(target)})")
            elif layer not in ("api", "lab") and "." in target and target == ".".join(module.split(".")[:2]):
                problems.append(f"{module} imports its own package's __init__ {target}: import the module instead")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, result, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


def test_package_imports_point_one_way():
    assert layering_violations(import_graph(PACKAGE_DIR, LAB_DIR)) == []


def test_package_has_no_import_cycles():
    assert cycles(import_graph(PACKAGE_DIR, LAB_DIR)) == []


def test_the_library_never_loads_the_lab_by_name():
    """No dynamic import either (``importlib.import_module("rpo_lab.x")``, ``"rpo_lab.x:f"`` entry points):
    the library works without the lab. Prose that shows a command (``python -m rpo_lab train``) is fine."""
    named = {str(path.relative_to(PACKAGE_DIR)) for path in PACKAGE_DIR.rglob("*.py")
             if any(isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and node.value.startswith(LAB + ".") for node in ast.walk(ast.parse(path.read_text())))}
    assert named == set()


def test_modules_stay_small():
    long = {str(path.relative_to(root)): n for root in (PACKAGE_DIR, LAB_DIR) for path in root.rglob("*.py")
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def write_package(root: Path, files: dict[str, str]) -> Path:
    package = root / PACKAGE
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


@pytest.mark.parametrize("files, expected", [
    ({"__init__.py": "", "data/__init__.py": "", "data/x.py": "from rpo_tutorial.training.run import go\n",
      "training/__init__.py": "", "training/run.py": ""},
     ["rpo_tutorial.data.x (data) imports rpo_tutorial.training.run (training)"]),
    ({"__init__.py": "", "plots/__init__.py": "", "plots/p.py": "def f():\n    from ..training import run\n",
      "training/__init__.py": "", "training/run.py": ""},
     ["rpo_tutorial.plots.p (plots) imports rpo_tutorial.training.run (training)"]),
    ({"__init__.py": "", "losses.py": "import rpo_tutorial.data.x\n", "data/__init__.py": "", "data/x.py": ""},
     ["rpo_tutorial.losses (core) imports rpo_tutorial.data.x (data)"]),
    ({"__init__.py": "", "data/__init__.py": "from rpo_tutorial.data.x import y\n",
      "data/x.py": "from rpo_tutorial.data import z\n"},
     ["rpo_tutorial.data.x imports its own package's __init__ rpo_tutorial.data: import the module instead"]),
])
def test_layering_checker_catches_a_wrong_way_import(tmp_path, files, expected):
    assert layering_violations(import_graph(write_package(tmp_path, files))) == expected


def test_cycle_checker_finds_a_cycle_through_a_function_level_import(tmp_path):
    package = write_package(tmp_path, {
        "__init__.py": "", "evaluation/__init__.py": "",
        "evaluation/a.py": "from rpo_tutorial.evaluation.b import g\n",
        "evaluation/b.py": "def g():\n    from .a import f\n",
        "evaluation/c.py": "from rpo_tutorial.evaluation import a\n",
    })
    assert cycles(import_graph(package)) == [["rpo_tutorial.evaluation.a", "rpo_tutorial.evaluation.b"]]


def test_top_level_imports_keep_working():
    import rpo_tutorial

    for name in rpo_tutorial.__all__:
        assert getattr(rpo_tutorial, name) is not None, name
