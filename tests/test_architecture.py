"""The layer rule of docs/architecture.md, checked on the source: no upward import, no import cycle, small files.

Every `import lakd...` counts, including those inside functions: a lazy import is still a dependency, and hiding
one in a function is how cycles creep back in. The one exemption is the package facade `lakd/__init__.py`,
whose `lakd.load()` lazily reaches the inference layer so that `import lakd` stays cheap.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "lakd"

# Lowest first. A module may import its own layer and any layer before it, never one after it.
LAYERS: list[tuple[str, ...]] = [
    ("lakd",),  # the package's constants (__version__, SAMPLE_RATE, DEFAULT_LABELS)
    ("lakd.io", "lakd.checksums", "lakd.run_lock", "lakd.choices"),  # files, checksums, locks, allowed values
    ("lakd.config", "lakd.config.checks", "lakd.config.diff"),
    ("lakd.data",),
    ("lakd.models",),
    ("lakd.distill",),
    ("lakd.train",),
    ("lakd.eval",),
    ("lakd.inference", "lakd.export"),
    ("lakd.recipes",),
    ("lakd.launch", "lakd.experiments"),
    ("lakd.bench", "lakd.tune", "lakd.cli"),
]
MAX_LINES = 450


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, root: Path = ROOT) -> set[str]:
    """Every lakd module this file imports (absolute or relative), at any depth of the file."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name == "lakd" or a.name.startswith("lakd.")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod == "lakd" or mod.startswith("lakd."):
                # `from lakd.data import shards` depends on the submodule lakd.data.shards; a name that is not a
                # submodule (a function, a constant) is a dependency on the package itself
                subs = {f"{mod}.{a.name}" for a in node.names if _is_module(root, f"{mod}.{a.name}")}
                found |= subs
                if len(subs) < len(node.names):
                    found.add(mod)
    return found


def _is_module(root: Path, dotted: str) -> bool:
    p = root.parent.joinpath(*dotted.split("."))
    return p.is_dir() or p.with_suffix(".py").exists()


def _layer(module: str) -> int:
    if module == "lakd.cli" or module.startswith("lakd.cli_"):  # the command line and its helper modules
        return len(LAYERS) - 1
    best, depth = None, -1
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and p.count(".") > depth:
                best, depth = i, p.count(".")
    if best is None:
        raise AssertionError(f"{module} belongs to no layer: add it to LAYERS and docs/architecture.md")
    return best


def _graph(root: Path = ROOT) -> dict[str, set[str]]:
    graph = {}
    for path in sorted(root.rglob("*.py")):
        name = _module_name(path, root)
        deps = _imports(path, root) - {name}
        if name == "lakd":
            deps = set()  # the facade's lazy lakd.load() -> lakd.inference (see the module doc)
        graph[name] = deps
    return graph


def test_no_module_imports_a_higher_layer():
    upward = []
    for mod, deps in _graph().items():
        for dep in deps:
            if _layer(dep) > _layer(mod):
                upward.append(f"{mod} -> {dep}")
    assert not upward, "upward imports (see docs/architecture.md):\n" + "\n".join(sorted(upward))


def test_no_import_cycles_between_modules():
    graph = _graph()
    modules = set(graph)
    # edges to packages (`from lakd.data import x` where x is a name) point at the package's __init__
    edges = {m: {d for d in deps if d in modules} for m, deps in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(edges[m]):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d) :] + [d]) if d in stack else f"{m} -> {d}")
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("path", sorted(ROOT.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_files_stay_small(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path} has {n} lines (limit {MAX_LINES}): split it by purpose"


def test_the_checker_sees_an_upward_import_and_a_cycle(tmp_path):
    """The rules themselves can fail: on a small fake package, a lazy upward import and a cycle are reported."""
    pkg = tmp_path / "lakd"
    files = {
        "__init__.py": "",
        "data/__init__.py": "",
        "data/probe.py": "def f():\n    from lakd.train import engine\n",
        "data/a.py": "from lakd.data import b\n",
        "data/b.py": "from . import a\n",
        "train/__init__.py": "",
        "train/engine.py": "",
    }
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    graph = _graph(pkg)
    assert "lakd.train.engine" in graph["lakd.data.probe"]
    assert _layer("lakd.train.engine") > _layer("lakd.data.probe")
    assert "lakd.data.b" in graph["lakd.data.a"] and "lakd.data.a" in graph["lakd.data.b"]
