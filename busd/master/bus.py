"""MasterBus: the authoritative bus, relaying its states and channels to clients.

::

    caller threads --LocalCall--+                                +--> XPUB  (STATE, PUBLISH,
    signals (submit) -----------+--> commands  --> [busd-commands]     EVENT, HEARTBEAT)
    [busd-hub]: Request, -------+   (SimpleQueue)   owns the bus      |
      ClientChange, StatusWanted     one at a time,  and the pool;    |
                                     in order        runs listeners,  |
                                                     hooks, spawns    |
    publishers (any thread) --seq lock--> Publish --Outbox--> [busd-hub] <--ROUTER--> clients
    [busd-commands] --SendTo (replies), publish_board(Board)--^

Every lifecycle call (start, stop, exit, graceful, restart), wherever it
comes from, runs on the one command thread, in order; none is refused or
dropped and each remote one gets one reply.  Read-only requests (ping,
status, workers, clients, snapshot, replay) are answered by the hub at once,
from the :class:`busd.master.board.Board` this thread publishes after each command
and whenever the hub finds it stale.  Sequence numbers are taken under one
lock together with the hand-off to the hub, so seq order is send order.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from busd.core import endpoints as ep
from busd.core.bus import Bus, State
from busd.core.endpoints import pub_beside
from busd.core.errors import BusError, ChannelFailures, ProtocolError
from busd.core.wire import (
    HEARTBEAT_INTERVAL,
    HEARTBEAT_LIVENESS,
    ErrorCode,
    Kind,
    error_to_wire,
    wire_error,
)
from busd.master.acks import AckReport, wait_acks
from busd.master.calls import COMMAND_POLL, IN_COMMAND, Command, LocalCall, Shutdown
from busd.master.commands import LIFECYCLE_CHANNELS, default_commands, timeout_error
from busd.master.hub import ClientChange, Hub, Request, StatusWanted
from busd.master.osthread import name_os_thread
from busd.master.relay import Relay
from busd.master.reloads import Reloads
from busd.master.replay import DEFAULT_BYTES, DEFAULT_COUNT, ReplayWindow
from busd.master.report import Reporting
from busd.master.setup import curve_server, refuse_if_running
from busd.master.statistics import MasterStats

DEFAULT_ACK_TIMEOUT = 30.0
#: Clients answer every this many heartbeats (all at once: fewer wake-ups here).
PONG_EVERY = 5
#: Seconds the sockets linger for what is still queued when they close.
CLOSE_FLUSH = 0.5


class MasterBus(Reloads, Reporting, Bus):
    """A Bus whose state changes and publishes are relayed to every client.

    ``name`` and ``runtime_dir`` choose the default ipc endpoints; each
    ``bind`` endpoint adds a control (ROUTER) endpoint, with the PUB endpoint
    beside it (``<path>.pub`` for ipc, the next port for tcp).  Channels in
    ``no_relay`` (default: 'log' and 'main') stay local.  Clients answer
    heartbeats every ``pong_interval`` seconds (default: 5 heartbeats) and
    are declared lost after ``liveness`` intervals without a word.  Unless
    ``check_running`` is false (the caller has asked already), it refuses a
    runtime dir where another master answers.  ``pub_hwm`` caps the messages
    queued for each subscriber; what a slower one misses it repairs from the
    replay window of the last ``replay_bytes`` bytes / ``replay_count``
    messages, and only past that loses messages (counted, and resynchronised).
    An exit keeps serving repairs until every live client has everything,
    for at most ``drain_timeout`` seconds (default ``shutdown_timeout``; the
    busd command passes its ``--graceful-timeout``).  A ``tcp://`` ``bind``
    endpoint needs CURVE keys (``curve_secret``, ``authorized_keys``) or
    ``insecure=True``, loopback included (any local user may connect
    there): else :class:`~busd.core.endpoints.EndpointError`, before anything is made.
    """

    def __init__(
        self,
        name: str | None = None,
        runtime_dir: str | Path | None = None,
        bind: Iterable[str] | None = None,
        *,
        heartbeat: float = HEARTBEAT_INTERVAL,
        liveness: int = HEARTBEAT_LIVENESS,
        no_relay: Iterable[str] = ("log", "main"),
        insecure: bool = False,
        ack_timeout: float = DEFAULT_ACK_TIMEOUT,
        pub_hwm: int = ep.PUB_HWM,
        shutdown_timeout: float = 60.0,
        pong_interval: float | None = None,
        check_running: bool = True,
        curve_secret: str | Path | None = None,
        authorized_keys: str | Path | None = None,
        readonly_keys: str | Path | None = None,
        replay_bytes: int = DEFAULT_BYTES,
        replay_count: int = DEFAULT_COUNT,
        drain_timeout: float | None = None,
    ) -> None:
        super().__init__()
        self.name = name or os.environ.get("BUSD_NAME") or ep.DEFAULT_NAME
        curve = curve_server(curve_secret, authorized_keys, readonly_keys)
        extras = list(bind or ())
        for extra in extras:  # before anything is made: a refusal leaves nothing behind
            ep.check_bind(extra, insecure, curve=curve is not None)
        directory = Path(runtime_dir) if runtime_dir else ep.runtime_dir(self.name)
        self.runtime_dir = ep.ensure_runtime_dir(directory)
        endpoints = [ep.default_endpoints(self.runtime_dir)]
        if check_running:
            refuse_if_running(endpoints[0].ctl)
        endpoints += [pub_beside(extra) for extra in extras]
        self.epoch = int.from_bytes(os.urandom(6), "big")
        self.pid = os.getpid()
        self.started_at = time.time()
        self.ack_timeout = ack_timeout
        self.shutdown_timeout = shutdown_timeout
        #: How long an exit serves repairs to clients behind (default shutdown_timeout).
        self.drain_timeout = shutdown_timeout if drain_timeout is None else drain_timeout
        self.no_relay = frozenset(no_relay) | LIFECYCLE_CHANNELS
        self._state_seqs: list[tuple[int, set[int]]] = []
        self._commands: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self._closed = threading.Event()
        #: Set once the exit is over: every client served (or given up on), sockets closed.
        self._finished = threading.Event()
        self._status: dict[str, Any] = {}
        #: Client events whose relay or hooks failed (logged; the command thread goes on).
        self.failed_events = 0
        self._setup_extensions(default_commands(self))
        self.hub = Hub(
            self,
            endpoints,
            heartbeat,
            liveness,
            pub_hwm=pub_hwm,
            pong_interval=pong_interval or heartbeat * PONG_EVERY,
            window=ReplayWindow(replay_bytes, replay_count),
            curve=curve,
        )
        self._relay_out = Relay(self.hub, self.epoch)
        self._relay_publish = self._relay_out.publish  # every publish's path
        self._command_thread = threading.Thread(
            target=self._run_commands, name="busd-commands", daemon=True
        )
        self._refresh_board()
        self.hub.start()
        self._command_thread.start()

    # -- relaying -------------------------------------------------------

    def _send_sequenced(self, kind: Kind, *items: Any, state: str | None = None) -> int:
        return self._relay_out.send(kind, *items, state=state)

    def snapshot(self) -> tuple[int, str]:
        """The last sequence number and the state it leaves clients in."""
        return self._relay_out.snapshot()

    def _state_changed(self, old: State, new: State) -> None:
        seq = self._send_sequenced(Kind.STATE, new.name, state=new.name)
        # Who must ack is decided now: a client that acks and leaves while the
        # master's own listeners still run is in the report, failures and all.
        self._state_seqs.append((seq, self.hub.door.client_table().expected(seq)))
        del self._state_seqs[:-64]
        if self._status:  # the state is on the board at once, hooks or not
            self._publish_board({**self._status, "state": new.name})

    def _relay(self, channel: str, args: Iterable[Any], kwargs: dict[str, Any], ack: Any) -> int:
        return self._relay_out.publish(channel, args, kwargs, ack)

    def publish(self, channel: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Relay to every client (unless the channel is local), then run local listeners."""
        if channel not in self.no_relay and not self._closed.is_set():  # relay first
            try:
                self._relay_publish(channel, args, kwargs, False)
            except ProtocolError as exc:
                self.log(f"not relaying {channel!r}: {exc}", level=30)
        if channel not in self.listeners:  # no local listener: nothing more to do
            return []
        return super().publish(channel, *args, **kwargs)

    def publish_many(self, channel: str, calls: Iterable[Sequence[Any]]) -> int:
        """Publish ``channel`` once per item of ``calls`` (each the positional arguments).

        For producers of many small messages: the messages are numbered in
        one go and handed to the I/O thread as one batch, so they reach every
        client with consecutive sequence numbers, in the order given, with no
        other message between them, and each client runs its listeners for
        each of them in that order (exactly once, repaired like any other
        message if some are missed).  The master's own listeners run after
        the batch is relayed, once per item, in order.  Nothing is relayed
        if one item cannot be encoded (ProtocolError).  Returns the count.
        """
        items = [tuple(args) for args in calls]
        if not items:
            return 0
        if channel not in self.no_relay and not self._closed.is_set():
            self._relay_out.publish_many(channel, items)
        if self._has_listeners(channel):
            for args in items:
                super().publish(channel, *args)
        return len(items)

    def _has_listeners(self, channel: str) -> bool:
        return bool(self.listeners.get(channel))

    def event(self, name: str, data: dict[str, Any]) -> int:
        """Send an EVENT (worker spawned, client lost, ...) to every client."""
        return self._send_sequenced(Kind.EVENT, name, data)

    def post(self, message: Request | ClientChange | StatusWanted) -> None:
        """Called by the hub: queue a message for the command thread."""
        self._commands.put(message)

    # -- the command thread ----------------------------------------------

    def submit(self, cmd: str, **args: Any) -> Future[Any]:
        """Queue command ``cmd`` (as busctl would send it) without waiting for it.

        This is how signals reach the master: same queue, same order.
        """
        call = LocalCall(self._execute, ({"cmd": cmd, **args},))
        self._commands.put(call)
        return call.future

    def run_command(self, cmd: str, **args: Any) -> Any:
        """Run command ``cmd`` (as busctl would send it) on the command thread; its result.

        From the command thread (a queued call, a listener) it runs at once.
        """
        return self._on_commands(self._execute, {"cmd": cmd, **args})

    def call_soon(self, func: Callable[[], object]) -> None:
        """Queue ``func`` for the command thread, after what is queued; do not wait."""
        self._commands.put(LocalCall(func, ()))

    def _on_commands(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run ``func`` on the command thread and return its result.

        A listener (inside a command already) calling a lifecycle method runs
        it inline, as wspbus does: queueing it and waiting would wait for
        itself.  ``IN_COMMAND``, true in the command thread's context, says so.
        """
        if IN_COMMAND.get() or self._closed.is_set():
            return func(*args)
        call = LocalCall(func, args)
        self._commands.put(call)
        while True:  # a command may take long (exit listeners): bounded looks, not one wait
            try:
                return call.future.result(timeout=COMMAND_POLL)
            except FutureTimeout:
                if not self._command_thread.is_alive():
                    raise BusError("the command thread has ended: the call was not run") from None

    def _run_commands(self) -> None:
        name_os_thread("busd-commands")
        IN_COMMAND.set(True)  # this thread's context: everything it runs is inside a command
        while True:
            # No timeout: every way out (Shutdown, the exit) is an item on this queue, so
            # a bounded wait would only wake an idle master for nothing.
            item = self._commands.get()
            if type(item) is Shutdown:
                return
            self._run_one(item)
            if self._state is State.EXITING:
                self._finish_exit()
                return
            if type(item) is StatusWanted or self._commands.empty() or self._board_is_old():
                self._refresh_board()

    def _run_one(self, item: Command) -> None:
        if type(item) is LocalCall:
            try:
                item.future.set_result(item.func(*item.args))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                item.future.set_exception(exc)
        elif type(item) is Request:
            self._answer(item)
        elif type(item) is ClientChange:
            self._client_changed(item)

    def _answer(self, request: Request) -> None:
        try:
            result = self._execute(request.body)
        except Exception as exc:  # noqa: BLE001 - a request handler is a boundary
            if not isinstance(exc, BusError):
                self.log(f"command {request.body.get('cmd')!r} failed", level=40, traceback=True)
            self.hub.reply(request.identity, request.req_id, False, error_to_wire(exc))
        else:
            self.hub.reply(request.identity, request.req_id, True, result)

    def _finish_exit(self) -> None:
        """Answer what is still queued, then close the sockets."""
        while True:
            try:
                item = self._commands.get_nowait()
            except queue.Empty:
                break
            if type(item) is LocalCall:
                self._run_one(item)
            elif type(item) is Request:
                exc = wire_error(ErrorCode.ILLEGAL_TRANSITION, "the master is exiting")
                self.hub.reply(item.identity, item.req_id, False, error_to_wire(exc))
        self._closed.set()
        try:
            self._close_hub()
        finally:
            self._finished.set()

    def _close_hub(self) -> None:
        """Send the closing EVENT after everything else, then let the hub drain and close.

        The hub keeps answering replays until every live client has the
        closing message (so everything before it, EXITING included), or
        ``drain_timeout`` passed; it names any client it closed without.
        """
        self._relay_out.close(self.drain_timeout, CLOSE_FLUSH)
        self.hub.wait_closed(CLOSE_FLUSH + self.drain_timeout + 2.0)

    # -- lifecycle, always on the command thread -------------------------

    def start(self, wait: bool = False, timeout: float | None = None) -> AckReport | None:  # type: ignore[override]
        """Start; with ``wait``, until every client ran its start listeners."""
        return self._on_commands(self._start, wait, timeout)  # type: ignore[no-any-return]

    def stop(self, wait: bool = False, timeout: float | None = None) -> AckReport | None:  # type: ignore[override]
        """Stop; with ``wait``, until every client ran its stop listeners."""
        return self._on_commands(self._stop, wait, timeout)  # type: ignore[no-any-return]

    def exit(self, wait: bool = False, timeout: float | None = None) -> AckReport | None:  # type: ignore[override]
        """Exit; with ``wait``, until every client ran its stop and exit listeners.

        Returns once every live client has received everything published
        before, EXITING included, and the sockets are closed (at most
        ``drain_timeout`` after the exit listeners ran), except when
        called by a listener: the exit then finishes after it returns.
        """
        try:
            return self._on_commands(self._exit, wait, timeout)  # type: ignore[no-any-return]
        finally:  # failed exit listeners too: EXITING was sent, the exit goes on
            if self._state is State.EXITING and not IN_COMMAND.get():
                self._finished.wait(CLOSE_FLUSH + self.drain_timeout + 3.0)

    def graceful(self, wait: bool = False, timeout: float | None = None) -> AckReport | None:  # type: ignore[override]
        """Relay graceful and run it here; with ``wait``, until every client acked.

        Returns the clients' acks (results or errors) when waiting; raises
        :class:`busd.WaitTimeout` naming the silent clients past ``timeout``.
        """
        return self._on_commands(self._graceful, wait, timeout)  # type: ignore[no-any-return]

    def broadcast(self, channel: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Publish here and in every client (the same as :meth:`publish` on a master)."""
        return self.publish(channel, *args, **kwargs)

    def broadcast_and_wait(
        self,
        channel: str,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> AckReport:
        """Publish everywhere and wait until every client ran its listeners."""
        kwargs = kwargs or {}
        seq = self._relay(channel, args, kwargs, ack=True)
        expected = self.hub.door.client_table().expected(seq)
        failures = self._local(channel, *args, **kwargs)
        report = self._wait([seq], expected, timeout)
        if failures:
            raise failures
        return report

    def _start(self, wait: bool = False, timeout: float | None = None) -> AckReport | None:
        # The board as it is now (the pools' slots, WAITING): the STARTED it is about to
        # carry must not come with an older list of workers (an empty one reads as "all").
        self._refresh_board()
        return self._lifecycle(Bus._do_start, wait, timeout)

    def _stop(self, wait: bool = False, timeout: float | None = None) -> AckReport | None:
        self._before_stopping()
        return self._lifecycle(Bus._do_stop, wait, timeout)

    def _exit(self, wait: bool = False, timeout: float | None = None) -> AckReport | None:
        if self._state is State.EXITING:
            return None
        self._before_stopping()
        return self._lifecycle(Bus._do_exit, wait, timeout)

    def _lifecycle(
        self, method: Callable[[Bus], None], wait: bool, timeout: float | None
    ) -> AckReport | None:
        last = self._state_seqs[-1][0] if self._state_seqs else 0
        failure: ChannelFailures | None = None
        try:
            method(self)
        except ChannelFailures as exc:
            failure = exc
        relayed = [(seq, who) for seq, who in self._state_seqs if seq > last]
        report = None
        if wait and relayed:
            report = self._wait([seq for seq, _ in relayed], relayed[0][1], timeout)
        if failure is not None:
            raise failure
        return report

    def _local(self, channel: str, *args: Any, **kwargs: Any) -> ChannelFailures | None:
        try:
            Bus.publish(self, channel, *args, **kwargs)
        except ChannelFailures as exc:
            return exc
        return None

    def _wait(self, seqs: list[int], expected: set[int], timeout: float | None) -> AckReport:
        limit = self.ack_timeout if timeout is None else timeout
        return wait_acks(
            self.hub.door, seqs, expected, limit, timeout_error(limit), meanwhile=self._meanwhile
        )

    # -- information ----------------------------------------------------

    def statistics(self) -> MasterStats:
        """The bus's, the hub's and the relay's counters."""
        bus = super().statistics()
        seq, _ = self.snapshot()
        return MasterStats(
            state=bus["state"],
            listeners=bus["listeners"],
            epoch=self.epoch,
            seq=seq,
            hub=self.hub.statistics(),
            failed_events=self.failed_events,
        )

    # -- shutting down ----------------------------------------------------

    def block(self, interval: float = 0.1, timeout: float | None = None) -> None:
        """Wait for EXITING, then for the exit to finish (its listeners, replies, sockets)."""
        try:
            super().block(interval, timeout)
        finally:
            self.close()

    def close(self, timeout: float | None = None) -> None:
        """Exit if still running, then close the sockets and end the threads.

        Waits at most ``timeout`` (default ``shutdown_timeout``) for the exit
        listeners still running on the command thread.
        """
        if self._state is not State.EXITING and not self._closed.is_set():
            try:
                self.exit()
            except ChannelFailures:
                self.log("errors while exiting on close", level=40, traceback=True)
        self._commands.put(Shutdown())
        if not IN_COMMAND.get():
            self._command_thread.join(self.shutdown_timeout if timeout is None else timeout)
            if self._closed.is_set():  # the exit is over; the hub may still be serving
                self._finished.wait(CLOSE_FLUSH + self.drain_timeout + 3.0)
        if not self._closed.is_set():
            self._closed.set()
            self.hub.close()

    def _do_execv(self) -> None:
        self.close()
        super()._do_execv()

    def _clean_exit(self) -> None:
        self.close()

    def __enter__(self) -> MasterBus:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


__all__ = ["MasterBus", "curve_server", "pub_beside", "refuse_if_running"]
