"""The import graph of the project's own modules has no cycles, lazy imports
(inside functions) included, and the layers import only downward."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# source folder -> package name, as pyproject.toml installs them
PACKAGES = {"wavae": "wavae", "train": "wavae.train", "quantize": "wavae.quantize", "device": "wavae.device"}
# what each layer may import: train -> quantize -> device, and all of them the
# small torch-free core in wavae/ (errors, fileio, ...).  wavae.cli and
# wavae.demo sit on top and may import anything.
LAYER_MAY_IMPORT = {
    "wavae.device": {"wavae.device", "wavae"},
    "wavae.train": {"wavae.train", "wavae.device", "wavae"},
    "wavae.quantize": {"wavae.quantize", "wavae.train", "wavae.device", "wavae"},
}
TOP = {"wavae.cli", "wavae.__main__", "wavae.demo"}


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for folder, pkg in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            mods[".".join([pkg, *parts])] = path
    return mods


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """Project modules that ``name`` imports anywhere in its body."""
    package = name if _is_package(path) else name.rpartition(".")[0]
    found: set[str] = set()

    def resolve(target: str) -> None:
        # the longest project module that is a prefix of the target
        while target and target not in mods:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                resolve(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                if f"{mod}.{alias.name}" in mods:
                    resolve(f"{mod}.{alias.name}")
                else:
                    resolve(mod)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, mods) for name, path in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _layer(name: str) -> str:
    for pkg in ("wavae.device", "wavae.train", "wavae.quantize"):
        if name == pkg or name.startswith(pkg + "."):
            return pkg
    return "wavae"


def test_the_checker_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_graph_is_read_from_the_tree():
    graph = _graph()
    assert "wavae.device.engine" in graph
    assert "wavae.device.bundle" in graph["wavae.device.engine"]


def test_no_import_cycles_lazy_imports_included():
    cycles = _cycles(_graph())
    assert cycles == [], "import cycles among the project's modules: " + "; ".join(
        " <-> ".join(c) for c in cycles)


def test_layers_import_only_downward():
    bad = []
    for name, deps in _graph().items():
        if name in TOP:
            continue
        allowed = LAYER_MAY_IMPORT.get(_layer(name))
        for dep in sorted(deps):
            layer = _layer(dep)
            if allowed is None:  # the wavae/ core imports only itself
                if layer != "wavae" or dep in TOP:
                    bad.append(f"{name} -> {dep}")
            elif layer not in allowed or dep in TOP:
                bad.append(f"{name} -> {dep}")
    assert bad == [], "imports against the layering (train -> quantize -> device, core below all): " + ", ".join(bad)
