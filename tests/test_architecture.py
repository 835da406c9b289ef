"""The import graph of descend's own modules: no cycle anywhere, and the low layers never import upwards.

Read with the standard library's ``ast`` only (nothing is imported), so a
lazy import inside a function counts like one at the top of a module.  An
import of ``a.b.c`` is an edge to the module ``a.b.c``; the implicit import of
its parent packages' ``__init__`` is not counted (a package's ``__init__``
re-exports its submodules, and would otherwise make every package a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "descend"
LOW = ("data", "model", "optim", "backend", "io")
HIGH = ("train", "engines", "experiments", "cli", "serve", "placement", "pca", "estimator")


def module_files() -> dict[str, Path]:
    files = {}
    for path in sorted((SRC / ROOT).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The descend modules ``name`` imports, anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from a import b`` names the module a.b when b is one, else a name inside a.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
    return out


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_graph_sees_lazy_imports_and_packages():
    graph = import_graph()
    assert "descend.train.predict" in graph and "descend.experiments.search.study" in graph
    # a function-level import is an edge (the kind that hid the old ensemble <-> predict circle)
    assert "descend.train.ensemble_model" in graph["descend.train.predict"]


def test_no_import_cycle_among_descend_modules():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("low", LOW)
def test_low_layers_import_no_upper_layer(low):
    graph = import_graph()
    bad = sorted(f"{m} -> {t}" for m, targets in graph.items() if layer(m) == low
                 for t in targets if layer(t) in HIGH)
    assert not bad, f"{low} imports upwards: " + ", ".join(bad)


def test_experiments_are_packages_not_prefixed_files():
    flat = sorted(p.name for p in (SRC / ROOT / "experiments").glob("*.py")
                  if p.name.startswith(("search_", "pca_", "compare_", "ensemble_")))
    assert not flat, f"flat experiment modules left: {flat}"
    assert not (SRC / ROOT / "pca.py").exists(), "descend/pca.py facade should be the descend/pca package"
