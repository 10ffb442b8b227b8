"""The package layout of the README: no import cycles, and imports only run down the layers.

Every `import` statement counts, also those inside functions and under TYPE_CHECKING: a lazy
import avoids the import cost, not the dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ledger", "producers", "services", "unlearning", "consumers", "cli")

# package -> the first-party packages it may import (besides itself)
ALLOWED = {
    "ledger": set(),
    "producers": {"ledger"},
    "services": {"ledger"},
    "unlearning": {"ledger", "services"},  # services: the benchmarks start their own MLflow
    "consumers": {"ledger", "producers", "services", "unlearning"},
    "cli": {"ledger", "producers", "services", "unlearning", "consumers"},
}


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The first-party modules `name` imports (a `from pkg import mod` names the module)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a package path: the longest module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_walker_sees_lazy_and_type_checking_imports() -> None:
    graph = _graph()
    # a function-level import (Predictor inside load_certified) and a TYPE_CHECKING one (Aggregator)
    assert "unlearning.inference" in graph["unlearning.registry.verify"]
    assert "unlearning.methods.apa.aggregation" in graph["unlearning.versions.store"]
    # `from unlearning import methods` names the package module, `from x import name` the module x
    assert "unlearning.methods" in graph["unlearning.operations.build"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_imports_run_down_the_layers() -> None:
    wrong = sorted(f"{name} imports {target}" for name, targets in _graph().items() for target in targets
                   if target.split(".")[0] != name.split(".")[0]
                   and target.split(".")[0] not in ALLOWED[name.split(".")[0]])
    assert wrong == []


def test_product_code_never_imports_the_benchmarks() -> None:
    importers = sorted(name for name, targets in _graph().items()
                       if any(t.startswith("unlearning.bench") for t in targets)
                       and not name.startswith(("unlearning.bench", "cli.bench")))
    assert importers == []
