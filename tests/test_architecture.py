"""The package layout is the architecture: imports point one way and never form a cycle.

Layers, from the bottom (a module may import its own layer and those its layer lists):

    core        losses.py, weighting.py, accuracy.py, paths.py   the paper's maths, ties counted half,
                                                                 where files live
    data        rpo_tutorial/data/                    files -> rows -> tokens -> batches
    models      rpo_tutorial/models/                  model loading, summed log-probs
    training    rpo_tutorial/training/                config, objectives, trainer, runs
    plots       rpo_tutorial/plots/                   figures (reads data files, never the trainer)
    evaluation  rpo_tutorial/evaluation/              sampling, judges, win rates (never the trainer)
    api         rpo_tutorial/__init__.py              the public surface
    lab         rpo_lab/                              the CLI, the demo, the study, estimates: uses the
                                                      library and is never imported (or named) by it

Every import counts, including those inside functions. No private name (``_x``) crosses a module
boundary: ``from m import _x`` and ``m._x`` for a project module ``m`` are refused, so what one
module uses of another is its public surface. Instead of a line cap, the test protects what the
cap was meant to: a reader follows one RPO step from ``RPOTrainer.compute_loss`` to Eq. 15
(``rpo_loss``) and the weights (Eqs. 11-12) through at most three files besides ``trainer.py``,
with ``Shape:`` in every docstring on the way. The checkers are tested on small synthetic
packages too, so they are known to fail when they should.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "rpo_tutorial"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE
LAB = "rpo_lab"
LAB_DIR = Path(__file__).resolve().parents[1] / LAB

ALLOWED = {
    "core": {"core"},
    "data": {"core", "data"},
    "models": {"core", "data", "models"},
    "training": {"core", "data", "models", "training"},
    "plots": {"core", "data", "plots"},
    "evaluation": {"core", "data", "models", "plots", "evaluation"},
}
ALLOWED["api"] = set(ALLOWED) | {"api"}
ALLOWED["lab"] = set(ALLOWED) | {"lab"}  # the lab uses the whole library; nothing in the library uses the lab
CORE = {"losses", "weighting", "accuracy", "paths"}
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


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _import_base(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved)."""
    base = node.module or ""
    if node.level:
        anchor = (module if is_package else module.rpartition(".")[0]).split(".")
        anchor = anchor[: len(anchor) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
    return base


def private_crossings(*roots: Path) -> list[str]:
    """Every ``from m import _x`` and ``m._x`` where ``m`` is another project module (dunders are fine)."""
    paths = {module_name(path, root): path for root in roots for path in root.rglob("*.py")}
    known, problems = set(paths), []
    for module, path in sorted(paths.items()):
        tree, is_package = ast.parse(path.read_text()), path.name == "__init__.py"
        bound: dict[str, str] = {}  # local name -> the project module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in known:
                        bound[alias.asname or alias.name.split(".")[0]] = alias.asname and alias.name or \
                            alias.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom):
                base = _import_base(node, module, is_package)
                for alias in node.names:
                    if f"{base}.{alias.name}" in known:
                        bound[alias.asname or alias.name] = f"{base}.{alias.name}"
                    elif base in known and base != module and _is_private(alias.name):
                        problems.append(f"{module} imports {alias.name} from {base}")
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or not _is_private(node.attr):
                continue
            chain, inner = [], node.value
            while isinstance(inner, ast.Attribute):
                chain.insert(0, inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id in bound:
                target = ".".join([bound[inner.id], *chain])
                if target in known and target != module:
                    problems.append(f"{module} uses {target}.{node.attr}")
    return problems


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
    ({"__init__.py": "", "evaluation/__init__.py": "", "training/__init__.py": "", "training/metrics.py": "",
      "evaluation/e.py": "from rpo_tutorial.training.metrics import tie_half_accuracy\n"},
     ["rpo_tutorial.evaluation.e (evaluation) imports rpo_tutorial.training.metrics (training)"]),
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


@pytest.mark.parametrize("files, expected", [
    ({"__init__.py": "", "data/__init__.py": "", "data/x.py": "def _helper():\n    pass\n",
      "training/__init__.py": "", "training/a.py": "from rpo_tutorial.data.x import _helper\n"},
     ["rpo_tutorial.training.a imports _helper from rpo_tutorial.data.x"]),
    ({"__init__.py": "", "data/__init__.py": "", "data/x.py": "_CACHE = {}\n",
      "training/__init__.py": "", "training/a.py": "def f():\n    from ..data import x\n    return x._CACHE\n"},
     ["rpo_tutorial.training.a uses rpo_tutorial.data.x._CACHE"]),
    ({"__init__.py": "", "data/__init__.py": "", "data/x.py": "",
      "training/__init__.py": "", "training/a.py": "import rpo_tutorial.data.x\nimport rpo_tutorial.data.x as m\n"
                                                   "rpo_tutorial.data.x._y\nm._z\n"},
     ["rpo_tutorial.training.a uses rpo_tutorial.data.x._y", "rpo_tutorial.training.a uses rpo_tutorial.data.x._z"]),
    ({"__init__.py": "__version__ = '1'\n", "data/__init__.py": "", "data/x.py": "def _own():\n    pass\n_own()\n",
      "training/__init__.py": "", "training/a.py": "import rpo_tutorial\nfrom rpo_tutorial.data.x import *\n"
                                                   "v = rpo_tutorial.__version__\n"
                                                   "class T:\n    def f(self, other):\n"
                                                   "        return self._a, other._b\n"},
     []),
])
def test_private_name_checker_catches_a_private_name_crossing_a_module_boundary(tmp_path, files, expected):
    assert private_crossings(write_package(tmp_path, files)) == expected


def test_no_private_name_crosses_a_module_boundary():
    assert private_crossings(PACKAGE_DIR, LAB_DIR) == []


# ---- the RPO step, read as the paper ------------------------------------------------------------
STEP_TARGETS = ("rpo_loss", "embedding_weights")  # Eq. 15 and Eqs. 11-12
MAX_STEP_FILES = 3  # besides trainer.py


def step_call_chains(trainer, batch) -> dict[str, list]:
    """The frames from ``RPOTrainer.compute_loss`` down to each of :data:`STEP_TARGETS`, as called."""
    import sys

    chains: dict[str, list] = {}

    def profile(frame, event, arg) -> None:
        if event != "call" or frame.f_code.co_name not in STEP_TARGETS or frame.f_code.co_name in chains:
            return
        chain, current = [], frame
        while current is not None:
            chain.insert(0, current)
            if current.f_code.co_name == "compute_loss":
                chains[frame.f_code.co_name] = chain
                return
            current = current.f_back

    sys.setprofile(profile)
    try:
        trainer.compute_loss(trainer.model, batch)
    finally:
        sys.setprofile(None)
    return chains


def docstring_of(frame) -> str | None:
    """The docstring of the function a frame runs (a method through its class), or None for lambdas."""
    if frame.f_code.co_name == "<lambda>":
        return None
    target = frame.f_globals.get(frame.f_code.co_qualname.split(".")[0])
    for part in frame.f_code.co_qualname.split(".")[1:]:
        target = getattr(target, part)
    return target.__doc__ or ""


def test_the_rpo_step_reaches_eq15_and_the_weights_through_three_files_with_shapes(tmp_path):
    from rpo_tutorial.data.collate import PreferenceCollator
    from rpo_tutorial.models.loading import load_tokenizer, tiny_model
    from rpo_tutorial.training.config import get_preset
    from rpo_tutorial.training.trainer import RPOTrainer

    tokenizer = load_tokenizer()
    config = get_preset("smoke", weighting="embedding", output_dir=str(tmp_path))
    policy = tiny_model(len(tokenizer), hidden_size=16, num_layers=1)
    trainer = RPOTrainer(model=policy, config=config, reference_model=tiny_model(len(tokenizer), hidden_size=16,
                                                                                  num_layers=1, seed=1),
                         data_collator=PreferenceCollator(tokenizer.pad_token_id))
    examples = [{"chosen_input_ids": [5, 6, 7, 8], "chosen_labels": [-100, -100, 7, 8],
                 "rejected_input_ids": [5, 6, 9], "rejected_labels": [-100, -100, 9],
                 "prompt_embedding": [float(i), 1.0]} for i in range(3)]
    chains = step_call_chains(trainer, trainer.data_collator(examples))
    assert sorted(chains) == sorted(STEP_TARGETS)  # both reached from compute_loss
    files = {Path(frame.f_code.co_filename).resolve().relative_to(PACKAGE_DIR.parent).as_posix()
             for chain in chains.values() for frame in chain}
    assert files - {"rpo_tutorial/training/trainer.py"} == {"rpo_tutorial/training/objectives.py",
                                                            "rpo_tutorial/losses.py", "rpo_tutorial/weighting.py"}
    assert len(files - {"rpo_tutorial/training/trainer.py"}) <= MAX_STEP_FILES
    missing = {frame.f_code.co_qualname for chain in chains.values() for frame in chain
               if (doc := docstring_of(frame)) is not None and "Shape:" not in doc}
    assert missing == set()
