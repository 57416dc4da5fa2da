"""Lint: ruff format, ruff check and mypy (configured in pyproject.toml) must pass.

These run the tools as subprocesses of this interpreter, so the versions are
those of the test environment; the tools' output is the failure message.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
RUFF_PATHS = ("busd", "tests", "scripts")


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        start_new_session=True,
        check=False,
    )


def test_lint_ruff() -> None:
    paths = [p for p in RUFF_PATHS if (REPO_ROOT / p).exists()]
    assert "busd" in paths

    result = run_tool("ruff", "check", "--no-cache", *paths)

    assert result.returncode == 0, f"ruff check {' '.join(paths)}:\n{result.stdout}{result.stderr}"


def test_format_ruff() -> None:
    paths = [p for p in RUFF_PATHS if (REPO_ROOT / p).exists()]

    result = run_tool("ruff", "format", "--check", "--no-cache", *paths)

    assert result.returncode == 0, (
        f"ruff format --check {' '.join(paths)} (run ruff format):\n{result.stdout}{result.stderr}"
    )


def test_lint_mypy_strict() -> None:
    # No paths: mypy checks the `files` of pyproject.toml (busd, busd.client included), strictly.
    result = run_tool("mypy")

    assert result.returncode == 0, f"mypy:\n{result.stdout}{result.stderr}"
