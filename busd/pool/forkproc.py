"""The fork server process: a clean process that forks the workers on request.

::

    the master's [busd-forkserver] thread            this process (one thread, no ZeroMQ
      (busd.pool.forkserver.ForkServer)                context; has imported zmq, msgpack,
            |                                          busd.client.worker.main, and TARGET
            |  {"workers": [{"env": {...}}, ...]} -->  itself only with --preload)
            |                                          select(socket, SIGCHLD pipe, strays)
            |                                            fork() per worker
            |                                            (busd.pool.forkchild: its first steps)
            |  <-- {"pids": [...]}, then their pidfds    reap every child, keep its status
            |      (SCM_RIGHTS, opened before any reap)  end what a dead worker left
            |  {"status": pid} --> <-- {"status": ws}     (busd.pool.strays)

Messages are msgpack maps, each after a 4-byte big-endian length, on a
socketpair.  The first server is forked from the master before it has a
thread (:func:`serve`); a replacement runs as ``python -m busd.pool.forkproc
FD TARGET preload|fresh`` (:func:`main`).  It is the workers' child
subreaper, so what a worker leaves running is reparented here and ended.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import logging
import os
import select
import signal
import socket
import struct
import sys
from typing import Any

import msgpack

from busd.core import wire
from busd.pool.forkchild import fork_one
from busd.pool.proctitle import set_title
from busd.pool.strays import Strays

_HEADER = struct.Struct("!I")
MAX_REQUEST = 16 << 20
WORKER_MODULE = "busd.client.worker.main"
#: Exit statuses the server keeps for the master to ask about (oldest dropped).
MAX_REAPED = 4096
PR_SET_CHILD_SUBREAPER = 36


def send_msg(sock: socket.socket, obj: Any) -> None:
    """Send one message (a length, then msgpack)."""
    data = wire.pack(obj)
    # MSG_NOSIGNAL: a dead peer is an EPIPE error, not a SIGPIPE that kills the master.
    sock.sendall(_HEADER.pack(len(data)) + data, socket.MSG_NOSIGNAL)


def recv_msg(sock: socket.socket) -> Any:
    """Receive one message; None at end of file."""
    header = _recv_exactly(sock, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_REQUEST:
        raise ValueError(f"fork server message of {size} bytes")
    body = _recv_exactly(sock, size)
    return None if body is None else msgpack.unpackb(body, raw=False)


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks = b""
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return chunks


def serve(
    sock: socket.socket, target: str, preload: bool, master: int, name: str = "busd"
) -> int:  # pragma: no cover - runs in the fork server
    """The fork server's loop: import the worker side, then fork on request."""
    set_title("forkserver", name)
    # A terminal's Ctrl-C reaches the whole process group: the master decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        worker: Any = importlib.import_module(WORKER_MODULE)
        os.environ["BUSD_PARENT_PID"] = str(master)
        worker.die_with_parent(signal.SIGKILL)
        adopt_orphans()
        func = worker.load_target(target) if preload else None
    except BaseException:  # noqa: BLE001 - the server's main: its master shows the traceback
        import traceback

        send_msg(sock, {"error": f"the fork server could not start:\n{traceback.format_exc()}"})
        return 70
    gc.collect()
    gc.freeze()  # what is imported now stays shared, copy-on-write, in every worker
    send_msg(sock, {"ready": True})
    # SIGCHLD wakes the loop through a pipe, so exited workers are reaped at once.
    rfd, wfd = os.pipe()
    os.set_blocking(wfd, False)
    signal.set_wakeup_fd(wfd)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    me = os.getpid()
    reaped: dict[int, int] = {}
    strays = Strays(me)
    while True:
        ready, _, _ = select.select([sock.fileno(), rfd], [], [], strays.timeout())
        if rfd in ready:
            os.read(rfd, 4096)
            strays.forget(_reap_children(reaped))
            strays.end_inherited()
        strays.kill_due()
        if sock.fileno() not in ready:
            continue
        try:
            request = recv_msg(sock)
        except (OSError, ValueError):
            return 0
        if not isinstance(request, dict):
            return 0
        if "status" in request:
            # Reaped here before its SIGCHLD was read: what it kept ends now too.
            strays.forget(_reap_children(reaped))
            send_msg(sock, {"status": reaped.pop(int(request["status"]), None)})
            continue
        # Each child waits for a byte on `go` before it runs: one this server
        # dies before handing to the master reads end-of-file and exits (the
        # master would never know it, and it would run on as a stray worker).
        go, ready_to_go = os.pipe()
        try:
            pids = [
                fork_one(
                    spec.get("env", {}),
                    (sock, rfd, wfd, ready_to_go),
                    worker,
                    func or target,
                    me,
                    master,
                    go,
                )
                for spec in request.get("workers", [])
            ]
            strays.workers.update(pids)
            pidfds = [os.pidfd_open(pid) for pid in pids]  # before any is reaped
            send_msg(sock, {"pids": pids})
            socket.send_fds(sock, [b"\0"], pidfds)
            for fd in pidfds:
                os.close(fd)
            os.write(ready_to_go, b"\1" * len(pids))
        finally:
            os.close(go)
            os.close(ready_to_go)


def adopt_orphans() -> None:  # pragma: no cover - runs in the fork server
    """Be the child subreaper of the workers (Linux), so what they leave is reaped here.

    A worker's child that outlives it is reparented to this process, whose
    loop reaps every child, instead of to init, which is busd itself when
    busd is a container's PID 1 (and does not reap strangers).
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _reap_children(reaped: dict[int, int]) -> list[int]:  # pragma: no cover - in the server
    """Reap every ended child, keeping its status until the master asks (bounded)."""
    ended: list[int] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return ended
        if pid == 0:
            return ended
        ended.append(pid)
        reaped[pid] = status
        while len(reaped) > MAX_REAPED:
            del reaped[next(iter(reaped))]


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - a fork server
    """``python -m busd.pool.forkproc FD TARGET preload|fresh`` (a replacement server)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or not args[0].isdigit():
        print("usage: python -m busd.pool.forkproc FD TARGET preload|fresh", file=sys.stderr)
        return 2
    stamp = "" if os.environ.get("BUSD_LOG_FORMAT") == "plain" else "%(asctime)s.%(msecs)03d "
    logging.basicConfig(
        level=os.environ.get("BUSD_LOG_LEVEL", "WARNING").upper(),
        format=f"{stamp}busd fork server [%(process)d] %(levelname)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )
    sock = socket.socket(fileno=int(args[0]))
    master = int(os.environ.get("BUSD_PARENT_PID", "0") or 0)
    return serve(sock, args[1], args[2] == "preload", master, os.environ.get("BUSD_NAME") or "busd")


__all__ = ["MAX_REQUEST", "adopt_orphans", "main", "recv_msg", "send_msg", "serve"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
