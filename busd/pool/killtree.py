"""Ending a worker the pool kills together with every process below it.

::

    SIGSTOP the worker (through its pidfd)      a stopped process cannot fork
    repeat: list its descendants (psutil),      one that was forking when stopped
            SIGSTOP each new one                shows up in the next listing
      until a listing finds nothing new
    SIGKILL the worker, then each descendant    SIGKILL ends a stopped process

A worker asked to go (SIGTERM) ends its own children (``busd.client.
descendants``).  One the pool has to SIGKILL (it ignored SIGTERM past the
graceful timeout, stopped answering, or busd is forced down) never runs
that clean-up: without this, its children, those in its process group and
those that went to a session of their own alike, would be left running.
A process found this way is a child of a stopped process, so its pid cannot
be reused under us; psutil checks each one's start time anyway.
"""

from __future__ import annotations

import contextlib
import signal

import psutil

#: Listings before giving up on a tree that keeps growing (each adds stopped processes).
MAX_ROUNDS = 16


def freeze_tree(pidfd: int, proc: psutil.Process | None) -> list[psutil.Process]:
    """Stop the process of ``pidfd`` and every descendant; return the descendants."""
    with contextlib.suppress(OSError):
        signal.pidfd_send_signal(pidfd, signal.SIGSTOP)
    if proc is None:
        return []
    found: dict[int, psutil.Process] = {}
    for _ in range(MAX_ROUNDS):
        try:
            below = proc.children(recursive=True)
        except psutil.Error:
            break
        new = [p for p in below if p.pid not in found]
        if not new:
            break
        for child in new:
            found[child.pid] = child
            with contextlib.suppress(psutil.Error):
                child.send_signal(signal.SIGSTOP)
    return list(found.values())


def kill_tree(pidfd: int, proc: psutil.Process | None) -> list[int]:
    """SIGKILL the process of ``pidfd`` and its descendants; the descendants' pids."""
    below = freeze_tree(pidfd, proc)
    with contextlib.suppress(OSError):
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    for child in below:
        with contextlib.suppress(psutil.Error):
            child.kill()
    return [p.pid for p in below]


__all__ = ["freeze_tree", "kill_tree"]
