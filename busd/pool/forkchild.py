"""What runs in a worker the fork server has just forked, before the worker's own code.

::

    fork server: fork() per worker --> child: close the server's descriptors;
      wait for a byte on `go` (the server sends it once the master has the pid;
      end-of-file: the server died first, the master never learned of this
      process: exit EX_SPAWN_LOST); take the env and the log file; a SIGTERM
      handler until busd.client.worker.main installs its own; run the worker
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
from typing import Any

from busd.pool.proctitle import set_worker_title
from busd.pool.spawn import EX_SPAWN_LOST, log_file_of, open_log

#: The worker a process comes from, in its environment (see busd.pool.strays).
WORKER_PID_ENV = "BUSD_WORKER_PID"


def fork_one(
    env: dict[str, Any],
    own: tuple[socket.socket, int, int, int],
    worker: Any,
    func: Any,
    me: int,
    master: int,
    go: int,
) -> int:  # pragma: no cover - server
    """Fork one worker; in the child, drop the server's own descriptors and run it."""
    pid = os.fork()
    if pid == 0:
        sock, rfd, wfd, ready_to_go = own
        sock.close()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in (rfd, wfd, ready_to_go):
            os.close(fd)
        if os.read(go, 1) != b"\1":
            os._exit(EX_SPAWN_LOST)  # the master was never told of this process
        os.close(go)
        _be_worker(worker, func, env, me, master)
    return pid


def _be_worker(
    worker: Any, func: Any, env: dict[str, Any], parent: int, master: int
) -> None:  # pragma: no cover - runs in a worker
    """In a freshly forked worker: take the env and the log file, run, never return."""
    code = 70
    # Until the worker's own handler is in (busd.client.worker.main), SIGTERM from
    # this server's death (PR_SET_PDEATHSIG) is ignored while the master
    # lives; the pool's, or one after the master's death, ends it.
    try:
        master_fd: int | None = os.pidfd_open(master)
    except OSError:
        master_fd = None
    signal.signal(signal.SIGTERM, lambda signum, frame: _early_term(parent, master_fd))
    try:
        os.environ.update({str(k): str(v) for k, v in env.items()})
        os.environ["BUSD_PARENT_PID"] = str(parent)
        # Inherited by what it starts: the fork server, as their subreaper,
        # tells a live worker's daemon (kept) from one whose worker ended.
        os.environ[WORKER_PID_ENV] = str(os.getpid())
        os.environ["BUSD_MASTER_PID"] = str(master)
        set_worker_title()
        path = log_file_of(env)
        if path:
            fd = open_log(path)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)
        worker.configure_logging()
        code = worker.run(func)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _early_term(parent: int, master: int | None) -> None:  # pragma: no cover - a worker
    """SIGTERM before the worker's own handler: its fork server died (stay), or go.

    The server dies with its master: the master's main thread may be gone
    while its other threads still end, so its pidfd gets a moment to say so.
    """
    if os.getppid() != parent and master is not None and not _ended_within(master, 1.0):
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _ended_within(pidfd: int, wait: float) -> bool:  # pragma: no cover - runs in a worker
    return bool(select.select([pidfd], [], [], wait)[0])


__all__ = ["fork_one"]
