"""Helpers for tests that drive a real ``busd`` with faults: start it, ask it, wait on it."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from busd.client.control import Control
from busd.core.endpoints import default_endpoints
from busd.core.errors import NoMaster
from busd.testing import Processes

Status = dict[str, Any]


def start_busd(
    procs: Processes, *args: str, name: str = "busd", env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``python -m busd --heartbeat 0.2 ARGS`` in its own session, output to a file."""
    return procs.spawn(
        [sys.executable, "-m", "busd", "--heartbeat", "0.2", "--log-level", "WARNING", *args],
        name=name,
        env=env,
    )


def busctl(procs: Processes, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run the real ``busctl`` with the test's runtime dir."""
    return subprocess.run(
        [sys.executable, "-m", "busd.client.ctl.busctl", "--timeout", "10", *args],
        capture_output=True,
        text=True,
        env=procs.env,
        timeout=timeout,
        check=False,
    )


@contextmanager
def control(runtime: Path, timeout: float = 10.0) -> Iterator[Control]:
    """An in-process control connection to the master of ``runtime``."""
    with Control(default_endpoints(runtime).ctl, timeout=timeout) as ctl:
        yield ctl


def wait_status(
    ctl: Control,
    predicate: Callable[[Status], bool],
    timeout: float = 20,
    what: str = "the expected state",
    show: tuple[str, ...] = ("state", "workers"),
) -> Status:
    """Ask for status until ``predicate`` holds; fail with the last one past ``timeout``."""
    deadline = time.monotonic() + timeout
    doc: Status = {}
    while time.monotonic() < deadline:
        try:
            doc = ctl.request("status", timeout=max(0.1, deadline - time.monotonic()))
        except NoMaster:
            continue
        if predicate(doc):
            return doc
        # Polling a condition under a deadline: the pause only spares the CPU.
        threading.Event().wait(0.02)
    pytest.fail(
        f"busd never reached {what} within {timeout}s; last status: "
        f"{ {k: doc.get(k) for k in show} }"
    )


def states(doc: Status) -> list[str]:
    """Each slot's worker state, in slot order."""
    return [w["state"] for w in doc["workers"]]


def all_started(n: int) -> Callable[[Status], bool]:
    """A predicate: exactly ``n`` workers, every one STARTED, on a STARTED master."""
    return lambda d: d["state"] == "STARTED" and states(d) == ["STARTED"] * n


def running(proc: psutil.Process) -> bool:
    """Alive and not a zombie."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def gone(pids: list[int], timeout: float) -> list[int]:
    """The pids of ``pids`` still running after ``timeout`` (empty: all gone)."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in procs if running(p)]
        remaining = deadline - time.monotonic()
        if not alive or remaining <= 0:
            return [p.pid for p in alive]
        psutil.wait_procs(alive, timeout=min(0.05, remaining))


def exit_busd(ctl: Control, busd: subprocess.Popen[bytes], timeout: float = 20) -> int:
    """Ask busd to exit and return its exit status."""
    with contextlib.suppress(NoMaster):  # it may exit before it answers
        ctl.request("exit", timeout=timeout)
    return busd.wait(timeout)


@contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` (root only: skipped otherwise); unmounted after."""
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
