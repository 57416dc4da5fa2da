"""A fork server: a clean process, made before the master has threads or sockets,
that forks the workers (``busd --preload``).

::

    busd main thread --fork--> fork server (no threads, no ZeroMQ context;
        |                        imports zmq, msgpack, client and TARGET once)
        |  socketpair:  {"slot", "env"} -->   fork() --> worker: run(TARGET)
        |               <-- {"pid"}
        v
    MasterBus, pool (pidfds of the workers)

Forking from the master itself would copy its I/O thread's locks and its
ZeroMQ context into every worker; the fork server has none, and a worker
forked from it starts with the application already imported (copy-on-write
pages shared with every other worker) in a few milliseconds.

The fork server dies with the master (PR_SET_PDEATHSIG, SIGKILL) and each
worker with the fork server (SIGTERM), so killing the master leaves none.
It reaps its children itself; the master watches them through pidfds.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import struct
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack

from busd.spawn import Spawned

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!I")
MAX_REQUEST = 1 << 20


def _send(sock: socket.socket, obj: Any) -> None:
    data = msgpack.packb(obj, use_bin_type=True)
    sock.sendall(_HEADER.pack(len(data)) + data)


def _recv(sock: socket.socket) -> Any:
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


class ForkServer:
    """The master's handle on its fork server; a :class:`busd.spawn.Spawner`."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.env: dict[str, str] = {}
        parent, child = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the fork server process
            parent.close()
            os._exit(_serve(child, target, os.getppid()))
        child.close()
        self.pid = pid
        self._sock = parent

    def spawn_many(self, requests: Sequence[tuple[int, Mapping[str, str]]]) -> list[Spawned]:
        """Ask the fork server for every worker in one round trip."""
        try:
            _send(self._sock, {"envs": [{**self.env, **env} for _, env in requests]})
            reply = _recv(self._sock)
        except OSError as exc:
            return [exc for _ in requests]
        if not isinstance(reply, dict) or not isinstance(reply.get("pids"), list):
            error = reply.get("error") if isinstance(reply, dict) else None
            return [OSError(error or f"the fork server did not answer ({reply!r})")
                    for _ in requests]
        results: list[Spawned] = []
        for pid in reply["pids"]:
            try:
                results.append((int(pid), os.pidfd_open(int(pid))))
            except OSError as exc:  # it ended already: the pool sees it as a crash
                results.append(exc)
        return results

    def close(self, timeout: float = 5.0) -> None:
        """End the fork server (its workers are the pool's business) and reap it."""
        self._sock.close()
        try:
            pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            return
        try:
            if not select.select([pidfd], [], [], timeout)[0]:
                os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        finally:
            os.close(pidfd)


def _serve(sock: socket.socket, target: str, master: int) -> int:  # pragma: no cover
    """The fork server's loop: import once, then fork one worker per request."""
    try:
        from client.worker import die_with_parent, load_target

        os.environ["BUSD_PARENT_PID"] = str(master)
        die_with_parent(signal.SIGKILL)
        func = load_target(target)
    except BaseException as exc:
        log.exception("fork server could not start")
        _send(sock, {"error": f"fork server: {exc}"})
        return 70
    # SIGCHLD wakes the loop through a pipe, so exited workers are reaped at once.
    rfd, wfd = os.pipe()
    os.set_blocking(wfd, False)
    signal.set_wakeup_fd(wfd)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    me = os.getpid()
    while True:
        ready, _, _ = select.select([sock.fileno(), rfd], [], [])
        if rfd in ready:
            os.read(rfd, 4096)
            _reap_children()
        if sock.fileno() not in ready:
            continue
        try:
            request = _recv(sock)
        except (OSError, ValueError):
            return 0
        if request is None:
            return 0
        envs = request.get("envs", []) if isinstance(request, dict) else []
        pids = []
        for env in envs:
            pid = os.fork()
            if pid == 0:
                sock.close()
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                os.close(rfd)
                os.close(wfd)
                _be_worker(func, env, me)
            pids.append(pid)
        _send(sock, {"pids": pids})


def _be_worker(func: Any, env: dict[str, Any], parent: int) -> None:  # pragma: no cover
    """In a freshly forked worker: take the env, run, and never return."""
    from client.worker import run

    os.environ.update({str(k): str(v) for k, v in env.items()})
    os.environ["BUSD_PARENT_PID"] = str(parent)
    code = 70
    try:
        code = run(func)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _reap_children() -> None:  # pragma: no cover - runs in the fork server
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
