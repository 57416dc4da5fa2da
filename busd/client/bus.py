"""ClientBus: a bus in a worker process that mirrors its master.

::

    master --> [busd-link] --inbox--> [busd-dispatch] --> local transitions, listeners
                   ^      (deque + condition;   |
                   |       no bound, counted)   |
                   +--Outbox: acks, pongs, bye--+

The master decides; the client follows.  Its local state moves with the
master's (STARTED runs the local start listeners, STOPPING the stop
listeners, EXITING the exit listeners, after which ``block()`` returns),
relayed channel messages are published locally, and lifecycle messages are
acked once the local listeners ran, with their errors.  ``start()``,
``stop()``, ``exit()``, ``graceful()`` and ``restart()`` are forwarded to
the master; ``publish()`` stays local (wspbus semantics); ``broadcast()``
goes through the master to every process; ``leave()`` ends only this one.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from busd.auth import ClientKeys, client_keys, is_tcp
from busd.bus import Bus, State
from busd.client.link import Gone, Link, Synced, master_timeout_from_env
from busd.endpoints import Endpoints, client_endpoints, pub_beside
from busd.errors import BusError, ChannelFailures, KeyRefused, MasterLost, NoMaster
from busd.wire import Kind, describe, encode

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
PUBLISH, STATE, EVENT = int(Kind.PUBLISH), int(Kind.STATE), int(Kind.EVENT)
#: Characters of a listener result's repr sent when the result itself cannot be.
ACK_RESULT_LIMIT = 4096


class _Stop:
    """Tells the dispatcher to end (after everything queued before it)."""


class ClientBus(Bus):
    """A Bus mirroring a master; see the module docstring.

    ``on_master_lost`` is ``"exit"`` (run the exit listeners and end, the
    default) or ``"wait"`` (stay, and join the next master incarnation).
    ``master_timeout`` is how long a silent master is waited for before it
    is declared lost (default ``BUSD_MASTER_TIMEOUT``, else 30 s;
    :data:`busd.client.link.FOLLOW_HEARTBEAT` means the master's heartbeat x
    liveness); a master on this host whose process ends is noticed at once.
    """

    def __init__(self, endpoints: Endpoints, *, name: str = "", role: str = "worker",
                 worker: int | None = None, timeout: float = DEFAULT_TIMEOUT,
                 on_master_lost: str = "exit", shutdown_timeout: float = 60.0,
                 master_timeout: float | None = None, curve: ClientKeys | None = None) -> None:
        if on_master_lost not in ("exit", "wait"):
            raise ValueError("on_master_lost is 'exit' or 'wait'")
        super().__init__()
        self.endpoints = endpoints
        self.timeout = timeout
        self.shutdown_timeout = shutdown_timeout
        self.on_master_lost = on_master_lost
        self._inbox: collections.deque[Any] = collections.deque()
        self._inbox_cond = threading.Condition()
        self._inbox_peak = 0
        self._mirroring = threading.Event()
        self._synced = threading.Event()
        self._left = False
        self.link = Link(endpoints, self._enqueue,
                         {"name": name, "role": role, "worker": worker},
                         wait_for_new_master=on_master_lost == "wait",
                         local_state=lambda: self._state.name,
                         master_timeout=master_timeout_from_env() if master_timeout is None
                         else master_timeout,
                         curve=curve)
        self._dispatcher = threading.Thread(target=self._dispatch, name="busd-dispatch",
                                            daemon=True)

    # -- joining -------------------------------------------------------------

    def connect(self, mirror: bool = True, timeout: float | None = None) -> ClientBus:
        """Join the master: returns once the snapshot arrived (NoMaster past ``timeout``).

        With ``mirror=True`` it returns once the master's state is mirrored
        here (``bus.state`` is the master's, its listeners ran).  With
        ``mirror=False`` nothing runs locally until :meth:`mirror` (or
        :meth:`block`), so listeners can be subscribed first.
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
            if not self._synced.wait(max(0.0, deadline - time.monotonic())):
                self.close()
                raise NoMaster(f"the master's state did not arrive within {limit:g}s")
        return self

    def mirror(self) -> None:
        """Start applying the master's state and messages locally."""
        self._mirroring.set()

    def _enqueue(self, items: Sequence[Any]) -> None:
        """Called by the link thread: queue items for the dispatcher (never refused)."""
        with self._inbox_cond:
            self._inbox.extend(items)
            self._inbox_peak = max(self._inbox_peak, len(self._inbox))
            self._inbox_cond.notify()

    def _take(self) -> list[Any]:
        with self._inbox_cond:
            while not self._inbox:
                self._inbox_cond.wait()
            items = list(self._inbox)
            self._inbox.clear()
        return items

    # -- the dispatcher thread --------------------------------------------------

    def _dispatch(self) -> None:
        self._mirroring.wait()
        while True:
            for item in self._take():
                if type(item) is _Stop:
                    return
                try:
                    self._apply(item)
                except Exception:
                    log.exception("error applying %r from the master", item)
                if self._state is State.EXITING:
                    self._finish()
                    return

    def _apply(self, item: Any) -> None:
        if type(item) is list:
            self._apply_broadcast(item)
        elif type(item) is Synced:
            if item.missed:
                self.log(f"missed {item.missed} message(s) from the master; state checked",
                         level=30)
            state = item.state
            if state is not None:
                self._run(lambda: self._mirror_state(state))
            self._synced.set()
        elif type(item) is Gone and self.on_master_lost == "exit":
            self.log(f"Master lost ({item.reason}): exiting", level=30)
            self._run(self._do_exit)

    def _apply_broadcast(self, msg: list[Any]) -> None:
        """A relayed message: ``[version, kind, epoch, seq, ...]`` (see busd.wire)."""
        kind, seq = msg[1], msg[3]
        if kind == PUBLISH:
            channel, args, kwargs, ack = msg[4], msg[5], msg[6], msg[7]
            if not ack and channel != "graceful":
                # The hot path: no ack, so failures are only logged (by publish).
                try:  # noqa: SIM105 - contextlib.suppress costs more on this path
                    Bus.publish(self, channel, *args, **kwargs)
                except ChannelFailures:
                    pass
                return
            outcome = self._run(lambda: self._publish_relayed(channel, args, kwargs))
            if ack:
                self._ack(seq, outcome)
        elif kind == STATE:
            state = msg[4]
            self._ack(seq, self._run(lambda: self._mirror_state(state)))
        elif kind == EVENT:
            Bus.publish(self, "busd.event", msg[4], msg[5])

    def _run(self, func: Any) -> tuple[bool, Any, list[dict[str, str]]]:
        try:
            result = func()
        except ChannelFailures as exc:
            return False, None, [describe(e) for e in exc.get_instances()]
        except Exception as exc:  # reported in the ack, and logged
            log.exception("error mirroring the master")
            return False, None, [describe(exc)]
        return True, result, []

    def _mirror_state(self, name: str) -> None:
        """Bring the local state to the master's ``name``, running listeners.

        A worker's stop listeners run once per stop of the master: an exit
        that follows a stop (the master then runs its own stop listeners
        again, as wspbus does) goes from STOPPED straight to EXITING here.
        """
        target = State[name]
        local = self._state
        if target is State.STARTED and local in (State.STOPPED, State.STOPPING):
            self._do_start()
        elif target in (State.STOPPING, State.STOPPED) and local in (
                State.STARTING, State.STARTED):
            self._do_stop()
        elif target is State.EXITING:
            self._do_exit(stop=local is not State.STOPPED)

    def _publish_relayed(self, channel: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if channel == "graceful":
            self._do_graceful()
            return None
        return Bus.publish(self, channel, *args, **kwargs)

    def _state_changed(self, old: State, new: State) -> None:
        if self._left:  # after BYE the master no longer knows us: it would reject this
            return
        # Tell the master at once, so it need not wait for the next heartbeat.
        self.link.send(Kind.PONG, {"epoch": self.link.epoch, "seq": self.link.seq,
                                   "state": new.name})

    def _ack(self, seq: int, outcome: tuple[bool, Any, list[dict[str, str]]]) -> None:
        ok, result, errors = outcome
        body = {"epoch": self.link.epoch, "seq": seq, "ok": ok, "result": result,
                "errors": errors}
        try:
            frame = encode(Kind.ACK, 0, body)
        except BusError:
            # Not msgpack data, or too large: the ack must still go out.
            body["result"] = repr(result)[:ACK_RESULT_LIMIT]
            frame = encode(Kind.ACK, 0, body)
        self.link.send_frame(frame)

    def _abort_start(self) -> None:
        # A failed local start ends this process's bus, not everyone's.
        super()._abort_start()
        self._say_bye("start failed")

    def _finish(self) -> None:
        self._say_bye("exited")
        self.link.close()

    def _say_bye(self, reason: str) -> None:
        if not self._left and not self.link.lost.is_set():
            self._left = True
            self.link.send(Kind.BYE, {"reason": reason})

    # -- forwarded to the master ---------------------------------------------------

    def request(self, cmd: str, timeout: float | None = None, *,
                body: dict[str, Any] | None = None, **args: Any) -> Any:
        """Send a command to the master and return its result.

        ``timeout`` bounds the wait for the answer; ``body`` holds arguments
        whose names clash with it (an ack wait's own ``timeout``), the rest
        come as keywords.
        """
        args = {**(body or {}), **args}
        limit = self.timeout if timeout is None else timeout
        if args.get("wait") and threading.current_thread() is self._dispatcher:
            raise BusError("a listener cannot wait for every client's ack: "
                           "its own ack would come only after it returns")
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

    def broadcast_and_wait(self, channel: str, args: Iterable[Any] = (),
                           kwargs: dict[str, Any] | None = None,
                           timeout: float | None = None) -> Any:
        """Broadcast and wait until every client ran its listeners; returns the acks."""
        return self.request("broadcast", body={
            "channel": channel, "args": list(args), "kwargs": kwargs or {}, "wait": True,
            "timeout": timeout})

    def status(self) -> Any:
        """The master's status."""
        return self.request("status")

    # -- leaving and closing -----------------------------------------------------

    def leave(self, reason: str = "leaving", master_alive: bool = True) -> None:
        """End this process's bus only: run local stop and exit listeners, tell the master.

        With ``master_alive=False`` nothing waits to reach the master.
        """
        if master_alive:
            self._say_bye(reason)
        else:
            self._left = True
        self._do_exit()
        self.close(linger=0.5 if master_alive else 0.0)

    def block(self, interval: float = 0.1, timeout: float | None = None) -> None:
        """Mirror (if not yet), wait for EXITING, then close the link."""
        self.mirror()
        try:
            super().block(interval, timeout)
        finally:
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
        ``linger`` for queued messages to reach the master.
        """
        self._mirroring.set()
        if threading.current_thread() is not self._dispatcher:
            self._enqueue([_Stop()])
            if self._dispatcher.is_alive():
                self._dispatcher.join(self.shutdown_timeout if timeout is None else timeout)
        self.link.close(linger)

    def statistics(self) -> dict[str, Any]:
        """The bus's and the link's counters."""
        stats = super().statistics()
        stats["link"] = self.link.statistics()
        stats["queued"] = len(self._inbox)
        stats["queued_peak"] = self._inbox_peak
        return stats

    def __enter__(self) -> ClientBus:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def connect(name: str | None = None, runtime_dir: str | Path | None = None, *,
            pub: str | None = None, ctl: str | None = None, mirror: bool = True,
            timeout: float = DEFAULT_TIMEOUT, on_master_lost: str | None = None,
            role: str = "worker", master_timeout: float | None = None,
            server_key: str | Path | None = None,
            curve_secret: str | Path | None = None) -> ClientBus:
    """Connect a ClientBus to a master and return it, joined.

    With no arguments the master is found from ``BUSD_PUB_ENDPOINT`` and
    ``BUSD_CTL_ENDPOINT``, else ``BUSD_RUNTIME_DIR`` / ``BUSD_NAME``, else the
    default runtime dir.  ``BUSD_WORKER`` names the pool slot;
    ``BUSD_ON_MASTER_LOST`` may say ``wait``; ``BUSD_MASTER_TIMEOUT`` sets
    ``master_timeout`` (seconds a silent master is waited for; default 30).
    Over tcp, ``server_key`` (the master's public certificate) and
    ``curve_secret`` (this client's secret certificate), else
    ``BUSD_SERVER_KEY`` / ``BUSD_CURVE_SECRET``, make the connection CURVE; a
    refused key raises :class:`busd.errors.KeyRefused`.  A tcp ``ctl``
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
    bus = ClientBus(endpoints, name=os.environ.get("BUSD_WORKER_NAME", ""), role=role,
                    worker=int(worker_env) if worker_env.isdigit() else None,
                    timeout=timeout, master_timeout=master_timeout,
                    curve=client_keys(server_key, curve_secret) if tcp else None,
                    on_master_lost=on_master_lost or os.environ.get("BUSD_ON_MASTER_LOST",
                                                                    "exit"))
    return bus.connect(mirror=mirror, timeout=timeout)


__all__ = ["ClientBus", "connect"]
