"""The package structure docs/architecture.md describes, checked on every import the code contains.

Imports are read from the source (``ast``), not executed: top-level ones, those inside functions
and those under ``TYPE_CHECKING`` all count, because a lazy import hides a dependency but does
not remove it. Relative imports are resolved against the importing file's package.
"""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = tuple(p for p in ("controller", "agent", "common", "fleetsim") if (ROOT / p / "__init__.py").exists())
#: what each top-level package may import from the others (docs/architecture.md, "Packages")
MAY_IMPORT = {"common": {"common"}, "agent": {"agent", "common"}, "controller": {"controller", "common"},
              "fleetsim": {"fleetsim", "agent", "common", "controller"}}
MAX_CLASS_LINES = 300


def _module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


@cache
def _modules() -> dict[str, Path]:
    """Dotted module name → file, for every Python file of the checked packages."""
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imported_names(path: Path) -> Iterator[tuple[str, int]]:
    """(dotted name, line) of everything a file imports, at any depth of the syntax tree."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from ((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            # "from pkg import sub" imports the submodule when there is one, else a name of pkg
            yield from ((f"{base}.{alias.name}", node.lineno) for alias in node.names)


def _resolve(name: str) -> str | None:
    """The checked module a dotted import name lands in (the longest known prefix), or None (third party)."""
    modules = _modules()
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


@cache
def _graph() -> dict[str, set[str]]:
    """File-level import graph: module → modules it imports (self-imports dropped)."""
    graph: dict[str, set[str]] = {}
    for module, path in _modules().items():
        targets = {_resolve(name) for name, _ in _imported_names(path)}
        graph[module] = {t for t in targets if t and t != module}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that ends where it starts), or None."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return None


def _all_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle found by removing one cycle's last edge and looking again (for the failure message)."""
    graph = {k: set(v) for k, v in graph.items()}
    found = []
    while (cycle := _cycle(graph)) is not None and len(found) < 20:
        found.append(cycle)
        graph[cycle[-2]].discard(cycle[-1])
    return found


def _subgraph(prefix: str) -> dict[str, set[str]]:
    inside = {m for m in _graph() if m == prefix or m.startswith(prefix + ".")}
    return {m: _graph()[m] & inside for m in inside}


def test_the_checker_sees_function_level_and_type_checking_imports(tmp_path: Path) -> None:
    """The walk must not be fooled by a lazy or TYPE_CHECKING import (it reads the tree, not sys.modules)."""
    src = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from controller.registry import Registry\n"
           "def f():\n    import agent.daemon\n    from . import sibling\n")
    path = ROOT / "controller" / "jobs" / "_probe.py"
    try:
        path.write_text(src, encoding="utf-8")
        names = {n for n, _ in _imported_names(path)}
    finally:
        path.unlink()
    assert {"controller.registry.Registry", "agent.daemon", "controller.jobs.sibling"} <= names
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None and _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("package", ["controller.jobs", "controller.compression", "controller.conversion",
                                     "controller.api", "common"])
def test_no_import_cycle_inside(package: str) -> None:
    cycle = _cycle(_subgraph(package))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_import_cycle_between_files() -> None:
    cycles = _all_cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_packages_import_only_what_the_architecture_allows() -> None:
    wrong = []
    for module, path in _modules().items():
        top = module.split(".")[0]
        for name, line in _imported_names(path):
            target = _resolve(name)
            if target and target.split(".")[0] not in MAY_IMPORT[top]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not wrong, "imports across the package table of docs/architecture.md:\n" + "\n".join(wrong)


def test_no_class_in_controller_over_300_lines() -> None:
    big = []
    for module, path in _modules().items():
        if not module.startswith("controller"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and (size := node.end_lineno - node.lineno + 1) > MAX_CLASS_LINES:
                big.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({size} lines)")
    assert not big, "classes over 300 lines (split them along their seams):\n" + "\n".join(big)
