"""Child processes of a test, and the process trees they leave: the lowest layer of the plugin.

:class:`Processes` starts children in their own sessions, with output to
files, and kills and reaps them all at teardown; the functions below find,
name and kill what a process tree left behind (a session, the descendants
of this process, orphans this process adopted as their subreaper).  Every
other module of :mod:`busd.testing` builds on this one; it imports none of them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil

__all__ = [
    "Processes",
    "child_subreaper",
    "descendants",
    "describe",
    "kill_session",
    "reap_adopted",
    "session_of",
]

PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37


class Processes:
    """Starts child processes in their own sessions and always cleans them up."""

    def __init__(self, directory: Path, logs: Path, env: dict[str, str]) -> None:
        self.directory = directory
        self.logs = logs
        self.env = env
        self.started: list[subprocess.Popen[bytes]] = []

    def python(
        self, source: str, *args: str, name: str = "child", env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Run ``source`` (dedented) as a script with the test's Python."""
        script = self.logs / f"{name}-{len(self.started)}.py"
        script.write_text(textwrap.dedent(source))
        return self.spawn([sys.executable, str(script), *args], name=name, env=env)

    def spawn(
        self,
        argv: list[str],
        name: str = "child",
        env: dict[str, str] | None = None,
        pass_fds: tuple[int, ...] | list[int] = (),
        cwd: str | Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` (in ``cwd``) with stdout and stderr in files named after ``name``."""
        index = len(self.started)
        out = open(self.logs / f"{name}-{index}.out", "wb")  # noqa: SIM115 - closed below
        try:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**self.env, **(env or {})},
                pass_fds=pass_fds,
                cwd=cwd,
            )
        finally:
            out.close()
        proc.log_path = self.logs / f"{name}-{index}.out"  # type: ignore[attr-defined]
        self.started.append(proc)
        return proc

    @staticmethod
    def output(proc: subprocess.Popen[bytes]) -> str:
        """What the process printed so far."""
        path: Path = proc.log_path  # type: ignore[attr-defined]
        return path.read_text(errors="replace")

    def cleanup(self, timeout: float = 5.0) -> list[str]:
        """Kill every process group we started, reap, and name any survivor."""
        for proc in self.started:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
        survivors = []
        for proc in self.started:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                survivors.append(f"{proc.pid} {proc.args!r}")
        survivors += _session_leftovers([p.pid for p in self.started], timeout)
        return survivors


def _session_leftovers(sids: list[int], timeout: float) -> list[str]:
    """Processes still in the sessions we created (grandchildren), killed."""
    left = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getsid(proc.pid) in sids:
                left.append(proc)
        except (ProcessLookupError, PermissionError):
            continue
    for proc in left:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(left, timeout=timeout)
    return [f"{p.pid} (session leftover)" for p in alive]


def kill_session(sid: int, also: list[psutil.Process] | None = None) -> list[str]:
    """Kill every process of session ``sid`` and of ``also``; name each one still running.

    ``also`` holds psutil handles, which know their process's start time: a
    pid used again since is not taken for it.
    """
    left: dict[int, psutil.Process] = {}
    for proc in [*psutil.process_iter(["pid"]), *(also or [])]:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE or not proc.is_running():
                continue
            if proc in (also or []) or os.getsid(proc.pid) == sid:
                left[proc.pid] = proc
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    names = []
    for proc in left.values():
        try:
            names.append(describe(proc))
            proc.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(list(left.values()), timeout=5)
    return names


def describe(proc: psutil.Process) -> str:
    """``pid N: its command line`` (a process title's padding left out), else its name."""
    try:
        return f"pid {proc.pid}: {' '.join(a for a in proc.cmdline() if a) or proc.name()}"
    except psutil.Error:
        return f"pid {proc.pid}"


def descendants() -> set[psutil.Process]:
    """Every live descendant of this process."""
    try:
        return set(psutil.Process().children(recursive=True))
    except psutil.Error:
        return set()


def child_subreaper(on: bool) -> bool:
    """Make this process adopt its orphaned descendants (Linux); the previous setting.

    A worker's child outlives the worker: adopted here rather than by init,
    it is still there for the leak check to find, name and kill.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    was = ctypes.c_int(0)
    libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(was), 0, 0, 0)
    libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)
    return bool(was.value)


def reap_adopted(before: set[psutil.Process]) -> None:
    """Reap adopted orphans that ended by themselves (zombies of this process now)."""
    for proc in descendants() - before:
        with contextlib.suppress(psutil.Error, ChildProcessError):
            if proc.status() == psutil.STATUS_ZOMBIE and proc.ppid() == os.getpid():
                os.waitpid(proc.pid, os.WNOHANG)


def session_of(proc: psutil.Process) -> int:
    """The session id of ``proc`` (-1 once it is gone)."""
    try:
        return os.getsid(proc.pid)
    except OSError:
        return -1
