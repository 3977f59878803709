"""The import rules of docs/architecture.md, checked on the source.

Every import counts, at the top of a module or inside a function, except
those only a type checker sees (under `if TYPE_CHECKING:`).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

import cloudtask

PACKAGE = Path(cloudtask.__file__).parent

# Layers from the top: a module may import its own layer and those below it.
LAYERS = ("cli", "api", "session", "engine")
# The one import upward: a template is a program of its own.
ALLOWED_UP = {("cloudtask.task", "cloudtask.cli.main")}
# The session's place on disk is written by the engine (logs, locks): it is
# the session package's, below the session layer.
ENGINE_IN_SESSION = {"cloudtask.session", "cloudtask.session.directory"}


def layer_of(module: str) -> str:
    if module == "cloudtask.cli" or module.startswith("cloudtask.cli."):
        return "cli"
    if module in ("cloudtask", "cloudtask.api", "cloudtask.task"):
        return "api"
    if module.startswith("cloudtask.session.") and module not in ENGINE_IN_SESSION:
        return "session"
    return "engine"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def for_type_checker(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def statements(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, but none that only a type checker runs."""
    for child in ast.iter_child_nodes(tree):
        if for_type_checker(child):
            assert isinstance(child, ast.If)
            for other in child.orelse:
                yield other
                yield from statements(other)
            continue
        yield child
        yield from statements(child)


@cache
def imports() -> dict[str, frozenset[str]]:
    """Each module of the package: the modules of the package it imports."""
    known = modules()
    graph: dict[str, frozenset[str]] = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in statements(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                for alias in node.names:
                    full = f"{source}.{alias.name}"
                    found.add(full if full in known else source)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = frozenset(found & known.keys() - {name})
    return graph


def cycles(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while (top := stack.pop()) != module:
                component.append(top)
            if component:
                found.append(sorted([module, *component]))

    for module in graph:
        if module not in index:
            visit(module)
    return found


def test_the_package_is_read_whole() -> None:
    graph = imports()
    # Known edges, so that a broken reader cannot pass by finding nothing.
    assert "cloudtask.session.drive" in graph["cloudtask.cli.main"]
    assert "cloudtask.runner" in graph["cloudtask.session.drive"]
    assert "cloudtask.cli.main" in graph["cloudtask.task"]  # inside a function
    assert len(graph) > 50


def test_no_module_imports_itself_back() -> None:
    assert cycles(imports()) == []


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset()}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_layer_imports_one_above_it() -> None:
    upward = [
        f"{module} ({layer_of(module)}) imports {other} ({layer_of(other)})"
        for module, imported in imports().items()
        for other in sorted(imported)
        if LAYERS.index(layer_of(other)) < LAYERS.index(layer_of(module))
        and (module, other) not in ALLOWED_UP
    ]
    assert upward == []


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("cloudtask.cli.main", "cli"),
        ("cloudtask.cli.fleet", "cli"),
        ("cloudtask.api", "api"),
        ("cloudtask.session.drive", "session"),
        ("cloudtask.session.directory", "engine"),
        ("cloudtask.runner", "engine"),
        ("cloudtask.store", "engine"),
    ],
)
def test_each_module_has_its_layer(module: str, layer: str) -> None:
    assert module in modules()
    assert layer_of(module) == layer


SQL = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|PRAGMA|BEGIN|WITH)\s")


def in_store(module: str) -> bool:
    return module == "cloudtask.store" or module.startswith("cloudtask.store.")


def test_only_the_store_speaks_sql() -> None:
    speaking = []
    for module, path in modules().items():
        if in_store(module):
            continue
        for node in statements(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [alias.name for alias in node.names]
                if "sqlite3" in names or getattr(node, "module", None) == "sqlite3":
                    speaking.append(f"{module}: imports sqlite3")
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and SQL.match(node.value)
            ):
                speaking.append(f"{module}: {node.value.split()[0]} ...")
    assert speaking == []


def test_importing_the_package_does_not_load_what_runs_as_its_own_process() -> None:
    # `python -m cloudtask.watchdog` would otherwise find its module loaded by
    # the package first: a RuntimeWarning at the top of every watchdog.log.
    probe = (
        "import sys, cloudtask; print(sorted(m for m in sys.modules if m.startswith('cloudtask.')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert "'cloudtask.watchdog'" not in loaded and "'cloudtask.api'" not in loaded
    warned = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "cloudtask.watchdog"],
        input="{}\n",
        capture_output=True,
        text=True,
    )
    assert "RuntimeWarning" not in warned.stderr + warned.stdout
