"""A client's I/O thread: its SUB and DEALER sockets, joining, repairs and liveness.

::

    master XPUB --> SUB  --+                          +--Handover: deliver([view...] | Synced
                           +--> [ busd-link thread ] -+    | Gone), one put per turn of the
    master ROUTER <-> DEALER     ^ Outbox[LinkMessage]     loop, last before its poll)-->
    master's pidfd (same host) --+  Send, Bye, Close       ClientBus inbox (unbounded,
                                    (any thread)           counted) --> [busd-dispatch]
                                                           runs listeners, sends acks

A BATCH is read up to its header (a ``BatchMsg``): the dispatcher decodes
its messages as it runs them.

This module is the sockets, the timers and the joining; what is read of the
published stream and of the replay window goes through a
:class:`busd.client.link.feed.Feed` to the stream, and comes back as actions
the feed performs; the requests waiting for a reply are a
:class:`busd.client.link.pending.Pending`; what the link takes and hands
over is in :mod:`busd.client.link.messages`.

Joining is the Clone pattern: subscribe (to everything, plus a join topic
the master's XPUB reports), say HELLO, get a snapshot ``(epoch, seq,
state)``, then deliver only messages newer than it.  A sequence gap, or a
heartbeat announcing a newer seq, is repaired: the link asks the master's
replay window for the missing range over DEALER and delivers it, in order,
exactly once, before anything newer (held meanwhile).  Only what the window
no longer holds is lost; then the loss is counted exactly and the state is
checked.  A new epoch makes the link join again; it never guesses.  All of
that sequencing is a socket-free state machine, :class:`busd.client.link.stream.Stream`:
this thread feeds it what it reads and performs the actions it returns.

The link thread never stops reading: the dispatcher's queue has no bound
(its length is reported), so a backlog is never mistaken for a silent
master.  Any frame read is a sign of life; the master is lost only after
``master_timeout`` seconds without one, or at once when its process (watched
through a pidfd when it shares this pid namespace) ends.  Heartbeats are
answered here, never by the dispatcher, so a busy listener does not make
this client look dead.  After BYE nothing makes the link join again.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import zmq

from busd.client.link.complaints import Complaints
from busd.client.link.feed import Feed
from busd.client.link.liveness import (
    DEFAULT_MASTER_TIMEOUT,
    FOLLOW_HEARTBEAT,
    PONG_SLACK,
    MasterWatch,
)
from busd.client.link.messages import (
    HELLO_ID,
    REPLAY_ID,
    SNAPSHOT_ID,
    Bye,
    Close,
    DeliverTo,
    Gone,
    Handover,
    LinkMessage,
    LinkStats,
    Send,
)
from busd.client.link.pending import Pending
from busd.client.link.stream import REPAIR_RETRY, Stream
from busd.client.link.streamtypes import StreamState
from busd.core.auth import ClientKeys, HandshakeWatch, secure_client, watch_handshakes
from busd.core.control import reply_result, request_frame
from busd.core.endpoints import CTL_HWM, PUB_HWM, Endpoints, Outbox, configure
from busd.core.errors import Busy, KeyRefused, MasterLost, ProtocolError
from busd.core.wire import (
    HEARTBEAT_INTERVAL,
    HEARTBEAT_LIVENESS,
    Kind,
    Message,
    decode,
    encode,
    error_from_wire,
    join_topic,
    pid_namespace,
)

log = logging.getLogger(__name__)

#: A kind of complaint (a bad reply, a bad message...) is logged once per this many seconds.
COMPLAINT_INTERVAL = 10.0
#: Most frames read from the SUB socket before the thread looks at its timers.
DRAIN_LIMIT = 1000


__all__ = ["Link"]


class Link:
    """The sockets of one client and the thread that owns them."""

    def __init__(
        self,
        endpoints: Endpoints,
        deliver: DeliverTo,
        hello: dict[str, Any],
        wait_for_new_master: bool = False,
        local_state: Callable[[], str] = lambda: "",
        master_timeout: float = DEFAULT_MASTER_TIMEOUT,
        curve: ClientKeys | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.local_state = local_state
        self.deliver = deliver
        self.wait_for_new_master = wait_for_new_master
        self._follow_heartbeat = master_timeout == FOLLOW_HEARTBEAT
        self.master_timeout = master_timeout or HEARTBEAT_INTERVAL * HEARTBEAT_LIVENESS
        self.token = os.urandom(12)
        self.hello = {
            "token": self.token,
            "pid": os.getpid(),
            "host": os.uname().nodename,
            "pidns": pid_namespace(),
            **hello,
        }
        self.outbox: Outbox[LinkMessage] = Outbox()
        self.joined = threading.Event()
        #: Set when joined, or when the master refused this client's key.
        self.settled = threading.Event()
        #: Why the master refused the handshake (None while it has not).
        self.refusal: str | None = None
        #: The error of a refused first HELLO (``busy``: the master is full), if it was.
        self.refused: Busy | None = None
        self.curve = curve
        self._watch: HandshakeWatch | None = None
        self.lost = threading.Event()
        self._complaints = Complaints(log, COMPLAINT_INTERVAL)
        self._ids = itertools.count(REPLAY_ID + 1)
        #: The sequencing: epoch, seq, repairs, held and buffered messages, losses.
        self.stream = Stream(lambda: next(self._ids), wait_for_new_master, log)
        self.client_id = 0
        self.heartbeat = HEARTBEAT_INTERVAL
        self.pong_interval = HEARTBEAT_INTERVAL
        self.liveness = HEARTBEAT_LIVENESS
        self.stats: collections.Counter[str] = collections.Counter()
        #: Feeds the stream what the sockets read; performs what it asks (this thread).
        #: What the stream delivered in this turn of the loop, handed over as it ends.
        self._handover = Handover(deliver)
        self.feed = Feed(self.stream, self, self._handover.add, self.stats, self._complaints, log)
        #: The requests waiting for a reply (any thread adds; this thread settles).
        self.pending = Pending()
        self._hello_sent = 0.0
        #: Set by the thread that queues a BYE (the link thread tells the stream as it sends it).
        self._bye_queued = False
        self._last_heard = time.monotonic()
        self._last_pong = time.monotonic()
        self._pong_slot = -1
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._sub = self._ctx.socket(zmq.SUB)
        self._ctl = self._ctx.socket(zmq.DEALER)
        configure(self._sub, PUB_HWM)
        configure(self._ctl, CTL_HWM)
        self._poller = zmq.Poller()
        self._master = MasterWatch(self._poller, self.hello["pidns"])
        self._thread = threading.Thread(target=self._run, name="busd-link", daemon=True)
        self._closed = threading.Event()

    # -- any thread ---------------------------------------------------------

    @property
    def epoch(self) -> int:
        """The master incarnation followed (0 before the first welcome)."""
        return self.stream.epoch

    @property
    def seq(self) -> int:
        """The last seq delivered (or counted lost) in order."""
        return self.stream.seq

    @property
    def closed_by_master(self) -> bool:
        """True once the master's closing message arrived (in order): its end is no loss."""
        return self.stream.closed

    def start(self) -> None:
        """Connect, subscribe, say HELLO and start the thread."""
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        self._sub.setsockopt(zmq.SUBSCRIBE, join_topic(self.token))
        secure_client(self._sub, self.curve, self.endpoints.pub)
        secure_client(self._ctl, self.curve, self.endpoints.ctl)
        self._watch = watch_handshakes(self._ctl, self.endpoints.ctl, self.curve)
        self._sub.connect(self.endpoints.pub)
        self._ctl.connect(self.endpoints.ctl)
        self.feed.perform(self.stream.join())
        self._thread.start()

    def request(self, cmd: str, **args: Any) -> Future[Any]:
        """Send a command; the future gets its result or error."""
        future: Future[Any] = Future()
        if self._closed.is_set():
            future.set_exception(MasterLost("this client's link to its master is closed"))
            return future
        req_id = next(self._ids)
        frame = request_frame(req_id, cmd, args)
        future = self.pending.add(req_id)
        self.outbox.put(Send(frame))
        return future

    def forget(self, future: Future[Any]) -> None:
        """Stop waiting for a request's reply (its caller timed out)."""
        self.pending.forget(future)

    def send(self, kind: Kind, body: dict[str, Any]) -> None:
        """Send an ACK, PONG or BYE (no reply expected)."""
        frame = encode(kind, 0, body)
        if kind is Kind.BYE:
            self._bye_queued = True
        self.outbox.put(Bye(frame) if kind is Kind.BYE else Send(frame))

    def send_frame(self, frame: bytes) -> None:
        """Send a frame already encoded."""
        self.outbox.put(Send(frame))

    def close(self, linger: float = 0.5) -> None:
        """Flush what is queued (at most ``linger`` s), close, end the thread.

        A joined client that has not said BYE says it now (reason ``closed``):
        a master that exits waits for every client it knows of, and a closed
        one would otherwise keep it waiting until it counts it lost.
        """
        if self._closed.is_set():
            return
        if self.joined.is_set() and not self._bye_queued and not self.lost.is_set():
            self.send(Kind.BYE, {"reason": "closed"})
        self.outbox.put(Close(linger))
        if self._thread.ident is not None:
            self._thread.join(linger + 2.0)
        if not self._thread.is_alive():
            self._close_sockets(0)

    # -- the link thread -------------------------------------------------------

    def _run(self) -> None:
        poller = self._poller
        for item in (self._sub, self._ctl, self.outbox.fileno):
            poller.register(item, zmq.POLLIN)
        if self._watch is not None:
            poller.register(self._watch.socket, zmq.POLLIN)
        try:
            while not self._closed.is_set():
                timeout = int(self._poll_ms())
                self._handover.flush()
                ready = dict(poller.poll(timeout))
                if self.outbox.fileno in ready and self._send_queued():
                    return
                if self._sub in ready:
                    self._read_sub()
                if self._ctl in ready:
                    self._read_ctl()
                if self._watch is not None and self._watch.socket in ready:
                    self._check_handshake()
                if self._master.fd is not None and self._master.fd in ready:
                    self._master.unwatch()
                    self._master_lost("the master's process ended")
                self._check_master()
                self._keep_alive()
        except Exception:
            log.exception("busd client link failed")
            self._master_lost("the client link failed")
        finally:
            self._handover.flush()
            self.pending.fail_all()

    def _check_handshake(self) -> None:
        assert self._watch is not None
        try:
            self._watch.check()
        except KeyRefused as exc:
            if self.refusal is None:
                log.error("%s", exc)
            self.refusal = str(exc)
            self.settled.set()

    def _poll_ms(self) -> float:
        if self.lost.is_set() or not self.joined.is_set():
            return 1000.0 * self.heartbeat
        deadline = min(
            self._last_heard + self.master_timeout,
            self._last_pong + PONG_SLACK * self.pong_interval,
        )
        repair = self.stream.deadline()
        if repair is not None:
            deadline = min(deadline, repair)
        return max(0.0, deadline - time.monotonic()) * 1000.0 + 1.0

    def pong(self) -> None:
        self._last_pong = time.monotonic()
        self.send_now(
            encode(
                Kind.PONG, 0, {"epoch": self.epoch, "seq": self.seq, "state": self.local_state()}
            )
        )

    def send_now(self, frame: bytes) -> None:
        try:
            self._ctl.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            self.stats["dropped_sends"] += 1

    def _keep_alive(self) -> None:
        # A heartbeat stuck behind a backlog must not make the master think
        # this client is dead: past the slack, answer without waiting for it.
        now = time.monotonic()
        if (
            self.joined.is_set()
            and not self.lost.is_set()
            and not self.stream.left
            and now - self._last_pong > PONG_SLACK * self.pong_interval
        ):
            self.pong()
        if (
            self.stream.state is StreamState.REJOINING
            and self.lost.is_set()
            and now - self._hello_sent > REPAIR_RETRY
        ):
            # A HELLO sent as the link came back may have gone down with it again.
            self.feed.perform(self.stream.hello_overdue())
        self.feed.perform(self.stream.tick(now))

    def pong_due(self) -> bool:
        # Answer the first heartbeat of each wall-clock slot of pong_interval:
        # every client on the host picks the same heartbeat, so the master
        # reads their answers in one wake-up instead of one each.
        slot = int(time.time() / self.pong_interval)
        if slot == self._pong_slot or self.stream.left:
            return False
        self._pong_slot = slot
        return True

    def _send_queued(self) -> bool:
        for item in self.outbox.drain():
            if type(item) is Send:
                self.send_now(item.frame)
            elif type(item) is Bye:
                self.stream.leave()
                self.send_now(item.frame)
            elif type(item) is Close:
                self._close_sockets(int(item.linger * 1000))
                return True
        return False

    def _close_sockets(self, linger_ms: int) -> None:
        self._closed.set()
        if self._watch is not None:
            self._watch.close()
        for sock in (self._sub, self._ctl):
            if not sock.closed:
                sock.close(linger=linger_ms)
        if not self._ctx.closed:
            self._ctx.term()
        self._master.unwatch()
        self.outbox.close()

    def send_hello(self, subscribe: bool) -> None:
        self._hello_sent = time.monotonic()
        self._ctl.send(encode(Kind.HELLO, HELLO_ID, {**self.hello, "subscribe": subscribe}))

    # -- replies -------------------------------------------------------------------

    def _read_ctl(self) -> None:
        while True:
            try:
                frame = self._ctl.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            self._last_heard = time.monotonic()
            try:
                msg = decode(frame, allowed=frozenset({Kind.REPLY}))
            except ProtocolError as exc:
                self.stats["bad_replies"] += 1
                self._complaints.warn("bad_reply", "bad reply from master: %s", exc)
                continue
            self._on_reply(msg)

    def _on_reply(self, msg: Message) -> None:
        req_id = msg.req_id
        if req_id == HELLO_ID:
            self._on_welcome(msg)
        elif req_id == SNAPSHOT_ID:
            self.feed.state_checked(msg)
        elif self.stream.expects(req_id):
            self.feed.replayed(msg, time.monotonic())
        elif req_id == 0:
            err = error_from_wire(msg.items[2])
            if getattr(err, "code", "") != "unknown_client":
                self._complaints.warn("reported", "master reported: %s", err)
            else:
                # The master declared us lost (we were silent too long): join again.
                self.feed.perform(self.stream.unknown_client())
        else:
            self.pending.settle(req_id, msg)

    def _on_welcome(self, msg: Message) -> None:
        try:
            snap = reply_result(msg)
        except Exception as exc:  # noqa: BLE001 - a refusal, said in one line
            log.error("the master refused this client's HELLO: %s", exc)
            first_busy = isinstance(exc, Busy) and not self.joined.is_set()
            self.feed.perform(self.stream.refused_hello(first_busy))
            if isinstance(exc, Busy) and first_busy:
                # A first HELLO refused (the master is full): connect() says so at once.
                self.refused = exc
                self.refusal = str(exc)
                self.settled.set()
                return
            self._master_lost("the master refused HELLO")
            return
        self.stats["welcomes"] += 1
        self.client_id = int(snap["client_id"])
        self.heartbeat = float(snap["heartbeat"])
        self.pong_interval = float(snap.get("pong_interval") or self.heartbeat)
        self.liveness = int(snap["liveness"])
        if self._follow_heartbeat:
            self.master_timeout = self.heartbeat * self.liveness
            self.pong_interval = min(self.pong_interval, self.heartbeat)
        self._last_heard = time.monotonic()
        self.lost.clear()
        actions = self.stream.welcome(
            int(snap["epoch"]),
            int(snap["seq"]),
            str(snap["state"]),
            bool(snap.get("closing")),
            self._last_heard,
        )
        self.feed.perform(actions)
        self.joined.set()
        self.settled.set()
        if not self._master.watch(snap):
            self._master_lost("the master's process is gone")

    # -- the published stream ----------------------------------------------------------

    def _read_sub(self) -> None:
        self._last_heard = now = time.monotonic()
        sub = self._sub
        recv, get, frames = sub.recv, sub.get, []
        # Polled readable: read, then read on while the socket says a frame waits (a
        # zmq.Again raised on every wake-up costs twice that check).
        for _ in range(DRAIN_LIMIT):
            try:
                frames.append(recv(zmq.NOBLOCK))
            except zmq.Again:
                break
            if not get(zmq.EVENTS) & zmq.POLLIN:  # type: ignore[arg-type, operator]
                break
        self.feed.frames(frames, now)

    # -- repairs -------------------------------------------------------------------

    def _check_master(self) -> None:
        if not self.joined.is_set() or self.lost.is_set() or self.closed_by_master:
            return
        silent = time.monotonic() - self._last_heard
        if silent > self.master_timeout:
            self._master_lost(f"no word from the master for {silent:.1f}s")

    def _master_lost(self, reason: str) -> None:
        if self.lost.is_set():
            return
        self.lost.set()
        if self.closed_by_master:  # it said it was closing, and we had everything
            log.info("the master closed (%s)", reason)
        else:
            self.stats["master_lost"] += 1
            log.warning("master lost: %s", reason)
        self.feed.perform(self.stream.master_lost())
        self._handover.add([Gone(reason, self.epoch, self.seq)])

    def statistics(self) -> LinkStats:
        """Counters: received, gaps, repaired, missed, resyncs, new epochs, bad messages."""
        return LinkStats(
            epoch=self.epoch,
            seq=self.seq,
            client_id=self.client_id,
            received=self.stream.received,
            held=self.stream.held,
            **self.stream.stats,
            **self.stats,
        )
