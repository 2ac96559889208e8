"""The house's import boundaries, read from the source with `ast` (nothing is imported).

hub/, agent/ and runtimes/ are separate programs: they meet only through protos/ and HTTP/OCI,
so none imports another. simulators/ runs the real agent (and starts a real hub), but only
through public entry points: the names a package's `__init__` lists in `__all__`. Every
import counts, also those inside functions and under `if TYPE_CHECKING:`.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = ("hub", "agent", "runtimes")
FIRST_PARTY = (*PROGRAMS, "protos", "simulators")
# Which first-party packages each program must never import.
FORBIDDEN = {program: set(PROGRAMS) - {program} for program in PROGRAMS}


@dataclass(frozen=True)
class Import:
    """One imported module (and, for `from M import a`, the name taken from it), and where."""

    path: Path
    line: int
    module: str
    name: str | None  # None for `import M`

    def where(self) -> str:
        """`path:line: the import`, for a failure message."""
        text = f"from {self.module} import {self.name}" if self.name is not None else f"import {self.module}"
        return f"{self.path.relative_to(ROOT)}:{self.line}: {text}"


def module_name(path: Path) -> str:
    """The dotted module name of a source file under ROOT."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, package: str | None = None) -> list[Import]:
    """Every import statement of a file, at any depth (functions, TYPE_CHECKING blocks), relative ones resolved
    against `package` (default: the file's own package under ROOT)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    if package is None:
        package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(path, node.lineno, alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, module] if module else base)
            found += [Import(path, node.lineno, module, alias.name) for alias in node.names]
    return found


def sources(package: str) -> list[Path]:
    """The package's own Python files (generated protobuf modules aside)."""
    return sorted(p for p in (ROOT / package).rglob("*.py") if not p.name.endswith(("_pb2.py", "_pb2_grpc.py")))


def top(module: str) -> str:
    """The top-level package of a dotted module name."""
    return module.partition(".")[0]


@cache
def public_names(package: str) -> frozenset[str] | None:
    """The names `package/__init__.py` lists in `__all__`; None when `package` is not a package."""
    init = ROOT.joinpath(*package.split("."), "__init__.py")
    if not init.is_file():
        return None
    names: set[str] = set()
    for node in ast.parse(init.read_text()).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AugAssign | ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets) and node.value is not None:
            value = node.value
            if isinstance(value, ast.List | ast.Tuple):
                names |= {e.value for e in value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return frozenset(names)


def cross_imports(program: str) -> list[str]:
    """Imports in `program` of a program it must not import."""
    return [i.where() for path in sources(program) for i in imports_of(path) if top(i.module) in FORBIDDEN[program]]


def non_public_imports(package: str) -> list[str]:
    """Imports in `package` of another first-party package that do not go through a public entry point."""
    bad: list[str] = []
    for path in sources(package):
        for i in imports_of(path):
            if top(i.module) not in FIRST_PARTY or top(i.module) == package:
                continue
            names = public_names(i.module)
            if names is None:
                bad.append(f"{i.where()}  ({i.module} is a module, not a package's entry point)")
            elif i.name is not None and i.name not in names:
                bad.append(f"{i.where()}  ({i.name!r} is not in {i.module}.__all__)")
    return bad


@pytest.mark.parametrize("program", PROGRAMS)
def test_a_program_never_imports_another(program: str) -> None:
    assert sources(program), f"no sources found under {program}/"
    offending = cross_imports(program)
    assert not offending, (
        f"{program}/ imports {', '.join(sorted(FORBIDDEN[program]))}; they meet through protos/ and HTTP/OCI:\n"
        + "\n".join(offending)
    )


def test_simulators_use_only_public_entry_points() -> None:
    offending = non_public_imports("simulators")
    assert not offending, "simulators/ import names no package __init__ lists in __all__:\n" + "\n".join(offending)


def test_function_level_and_type_checking_imports_are_read(tmp_path: Path) -> None:
    # The checks above are only as good as this reader: a hidden import must not slip by.
    text = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from agent.daemon import AgentDaemon\n"
        "def f() -> None:\n"
        "    import runtimes.server\n"
        "    from . import errors\n"
    )
    probe = tmp_path / "probe.py"
    probe.write_text(text)
    found = {(i.module, i.name) for i in imports_of(probe, package="hub.control")}
    assert found >= {("agent.daemon", "AgentDaemon"), ("runtimes.server", None), ("hub.control", "errors")}


def test_public_names_are_read_from_all() -> None:
    names = public_names("agent")
    assert names is not None and "AgentDaemon" in names
    assert public_names("agent.daemon") is None  # a module, not a package
