"""The package's import graph: no circles, and no import from a lower layer to a higher one.

Every import counts, at module level, inside functions and under ``TYPE_CHECKING``: a lazy
import still ties the two modules together. The layers, from the bottom:

0. ``gateway`` (Django-free: HTTP, signatures, answers) and the ``sandbox`` gateway;
1. what the rest is built on: settings (``conf``), clients, money, columns, exceptions;
2. ``rules``: what an answer means for a refund;
3. ``models`` and the signals they carry;
4. the services: recording answers, applying, syncing, health, reports;
5. the entry points: admin, views, commands, tasks, checks, the app config.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "hsq_refunds"

LAYERS: dict[str, int] = {
    "gateway": 0,
    "sandbox": 0,
    "check_ids": 1,
    "columns": 1,
    "conf": 1,
    "clients": 1,
    "exceptions": 1,
    "money": 1,
    "ratelimit": 1,
    "readers": 1,
    "choices": 1,
    "rules": 2,
    "models": 3,
    "signals": 3,
    "recording": 4,
    "apply": 4,
    "pipeline": 4,
    "selection": 4,
    "runs": 4,
    "sync": 4,
    "proof": 4,
    "report": 4,
    "export": 4,
    "dashboard": 4,
    "health": 4,
    "scheduling": 4,
    "admin": 5,
    "apps": 5,
    "checks": 5,
    "cli": 5,
    "management": 5,
    "tasks": 5,
    "urls": 5,
    "views": 5,
    "__main__": 5,
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if "migrations" in parts:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            candidates = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in modules:
                candidate = candidate.rpartition(".")[0]
            # Importing a submodule runs its package's __init__: not an edge of its own.
            if candidate and candidate != name and not name.startswith(candidate + "."):
                targets.add(candidate)
    return targets


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    return LAYERS.get(top, -1)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
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
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_layer():
    unknown = sorted(m for m in _graph() if m != "hsq_refunds" and _layer(m) < 0)
    assert unknown == [], f"give these modules a layer in LAYERS: {unknown}"


def test_no_import_circles():
    assert _cycles(_graph()) == []


def test_no_import_runs_back_up_the_layers():
    upward = sorted(
        f"{source} -> {target}"
        for source, targets in _graph().items()
        for target in targets
        if source != "hsq_refunds" and _layer(target) > _layer(source)
    )
    assert upward == []


def test_the_gateway_package_stands_alone():
    """``hsq_refunds.gateway`` imports nothing of the app around it (and no Django)."""
    graph = _graph()
    outside = sorted(
        f"{source} -> {target}"
        for source, targets in graph.items()
        if source.startswith("hsq_refunds.gateway")
        for target in targets
        if not target.startswith("hsq_refunds.gateway")
    )
    assert outside == []
    for name, path in _modules().items():
        if name.startswith("hsq_refunds.gateway"):
            source = path.read_text(encoding="utf-8")
            assert not re.search(r"^\s*(from|import) django\b", source, re.MULTILINE), name


def test_the_graph_sees_lazy_and_type_checking_imports(tmp_path, monkeypatch):
    """The checks above would pass vacuously if the reader missed imports in functions."""
    package = tmp_path / "hsq_refunds"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text("def f():\n    from .apply import x\n")
    (package / "apply.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import models\n"
    )
    monkeypatch.setitem(globals(), "PACKAGE", package)
    graph = _graph()
    assert graph["hsq_refunds.models"] == {"hsq_refunds.apply"}
    assert _cycles(graph) == [["hsq_refunds.apply", "hsq_refunds.models"]]
