"""The layering rule of DESIGN.md, checked on the source (parsed, never imported).

- ``busd/bus.py`` and ``busd/errors.py`` import only the stdlib (bus may
  import ``busd.errors``);
- ``busd/wire.py``, ``busd/endpoints.py`` and ``busd/control.py`` add only
  msgpack and zmq (and ``busd.bus``, ``busd.errors``, and each other: the five
  form the shared core);
- ``busd/client/`` (the package ``busd.client``) takes from busd only that
  shared core: never the ``busd`` package itself, ``master``, ``hub``, ``pool``
  or ``plugins``;
- nothing else in ``busd/`` imports ``busd.client``, except the pytest plugin and the
  examples (which are users of both sides) and the fork server, whose forked
  child loads the worker's entry point (``busd.client.worker``);
- nothing in ``busd/`` imports ``busd.__main__`` or ``busd.client.busctl``.

Files that do not exist yet are passed over; every import is checked, at any
depth (inside functions and ``if TYPE_CHECKING:`` blocks too).
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
CORE = {"busd/bus.py": {"busd.errors"}, "busd/errors.py": set()}
WIRE_LAYER = ("busd/wire.py", "busd/endpoints.py", "busd/control.py", "busd/auth.py")
WIRE_THIRD_PARTY = {"msgpack", "zmq"}
SHARED_CORE = {"busd.bus", "busd.errors", "busd.wire", "busd.endpoints", "busd.control",
               "busd.auth"}
WIRE_MAY_IMPORT = SHARED_CORE
CLIENT_MAY_IMPORT = SHARED_CORE
# Users of both sides, and the fork server's child loading the worker's main.
BUSD_MAY_IMPORT_CLIENT = {
    "busd/testing.py": None, "busd/examples": None, "busd/forkserver.py": {"busd.client.worker"},
    # busd --join: a master that is also a client of another master.
    "busd/join.py": {"busd.client.bus", "busd.client.link"},
}
CLIENT = "busd.client"
CLIENT_DIR = "busd/client"
NOBODY_IMPORTS = {"busd.__main__", "busd.client.busctl"}


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
        elif (isinstance(node, ast.Call) and _is_dynamic_import(node.func) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append(Import(relpath, node.lineno, node.args[0].value))
    yield from sorted(found, key=lambda imp: (imp.line, imp.module))


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in {"__import__", "import_module"}
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def imports_of(relpath: str, root: Path = REPO_ROOT) -> list[Import]:
    source = (root / relpath).read_text(encoding="utf-8")
    return list(imports_in_source(source, relpath, root))


def existing(relpaths: Iterator[str] | tuple[str, ...] | list[str]) -> list[str]:
    return [p for p in relpaths if (REPO_ROOT / p).is_file()]


def python_files(*folders: str) -> list[str]:
    found = []
    for folder in folders:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            found.append(path.relative_to(REPO_ROOT).as_posix())
    return found


def top(module: str) -> str:
    return module.split(".")[0]


def is_client(module: str) -> bool:
    return module == CLIENT or module.startswith(CLIENT + ".")


# -- the rules ---------------------------------------------------------------


def core_violations(relpath: str, allowed_busd: set[str], source: str | None = None) -> list[str]:
    found = imports_of(relpath) if source is None else list(imports_in_source(source, relpath))
    return [
        str(imp) for imp in found
        if top(imp.module) not in STDLIB and imp.module not in allowed_busd
    ]


def wire_violations(relpath: str, source: str | None = None) -> list[str]:
    found = imports_of(relpath) if source is None else list(imports_in_source(source, relpath))
    return [
        str(imp) for imp in found
        if top(imp.module) not in STDLIB | WIRE_THIRD_PARTY
        and imp.module not in WIRE_MAY_IMPORT
    ]


def client_violations(relpath: str, source: str | None = None) -> list[str]:
    found = imports_of(relpath) if source is None else list(imports_in_source(source, relpath))
    return [
        str(imp) for imp in found
        if top(imp.module) == "busd" and imp.module not in CLIENT_MAY_IMPORT
        and not is_client(imp.module)
    ]


def busd_violations(relpath: str, source: str | None = None) -> list[str]:
    found = imports_of(relpath) if source is None else list(imports_in_source(source, relpath))
    allowed: set[str] | None = set()
    for prefix, modules in BUSD_MAY_IMPORT_CLIENT.items():
        if relpath == prefix or relpath.startswith(prefix + "/"):
            allowed = modules
    if allowed is None or relpath.startswith(CLIENT_DIR + "/"):
        return []
    return [
        str(imp) for imp in found
        if is_client(imp.module) and imp.module not in allowed
    ]


def forbidden_imports(relpath: str, source: str | None = None) -> list[str]:
    found = imports_of(relpath) if source is None else list(imports_in_source(source, relpath))
    return [
        str(imp) for imp in found
        if any(imp.module == bad or imp.module.startswith(bad + ".") for bad in NOBODY_IMPORTS)
    ]


def test_bus_and_errors_import_only_the_stdlib() -> None:
    checked = existing(list(CORE))
    assert checked == list(CORE), "busd/bus.py and busd/errors.py must exist"
    problems = [v for path in checked for v in core_violations(path, CORE[path])]
    assert problems == [], "\n".join(problems)


def test_wire_and_endpoints_add_only_msgpack_and_zmq() -> None:
    problems = [v for path in existing(WIRE_LAYER) for v in wire_violations(path)]
    assert problems == [], "\n".join(problems)


def test_client_imports_only_the_shared_core_of_busd() -> None:
    problems = [v for path in python_files(CLIENT_DIR) for v in client_violations(path)]
    assert problems == [], "\n".join(problems)


def test_busd_never_imports_client() -> None:
    files = python_files("busd")
    assert "busd/master.py" in files
    assert "busd/control.py" in files
    problems = [v for path in files for v in busd_violations(path)]
    assert problems == [], "\n".join(problems)


def test_nothing_imports_the_command_modules() -> None:
    files = python_files("busd")
    assert "busd/bus.py" in files
    problems = [v for path in files for v in forbidden_imports(path)]
    assert problems == [], "\n".join(problems)


def test_importing_client_never_loads_the_master_side() -> None:
    modules = ["busd.client", "busd.client.bus"]
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "loaded = sorted(m for m in sys.modules if m == 'busd.__main__' or m.startswith(\n"
        "    ('busd.master', 'busd.pool', 'busd.plugins', 'busd.client.busctl')))\n"
        "assert not loaded, loaded\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
        timeout=60, start_new_session=True, check=False,
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
        "    importlib.import_module('busd.master')\n"
        "    __import__('busd.pool')\n"
    )
    found = {(imp.line, imp.module) for imp in imports_in_source(source, "busd/wire.py")}
    assert found == {
        (1, "__future__"), (2, "json"), (2, "zmq.asyncio"), (3, "busd.errors"),
        (4, "busd.bus"), (5, "client"), (7, "importlib"), (8, "busd.master"), (9, "busd.pool"),
    }


def test_the_rules_catch_violations() -> None:
    assert core_violations("busd/errors.py", set(), "import zmq\nfrom busd import bus\n") == [
        "busd/errors.py:1: imports zmq", "busd/errors.py:2: imports busd.bus",
    ]
    assert core_violations("busd/bus.py", {"busd.errors"}, "from .errors import BusError\n") == []
    assert wire_violations("busd/endpoints.py", "import msgpack\nfrom .wire import X\n") == []
    assert wire_violations("busd/wire.py", "import psutil\nfrom busd.master import M\n") == [
        "busd/wire.py:1: imports psutil", "busd/wire.py:2: imports busd.master",
    ]
    client_source = (
        "from typing import TYPE_CHECKING\n"
        "import zmq\n"
        "from busd import Bus\n"
        "from busd.bus import Bus as B\n"
        "if TYPE_CHECKING:\n"
        "    from busd.master import MasterBus\n"
        "import busd.plugins.base\n"
    )
    assert client_violations("busd/client/bus.py", client_source) == [
        "busd/client/bus.py:3: imports busd",
        "busd/client/bus.py:6: imports busd.master",
        "busd/client/bus.py:7: imports busd.plugins.base",
    ]
    assert busd_violations("busd/master.py", "from busd.client.control import Control\n") == [
        "busd/master.py:1: imports busd.client.control",
    ]
    assert busd_violations("busd/hub.py", "def f():\n    import busd.client.link\n") == [
        "busd/hub.py:2: imports busd.client.link",
    ]
    assert busd_violations("busd/forkserver.py", "from busd.client.bus import ClientBus\n") == [
        "busd/forkserver.py:1: imports busd.client.bus",
    ]
    assert busd_violations("busd/forkserver.py", "from busd.client.worker import run\n") == []
    hello = "from busd.client.bus import ClientBus\n"
    assert busd_violations("busd/examples/hello.py", hello) == []
    assert forbidden_imports("busd/client/control.py", "from . import busctl\n") == [
        "busd/client/control.py:1: imports busd.client.busctl",
    ]
    assert forbidden_imports("busd/master.py", "from busd.__main__ import main\n") == [
        "busd/master.py:1: imports busd.__main__",
    ]
