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
from typing import Any, Protocol


class SpawnerGone(OSError):
    """No process was made because the spawner itself was gone (the fork server died).

    A process the dead server forked but never reported ends at once with
    :data:`EX_SPAWN_LOST` (it never runs the worker).

    The pool tries again once a new one is up; it is not a crash of the slot.
    """


#: Exit status of a forked worker whose fork server died before the master learned of
#: it: it ends before running anything (the spawn is retried, not counted as a crash).
EX_SPAWN_LOST = 75

#: What a spawner gives back for each worker asked for.
Spawned = tuple[int, int] | OSError
#: A worker whose env names a file here has its stdout and stderr appended to it.
LOG_FILE_ENV = "BUSD_LOG_FILE"
LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC


def log_file_of(env: Mapping[str, object]) -> str:
    """The file a worker's output goes to ('' for the master's own stdout and stderr)."""
    return str(env.get(LOG_FILE_ENV, "") or "")


def open_log(path: str) -> int:
    """Open (appending, creating) a log file; the caller dup2s and closes the fd."""
    return os.open(path, LOG_FLAGS, 0o644)


#: Run before a program that does not speak the bus (``python -c DIE_WITH_MASTER MASTER_PID
#: PATH ARGV...``): SIGKILL when the master dies (PR_SET_PDEATHSIG, kept across exec),
#: unless it died already, then the program in its place (the same pid).
DIE_WITH_MASTER = (
    "import ctypes,os,sys\n"
    "ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)\n"
    "os.getppid() == int(sys.argv[1]) or os._exit(70)\n"
    "os.execv(sys.argv[2], sys.argv[3:])\n"
)


class Spawner(Protocol):
    """Starts worker processes."""

    def spawn_many(self, requests: Sequence[tuple[int, Mapping[str, str]]]) -> list[Spawned]:
        """For each ``(slot, env)``: ``(pid, pidfd)`` of the new worker, or why not."""

    def exit_code(self, pid: int) -> int | None:
        """The exit code of an ended worker the master is not the parent of (None: unknown)."""


class ExecSpawner:
    """Spawns ``argv`` (a TARGET runner or an operator's command) with busd's env
    (``session``: each in a session and process group of its own)."""

    def __init__(
        self, argv: Sequence[str], env: Mapping[str, str], *, session: bool = False
    ) -> None:
        """``session``: a program that does not speak the bus, in a session of its own,
        and started through :data:`DIE_WITH_MASTER` (it ends when the master does)."""
        if not argv:
            raise ValueError("nothing to run")
        path = argv[0] if os.sep in argv[0] else shutil.which(argv[0])
        if path is None:
            raise FileNotFoundError(f"command not found: {argv[0]}")
        self.path = path
        self.argv = list(argv)
        self.env = dict(env)
        #: Each worker in a session (and process group) of its own: a program that
        #: does not speak the bus is stopped with its whole group.
        self.session = session

    def spawn(self, slot: int, env: Mapping[str, str]) -> tuple[int, int]:
        """posix_spawn the worker and open its pidfd."""
        full_env = {**self.env, **env, "BUSD_PARENT_PID": str(os.getpid())}
        actions: list[tuple[Any, ...]] = []
        path = log_file_of(full_env)
        if path:
            actions = [
                (os.POSIX_SPAWN_OPEN, 1, path, LOG_FLAGS & ~os.O_CLOEXEC, 0o644),
                (os.POSIX_SPAWN_DUP2, 1, 2),
            ]
        path, argv = self.path, self.argv
        if self.session:
            path = sys.executable
            argv = [path, "-I", "-S", "-c", DIE_WITH_MASTER, str(os.getpid()), self.path, *argv]
        pid = os.posix_spawn(path, argv, full_env, file_actions=actions, setsid=self.session)
        return pid, os.pidfd_open(pid)

    def exit_code(self, pid: int) -> int | None:
        """The master is the parent of its workers: it reaps them itself."""
        return None

    def spawn_many(self, requests: Sequence[tuple[int, Mapping[str, str]]]) -> list[Spawned]:
        """One posix_spawn per request."""
        results: list[Spawned] = []
        for slot, env in requests:
            try:
                results.append(self.spawn(slot, env))
            except OSError as exc:
                results.append(exc)
        return results


def target_argv(target: str) -> list[str]:
    """The command line that runs TARGET ``pkg.mod:func`` in a worker."""
    return [sys.executable, "-m", "busd.client.worker.main", target]
