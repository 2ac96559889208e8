"""No import cycles inside the programs, and a command line that loads no server code.

The import graph is read from the source with `ast` (nothing is imported): an edge A -> B for
every `import B` / `from B import x` in A, wherever it stands: at module level (also nested in
`if`/`try`/`with` blocks and class bodies), under `if TYPE_CHECKING:`, and inside functions.
The last two never make an import fail, but they are dependencies all the same, and a back edge of
either kind is how a circle hides: group commit naming the core's Session under TYPE_CHECKING, a
model importing the web service inside a method. So they count; `loaded_at_import` gives the
narrower graph of what runs when a module is imported, should that ever be the one wanted.

`from P import x` where `P/x.py` exists is an edge to the submodule `P.x`, otherwise to `P`.
A submodule's implicit import of its parent package is not an edge: Python finishes importing
the parent first, so a package `__init__` that imports its own submodules is no circle.
"""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("hub", "agent", "runtimes", "protos", "simulators")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    """Every first-party module (generated protobuf code aside), by dotted name."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if not path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                found[_module_name(path)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(body: list[ast.stmt], *, strict: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when a module with this body is imported (all of them when `strict`)."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if strict or not _is_type_checking(node.test):
                yield from _import_nodes(node.body, strict=strict)
            yield from _import_nodes(node.orelse, strict=strict)
        elif isinstance(node, ast.Try):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                yield from _import_nodes(block, strict=strict)
        elif isinstance(node, ast.With | ast.ClassDef) or (
            strict and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        ):
            yield from _import_nodes(node.body, strict=strict)


def _edges(module: str, path: Path, modules: dict[str, Path], *, loaded_at_import: bool = False) -> dict[str, int]:
    """First-party modules `module` imports, each with the line of its first import.

    `loaded_at_import`: only the imports that run when the module is imported (no TYPE_CHECKING
    blocks, no function bodies).
    """
    strict = not loaded_at_import
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    out: dict[str, int] = {}
    for node in _import_nodes(tree.body, strict=strict):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for target in targets:
            # `import a.b.c` imports a.b.c; the nearest first-party module is the edge's end.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != module:
                out.setdefault(target, node.lineno)
    return out


def import_graph() -> tuple[dict[str, dict[str, int]], dict[str, Path]]:
    """{module: {imported module: line}} for every first-party module, and where each module lives."""
    modules = _sources()
    return {name: _edges(name, path, modules) for name, path in modules.items()}, modules


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (first module repeated at the end) for each strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, {})):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_a_cycle(graph, set(group)) for group in groups]


def _a_cycle(graph: dict[str, dict[str, int]], group: set[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group (breadth first)."""
    start = min(group)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node]):
                if nxt not in group:
                    continue
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(group)}")


def describe(cycle: list[str], graph: dict[str, dict[str, int]], modules: dict[str, Path]) -> str:
    """`a -> b (a.py:12) -> a (b.py:3)`: each step with the file and line of its import."""
    steps = [cycle[0]]
    for here, there in itertools.pairwise(cycle):
        steps.append(f"{there} ({modules[here].relative_to(ROOT)}:{graph[here][there]})")
    return " -> ".join(steps)


def test_the_cycle_finder_finds_a_cycle_and_names_each_import() -> None:
    graph = {"a": {"b": 3}, "b": {"c": 5}, "c": {"a": 7}, "d": {"a": 1}}
    found = cycles(graph)
    assert found == [["a", "b", "c", "a"]]
    modules = {name: ROOT / f"{name}.py" for name in graph}
    assert describe(found[0], graph, modules) == "a -> b (a.py:3) -> c (b.py:5) -> a (c.py:7)"


def test_type_checking_and_function_imports_count(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import hub.errors\n"
        "if TYPE_CHECKING:\n    import hub.names\n"
        "def f():\n    import hub.client\n"
    )
    path = tmp_path / "x.py"
    path.write_text(source)
    modules = dict.fromkeys(("hub.errors", "hub.names", "hub.client", "hub.x"), path)
    assert set(_edges("hub.x", path, modules)) == {"hub.errors", "hub.names", "hub.client"}
    assert set(_edges("hub.x", path, modules, loaded_at_import=True)) == {"hub.errors"}


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycles(package: str) -> None:
    graph, modules = import_graph()
    found = [c for c in cycles(graph) if any(m.partition(".")[0] == package for m in c)]
    assert not found, f"import cycles in {package}/:\n" + "\n".join(describe(c, graph, modules) for c in found)


# ---- the command line and the SDK load no server code ----

# What only the server needs: the store, the services, the web app and the agent channels.
SERVER_ONLY = (
    "hub.store",
    "hub.services",
    "hub.server",
    "hub.api",
    "hub.control",
    "hub.deployments",
    "hub.fleet",
    "hub.registry",
    "hub.blobs",
    "hub.pki",
    "hub.telemetry",
    "fastapi",
    "uvicorn",
    "sqlite_utils",
    "grpc",
)


def _server_only(module: str) -> bool:
    return any(module == s or module.startswith(s + ".") for s in SERVER_ONLY)


@pytest.mark.parametrize("entry", ["hub.cli.main", "hub.sdk", "hub"])
def test_cli_and_sdk_load_no_server_code(entry: str) -> None:
    probe = (
        f"import sys, {entry}\n"
        f"print('\\n'.join(sorted(m for m in sys.modules if m.startswith({SERVER_ONLY!r}))))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    server = [m for m in done.stdout.split() if _server_only(m)]
    assert not server, f"importing {entry} loads server code: {', '.join(server)}"


def test_building_the_cli_parser_loads_no_server_code() -> None:
    probe = (
        "import sys\nfrom hub.cli.main import build_parser\nbuild_parser()\n"
        f"print('\\n'.join(m for m in sys.modules if m.startswith({SERVER_ONLY!r})))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    server = [m for m in done.stdout.split() if _server_only(m)]
    assert not server, f"`hub --help` loads server code: {', '.join(server)}"
