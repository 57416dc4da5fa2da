"""ClientBus: a bus in a worker process that mirrors its master.

::

    master --> [busd-link] --Inbox--> [busd-dispatch] --> local transitions, listeners
                   ^   (busd.client.inbox)      |
                   +--Outbox: acks, pongs, bye--+

The master decides; the client follows.  Its local state moves with the
master's (STARTED runs the local start listeners, STOPPING the stop
listeners, EXITING the exit listeners, after which ``block()`` returns),
relayed channel messages are published locally, and lifecycle messages are
acked once the local listeners ran, with their errors.  ``start()``,
``stop()``, ``exit()``, ``graceful()`` and ``restart()`` are forwarded to
the master; ``publish()`` stays local (wspbus semantics); ``broadcast()``
goes through the master to every process; ``leave()`` ends only this one.

Nothing runs here before ``mirror()``, ``wait()`` or ``block()``: what
arrives meanwhile is held, so listeners subscribed after ``connect()`` see
the start of a master that was already STARTED.  A process that began to
leave (BYE said, or its exit begun) follows the master no more.  In
``block()``, SIGINT and SIGTERM make this process alone leave.

This module is what callers use: joining (``connect()``), the commands
forwarded to the master, leaving and closing.  What the dispatcher thread
runs is :class:`busd.client.dispatch.DispatchingBus`, the base of
:class:`ClientBus`; the signal handlers are :mod:`busd.client.signals`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from busd.client.dispatch import DispatchingBus
from busd.client.inbox import Signalled, Stop
from busd.client.link.liveness import master_timeout_from_env
from busd.client.link.messages import LinkStats
from busd.client.link.thread import Link
from busd.client.signals import restore_signals, take_leave_signals
from busd.core.auth import ClientKeys, client_keys, is_tcp
from busd.core.bus import BusStats, State
from busd.core.endpoints import Endpoints, client_endpoints, pub_beside
from busd.core.errors import BusError, KeyRefused, MasterLost, NoMaster

DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True, eq=False)
class ClientStats(BusStats):
    """A ClientBus's counters: its state and listeners, its link, its dispatcher's queue."""

    link: LinkStats
    #: Items waiting for the dispatcher, and the most that ever waited at once.
    queued: int
    queued_peak: int
    #: Messages of BATCH frames the dispatcher dropped: they did not decode as announced.
    bad_batched: int = 0


class ClientBus(DispatchingBus):
    """A Bus mirroring a master; see the module docstring.

    ``on_master_lost`` is ``"exit"`` (run the exit listeners and end, the
    default) or ``"wait"`` (stay, and join the next master incarnation).
    ``master_timeout`` is how long a silent master is waited for before it
    is declared lost (default ``BUSD_MASTER_TIMEOUT``, else 30 s;
    :data:`busd.client.link.liveness.FOLLOW_HEARTBEAT` means the master's heartbeat x
    liveness); a master on this host whose process ends is noticed at once.
    """

    def __init__(
        self,
        endpoints: Endpoints,
        *,
        name: str = "",
        role: str = "worker",
        worker: int | None = None,
        pool: str = "",
        timeout: float = DEFAULT_TIMEOUT,
        on_master_lost: str = "exit",
        shutdown_timeout: float = 60.0,
        master_timeout: float | None = None,
        curve: ClientKeys | None = None,
    ) -> None:
        super().__init__(on_master_lost)
        #: The pool this process belongs to (``BUSD_POOL``): a message meant for some
        #: pools only runs its listeners here only if it names this one.
        self.pool = pool
        self.endpoints = endpoints
        self.timeout = timeout
        self.shutdown_timeout = shutdown_timeout
        self.link = Link(
            endpoints,
            self._inbox.put,
            {"name": name, "role": role, "worker": worker, "pool": pool},
            wait_for_new_master=on_master_lost == "wait",
            local_state=lambda: self._state.name,
            master_timeout=master_timeout_from_env() if master_timeout is None else master_timeout,
            curve=curve,
        )

    # -- joining -------------------------------------------------------------

    def connect(self, mirror: bool = False, timeout: float | None = None) -> ClientBus:
        """Join the master: returns once its snapshot arrived (NoMaster past ``timeout``).

        Then :attr:`master_state` is the master's state, and nothing has run
        here yet: subscribe listeners, then :meth:`block` (or :meth:`mirror`)
        runs what the master's state calls for (the start listeners of a
        STARTED master).  With ``mirror=True`` it returns only once the
        master's state is mirrored here (``bus.state`` is the master's, its
        listeners ran): listeners subscribed after that miss the start.
        """
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        self._dispatcher.start()
        self.link.start()
        if not self.link.settled.wait(limit) or not self.link.joined.is_set():
            self.close()
            if self.link.refused is not None:
                raise self.link.refused
            if self.link.refusal is not None:
                raise KeyRefused(self.link.refusal)
            raise NoMaster(f"no busd answered at {self.endpoints.ctl} within {limit:g}s")
        if mirror:
            self.mirror()
        arrived = self._synced if mirror else self._heard
        if not arrived.wait(max(0.0, deadline - time.monotonic())):
            self.close()
            raise NoMaster(f"the master's state did not arrive within {limit:g}s")
        return self

    @property
    def master_state(self) -> State | None:
        """The master's state as last heard (None before :meth:`connect` returned).

        It may be ahead of :attr:`state`, which moves as the local listeners run.
        """
        return self._master_state

    def mirror(self) -> None:
        """Start applying the master's state and messages locally (once; idempotent)."""
        self._inbox.mirror()

    def wait(
        self,
        state: State | Iterable[State],
        interval: float = 0.1,
        channel: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Mirror (if not yet), then wait for ``state`` (see :meth:`busd.Bus.wait`)."""
        self.mirror()
        super().wait(state, interval, channel, timeout)

    def leave_on_signal(self, signum: int, master_alive: bool = True) -> None:
        """Leave this process's bus because of ``signum``; safe in a signal handler.

        It only records the signal and wakes the dispatcher, which says BYE
        (unless ``master_alive`` is False), runs the stop listeners (if this
        process started) and the exit listeners.  A second signal changes nothing.
        """
        if self.signalled is not None:
            return
        self.signalled = signum
        self._inbox.put([Signalled(signum, master_alive)])

    # -- forwarded to the master ---------------------------------------------------

    def request(
        self,
        cmd: str,
        timeout: float | None = None,
        *,
        body: dict[str, Any] | None = None,
        **args: Any,
    ) -> Any:
        """Send a command to the master and return its result.

        ``timeout`` bounds the wait for the answer; ``body`` holds arguments
        whose names clash with it (an ack wait's own ``timeout``), the rest
        come as keywords.
        """
        args = {**(body or {}), **args}
        limit = self.timeout if timeout is None else timeout
        if args.get("wait") and self._in_dispatcher():
            raise BusError(
                "a listener cannot wait for every client's ack: "
                "its own ack would come only after it returns"
            )
        wait_timeout = args.get("timeout")
        if isinstance(wait_timeout, int | float):
            limit += float(wait_timeout)
        future = self.link.request(cmd, **args)
        try:
            return future.result(limit)
        except FutureTimeout:
            self.link.forget(future)
            raise NoMaster(f"no answer to {cmd!r} from the master within {limit:g}s") from None

    def start(self, wait: bool = False, timeout: float | None = None) -> Any:
        """Ask the master to start everyone."""
        return self.request("start", body={"wait": wait, "timeout": timeout})

    def stop(self, wait: bool = False, timeout: float | None = None) -> Any:
        """Ask the master to stop everyone (processes stay, STOPPED)."""
        return self.request("stop", body={"wait": wait, "timeout": timeout})

    def exit(self, wait: bool = False, timeout: float | None = None) -> Any:
        """Ask the master to exit everyone; if no master answers, exit here."""
        try:
            return self.request("exit", body={"wait": wait, "timeout": timeout})
        except (NoMaster, MasterLost):
            self.log("no master to exit: exiting this process's bus", level=30)
            self._do_exit()
            return None

    def graceful(self, wait: bool = False, timeout: float | None = None) -> Any:
        """Ask the master for a graceful reload of everyone."""
        return self.request("graceful", body={"wait": wait, "timeout": timeout})

    def restart(self) -> None:
        """Ask the master to restart."""
        self.request("restart")

    def recycle(self, reason: str = "asked by the worker") -> Any:
        """Have the pool replace this worker: a new one reaches STARTED, then this one leaves.

        The application's own rule ("after N requests"): the pool sends this
        worker SIGTERM once its replacement runs, so capacity never drops.
        """
        return self.request("recycle", pid=os.getpid(), reason=reason)

    def broadcast(self, channel: str, *args: Any, **kwargs: Any) -> Any:
        """Publish ``channel`` in every process, through the master."""
        return self.request("broadcast", channel=channel, args=list(args), kwargs=kwargs)

    def broadcast_and_wait(
        self,
        channel: str,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Broadcast and wait until every client ran its listeners; returns the acks."""
        return self.request(
            "broadcast",
            body={
                "channel": channel,
                "args": list(args),
                "kwargs": kwargs or {},
                "wait": True,
                "timeout": timeout,
            },
        )

    def status(self) -> Any:
        """The master's status."""
        return self.request("status")

    # -- leaving and closing -----------------------------------------------------

    def leave(self, reason: str = "leaving", master_alive: bool = True) -> None:
        """End this process's bus only: tell the master, run the local stop
        listeners (if this process started) and exit listeners.

        With ``master_alive=False`` nothing waits to reach the master.
        """
        if master_alive:
            self._say_bye(reason)
        else:
            self._left = True
        self._exit_here()
        self.close(linger=0.5 if master_alive else 0.0)

    def block(self, interval: float = 0.1, timeout: float | None = None) -> None:
        """Mirror (if not yet), wait for EXITING, then close the link.

        In the main thread, while it blocks, SIGINT and SIGTERM (unless the
        process set its own handlers) call :meth:`leave_on_signal`: this
        process alone leaves and ``block()`` returns normally.
        """
        self.mirror()
        saved = take_leave_signals(self.leave_on_signal)
        try:
            super().block(interval, timeout)
        finally:
            restore_signals(saved)
            self.close()

    def _clean_exit(self) -> None:
        if self._state is not State.EXITING:
            self._say_bye("interpreter exit")
            self._do_exit()
        self.close()

    def close(self, timeout: float | None = None, linger: float = 0.5) -> None:
        """Close the sockets and end the threads; the bus state is kept.

        Waits at most ``timeout`` (default ``shutdown_timeout``) for listeners
        the dispatcher is still running, such as exit listeners, and at most
        ``linger`` for queued messages to reach the master.  A bus that never
        mirrored ends without running anything it held.
        """
        if not self._in_dispatcher():  # the dispatcher itself cannot wait for its own end
            self._inbox.put([Stop()])
            if self._dispatcher.is_alive():
                self._dispatcher.join(self.shutdown_timeout if timeout is None else timeout)
        self.link.close(linger)

    def statistics(self) -> ClientStats:
        """The bus's and the link's counters."""
        bus = super().statistics()
        return ClientStats(
            state=bus["state"],
            listeners=bus["listeners"],
            link=self.link.statistics(),
            queued=len(self._inbox),
            queued_peak=self._inbox.peak,
            bad_batched=self.bad_batched,
        )

    def __enter__(self) -> ClientBus:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def connect(
    name: str | None = None,
    runtime_dir: str | Path | None = None,
    *,
    pub: str | None = None,
    ctl: str | None = None,
    mirror: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    on_master_lost: str | None = None,
    role: str = "worker",
    master_timeout: float | None = None,
    server_key: str | Path | None = None,
    curve_secret: str | Path | None = None,
) -> ClientBus:
    """Connect a ClientBus to a master and return it, joined (not yet mirrored).

    The usual pattern is ``bus = connect()``, ``bus.subscribe(...)``, then
    ``bus.block()``: mirroring begins at ``block()``, so the start listeners
    run when the master is STARTED, and the stop listeners only after them.
    ``bus.master_state`` tells the master's state at once.  ``mirror=True``
    returns only once the master's state is mirrored here (its listeners
    ran): for code that reads ``bus.state`` or waits for channels straight away.
    With no arguments the master is found from ``BUSD_PUB_ENDPOINT`` and
    ``BUSD_CTL_ENDPOINT``, else ``BUSD_RUNTIME_DIR`` / ``BUSD_NAME``, else the
    default runtime dir.  ``BUSD_WORKER`` names the pool slot;
    ``BUSD_ON_MASTER_LOST`` may say ``wait``; ``BUSD_MASTER_TIMEOUT`` sets
    ``master_timeout`` (seconds a silent master is waited for; default 30).
    Over tcp, ``server_key`` (the master's public certificate) and
    ``curve_secret`` (this client's secret certificate), else
    ``BUSD_SERVER_KEY`` / ``BUSD_CURVE_SECRET``, make the connection CURVE; a
    refused key raises :class:`busd.core.errors.KeyRefused`.  A tcp ``ctl``
    without ``pub`` means the PUB endpoint on the next port.
    """
    if ctl and not pub and ctl.startswith("tcp://"):
        pub = pub_beside(ctl).pub
    # Both given: the default runtime dir is not looked at (nor refused).
    found = Endpoints(pub=pub, ctl=ctl) if ctl and pub else client_endpoints(name, runtime_dir)
    endpoints = Endpoints(pub=pub or found.pub, ctl=ctl or found.ctl)
    # Keys only matter over tcp (and loading them costs an import of zmq.auth).
    tcp = is_tcp(endpoints.ctl) or is_tcp(endpoints.pub)
    worker_env = os.environ.get("BUSD_WORKER", "")
    bus = ClientBus(
        endpoints,
        name=os.environ.get("BUSD_WORKER_NAME", ""),
        role=role,
        worker=int(worker_env) if worker_env.isdigit() else None,
        pool=os.environ.get("BUSD_POOL", ""),
        timeout=timeout,
        master_timeout=master_timeout,
        curve=client_keys(server_key, curve_secret) if tcp else None,
        on_master_lost=on_master_lost or os.environ.get("BUSD_ON_MASTER_LOST", "exit"),
    )
    return bus.connect(mirror=mirror, timeout=timeout)


__all__ = ["ClientBus", "ClientStats", "connect"]
