"""lelog's modules, and the benchmark's, import only downwards: no circle, not even through
imports made only for type checking (docs/writer.md#the-parts)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imports_of(path: Path, package: str = "lelog") -> set[str]:
    """The lelog modules ``path`` imports, wherever the import stands."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:  # from . import a, b
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(package + "."):
            found.add(node.module.split(".")[1])  # type: ignore[union-attr]
    return found


def graph(package: str = "lelog") -> dict[str, set[str]]:
    modules = {path.stem: path for path in (ROOT / package).glob("*.py")}
    return {name: imports_of(path, package) & set(modules) - {name} for name, path in modules.items()}


@pytest.mark.parametrize("package", ["lelog", "benchmarks"])
def test_the_modules_import_each_other_without_a_circle(package: str) -> None:
    edges = graph(package)
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        assert state.get(name) != "open", f"import circle: {' -> '.join(path + [name])}"
        state[name] = "open"
        for other in sorted(edges[name]):
            visit(other, path + [name])
        state[name] = "done"
        order.append(name)

    for name in sorted(edges):
        visit(name, [])
    assert len(order) == len(edges)


def test_the_writers_parts_sit_below_the_handle() -> None:
    edges = graph()
    for part in ("_ledger", "_pipeline", "_delivery", "_registry", "_channel", "_lifecycle", "_reentry"):
        assert "_writer" not in edges[part] and "_handler" not in edges[part], part
    assert edges["_reentry"] == set() and edges["_registry"] == set()
