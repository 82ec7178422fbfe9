"""The package's import layers (issue 17, item 4): no import cycle, and each layer imports only the layers
below it. A static check of the source (``ast``, nothing imported), function-local imports included.

The table: a module belongs to the layer of its longest matching prefix in :data:`LAYERS` (relative to
``knowledge_distill_util``; ``""`` is the package's ``__init__``), and may import the layers of
:data:`MAY_IMPORT` (and its own).

=========  ========================================================================  =============================
layer      modules                                                                   may import
=========  ========================================================================  =============================
base       _checks _cpu _device _env _errors _io _minilm _registry _replace_dir      base
           _staging _startup _state _umask _vocab _write_errors
losses     _kernels _soft_targets functional divergences sparse_losses fused_linear  base
           _fused_kernel nn registry schedules distill
models     models (BERT, BiLSTM, BERT-of-Theseus, snapshots, a trained model on      base, losses
           disk)
engine     engine (Distiller, loop, checkpoint, lock, loss log, collectives,         base, losses
           a model's predictions and metrics);
           topk_cache topk_format topk_reader (the teacher-output cache); convert
           (checkpoints of earlier versions)
data       data (its augmentation loads a BERT)                                      base, losses, models, engine
config     config (the schema of kdu-train's configuration: imports no recipe)     base, losses, models,
                                                                                     engine
compat     compat (the original toolkit: flags, OFRecord parts, snapshots,           base, losses, models, engine,
           results files, summary.csv, init scripts)                                 data, config
training   training (recipes, builders, plan, trainer, compression, summary)         base, losses, models, engine,
                                                                                     data, config, compat
cli        cli (python -m, kdu-train, kdu-compress, the original script names,       every layer but entry
           the pregeneration script)
entry      the package ``__init__``, ``__main__``                                    everything
=========  ========================================================================  =============================

So: cli > training (the recipes) > compat > config, data > engine, models > losses > base. ``compat`` sits
between the recipes, which read the original's snapshots, OFRecord parts and results files through it, and the
layers it reads them with; it imports no recipe (the original scripts' entry point, which runs a recipe, is
``cli.original``).

A failure names each offending import with its file and line.
"""
import ast
import os
import subprocess
import sys
from typing import Dict, List, Set, Tuple

import pytest

PACKAGE = "knowledge_distill_util"
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

#: layer -> module prefixes (relative to the package; "" is the package's __init__).
LAYERS: Dict[str, Tuple[str, ...]] = {
    "base": ("_checks", "_cpu", "_device", "_env", "_errors", "_io", "_minilm", "_registry", "_replace_dir",
             "_staging", "_startup", "_state", "_umask", "_vocab", "_write_errors"),
    "losses": ("_kernels", "_soft_targets", "functional", "divergences", "sparse_losses", "fused_linear",
               "_fused_kernel", "nn", "registry", "schedules", "distill"),
    "models": ("models",),
    # topk_cache: the teacher-output cache, a piece of the engine; convert: models and checkpoints of earlier
    # versions to safetensors
    "engine": ("engine", "topk_cache", "topk_format", "topk_reader", "convert"),
    "data": ("data",),
    "config": ("config",),  # the configuration schema: imports no recipe
    "compat": ("compat",),
    "training": ("training",),
    "cli": ("cli",),
    "entry": ("", "__main__"),
}

#: layer -> the other layers it may import.
MAY_IMPORT: Dict[str, Set[str]] = {
    "base": set(),
    "losses": {"base"},
    "models": {"base", "losses"},
    "engine": {"base", "losses"},
    "data": {"base", "losses", "models", "engine"},
    "config": {"base", "losses", "models", "engine"},
    "compat": {"base", "losses", "models", "engine", "data", "config"},
    "training": {"base", "losses", "models", "engine", "data", "config", "compat"},
    "cli": set(LAYERS) - {"cli", "entry"},
    "entry": set(LAYERS),
}

#: (importing module, imported module, "file:line")
Edge = Tuple[str, str, str]


def _module_name(root: str, path: str) -> str:
    rel = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _resolve(module: str, is_package: bool, level: int, name: str) -> str:
    """The absolute module of ``from <level dots><name> import ...`` written in ``module``."""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    if level > 1:
        base = base[: -(level - 1)]
    return ".".join(base + ([name] if name else []))


def import_edges(root: str, package: str) -> Tuple[Set[str], List[Edge]]:
    """Every module of ``root/package`` and every import of one by another (at any depth: function-local,
    under ``if``/``try`` included). ``from a import b`` counts as an import of ``a.b`` when that is a module."""
    paths = [os.path.join(d, f) for d, _, files in os.walk(os.path.join(root, package)) for f in files
             if f.endswith(".py")]
    modules = {_module_name(root, p) for p in paths}
    edges: List[Edge] = []
    for path in sorted(paths):
        module = _module_name(root, path)
        is_package = path.endswith("__init__.py")
        with open(path, encoding="utf-8") as stream:
            tree = ast.parse(stream.read(), path)
        where = os.path.relpath(path, root)
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(module, is_package, node.level, node.module) if node.level else (node.module or "")
                targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names]
            for target in targets:
                if target in modules and target != module:
                    edges.append((module, target, f"{where}:{node.lineno}"))
    return modules, edges


def cycles(modules: Set[str], edges: List[Edge]) -> List[List[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    graph: Dict[str, Set[str]] = {m: set() for m in modules}
    for a, b, _ in edges:
        graph[a].add(b)
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def cycle_report(modules: Set[str], edges: List[Edge]) -> List[str]:
    """One line per import inside a cycle: ``file:line: a imports b (cycle of N modules)``."""
    lines = []
    for component in cycles(modules, edges):
        members = set(component)
        lines += [f"{where}: {a} imports {b} (cycle of {len(component)} modules: {', '.join(component)})"
                  for a, b, where in edges if a in members and b in members]
    return lines


def layer_of(module: str, package: str = PACKAGE) -> str:
    """The layer of ``module`` (its longest prefix in :data:`LAYERS`); KeyError when no prefix matches."""
    rel = module[len(package) + 1:] if module.startswith(package + ".") else ("" if module == package else module)
    best, length = None, -1
    for layer, prefixes in LAYERS.items():
        for prefix in prefixes:
            matches = rel == prefix or (prefix and rel.startswith(prefix + "."))
            if matches and len(prefix) > length:
                best, length = layer, len(prefix)
    if best is None:
        raise KeyError(f"module {module} is in no layer; add it to LAYERS in tests/test_layers.py")
    return best


def layer_report(edges: List[Edge], package: str = PACKAGE) -> List[str]:
    """One line per import that breaks :data:`MAY_IMPORT`: ``file:line: a (layer) imports b (layer)``."""
    lines = []
    for a, b, where in edges:
        la, lb = layer_of(a, package), layer_of(b, package)
        if la != lb and lb not in MAY_IMPORT[la]:
            lines.append(f"{where}: {a} ({la}) imports {b} ({lb}); {la} may import only "
                         f"{', '.join(sorted(MAY_IMPORT[la])) or 'itself'}")
    return lines


@pytest.fixture(scope="module")
def package_graph():
    return import_edges(ROOT, PACKAGE)


def test_the_package_has_no_import_cycle(package_graph):
    modules, edges = package_graph
    assert len(modules) > 50 and len(edges) > 100  # the walk found the package
    problems = cycle_report(modules, edges)
    assert not problems, "import cycles:\n" + "\n".join(problems)


def test_every_module_is_in_a_layer(package_graph):
    modules, _ = package_graph
    unplaced = []
    for module in sorted(modules):
        try:
            layer_of(module)
        except KeyError as error:
            unplaced.append(str(error))
    assert not unplaced, "\n".join(unplaced)


def test_each_layer_imports_only_the_layers_below_it(package_graph):
    _, edges = package_graph
    problems = layer_report(edges)
    assert not problems, "imports across the layer contracts:\n" + "\n".join(problems)


_FIRST_IMPORTS = """
import importlib, sys
import oneflow  # the slow part, once; the package's modules are dropped and imported again for each name
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m.split(".")[0] == "knowledge_distill_util"]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as error:
        failed.append(f"{name}: {type(error).__name__}: {error}")
print("\\n".join(failed))
"""


def test_each_compat_and_cli_module_imports_first(package_graph):
    """What the static check cannot see: ``from ..config.schema import X`` runs ``training/__init__`` first,
    whose recipes import ``compat.models``; a compat module importing the training package at its top is then a
    circle when it is imported first (as a script or a test does). Each module first, in a fresh package."""
    modules, _ = package_graph
    names = sorted(m for m in modules if m.startswith((f"{PACKAGE}.compat.", f"{PACKAGE}.cli.")))
    assert f"{PACKAGE}.compat.models" in names and f"{PACKAGE}.cli.original" in names
    env = dict(os.environ, PYTHONPATH=os.path.abspath(ROOT), GLOG_minloglevel="3")
    done = subprocess.run([sys.executable, "-c", _FIRST_IMPORTS, *names], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "", done.stdout


def _write(root, files: Dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_cycle_through_a_function_local_import_is_named_with_file_and_line(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from .b import g\n\ndef f():\n    return g()\n",
        "pkg/b.py": "import os\n\n\ndef g():\n    from . import a\n    return a\n",
        "pkg/c.py": "from pkg.a import f\n",  # imports into the cycle, not part of it
    })
    modules, edges = import_edges(str(tmp_path), "pkg")
    assert cycles(modules, edges) == [["pkg.a", "pkg.b"]]
    report = cycle_report(modules, edges)
    assert report == [f"{os.path.join('pkg', 'a.py')}:1: pkg.a imports pkg.b (cycle of 2 modules: pkg.a, pkg.b)",
                      f"{os.path.join('pkg', 'b.py')}:5: pkg.b imports pkg.a (cycle of 2 modules: pkg.a, pkg.b)"]


def test_an_import_against_the_table_is_named_with_file_and_line(tmp_path):
    _write(tmp_path, {
        f"{PACKAGE}/__init__.py": "",
        f"{PACKAGE}/engine/__init__.py": "",
        f"{PACKAGE}/engine/run.py": "import json\n\n\ndef run():\n    from ..training.plan import Plan\n",
        f"{PACKAGE}/training/__init__.py": "",
        f"{PACKAGE}/training/plan.py": "from .. import engine\n",  # allowed: training may import engine
    })
    modules, edges = import_edges(str(tmp_path), PACKAGE)
    assert cycles(modules, edges) == []
    assert layer_report(edges) == [
        f"{os.path.join(PACKAGE, 'engine', 'run.py')}:5: {PACKAGE}.engine.run (engine) imports "
        f"{PACKAGE}.training.plan (training); engine may import only base, losses"]


def test_compat_may_import_the_configuration_but_no_recipe_and_nothing_imports_the_cli(tmp_path):
    _write(tmp_path, {
        f"{PACKAGE}/__init__.py": "",
        f"{PACKAGE}/compat/__init__.py": "",
        f"{PACKAGE}/compat/models.py": "from ..config.schema import TrainConfig\nfrom ..training import recipes\n",
        f"{PACKAGE}/training/__init__.py": "",
        f"{PACKAGE}/config/schema.py": "",
        f"{PACKAGE}/training/recipes.py": "from ..compat import models\nfrom ..cli.original import main\n",
        f"{PACKAGE}/cli/__init__.py": "",
        f"{PACKAGE}/cli/original.py": "from ..training import recipes\nfrom ..compat import models\n",
    })
    _, edges = import_edges(str(tmp_path), PACKAGE)
    assert layer_report(edges) == [
        f"{os.path.join(PACKAGE, 'compat', 'models.py')}:2: {PACKAGE}.compat.models (compat) imports "
        f"{PACKAGE}.training.recipes (training); compat may import only base, config, data, engine, losses, models",
        f"{os.path.join(PACKAGE, 'training', 'recipes.py')}:2: {PACKAGE}.training.recipes (training) imports "
        f"{PACKAGE}.cli.original (cli); training may import only base, compat, config, data, engine, losses, models"]
