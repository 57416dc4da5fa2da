"""The fork server, the master's side: the client of a clean process that forks workers.

::

    busd main thread --fork--> the fork server process (busd.pool.forkproc: one thread,
        |                        no ZeroMQ context; each forked worker's first steps are
        |                        busd.pool.forkchild)
    any thread (the pool's command thread):
      spawn_many / exit_code --_Ask / _StatusAsk (reply Future)--+
                                one SimpleQueue + a byte on the   |
                                wake pipe                         v
    [busd-forkserver] thread: the only user of the socketpair and the server's pidfd
        select(wake pipe, server pidfd)
          {"workers": [{"env": {...}}, ...]} -->  <-- {"pids": [...]} + their pidfds
          {"status": pid} -->                     <-- {"status": wait status}
        the server's pidfd readable: reap it, start a replacement, on_replaced(...)

The first server is forked by the master's main thread before the master has
a thread or a socket (:class:`ForkServer` must be made then); it inherits the
listening sockets.  Forking from the master later would copy its I/O thread's
locks and its ZeroMQ context into every worker.  Without ``--preload`` each
worker imports the application after the fork, so a respawn reload runs new
code; with it, the application is imported once, in the server
(copy-on-write pages shared by every worker).

If the server dies, the owner thread sees its pidfd, logs it, and starts a
new one, this time as a fresh interpreter (``python -m busd.pool.forkproc FD
TARGET``): the master has threads by then.  Requests caught by the death are
answered with an :class:`OSError` each (the pool counts a failed start).
The server dies with the master (PR_SET_PDEATHSIG, SIGKILL); its workers
get SIGTERM when it dies, which they ignore while their master lives (see
``busd.client.worker.main``).  The server reaps its own children; the master watches
them through pidfds.  It is also the workers' child subreaper
(:mod:`busd.pool.forkproc`): no process outlives the worker it came from.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from busd.core.stats import Stats
from busd.master.osthread import name_os_thread
from busd.pool.forkproc import recv_msg, send_msg, serve
from busd.pool.spawn import Spawned, SpawnerGone

log = logging.getLogger(__name__)

#: How long a caller waits for the owner thread's answer to one batch.
ASK_TIMEOUT = 60.0
#: How long a new server has to say it is ready.
READY_TIMEOUT = 30.0


@dataclass(frozen=True, eq=False)
class ForkServerStats(Stats):
    """What :meth:`ForkServer.statistics` returns."""

    #: The server's pid (None while there is none).
    pid: int | None
    #: How often a dead server was replaced.
    replaced: int
    #: Whether the server imported the TARGET (``--preload``).
    preload: bool


@dataclass(frozen=True)
class _Ask:
    """One batch of workers wanted by some thread, and where its answer goes."""

    requests: tuple[tuple[int, Mapping[str, str]], ...]
    reply: Future[list[Spawned]]


@dataclass(frozen=True)
class _StatusAsk:
    """The exit status of a worker that has ended (the server reaped it)."""

    pid: int
    reply: Future[int | None]


@dataclass
class _Server:
    """One fork server process (owned by the owner thread once it runs)."""

    pid: int
    pidfd: int
    sock: socket.socket

    @classmethod
    def fork(cls, target: str, preload: bool, name: str) -> _Server:
        """Fork it from this process (call before any thread or ZeroMQ context)."""
        parent, child = socket.socketpair()
        master = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the fork server process
            parent.close()
            os._exit(serve(child, target, preload, master, name))
        child.close()
        return cls(pid, os.pidfd_open(pid), parent)

    @classmethod
    def exec(cls, target: str, preload: bool, name: str) -> _Server:
        """Start it as a fresh interpreter (safe in a threaded process)."""
        parent, child = socket.socketpair()
        child.set_inheritable(True)
        argv = [
            sys.executable,
            "-m",
            "busd.pool.forkproc",
            str(child.fileno()),
            target,
            "preload" if preload else "fresh",
        ]
        try:
            pid = os.posix_spawn(
                sys.executable,
                argv,
                {**os.environ, "BUSD_PARENT_PID": str(os.getpid()), "BUSD_NAME": name},
            )
        finally:
            child.close()
        return cls(pid, os.pidfd_open(pid), parent)

    def wait_ready(self, timeout: float) -> str | None:
        """None once the server says it is ready, else why not."""
        self.sock.settimeout(timeout)
        try:
            hello = recv_msg(self.sock)
        except (OSError, ValueError) as exc:
            return f"fork server did not start: {exc}"
        finally:
            self.sock.settimeout(None)
        if isinstance(hello, dict) and hello.get("ready"):
            return None
        error = hello.get("error") if isinstance(hello, dict) else None
        return str(error or "fork server ended before it was ready")

    def ask(
        self, requests: Sequence[tuple[int, Mapping[str, str]]], env: Mapping[str, str]
    ) -> list[Spawned]:
        """One round trip for a batch of workers."""
        try:
            send_msg(self.sock, {"workers": [{"env": {**env, **wanted}} for _, wanted in requests]})
            reply = recv_msg(self.sock)
            if not isinstance(reply, dict) or not isinstance(reply.get("pids"), list):
                error = reply.get("error") if isinstance(reply, dict) else None
                if error:
                    return [OSError(error) for _ in requests]
                return [SpawnerGone("the fork server did not answer") for _ in requests]
            pids = [int(pid) for pid in reply["pids"]]
            # The pidfds come from the server, opened before it could reap anyone:
            # a worker that ended at once is still seen (and its status asked).
            _, fds, _, _ = socket.recv_fds(self.sock, 1, len(pids))
        except (OSError, ValueError) as exc:
            return [SpawnerGone(f"fork server: {exc}") for _ in requests]
        if len(fds) != len(pids):
            for fd in fds:
                os.close(fd)
            return [SpawnerGone("the fork server sent no pidfds") for _ in requests]
        return list(zip(pids, fds, strict=True))

    def exit_status(self, pid: int) -> int | None:
        """The wait status the server saw for its child ``pid`` (None: unknown)."""
        try:
            send_msg(self.sock, {"status": pid})
            reply = recv_msg(self.sock)
        except (OSError, ValueError):
            return None
        status = reply.get("status") if isinstance(reply, dict) else None
        return status if isinstance(status, int) else None

    def reap(self, timeout: float) -> int | None:
        """Wait (bounded) for it to end, SIGKILL it if it will not; its exit status."""
        try:
            if not select.select([self.pidfd], [], [], timeout)[0]:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            _, status = os.waitpid(self.pid, 0)
            return status
        except ChildProcessError:
            return None
        finally:
            self.sock.close()
            os.close(self.pidfd)


class ForkServer:
    """The master's fork server; a :class:`busd.pool.spawn.Spawner` safe for any thread.

    Make it before the master starts threads.  ``env`` goes to every worker
    (set it before the first spawn); ``on_replaced(old_pid, new_pid, how)``
    is called from the owner thread after a dead server was replaced.
    ``name`` (the master's) is in the server's process title.
    """

    def __init__(
        self,
        target: str,
        *,
        preload: bool = False,
        env: Mapping[str, str] | None = None,
        name: str = "busd",
        start: bool = True,
    ) -> None:
        self.target = target
        self.preload = preload
        self.name = name
        self.env: dict[str, str] = dict(env or {})
        self.on_replaced: Callable[[int, int, str], object] | None = None
        # Forked when this process has no other thread yet; else a fresh interpreter.
        self._server: _Server | None = (
            _Server.fork(target, preload, name)
            if threading.active_count() == 1
            else _Server.exec(target, preload, name)
        )
        self._pid: int | None = self._server.pid
        self._replaced = 0
        #: Why the first server could not start (the TARGET with --preload): kept,
        #: shown once by the pool, and never retried (a new server would fail alike).
        self._error: str | None = None
        self._asks: queue.SimpleQueue[_Ask | _StatusAsk | None] = queue.SimpleQueue()
        self._rfd, self._wfd = os.pipe()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._own, name="busd-forkserver", daemon=True)
        if start:
            self._thread.start()

    def start(self) -> None:
        """Start serving (``start=False`` made it idle: several servers forked first)."""
        if not self._thread.is_alive() and not self._closed.is_set():
            self._thread.start()

    # -- any thread -----------------------------------------------------------

    def spawn_many(self, requests: Sequence[tuple[int, Mapping[str, str]]]) -> list[Spawned]:
        """Ask for every worker in one batch; waits for the owner thread's answer."""
        if self._closed.is_set():
            return [OSError("the fork server is closed") for _ in requests]
        ask = _Ask(tuple(requests), Future())
        self._asks.put(ask)
        self._wake()
        try:
            return ask.reply.result(ASK_TIMEOUT)
        except TimeoutError:
            return [SpawnerGone("the fork server did not answer in time") for _ in requests]

    def exit_code(self, pid: int) -> int | None:
        """A worker's exit code (negative: the signal) once it has ended; None: unknown.

        The server is the parent that reaps it; call this once its pidfd says
        it ended.
        """
        if self._closed.is_set():
            return None
        ask = _StatusAsk(pid, Future())
        self._asks.put(ask)
        self._wake()
        try:
            status = ask.reply.result(ASK_TIMEOUT)
        except TimeoutError:
            return None
        return None if status is None else os.waitstatus_to_exitcode(status)

    def statistics(self) -> ForkServerStats:
        """The server's pid (None while there is none) and how often it was replaced."""
        return ForkServerStats(self._pid, self._replaced, self.preload)

    def close(self, timeout: float = 5.0) -> None:
        """End the owner thread and the server (its workers are the pool's business)."""
        if self._closed.is_set():
            return
        if self._thread.ident is None:  # never started: it must still end the server
            self._thread.start()
        self._closed.set()
        self._asks.put(None)
        self._wake()
        self._thread.join(timeout + 5.0)
        os.close(self._rfd)
        os.close(self._wfd)

    def _wake(self) -> None:
        try:
            os.write(self._wfd, b"\0")
        except (BlockingIOError, OSError):  # a full pipe is awake already; closed: gone
            return

    # -- the owner thread -------------------------------------------------------

    def _own(self) -> None:
        name_os_thread("busd-forkserver")
        try:
            first = self._server
            if first is not None and (why := first.wait_ready(READY_TIMEOUT)) is not None:
                self._error = why
                first.reap(1.0)
                self._server = self._pid = None
            while self._serve_asks():
                pass
        finally:
            self._shut_down()

    def _serve_asks(self) -> bool:
        """Wait for asks or the server's death; False once closing."""
        server = self._server
        fds = [self._rfd] if server is None else [self._rfd, server.pidfd]
        # Nothing to look at but the pipe and the server's pidfd: an idle owner sleeps.
        ready, _, _ = select.select(fds, [], [], None)
        if server is not None and server.pidfd in ready:
            self._lost(server)
        if self._rfd in ready:
            os.read(self._rfd, 4096)
        while True:
            try:
                ask = self._asks.get_nowait()
            except queue.Empty:
                return True
            if ask is None:
                return False
            if isinstance(ask, _StatusAsk):
                server = self._server
                ask.reply.set_result(None if server is None else server.exit_status(ask.pid))
            else:
                ask.reply.set_result(self._answer(ask))

    def _answer(self, ask: _Ask) -> list[Spawned]:
        if self._error is not None:
            return [OSError(self._error) for _ in ask.requests]
        if self._server is None:
            self._replace(None, "none running")
        server = self._server
        if server is None:
            return [SpawnerGone("no fork server") for _ in ask.requests]
        results = server.ask(ask.requests, self.env)
        if all(isinstance(r, OSError) for r in results) and _ended(server.pidfd):
            self._lost(server)
        return results

    def _lost(self, server: _Server) -> None:
        status = server.reap(1.0)
        how = _describe(status)
        log.warning("the fork server (pid %d) ended (%s): starting a new one", server.pid, how)
        self._server = None
        self._pid = None
        self._replace(server.pid, how)

    def _replace(self, old: int | None, how: str) -> None:
        if self._closed.is_set():
            return
        started = time.monotonic()
        try:
            server = _Server.exec(self.target, self.preload, self.name)
        except OSError as exc:
            log.error("cannot start a fork server: %s", exc)
            return
        if (why := server.wait_ready(READY_TIMEOUT)) is not None:
            log.error("%s", why)
            server.reap(1.0)
            return
        self._server, self._pid = server, server.pid
        self._replaced += 1
        log.warning(
            "new fork server pid %d, ready in %.0f ms",
            server.pid,
            (time.monotonic() - started) * 1000,
        )
        if self.on_replaced is not None and old is not None:
            self.on_replaced(old, server.pid, how)

    def _shut_down(self) -> None:
        while True:
            try:
                ask = self._asks.get_nowait()
            except queue.Empty:
                break
            if isinstance(ask, _StatusAsk):
                ask.reply.set_result(None)
            elif ask is not None:
                ask.reply.set_result([OSError("the fork server is closed") for _ in ask.requests])
        server, self._server = self._server, None
        if server is not None:
            server.sock.shutdown(socket.SHUT_RDWR)
            server.reap(5.0)


def _ended(pidfd: int, wait: float = 0.2) -> bool:
    return bool(select.select([pidfd], [], [], wait)[0])


def _describe(status: int | None) -> str:
    if status is None:
        return "status unknown"
    code = os.waitstatus_to_exitcode(status)
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"


# -- the fork server process ----------------------------------------------------------


__all__ = ["ASK_TIMEOUT", "READY_TIMEOUT", "ForkServer", "ForkServerStats"]
