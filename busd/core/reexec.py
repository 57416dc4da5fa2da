"""Re-executing the process for :meth:`busd.Bus.restart`, as wspbus does.

The command line is the interpreter's own (flags and ``-m`` included); the
working directory is the one at import, because the application may chdir
later; descriptors above stderr are closed on exec.
"""

from __future__ import annotations

import os
import sys

__all__ = ["STARTUP_CWD", "extend_pythonpath", "set_cloexec", "true_argv"]

#: The startup working directory, for re-exec: taken at import, as wspbus does.
STARTUP_CWD = os.path.abspath(os.getcwd())


def true_argv() -> list[str]:
    """The command line that started this interpreter, flags and ``-m`` included."""
    orig = list(getattr(sys, "orig_argv", []) or [])
    if not orig:
        return [sys.executable, *sys.argv]
    return [sys.executable, *orig[1:]]


def extend_pythonpath(env: dict[str, str] | os._Environ[str]) -> None:
    """Keep the startup directory importable after re-exec under ``-m`` or ``-c``.

    The interpreter puts the working directory first on ``sys.path`` for
    ``-m`` and ``-c``; after ``chdir`` and ``execv`` that must still hold.
    """
    orig = getattr(sys, "orig_argv", [])
    if not any(arg in ("-m", "-c") for arg in orig[1:]):
        return
    existing = env.get("PYTHONPATH", "")
    parts = existing.split(os.pathsep) if existing else []
    if STARTUP_CWD not in parts:
        env["PYTHONPATH"] = os.pathsep.join([STARTUP_CWD, *parts])


def set_cloexec(max_fd: int) -> None:
    """Mark every descriptor above stderr close-on-exec."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, max_fd))
    for fd in fds:
        if fd < 3 or fd >= max_fd:
            continue
        try:
            os.set_inheritable(fd, False)
        except OSError:
            continue
