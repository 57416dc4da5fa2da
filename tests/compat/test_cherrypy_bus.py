"""CherryPy's own ``test_bus.py``, unchanged, passes on busd.Bus.

The file is taken from the installed CherryPy (a test-only dependency),
never copied into this repository, and run in a pytest of its own with
``cherrypy.process.wspbus`` mapped to ``busd.core.bus`` (see wspbus_shim.py).
Every one of its tests must pass: none may fail, error, skip or xfail.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

cherrypy_test = pytest.importorskip("cherrypy.test", reason="cherrypy is a test dependency")

HERE = Path(__file__).resolve().parent
TEST_BUS = Path(cherrypy_test.__file__).resolve().parent / "test_bus.py"


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    }


def _outcomes(junit: Path) -> dict[str, str]:
    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        verdicts = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[case.get("name", "?")] = verdicts[0] if verdicts else "passed"
    return outcomes


def test_cherrypy_test_bus_passes_unchanged_on_busd_bus(tmp_path: Path) -> None:
    assert TEST_BUS.is_file(), f"CherryPy ships no {TEST_BUS}"
    expected = _test_functions(TEST_BUS)
    assert len(expected) >= 12, f"expected CherryPy's 12 bus tests, found {sorted(expected)}"
    ini = tmp_path / "pytest.ini"
    ini.write_text("[pytest]\n", encoding="utf-8")
    junit = tmp_path / "junit.xml"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(TEST_BUS),
            "-p",
            "wspbus_shim",
            "-c",
            str(ini),
            "--rootdir",
            str(tmp_path),
            "-p",
            "no:cacheprovider",
            f"--junitxml={junit}",
            "-q",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    report = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert junit.is_file(), f"CherryPy's tests did not run:\n{report}"
    outcomes = _outcomes(junit)
    assert set(outcomes) == expected, f"ran {sorted(outcomes)}, expected {sorted(expected)}"
    not_passed = {name: verdict for name, verdict in outcomes.items() if verdict != "passed"}
    assert not not_passed, f"CherryPy's test_bus.py on busd.Bus: {not_passed}\n{report}"
    assert proc.returncode == 0, report


def test_the_shim_really_puts_busd_under_cherrypys_name(tmp_path: Path) -> None:
    """Guard against a shim that silently tests wspbus itself."""
    probe = (
        "import wspbus_shim\nfrom cherrypy.process import wspbus\n"
        "import busd\nprint(wspbus.Bus is busd.Bus)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(HERE))
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.stdout.strip() == "True", proc.stdout + proc.stderr
