"""How the pool starts a worker process: exec a fresh interpreter or command.

A worker never inherits the master's ZeroMQ context or threads: it is a new
program (``posix_spawn``: fork and exec in one step, safe in a threaded
master).  Each spawn returns the child's pid and a pidfd, which the pool
polls to learn of its exit without a SIGCHLD handler.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from typing import Protocol


class Spawner(Protocol):
    """Starts one worker process."""

    def spawn(self, slot: int, env: Mapping[str, str]) -> tuple[int, int]:
        """Start a worker for ``slot`` with ``env`` added; return ``(pid, pidfd)``."""


class ExecSpawner:
    """Spawns ``argv`` (a TARGET runner or an operator's command) with busd's env."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        if not argv:
            raise ValueError("nothing to run")
        path = argv[0] if os.sep in argv[0] else shutil.which(argv[0])
        if path is None:
            raise FileNotFoundError(f"command not found: {argv[0]}")
        self.path = path
        self.argv = list(argv)
        self.env = dict(env)

    def spawn(self, slot: int, env: Mapping[str, str]) -> tuple[int, int]:
        """posix_spawn the worker and open its pidfd."""
        full_env = {**self.env, **env, "BUSD_PARENT_PID": str(os.getpid())}
        pid = os.posix_spawn(self.path, self.argv, full_env)
        return pid, os.pidfd_open(pid)


def target_argv(target: str) -> list[str]:
    """The command line that runs TARGET ``pkg.mod:func`` in a worker."""
    return [sys.executable, "-m", "client.worker", target]
