"""busd on the oldest and the newest Python it supports (3.10 and 3.13, from pyenv).

For each, a virtual environment is made from a copy of the source tree, with
the test extra installed; then the unit tests run there, and two real-process
smokes: a master with a pool of two workers, then two pools from a config
file; each through ``busctl graceful --wait`` and ``busctl exit --wait``, and
nothing left behind.  The checkers (ruff, mypy)
run on the main Python only, so tests/unit/test_lint.py is left out there.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: What a copy of the tree needs to install and test (nothing built lands in REPO).
TREE = ("busd", "tests", "docs", "deploy", "pyproject.toml", "README.md")
#: Bounds, generous for a busy two-core machine and a package registry.
INSTALL_TIMEOUT = 300
UNIT_TIMEOUT = 300
SMOKE_TIMEOUT = 60


def pyenv_python(version: str) -> Path | None:
    """The newest pyenv interpreter of ``version`` (e.g. "3.10"), or None."""
    root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    pyenv = shutil.which("pyenv")
    if pyenv:
        done = subprocess.run([pyenv, "root"], capture_output=True, text=True, timeout=30)
        if done.returncode == 0 and done.stdout.strip():
            root = done.stdout.strip()
    found = sorted(
        glob.glob(f"{root}/versions/{version}.*/bin/python{version}"),
        key=lambda p: [int(x) for x in Path(p).parents[1].name.split(".")],
    )
    return Path(found[-1]) if found else None


def run(args: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    """Run ``args``; fail the test with its output if it fails or overruns."""
    try:
        done = subprocess.run(
            args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(args)} ran over {timeout}s:\n{exc.stdout!r}\n{exc.stderr!r}")
    if done.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited {done.returncode}:\n{done.stdout[-4000:]}\n"
            f"{done.stderr[-4000:]}"
        )
    return done.stdout


@pytest.fixture(scope="module", params=["3.10", "3.13"])
def venv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment of that Python with busd[test] installed from a copy."""
    version: str = request.param
    python = pyenv_python(version)
    if python is None:
        pytest.skip(f"this machine has no Python {version} under pyenv")
    work = tmp_path_factory.mktemp(f"py{version}")
    tree = work / "src"
    for name in TREE:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            tree.mkdir(exist_ok=True)
            shutil.copy2(source, tree / name)
    env_dir = work / "venv"
    run([str(python), "-m", "venv", str(env_dir)], work, INSTALL_TIMEOUT)
    run(
        # No byte-compiling of every installed file: the tests compile what they import.
        [
            str(env_dir / "bin/python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-compile",
            f"{tree}[test]",
        ],
        work,
        INSTALL_TIMEOUT,
    )
    return env_dir


def test_the_unit_tests_pass(venv: Path) -> None:
    tree = venv.parent / "src"
    out = run(
        [
            str(venv / "bin/python"),
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-n",
            "2",
            "tests/unit",
            "--ignore",
            "tests/unit/test_lint.py",
        ],
        tree,
        UNIT_TIMEOUT,
    )
    assert " passed" in out, out[-2000:]
    assert " failed" not in out, out[-2000:]


def test_a_pool_starts_reloads_and_exits(venv: Path, tmp_path: Path) -> None:
    smoke(venv, tmp_path, ["-w", "2", "busd.examples.hello:main"], workers=2)


def test_pools_from_a_config_file_start_reload_and_exit(venv: Path, tmp_path: Path) -> None:
    """Several pools on this Python: its TOML reader (tomli on 3.10), ``after``."""
    config = tmp_path / "busd.toml"
    config.write_text(
        """
[busd]
graceful_timeout = 5

[pools.web]
target = "busd.examples.hello:main"
workers = 2

[pools.jobs]
target = "busd.examples.hello:main"
after = ["web"]
"""
    )
    # jobs comes after web: its worker stops and exits (its listeners run) before the
    # exit is relayed, so the exit's acks are web's two.
    smoke(venv, tmp_path, ["--config", str(config)], workers=3, exit_acks=2)


def smoke(
    venv: Path, tmp_path: Path, args: list[str], workers: int, exit_acks: int | None = None
) -> None:
    """busd with ``args``: every worker STARTED, graceful --wait acked by each, exit
    --wait by ``exit_acks`` (each, by default), busd's status 0."""
    env = {**os.environ, "BUSD_RUNTIME_DIR": str(tmp_path)}
    env.pop("BUSD_NAME", None)
    bindir = venv / "bin"
    ctl = [str(bindir / "busctl"), "--runtime-dir", str(tmp_path)]
    errors = tmp_path / "busd.err"
    with errors.open("w") as stderr:
        busd = subprocess.Popen(
            [str(bindir / "busd"), "--runtime-dir", str(tmp_path), *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        out = run(
            [*ctl, "wait", "--for", "STARTED", "--timeout", "30"], tmp_path, SMOKE_TIMEOUT, env
        )
        assert f"with {workers} workers STARTED" in out, out
        out = run([*ctl, "graceful", "--wait"], tmp_path, SMOKE_TIMEOUT, env)
        assert f"{workers} clients acked" in out, out
        out = run([*ctl, "exit", "--wait"], tmp_path, SMOKE_TIMEOUT, env)
        assert f"{workers if exit_acks is None else exit_acks} clients acked" in out, out
        assert busd.wait(SMOKE_TIMEOUT) == 0, errors.read_text()
    finally:
        if busd.poll() is None:
            busd.kill()
            busd.wait(10)
