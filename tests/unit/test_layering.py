"""The layering rule of DESIGN.md, checked on the source (parsed, never imported).

One rule per folder: the parts of busd a module in that folder may import.
The part of a module is its folder under ``busd/`` (``busd.core``,
``busd.master``, ...) and, on the client side, under ``busd/client/``
(``busd.client`` for its top, ``busd.client.ctl``, ...); every import is
checked, at any depth (inside functions and ``if TYPE_CHECKING:`` blocks too,
and ``importlib.import_module("...")`` with a literal name).

- ``busd/core/`` imports only the stdlib, msgpack, pyzmq and itself;
- ``busd/commands/`` (one module per command, both sides of the wire)
  imports only ``busd.core`` and itself;
- the client side (``busd/client/`` and its folders) imports only
  ``busd.core``, ``busd.commands`` (busctl's parser and output) and the
  client side;
- nothing in ``busd/`` imports the client side except ``busd/hosts/`` (a
  joined pool is a client of another master), ``busd/testing/`` and
  ``busd/examples/``;
- nothing imports ``busd.__main__`` or busctl's module;
- no module is over 500 lines, and no import circle exists (type-only and
  function-local imports counted).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
STDLIB = frozenset(sys.stdlib_module_names)
THIRD_PARTY_OF_CORE = frozenset({"msgpack", "zmq"})
CLIENT_SIDE = frozenset(
    {
        "busd.client",
        "busd.client.ctl",
        "busd.client.link",
        "busd.client.testing",
        "busd.client.worker",
    }
)
#: Folder -> the parts its modules may import (besides the stdlib and third parties).
RULES: dict[str, frozenset[str]] = {
    "busd/core": frozenset({"busd.core"}),
    "busd/commands": frozenset({"busd.core", "busd.commands"}),
    "busd/security": frozenset({"busd.core", "busd.security"}),
    "busd/master": frozenset({"busd.core", "busd.security", "busd.commands", "busd.master"}),
    "busd/pool": frozenset({"busd.core", "busd.commands", "busd.master", "busd.pool"}),
    "busd/hosts": frozenset(
        {"busd.core", "busd.security", "busd.master", "busd.pool", "busd.hosts"}
    )
    | CLIENT_SIDE,
    "busd/plugins": frozenset({"busd.core", "busd.plugins"}),
    "busd/metrics": frozenset(
        {"busd", "busd.core", "busd.commands", "busd.master", "busd.pool", "busd.metrics"}
    ),
    "busd/daemon": frozenset(
        {
            "busd",
            "busd.core",
            "busd.security",
            "busd.master",
            "busd.pool",
            "busd.hosts",
            "busd.plugins",
            "busd.daemon",
            "busd.metrics",
        }
    ),
    "busd/testing": frozenset(
        {
            "busd",
            "busd.core",
            "busd.security",
            "busd.master",
            "busd.pool",
            "busd.hosts",
            "busd.plugins",
            "busd.testing",
        }
    )
    | CLIENT_SIDE,
    "busd/examples": frozenset({"busd", "busd.core", "busd.master", "busd.pool", "busd.examples"})
    | CLIENT_SIDE,
    "busd/client": frozenset({"busd.core", "busd.commands"}) | CLIENT_SIDE,
    # The face hands out the core's names and MasterBus (lazily); the command's main.
    "busd/__init__.py": frozenset({"busd.core", "busd.master"}),
    "busd/__main__.py": frozenset(
        {
            "busd",
            "busd.core",
            "busd.security",
            "busd.master",
            "busd.pool",
            "busd.hosts",
            "busd.plugins",
            "busd.daemon",
            "busd.metrics",
        }
    ),
}
NOBODY_IMPORTS = frozenset({"busd.__main__", "busd.client.ctl.busctl"})


@dataclass(frozen=True)
class Import:
    """One module a source file imports, by its absolute dotted name."""

    path: str
    line: int
    module: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: imports {self.module}"


def module_name(relpath: str) -> str:
    parts = relpath.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_repo_module(dotted: str, root: Path) -> bool:
    base = root.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_in_source(source: str, relpath: str, root: Path = REPO_ROOT) -> Iterator[Import]:
    """Every module ``source`` (the file ``relpath`` of the repo) imports.

    ``from pkg import name`` counts as importing ``pkg.name`` when that is a
    module of the repo, else as importing ``pkg``.  Relative imports are
    resolved; ``importlib.import_module("x")`` and ``__import__("x")`` with a
    literal name count too.
    """
    found: list[Import] = []
    package = module_name(relpath).split(".")
    if not relpath.endswith("__init__.py"):
        package = package[:-1]
    for node in ast.walk(ast.parse(source, filename=relpath)):
        if isinstance(node, ast.Import):
            found.extend(Import(relpath, node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}" if base else alias.name
                named = candidate if is_repo_module(candidate, root) or not base else base
                found.append(Import(relpath, node.lineno, named))
        elif (
            isinstance(node, ast.Call)
            and _is_dynamic_import(node.func)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append(Import(relpath, node.lineno, node.args[0].value))
    yield from sorted(found, key=lambda imp: (imp.line, imp.module))


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in {"__import__", "import_module"}
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def imports_of(relpath: str, root: Path = REPO_ROOT) -> list[Import]:
    source = (root / relpath).read_text(encoding="utf-8")
    return list(imports_in_source(source, relpath, root))


def python_files(folder: str = "busd") -> list[str]:
    return [p.relative_to(REPO_ROOT).as_posix() for p in sorted((REPO_ROOT / folder).rglob("*.py"))]


def part_of(module: str) -> str | None:
    """``busd.master.hub`` -> ``busd.master``; ``busd.client.ctl.x`` -> ``busd.client.ctl``."""
    parts = module.split(".")
    if parts[0] != "busd":
        return None
    if len(parts) == 1 or (len(parts) == 2 and not is_repo_module(module, REPO_ROOT)):
        return "busd"
    if parts[1] == "client":
        sub = f"busd.client.{parts[2]}" if len(parts) > 2 else "busd.client"
        return sub if sub in CLIENT_SIDE else "busd.client"
    return f"busd.{parts[1]}"


def rule_of(relpath: str) -> tuple[str, frozenset[str]]:
    """The folder rule that governs ``relpath`` (the most specific one)."""
    if relpath in RULES:
        return relpath, RULES[relpath]
    parts = relpath.split("/")
    folder = "/".join(parts[:2]) if parts[1] != "client" else "busd/client"
    assert folder in RULES, f"{relpath}: no layering rule for {folder}/ (add one)"
    return folder, RULES[folder]


def violations(relpath: str, source: str | None = None) -> list[str]:
    found = imports_of(relpath) if source is None else list(imports_in_source(source, relpath))
    folder, allowed = rule_of(relpath)
    bad = []
    for imp in found:
        top = imp.module.split(".")[0]
        if top in STDLIB or (top != "busd" and folder != "busd/core"):
            continue
        if folder == "busd/core" and top in THIRD_PARTY_OF_CORE:
            continue
        part = part_of(imp.module)
        if part is None or part not in allowed:
            bad.append(f"{imp} (rule of {folder}: {', '.join(sorted(allowed))})")
    return bad


def forbidden_imports(relpath: str, source: str | None = None) -> list[str]:
    found = imports_of(relpath) if source is None else list(imports_in_source(source, relpath))
    return [
        str(imp)
        for imp in found
        if any(imp.module == bad or imp.module.startswith(bad + ".") for bad in NOBODY_IMPORTS)
    ]


def test_every_module_keeps_its_folders_rule() -> None:
    files = python_files()
    assert "busd/core/bus.py" in files
    assert "busd/master/hub.py" in files
    problems = [v for path in files for v in violations(path)]
    assert problems == [], "\n".join(problems)


def test_nothing_imports_the_command_modules() -> None:
    problems = [v for path in python_files() for v in forbidden_imports(path)]
    assert problems == [], "\n".join(problems)


def test_importing_the_client_side_never_loads_the_master_side() -> None:
    code = (
        "import sys\n"
        "import busd.client, busd.client.bus\n"
        "loaded = sorted(m for m in sys.modules if m == 'busd.__main__' or m.startswith(\n"
        "    ('busd.master', 'busd.pool', 'busd.plugins', 'busd.security', 'busd.hosts',\n"
        "     'busd.daemon', 'busd.client.ctl')))\n"
        "assert not loaded, loaded\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- the checker itself: each rule catches what it should --------------------


def test_the_checker_resolves_relative_dynamic_and_nested_imports() -> None:
    source = (
        "from __future__ import annotations\n"
        "import json, zmq.asyncio\n"
        "from . import errors\n"
        "from .bus import Bus\n"
        "from .. import client\n"
        "def later():\n"
        "    import importlib\n"
        "    importlib.import_module('busd.master.bus')\n"
        "    __import__('busd.pool.pool')\n"
    )
    found = {(imp.line, imp.module) for imp in imports_in_source(source, "busd/core/wire.py")}
    assert found == {
        (1, "__future__"),
        (2, "json"),
        (2, "zmq.asyncio"),
        (3, "busd.core.errors"),
        (4, "busd.core.bus"),
        (5, "busd.client"),
        (7, "importlib"),
        (8, "busd.master.bus"),
        (9, "busd.pool.pool"),
    }


def test_the_rules_catch_violations() -> None:
    assert violations("busd/core/errors.py", "import zmq\nimport psutil\n") == [
        "busd/core/errors.py:2: imports psutil (rule of busd/core: busd.core)",
    ]
    assert violations("busd/core/bus.py", "from busd.master.bus import MasterBus\n") == [
        "busd/core/bus.py:1: imports busd.master.bus (rule of busd/core: busd.core)",
    ]
    client_source = (
        "from typing import TYPE_CHECKING\n"
        "import zmq\n"
        "from busd.core.bus import Bus\n"
        "if TYPE_CHECKING:\n"
        "    from busd.master.bus import MasterBus\n"
        "import busd.plugins.base\n"
    )
    assert [v.split(" (")[0] for v in violations("busd/client/bus.py", client_source)] == [
        "busd/client/bus.py:5: imports busd.master.bus",
        "busd/client/bus.py:6: imports busd.plugins.base",
    ]
    assert violations("busd/client/ctl/watch.py", "from busd.client.bus import B\n") == []
    assert [
        v.split(" (")[0]
        for v in violations("busd/master/hub.py", "def f():\n    import busd.client.link.thread\n")
    ] == [
        "busd/master/hub.py:2: imports busd.client.link.thread",
    ]
    assert [
        v.split(" (")[0]
        for v in violations(
            "busd/commands/scale.py",
            "from busd.commands.checks import bad\nfrom busd.pool.pool import Pool\n",
        )
    ] == [
        "busd/commands/scale.py:2: imports busd.pool.pool",
    ]
    assert violations("busd/client/ctl/parser.py", "from busd.commands import scale\n") == []
    assert violations("busd/hosts/join.py", "from busd.client.bus import ClientBus\n") == []
    assert [
        v.split(" (")[0]
        for v in violations("busd/pool/forkserver.py", "from busd.client.bus import ClientBus\n")
    ] == [
        "busd/pool/forkserver.py:1: imports busd.client.bus",
    ]
    assert forbidden_imports("busd/client/ctl/watch.py", "from . import busctl\n") == [
        "busd/client/ctl/watch.py:1: imports busd.client.ctl.busctl",
    ]
    assert forbidden_imports("busd/master/bus.py", "from busd.__main__ import main\n") == [
        "busd/master/bus.py:1: imports busd.__main__",
    ]


# -- size and circles ----------------------------------------------------------

#: No module of busd is longer than this (after ``ruff format``): split along a seam.
MAX_LINES = 500


def test_no_module_is_over_the_line_limit() -> None:
    sizes = {
        path: len((REPO_ROOT / path).read_text(encoding="utf-8").splitlines())
        for path in python_files()
    }
    assert len(sizes) > 50
    over = sorted(f"{path}: {n} lines" for path, n in sizes.items() if n > MAX_LINES)
    assert over == [], f"modules over {MAX_LINES} lines:\n" + "\n".join(over)


def import_graph(files: list[str], sources: dict[str, str] | None = None) -> dict[str, set[str]]:
    """Module -> the busd modules it imports, at any depth, type-only ones included."""
    graph: dict[str, set[str]] = {}
    for path in files:
        found = (
            imports_of(path) if sources is None else list(imports_in_source(sources[path], path))
        )
        graph[module_name(path)] = {
            imp.module for imp in found if imp.module.split(".")[0] == "busd"
        }
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph``: its strongly connected parts of two or more
    modules (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in graph:
                continue
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            part = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                part.append(top)
                if top == node:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_there_is_no_import_circle() -> None:
    graph = import_graph(python_files())
    assert "busd.master.bus" in graph
    assert circles(graph) == []


def test_the_circle_finder_finds_type_only_and_local_circles() -> None:
    sources = {
        "busd/pool/pool.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    from busd.pool.slots import Slot\n"
        ),
        "busd/pool/slots.py": "def f():\n    from busd.pool import commands\n",
        "busd/pool/commands.py": "import busd.pool.pool\n",
        "busd/pool/spawn.py": "import busd.pool.pool\n",
    }
    graph = import_graph(list(sources), sources)
    assert circles(graph) == [["busd.pool.commands", "busd.pool.pool", "busd.pool.slots"]]
