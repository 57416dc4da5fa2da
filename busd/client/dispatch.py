"""The dispatcher of a ClientBus: it applies what the link delivered, in order.

::

    [busd-link] --Inbox--> [busd-dispatch] --StateMsg--> local transitions (acked)
                                           --PublishMsg--> local listeners (acked if asked)
                                           --EventMsg--> the ``busd.event`` channel
                                           --Synced--> the master's state, mirrored
                                           --Gone, Signalled--> this process leaves
                                           --Outbox (acks, pongs, bye)--> [busd-link]

:class:`DispatchingBus` is the dispatcher's half of a
:class:`busd.client.bus.ClientBus`: the thread, and everything it alone
runs.  Until the bus mirrors, it only observes (the master's state) and
holds; a process that began to leave follows the master no more.  Code that
runs in the dispatcher (listeners included) is known by a context variable
the dispatcher sets for its own work, so a listener that would wait for its
own ack is told so instead of waiting forever.
"""

from __future__ import annotations

import contextvars
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

import msgpack

from busd.client.inbox import Inbox, InboxItem, Signalled, Stop
from busd.client.link.messages import Gone
from busd.client.link.streamtypes import Synced
from busd.client.link.thread import Link
from busd.core.bus import Bus, State
from busd.core.errors import BusError, ChannelFailures
from busd.core.views import BatchMsg, EventMsg, PublishMsg, StateMsg
from busd.core.wire import MAX_MESSAGE_SIZE, METRICS_CHANNEL, VERSION, Kind, describe, encode

log = logging.getLogger(__name__)
_PUBLISH = int(Kind.PUBLISH)

#: Characters of a listener result's repr sent when the result itself cannot be.
ACK_RESULT_LIMIT = 4096
#: Seconds the dispatcher waits on its inbox at a time (it waits again if nothing came).
TAKE_WAIT = 1.0
#: What listeners made of a relayed message: ok, their result, their failures.
Outcome = tuple[bool, Any, list[dict[str, str]]]
#: The bus whose dispatcher runs the current code (set by the dispatcher for its own work).
_DISPATCHING: contextvars.ContextVar[object | None] = contextvars.ContextVar(
    "busd_dispatching", default=None
)


class DispatchingBus(Bus):
    """A Bus that mirrors what its dispatcher thread takes from the inbox."""

    link: Link
    #: This process's pool (``BUSD_POOL``; ClientBus sets it).
    pool: str = ""

    def __init__(self, on_master_lost: str) -> None:
        if on_master_lost not in ("exit", "wait"):
            raise ValueError("on_master_lost is 'exit' or 'wait'")
        super().__init__()
        self.on_master_lost = on_master_lost
        self._inbox = Inbox()
        self._synced = threading.Event()
        #: Set by the dispatcher once it has seen the master's snapshot.
        self._heard = threading.Event()
        self._master_state: State | None = None
        #: The signal that made this process leave (see leave_on_signal), or None.
        self.signalled: int | None = None
        self._left = False
        #: Messages of BATCH frames dropped because they did not decode as announced.
        self.bad_batched = 0
        self._dispatcher = threading.Thread(
            target=self._dispatch, name="busd-dispatch", daemon=True
        )

    def _in_dispatcher(self) -> bool:
        """True in code this bus's dispatcher runs (its listeners included)."""
        return _DISPATCHING.get() is self

    # -- the dispatcher thread --------------------------------------------------

    def _dispatch(self) -> None:
        _DISPATCHING.set(self)  # this thread's own context: its work, listeners included
        items = self._inbox.hold_until_mirrored(self._observe, TAKE_WAIT)
        listeners_of, call = self.relay_listeners, self.call_listeners
        hot = self._runs_listeners()
        while items is not None:
            for item in items:
                if type(item) is PublishMsg and not item.ack and hot and item.channel != "graceful":
                    # The hot path: a relayed message nobody waits for. Its listeners
                    # (cached until the next subscribe) run; failures are logged only.
                    listeners = listeners_of(item.channel)
                    if listeners:
                        try:
                            call(item.channel, listeners, item.args, item.kwargs)
                        except ChannelFailures:
                            pass
                        except Exception:
                            log.exception("error applying %r from the master", item)
                elif type(item) is Stop:
                    return
                else:
                    try:
                        if type(item) is BatchMsg:
                            self._run_batch(item)
                        else:
                            self._apply(item)
                    except Exception:
                        log.exception("error applying %r from the master", item)
                if self._state is State.EXITING:
                    self._finish()
                    return
            items = self._inbox.take(TAKE_WAIT)

    def _run_batch(self, batch: BatchMsg) -> None:
        """The PUBLISH messages of a BATCH, decoded one by one as they run, in order.

        Each is checked as a frame of its own would be; at the first that is
        not the next PUBLISH of the batch, the rest are dropped (counted in
        ``bad_batched`` and logged).  It stops early when a listener made
        the bus exit.
        """
        epoch, seq, last = batch.epoch, batch.seq, batch.last
        unpacker = msgpack.Unpacker(
            raw=False, strict_map_key=False, max_buffer_size=MAX_MESSAGE_SIZE
        )
        unpacker.feed(batch.frame)
        listeners_of, call = self.relay_listeners, self.call_listeners
        hot = self._runs_listeners()
        try:
            unpacker.read_bytes(batch.body)
            for item in unpacker:
                if not (
                    type(item) is list
                    and len(item) == 8
                    and item[1] == _PUBLISH
                    and item[0] == VERSION
                    and item[3] == seq
                    and item[2] == epoch
                    and type(item[4]) is str
                    and type(item[5]) is list
                    and type(item[6]) is dict
                    and (not item[6] or all(type(k) is str for k in item[6]))
                ):
                    break
                channel, ack = item[4], item[7]
                if not ack and hot and channel != "graceful":
                    listeners = listeners_of(channel)
                    if listeners:
                        try:  # noqa: SIM105 - contextlib.suppress costs more on this path
                            call(channel, listeners, item[5], item[6])
                        except ChannelFailures:
                            pass
                else:
                    self._apply_publish(PublishMsg(epoch, seq, channel, item[5], item[6], ack))
                if self._state is State.EXITING or seq == last:
                    return
                seq += 1
        except (ValueError, msgpack.UnpackException):  # not msgpack, or cut short
            pass
        self.bad_batched += last + 1 - seq
        log.warning(
            "dropped messages %d..%d of a BATCH from the master: not the PUBLISH "
            "messages its header announced",
            seq,
            last,
        )

    def _runs_listeners(self) -> bool:
        """True if a relayed message no one waits for just runs its listeners here (a
        subclass that handles them otherwise, a joined host, overrides _apply_publish)."""
        return type(self)._apply_publish is DispatchingBus._apply_publish

    def _observe(self, item: InboxItem) -> None:
        if type(item) is StateMsg:
            self._master_state = State[item.state]
        elif type(item) is Synced:
            if item.state is not None:
                self._master_state = State[item.state]
            self._heard.set()

    def _apply(self, item: InboxItem) -> None:
        if type(item) is PublishMsg:
            self._apply_publish(item)
        elif type(item) is StateMsg:
            name = item.state
            self._master_state = State[name]
            self._ack(item.seq, self._run(lambda: self._mirror_state(name)))
        elif type(item) is EventMsg:
            Bus.publish(self, "busd.event", item.name, item.data)
        elif type(item) is Synced:
            self._observe(item)
            if item.missed:
                self.log(
                    f"missed {item.missed} message(s) from the master; state checked", level=30
                )
            state = item.state
            if state is not None:
                self._run(lambda: self._mirror_state(state))
            self._synced.set()
        elif type(item) is Gone and self.on_master_lost == "exit":
            self.log(f"Master lost ({item.reason}): exiting", level=30)
            self._run(self._exit_here)
        elif type(item) is Signalled:
            self._leave_signalled(item)

    def _leave_signalled(self, item: Signalled) -> None:
        name = signal.Signals(item.signum).name
        self.log(f"{name}: this process leaves the bus; the master and the others carry on")
        if item.master_alive:
            self._say_bye(name)
        else:
            self._left = True
        self._run(self._exit_here)

    def _exit_here(self) -> None:
        """Exit this process's bus: stop listeners only if it started (or is starting)."""
        self._do_exit(stop=self._state is not State.STOPPED)

    def _apply_publish(self, msg: PublishMsg) -> None:
        """A relayed channel message: its listeners run here, and it is acked if asked."""
        channel, args, kwargs, ack = msg.channel, msg.args, msg.kwargs, msg.ack
        if not ack and channel != "graceful":
            # No ack: failures are only logged (by publish).
            try:  # noqa: SIM105 - contextlib.suppress costs more on this path
                Bus.publish(self, channel, *args, **kwargs)
            except ChannelFailures:
                pass
            return
        if type(ack) is dict:  # meant for some pools only: {"ack": bool, "pools": [name...]}
            pools = ack.get("pools")
            if isinstance(pools, list) and self.pool not in pools:
                return  # not this pool's: nothing runs here, nothing is acked
            ack = ack.get("ack") is True
        outcome = self._run(lambda: self._publish_relayed(channel, args, kwargs))
        if ack:
            self._ack(msg.seq, outcome)

    def _run(self, func: Callable[[], Any]) -> Outcome:
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
        A process that is leaving follows the master no more, except to
        EXITING: a start now would revive it in the middle of its own stop
        or exit (its stop runs in another thread).
        """
        target = State[name]
        local = self._state
        if target is State.EXITING:
            self._do_exit(stop=local is not State.STOPPED)
        elif self._left or self._exit_owner is not None:
            return
        elif target is State.STARTED and local is State.STOPPED:
            self._do_start()
        elif target in (State.STOPPING, State.STOPPED) and local in (State.STARTING, State.STARTED):
            self._do_stop()

    def _publish_relayed(self, channel: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if channel == "graceful":
            self._do_graceful()
            return None
        if channel == METRICS_CHANNEL:  # a scrape: this process's registry, in the ack
            from busd.client.metrics import report

            return report(kwargs.get("have"))
        return Bus.publish(self, channel, *args, **kwargs)

    def _state_changed(self, old: State, new: State) -> None:
        if self._left:  # after BYE the master no longer knows us: it would reject this
            return
        # Tell the master at once, so it need not wait for the next heartbeat.
        self.link.send(
            Kind.PONG, {"epoch": self.link.epoch, "seq": self.link.seq, "state": new.name}
        )

    def _ack(self, seq: int, outcome: Outcome) -> None:
        ok, result, errors = outcome
        body = {"epoch": self.link.epoch, "seq": seq, "ok": ok, "result": result, "errors": errors}
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


__all__ = ["ACK_RESULT_LIMIT", "DispatchingBus", "Outcome"]
