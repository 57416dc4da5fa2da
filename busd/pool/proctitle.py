"""What ``ps`` shows for busd's own processes.

::

    busd: master NAME           the busd command (NAME is --name, "busd" by default)
    busd: forkserver NAME       the process that forks TARGET workers
    busd: worker NAME SLOT      a TARGET worker (forked or exec'd), SLOT its BUSD_WORKER

A ``-- CMD`` worker is the operator's own program: its title is left alone.
The title replaces the process's command line (``/proc/PID/cmdline``, what
``ps`` and ``psutil.Process.cmdline()`` read).
"""

from __future__ import annotations

import os

from setproctitle import setproctitle

PREFIX = "busd:"


def title(role: str, name: str, *more: str) -> str:
    """``busd: ROLE NAME [MORE...]``."""
    return " ".join([PREFIX, role, name, *more])


def set_title(role: str, name: str, *more: str) -> None:
    """Make this process's title ``busd: ROLE NAME [MORE...]``."""
    setproctitle(title(role, name, *more))


def set_worker_title(environ: os._Environ[str] | dict[str, str] | None = None) -> None:
    """``busd: worker NAME SLOT`` from the variables the pool gives every worker."""
    env = os.environ if environ is None else environ
    set_title("worker", env.get("BUSD_NAME") or "busd", env.get("BUSD_WORKER") or "?")


__all__ = ["set_title", "set_worker_title", "title"]
