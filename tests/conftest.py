"""Suite-wide guards: no test may leave a process behind."""

from __future__ import annotations

from collections.abc import Iterator

import psutil
import pytest


def _descendants() -> list[psutil.Process]:
    try:
        return psutil.Process().children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.fixture(autouse=True)
def _no_leftover_processes() -> Iterator[None]:
    """Fail a test that leaves a child process running, after killing it."""
    before = {p.pid for p in _descendants()}
    yield
    leftover = [p for p in _descendants() if p.pid not in before]
    if not leftover:
        return
    _gone, alive = psutil.wait_procs(leftover, timeout=3)
    if not alive:
        return
    names = []
    for proc in alive:
        try:
            names.append(f"{proc.pid} {' '.join(proc.cmdline())}")
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=5)
    if names:
        pytest.fail("test left processes behind:\n" + "\n".join(names), pytrace=False)
