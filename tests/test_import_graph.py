"""The package's import graph, read from the source with ``ast`` (imports under ``TYPE_CHECKING`` and inside
functions included: a type-only circle is still a circle a reader has to hold in mind)."""

from __future__ import annotations

import ast
from pathlib import Path

import hf_iia

ROOT = Path(hf_iia.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """``{module: the hf_iia modules it imports}``; ``from package import name`` counts as importing
    ``package.name`` when that is a module, else ``package``."""
    paths = {_module_name(path): path for path in ROOT.rglob("*.py")}

    def known(name: str) -> str:
        while name not in paths:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                if base.split(".")[0] == "hf_iia":
                    edges.update(known(f"{base}.{alias.name}") for alias in node.names)
            elif isinstance(node, ast.Import):
                edges.update(known(alias.name) for alias in node.names if alias.name.split(".")[0] == "hf_iia")
        graph[module] = edges - {module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_walk_sees_type_only_imports():
    graph = import_graph()
    assert "hf_iia.adapters.base" in graph["hf_iia.engine"]  # under TYPE_CHECKING only
    assert "hf_iia.adapters.base" in graph["hf_iia.adapters.registry"]


def test_the_package_has_no_import_circle():
    assert cycles(import_graph()) == []
