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


TOOL_LIKE = ("hf_iia.metrics", "hf_iia.tools", "hf_iia.testing")
"""What the core must not import: the metrics, the tools built on the explainer, the test zoo."""


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def test_the_core_imports_no_metric_and_no_tool():
    graph = import_graph()
    reaching = {
        module: sorted(target for target in targets if _within(target, TOOL_LIKE))
        for module, targets in graph.items()
        if not _within(module, TOOL_LIKE)
    }
    assert {module: targets for module, targets in reaching.items() if targets} == {}


def _third_party(path: Path) -> set[str]:
    """The top-level packages outside hf_iia that ``path`` imports (anywhere in it)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names - {"hf_iia"}


def test_metrics_import_neither_transformers_nor_the_explainer():
    graph = import_graph()
    metrics = [module for module in graph if _within(module, ("hf_iia.metrics",))]
    assert metrics
    forbidden = ("hf_iia.explainer", "hf_iia.explanation", "hf_iia.loading", "hf_iia.data", "hf_iia.tools")
    assert {m: sorted(t for t in graph[m] if _within(t, forbidden)) for m in metrics} == {m: [] for m in metrics}
    paths = [path for path in ROOT.rglob("*.py") if _within(_module_name(path), ("hf_iia.metrics",))]
    assert {str(path.relative_to(ROOT)) for path in paths if "transformers" in _third_party(path)} == set()
