"""The plugin's modules: layered without a circle, its face and its names kept.

``busd.testing`` (the pytest11 entry point) is the face: it holds the
fixtures and imports the modules below it, which never import it back, nor
each other in a circle, not even under ``TYPE_CHECKING`` or inside a
function.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("busd/testing", "busd/client/testing")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def busd_imports(path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``path`` imports anywhere in its source."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    modules = set()
    for imported in found:
        while imported and imported not in known:
            imported = imported.rpartition(".")[0]
        if imported and imported != name:
            modules.add(imported)
    return modules


def import_graph() -> dict[str, set[str]]:
    paths = [p for package in PACKAGES for p in sorted((ROOT / package).glob("*.py"))]
    known = {module_name(p) for p in paths}
    return {module_name(p): busd_imports(p, known) for p in paths}


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph[start])
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph[name])
    return seen


def test_no_module_of_the_plugin_imports_one_that_imports_it_back() -> None:
    graph = import_graph()
    circles = sorted(name for name in graph if name in reachable(graph, name))
    assert circles == [], f"modules on an import circle: {circles}"
    assert graph["busd.testing.pool"], "the checker found no import at all"


def test_the_face_is_imported_by_none_of_its_modules() -> None:
    graph = import_graph()
    assert [name for name, imports in graph.items() if "busd.testing" in imports] == []


def test_the_entry_point_fixtures_and_public_names_stay() -> None:
    (plugin,) = [ep for ep in entry_points(group="pytest11") if ep.name == "busd"]
    assert plugin.value == "busd.testing"
    code = (
        "import busd.testing as t\n"
        "names = ['busd_dir', 'busd_sink', 'busd_procs', 'busd_master', 'busd_pool',\n"
        "         'busd_client', 'busd_run', 'Processes', 'Sink', 'Report', 'BusdPool',\n"
        "         'BusdTest', 'PoolFactory', 'TestClient', 'Runner', 'SOURCE_ROOT',\n"
        "         'importable', 'start_pool', 'kill_session', 'descendants',\n"
        "         'child_subreaper', 'reap_adopted', 'session_of']\n"
        "print(sorted(n for n in names if not hasattr(t, n)))\n"
        "from busd.testing.pool import BusdPool, Events, PoolLog, Status\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
