"""The master's I/O thread: every socket, pidfd and timer, and no user code.

::

    any thread --Outbox[HubMessage]--> [ busd-hub ] --XPUB-->  clients' SUB
      Publish, Close (relay), SendTo,    |  ^  ^ <--ROUTER--> clients' DEALER, busctl
      NewBoard (command thread),         |  |  +-- pidfds of local clients
      ExcusePid, ForgetPid, AddStateHook |  +-- heartbeat timer
      (pool), WatchAcks, Unwatch (ack    |
      waits), StatsAsked                 +--> owns: Registry, ReplayWindow, Board, backlog
                                         +--owner.post(Request | ClientChange | StatusWanted)
                                         |     --> [busd-commands]
                                         +--HubViews.publish(HubView)  --> any thread reads
                                         +--AckNews --> a waiting thread's inbox
                                         +--Future answers --> the asking thread

The hub owns the XPUB and ROUTER sockets, the replay window, the registry of
clients, the pidfds of local clients and the heartbeat timer.  It decodes
and checks every frame, and hands each decoded message to its answering
side (:class:`busd.master.desk.Desk`: registering clients, recording their
pongs and acks, serving repairs, answering read-only requests, the
board).  Other threads never touch what it owns: they queue typed messages
(:mod:`busd.master.hubmsg`) on its one outbox, which wakes it, and read the
immutable views it publishes (:mod:`busd.master.hubview`).  It never runs a
listener or a hook of anybody's (only the pool's wake-up hooks) and takes no
lock but its own, so heartbeats and status answers flow while a slow
listener or a spawn runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import zmq

from busd.core.auth import Role, is_tcp, peer_role
from busd.core.endpoints import CTL_HWM, PUB_HWM, Endpoints, Outbox, configure, secure_ipc
from busd.core.errors import Busy, ProtocolError
from busd.core.wire import (
    CLIENT_KINDS,
    JOIN_PREFIX,
    ErrorCode,
    Kind,
    batch_frames,
    decode,
    encode,
    error_to_wire,
    older_refusal,
    wire_error,
)
from busd.master.backlog import PUB_BYTES, TRACK_MIN, Published, Replies, pin_mmap_threshold
from busd.master.board import Board
from busd.master.desk import OUTBOX_LIMIT, Desk, Drain, reply_frame
from busd.master.fdbudget import AcceptWatch, FdGate
from busd.master.hosts import HOST_ROLE
from busd.master.hubclock import HubClock
from busd.master.hubdoor import HubDoor
from busd.master.hubmsg import (
    ClientChange,
    Close,
    HubMessage,
    HubOwner,
    NewBoard,
    Publish,
    PublishRun,
    Request,
    SendTo,
    StatusWanted,
)
from busd.master.hubview import HubStats
from busd.master.osthread import name_os_thread
from busd.master.pidwatch import PidWatch
from busd.master.replay import ReplayWindow
from busd.master.rundir import EndpointGuard

if TYPE_CHECKING:
    from busd.security.zap import CurveServer

log = logging.getLogger(__name__)

#: How long a HELLO waits for its client's subscription to reach the XPUB.
JOIN_TIMEOUT = 2.0
#: Most frames read from one socket per wake-up, so no socket starves another.
DRAIN_LIMIT = 1000
#: A client whose process ended is dropped this long after, so that what it
#: sent just before (acks, its BYE) is still read first.
ENDED_GRACE = 0.2
PUBLISH_BATCH = 1000


class Hub(Desk):
    """Owns the master's sockets, pidfds and timers in one thread."""

    def __init__(
        self,
        owner: HubOwner,
        endpoints: list[Endpoints],
        heartbeat: float,
        liveness: int,
        context: zmq.Context[Any] | None = None,
        pong_interval: float | None = None,
        pub_hwm: int = PUB_HWM,
        pub_bytes: int = PUB_BYTES,
        window: ReplayWindow | None = None,
        curve: CurveServer | None = None,
    ) -> None:
        super().__init__(
            owner, heartbeat, liveness, pong_interval or heartbeat, window or ReplayWindow()
        )
        #: Unread bytes: of replies, per peer; of big published frames (busd.master.backlog).
        self.replies = Replies()
        self.published = Published(pub_bytes)
        pin_mmap_threshold()
        self.outbox: Outbox[HubMessage] = Outbox()
        self._own_context = context is None
        self._ctx = context or zmq.Context()
        #: CURVE on the tcp endpoints, with pyzmq's ZAP thread on our context.
        self._curve = curve
        if curve is not None:
            curve.start(self._ctx)
        self._pub = self._ctx.socket(zmq.XPUB)
        self._ctl = self._ctx.socket(zmq.ROUTER)
        configure(self._pub, pub_hwm)
        configure(self._ctl, CTL_HWM)
        #: Clients are admitted while descriptors last; surplus connections are cut.
        self.fdgate = FdGate()
        self._accepts = AcceptWatch([self._pub, self._ctl], self.fdgate)
        self.pub_endpoints: list[str] = []
        self.ctl_endpoints: list[str] = []
        #: Locks our ipc endpoints; rebinds them when their files are removed.
        self.guard = EndpointGuard()
        self._poller = zmq.Poller()
        self._pids = PidWatch(self._poller, self.pid, self.pidns)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="busd-hub", daemon=True)
        #: What other threads call to ask this one something.
        self.door = HubDoor(self.outbox, self.views, self._serving)
        try:
            for ep in endpoints:
                self._bind(ep)
        except BaseException:
            self._close_sockets(0)
            raise
        self._statistics()

    def _bind(self, ep: Endpoints) -> None:
        for sock, endpoint, bound in (
            (self._pub, ep.pub, self.pub_endpoints),
            (self._ctl, ep.ctl, self.ctl_endpoints),
        ):
            self.guard.claim(endpoint)
            curve = self._curve if is_tcp(endpoint) else None
            if curve is not None:
                curve.secure(sock)
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                raise OSError(f"cannot bind {endpoint}: {exc}") from exc
            finally:
                if curve is not None:
                    curve.plain(sock)
            last = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            secure_ipc(last)
            self.guard.watch(sock, last)
            bound.append(last)

    # -- called from other threads ----------------------------------------------

    def start(self) -> None:
        """Start the I/O thread."""
        self._thread.start()

    def send_pub(self, frame: bytes, seq: int, state: str) -> None:
        """Publish frame number ``seq`` (leaving clients in ``state``) to every client."""
        self.outbox.put(Publish((frame,), seq, state))

    def send_run(self, run: PublishRun) -> bool:
        """Queue a run of frames that its relay may still add to (see PublishRun); False
        when the hub has closed (nothing will take it)."""
        return self.outbox.put(run)

    def send_many(self, frames: tuple[bytes, ...], first: int, state: str) -> None:
        """Publish frames numbered from ``first``, in order, with nothing between them."""
        self.outbox.put(Publish(frames, first, state))

    def reply(self, identity: bytes, req_id: int, ok: bool, payload: Any) -> None:
        """Answer request ``req_id`` of the client at ``identity`` (from another thread)."""
        self.outbox.put(SendTo(identity, reply_frame(req_id, ok, payload)))

    def publish_board(self, answers: dict[str, Any], quick: frozenset[str] = frozenset()) -> None:
        """Replace the read-only answers (called by their owner, the command thread)."""
        self.outbox.put(NewBoard(Board.of(answers, quick)))

    def statistics(self) -> HubStats:
        """Counters of requests, acks, repairs and rejected input; the bound endpoints
        (asked of the hub thread: see :meth:`busd.master.hubdoor.HubDoor.statistics`)."""
        return self.door.statistics()

    def close(self, flush: float = 0.5) -> None:
        """Send what is queued, then close the sockets (waits at most ``flush`` + 2 s)."""
        self.outbox.put(Close(flush))
        self.wait_closed(flush + 2.0)

    def close_after(
        self, frame: bytes, seq: int, state: str, drain: float, flush: float = 0.5
    ) -> None:
        """Queue the last message (numbered ``seq``), then a drain and a close (see
        :class:`Close`); returns at once: :meth:`wait_closed` waits for the end."""
        self.outbox.put(Close(flush, Publish((frame,), seq, state), drain))

    def _serving(self) -> bool:
        """True while the hub thread runs and has not begun to close."""
        return self._thread.is_alive() and not self._closing.is_set()

    def wait_closed(self, timeout: float) -> None:
        """Wait at most ``timeout`` for the I/O thread to end, then close what it left."""
        if self._thread.ident is not None:
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self._close_sockets(0)

    # -- the I/O thread ----------------------------------------------------------------

    def _run(self) -> None:
        name_os_thread("busd-hub")
        poller = self._poller
        for item in (self._pub, self._ctl, self.outbox.fileno, *self._accepts.monitors):
            poller.register(item, zmq.POLLIN)
        log.info("%s", self.fdgate.describe())
        clock = HubClock(self.heartbeat, self.pong_interval)
        try:
            while not self._closing.is_set():
                due = [*(w[0] for w in self._board_waiters), *(e[0] for e in self._ended)]
                due += [self._drain.deadline] if self._drain else []
                hold = not self.registry.watching  # acks awaited: read them as they come
                ready = dict(poller.poll(clock.sleep_ms(poller, self._ctl, due, hold)))
                if self.outbox.fileno in ready and self._send_queued():
                    return
                for monitor in self._accepts.monitors:
                    if monitor in ready:
                        self._accepts.read(monitor)
                if self._ctl in ready:
                    self._read_ctl()
                if self._pub in ready:
                    self._read_subscriptions()
                for identity in self._pids.ended(ready):
                    self.stats["processes_ended"] += 1
                    self._ended.append((time.monotonic() + ENDED_GRACE, identity))
                if self._board_waiters:
                    self._answer_board_waiters(time.monotonic())
                if self._ended:
                    self._drop_ended(time.monotonic())
                if clock.beat_due(time.monotonic()):
                    self._beat()
                    clock.beaten(time.monotonic(), gather=self._drain is None)
                if self._drain is not None and self._drained(time.monotonic()):
                    self._close_sockets(int(self._drain.flush * 1000), ())
                    return
                self._refresh_view()
        except Exception:
            log.exception("busd hub thread failed")
        finally:
            self._closing.set()

    def _publish(self, frames: Sequence[bytes], first: int, state: str) -> None:
        """Send frames ``first``, ``first + 1``, ...: one alone, several as BATCH frames."""
        if self._drain is not None:  # after the closing message: never sent
            self.stats["after_close"] += len(frames)
            return
        self.window.extend(first, frames)
        self._sent = (first + len(frames) - 1, state)
        for frame in frames if len(frames) == 1 else batch_frames(self.epoch, first, frames):
            if len(frame) < TRACK_MIN:
                self._pub.send(frame, zmq.NOBLOCK)
            else:
                self.published.send(self._pub, frame)

    def _send_queued(self) -> bool:
        """Send what other threads queued; True once the sockets are closed."""
        # Bounded, so that a flood of publishes never keeps requests unread.
        items = self.outbox.drain(OUTBOX_LIMIT)
        for index, item in enumerate(items):
            if type(item) is PublishRun:
                self._publish(*item.take())
            elif type(item) is Publish:
                self._publish(item.frames, item.first, item.state)
            elif type(item) is SendTo:
                self._send_to(item.identity, item.frame)
            elif type(item) is Close:
                if item.final is None or self._drain is not None:
                    self._close_sockets(int(item.flush * 1000), items[index + 1 :])
                    return True
                self._begin_drain(item)
            else:
                self._take(item)
        return False

    # -- closing: every live client gets everything, up to the closing message ------

    def _begin_drain(self, close: Close) -> None:
        assert close.final is not None
        final = close.final
        for seq, frame in enumerate(final.frames, final.first):
            self._pub.send(frame, zmq.NOBLOCK)
            self.window.add(seq, frame)
        last = final.first + len(final.frames) - 1
        self._sent = (last, final.state)
        now = time.monotonic()
        self._drain = Drain(last, now + close.drain, now, close.flush)
        # Announce the final seq at once: a client that missed it asks for a replay.
        self._beat()

    def _drained(self, now: float) -> bool:
        """True once every live client has the closing message, or the time is up."""
        assert self._drain is not None
        behind = self.registry.behind(self._drain.seq)
        if not behind:
            return True
        if now < self._drain.deadline:
            return False
        for info in behind:
            log.warning(
                "closing without %s: after %.1fs it had reported seq %d of %d (%d behind)",
                info.label(),
                now - self._drain.started,
                info.last_seq,
                self._drain.seq,
                self._drain.seq - info.last_seq,
            )
        self.stats["closed_behind"] += len(behind)
        return True

    def _send_to(self, identity: bytes, frame: bytes) -> None:
        self._flush_view()
        if not self.replies.send(self._ctl, identity, frame):
            self._complain(
                "reply_dropped",
                "a client leaves its replies unread (or its queue is full); one was dropped",
            )

    def _answer(self, identity: bytes, req_id: int, ok: bool, payload: Any) -> None:
        if not self._ctl.closed:
            self._send_to(identity, reply_frame(req_id, ok, payload))

    def _close_sockets(self, linger_ms: int, leftovers: Sequence[HubMessage] | None = None) -> None:
        """Close everything; on the hub thread (``leftovers`` given: what its last drain of
        the outbox left), first answer what other threads asked and keep the last stats."""
        self._closing.set()
        if leftovers is not None and not self._ctl.closed:
            for item in (*leftovers, *self.outbox.drain()):
                if type(item) not in (Publish, PublishRun, SendTo, Close):
                    self._take(item)
            self._refresh_view()
            self._statistics()
        self._accepts.close()
        for sock in (self._pub, self._ctl):
            if not sock.closed:
                sock.close(linger=linger_ms)
        if self._curve is not None:
            self._curve.stop()
        if self._own_context and not self._ctx.closed:
            self._ctx.term()
        self.guard.close()
        self._pids.close()
        self.outbox.close()

    def _read_ctl(self) -> None:
        for _ in range(DRAIN_LIMIT):
            if self._ctl.closed:
                return
            try:
                frames, role, peer = self._recv_ctl()
            except zmq.Again:
                return
            identity = frames[0]
            if len(frames) != 2:
                self._reject(
                    identity,
                    0,
                    wire_error(
                        ErrorCode.MALFORMED, f"a request is one frame, got {len(frames) - 1}"
                    ),
                )
                continue
            try:
                msg = decode(frames[1], allowed=CLIENT_KINDS)
            except ProtocolError as exc:
                self._reject(identity, 0, exc, frames[1])
                continue
            try:
                self._dispatch(identity, msg, role, peer, len(frames[1]))
            except (ProtocolError, Busy) as exc:
                self._reject(identity, msg.req_id, exc)
            except Exception as exc:
                log.exception("error handling %s from a client", msg.kind.name)
                self._reject(identity, msg.req_id, exc)

    def _recv_ctl(self) -> tuple[list[bytes], Role, str]:
        """One message from the ROUTER, with its peer's role (ZAP's User-Id) when CURVE is on."""
        if self._curve is None:
            return self._ctl.recv_multipart(zmq.NOBLOCK), Role.FULL, "local"
        parts = self._ctl.recv_multipart(zmq.NOBLOCK, copy=False)
        role, peer = peer_role(parts[-1])
        return [part.bytes for part in parts], role, peer

    def _reject(
        self, identity: bytes, req_id: int, exc: Exception, frame: bytes | None = None
    ) -> None:
        code = getattr(exc, "code", ErrorCode.INTERNAL.value)
        self._complain(str(code), f"rejected a message: {exc}")
        error = error_to_wire(exc)
        older = None
        if frame is not None and code == ErrorCode.BAD_VERSION.value:
            older = older_refusal(frame, error)  # a peer of an older version reads this
        if older is None:
            self._answer(identity, req_id, False, error)
        elif not self._ctl.closed:
            self._send_to(identity, older)

    def _read_subscriptions(self) -> None:
        for _ in range(DRAIN_LIMIT):
            try:
                frame = self._pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if not frame or frame[0] > 1:
                # Not a (un)subscription: only SUB sockets should talk to the XPUB.
                self.stats["bad_subscription"] += 1
                continue
            if not frame[1:].startswith(JOIN_PREFIX):
                continue
            token = frame[1 + len(JOIN_PREFIX) :]
            if frame[0] != 1:
                continue
            pending = self._pending_hello.pop(token, None)
            if pending is not None:
                identity, req_id, _ = pending
                self._welcome(identity, req_id, self.registry.get(identity))
            else:
                self._joined_tokens[token] = None
                while len(self._joined_tokens) > CTL_HWM:
                    self._joined_tokens.popitem(last=False)

    def _beat(self) -> None:
        # The last frame actually sent, not the last sequenced: a heartbeat
        # announcing a seq still in the outbox would send clients to repair.
        seq, state = self._sent
        self.guard.check()
        self.replies.sweep()
        self._pub.send(encode(Kind.HEARTBEAT, self.epoch, seq, state, self.heartbeat), zmq.NOBLOCK)
        now = time.monotonic()
        for token, (identity, req_id, since) in list(self._pending_hello.items()):
            if now - since > JOIN_TIMEOUT:
                # Its subscription never showed: answer anyway; the client's gap
                # repair covers what it may miss.
                del self._pending_hello[token]
                self._welcome(identity, req_id, self.registry.get(identity))
        limit = now - self.pong_interval * self.liveness
        # A joined host answers every heartbeat and counts us lost after heartbeat
        # x liveness: it is counted lost after the same silence here (one number).
        hosts = {HOST_ROLE: now - self.heartbeat * self.liveness}
        for info in self.registry.expired(limit, hosts):
            log.warning("%s lost: silent for %.1fs", info.label(), now - info.last_seen)
            self._client_gone(info.identity, "client_lost", "silent")

    def _statistics(self) -> HubStats:
        """Made on the hub thread after its view is published (and once before it starts)."""
        stats = HubStats(
            counters=dict(self.stats),
            rundir=self.guard.statistics(),
            pub=list(self.pub_endpoints),
            ctl=list(self.ctl_endpoints),
            clients=len(self.views.current().clients.clients),  # flushed by every caller
            curve=self._curve.statistics() if self._curve is not None else None,
            replay=self.window.statistics(),
            unread=self._unread(),
            fds=self.fdgate.statistics(),
        )
        self.views.keep_stats(stats)
        return stats


__all__ = [
    "PUBLISH_BATCH",
    "ClientChange",
    "Close",
    "Hub",
    "HubMessage",
    "HubOwner",
    "Publish",
    "Request",
    "SendTo",
    "StatusWanted",
]
