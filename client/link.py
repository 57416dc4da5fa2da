"""A client's I/O thread: its SUB and DEALER sockets, joining and staying in sync.

::

    master XPUB --> SUB  --+                         +--> deliver(item) --> dispatcher
                           +--> [ busd-link thread ] +
    master ROUTER <-> DEALER      ^ Outbox: requests, acks, bye (any thread)

Joining is the Clone pattern: subscribe (to everything, plus a join topic
the master's XPUB reports), say HELLO, get a snapshot ``(epoch, seq,
state)``, then deliver only messages newer than it.  A sequence gap, a
heartbeat announcing a newer seq, or a new epoch makes the link ask for a
fresh snapshot; it never guesses.  Silence longer than the master's
heartbeat x liveness means the master is lost.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import zmq

from busd.auth import ClientKeys, HandshakeWatch, secure_client, watch_handshakes
from busd.control import reply_result, request_frame
from busd.endpoints import CTL_HWM, PUB_HWM, Endpoints, Outbox, configure
from busd.errors import KeyRefused, MasterLost, ProtocolError
from busd.wire import (
    HEARTBEAT_INTERVAL,
    HEARTBEAT_LIVENESS,
    Kind,
    Message,
    decode,
    decode_broadcast,
    encode,
    error_from_wire,
    join_topic,
)

log = logging.getLogger(__name__)

#: A PONG goes out unasked when none went for this many pong intervals.
PONG_SLACK = 1.5
#: Messages held while a snapshot is on its way; past this, the join restarts.
JOIN_BUFFER = 100_000
HELLO_ID = 1
#: The request id of the link's own state checks after a gap.
SNAPSHOT_ID = 2
STATE = int(Kind.STATE)
HEARTBEAT = int(Kind.HEARTBEAT)

#: Hands items to the dispatcher: ``deliver(items, force)``; False if it had no room.
Deliver = Callable[[Sequence[Sequence[Any]], bool], bool]
#: Most frames read from the SUB socket before the thread looks at its timers.
DRAIN_LIMIT = 1000


class Link:
    """The sockets of one client and the thread that owns them."""

    def __init__(self, endpoints: Endpoints, deliver: Deliver, hello: dict[str, Any],
                 wait_for_new_master: bool = False,
                 local_state: Callable[[], str] = lambda: "",
                 curve: ClientKeys | None = None) -> None:
        self.endpoints = endpoints
        self.local_state = local_state
        self.deliver = deliver
        self.wait_for_new_master = wait_for_new_master
        self.token = os.urandom(12)
        self.hello = {"token": self.token, "pid": os.getpid(), "host": os.uname().nodename,
                      **hello}
        self.outbox = Outbox()
        self.joined = threading.Event()
        #: Set when joined, or when the master refused this client's key.
        self.settled = threading.Event()
        #: Why the master refused the handshake (None while it has not).
        self.refusal: str | None = None
        self.curve = curve
        self._watch: HandshakeWatch | None = None
        self.lost = threading.Event()
        self.epoch = 0
        self.seq = 0
        self.client_id = 0
        self.heartbeat = HEARTBEAT_INTERVAL
        self.pong_interval = HEARTBEAT_INTERVAL
        self.liveness = HEARTBEAT_LIVENESS
        self.stats: collections.Counter[str] = collections.Counter()
        self._ids = itertools.count(SNAPSHOT_ID + 1)
        self._check: tuple[int, str] | None = None
        self._check_asked = False
        self._missed_since_check = 0
        self._last_state_seq = 0
        self._futures: dict[int, Future[Any]] = {}
        self._futures_lock = threading.Lock()
        self._buffer: collections.deque[list[Any]] = collections.deque()
        self.received = 0
        self._hello_pending = False
        self._batch: list[Sequence[Any]] = []
        self._batch_first = 0
        self._last_heard = time.monotonic()
        self._last_pong = time.monotonic()
        self._pong_slot = -1
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._sub = self._ctx.socket(zmq.SUB)
        self._ctl = self._ctx.socket(zmq.DEALER)
        configure(self._sub, PUB_HWM)
        configure(self._ctl, CTL_HWM)
        self._thread = threading.Thread(target=self._run, name="busd-link", daemon=True)
        self._closed = threading.Event()

    # -- any thread ---------------------------------------------------------

    def start(self) -> None:
        """Connect, subscribe, say HELLO and start the thread."""
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        self._sub.setsockopt(zmq.SUBSCRIBE, join_topic(self.token))
        secure_client(self._sub, self.curve, self.endpoints.pub)
        secure_client(self._ctl, self.curve, self.endpoints.ctl)
        self._watch = watch_handshakes(self._ctl, self.endpoints.ctl, self.curve)
        self._sub.connect(self.endpoints.pub)
        self._ctl.connect(self.endpoints.ctl)
        self._send_hello(subscribe=True)
        self._thread.start()

    def request(self, cmd: str, **args: Any) -> Future[Any]:
        """Send a command; the future gets its result or error."""
        future: Future[Any] = Future()
        if self._closed.is_set():
            future.set_exception(MasterLost("this client's link to its master is closed"))
            return future
        req_id = next(self._ids)
        frame = request_frame(req_id, cmd, args)
        with self._futures_lock:
            self._futures[req_id] = future
        future.req_id = req_id  # type: ignore[attr-defined]
        self.outbox.put("send", frame)
        return future

    def forget(self, future: Future[Any]) -> None:
        """Stop waiting for a request's reply (its caller timed out)."""
        with self._futures_lock:
            self._futures.pop(getattr(future, "req_id", -1), None)

    def send(self, kind: Kind, body: dict[str, Any]) -> None:
        """Send an ACK, PONG or BYE (no reply expected)."""
        self.send_frame(encode(kind, 0, body))

    def send_frame(self, frame: bytes) -> None:
        """Send a frame already encoded."""
        if threading.current_thread() is self._thread:
            try:
                self._ctl.send(frame, zmq.NOBLOCK)
            except zmq.Again:
                self.stats["dropped_sends"] += 1
        else:
            self.outbox.put("send", frame)

    def close(self, linger: float = 0.5) -> None:
        """Flush what is queued (at most ``linger`` s), close, end the thread."""
        if self._closed.is_set():
            return
        self.outbox.put("close", linger)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(linger + 2.0)
        if not self._thread.is_alive():
            self._close_sockets(0)

    # -- the link thread -------------------------------------------------------

    def _run(self) -> None:
        poller = zmq.Poller()
        for item in (self._sub, self._ctl, self.outbox.fileno):
            poller.register(item, zmq.POLLIN)
        if self._watch is not None:
            poller.register(self._watch.socket, zmq.POLLIN)
        try:
            while not self._closed.is_set():
                ready = dict(poller.poll(int(self._poll_ms())))
                if self.outbox.fileno in ready and self._send_queued():
                    return
                if self._sub in ready:
                    self._read_sub()
                if self._ctl in ready:
                    self._read_ctl()
                if self._watch is not None and self._watch.socket in ready:
                    self._check_handshake()
                self._check_master()
                self._keep_alive()
        except Exception:
            log.exception("busd client link failed")
            self._master_lost("the client link failed")
        finally:
            self._fail_futures()

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
        deadline = min(self._last_heard + self.heartbeat * self.liveness,
                       self._last_pong + PONG_SLACK * self.pong_interval)
        return max(0.0, deadline - time.monotonic()) * 1000.0 + 1.0

    def _pong(self) -> None:
        self._last_pong = time.monotonic()
        self.send(Kind.PONG, {"epoch": self.epoch, "seq": self.seq, "state": self.local_state()})

    def _keep_alive(self) -> None:
        # A heartbeat stuck behind a backlog must not make the master think
        # this client is dead: past the slack, answer without waiting for it.
        if (self.joined.is_set() and not self.lost.is_set()
                and time.monotonic() - self._last_pong > PONG_SLACK * self.pong_interval):
            self._pong()

    def _pong_due(self) -> bool:
        # Answer the first heartbeat of each wall-clock slot of pong_interval:
        # every client on the host picks the same heartbeat, so the master
        # reads their answers in one wake-up instead of one each.
        slot = int(time.time() / self.pong_interval)
        if slot == self._pong_slot:
            return False
        self._pong_slot = slot
        return True

    def _send_queued(self) -> bool:
        for item in self.outbox.drain():
            if item[0] == "send":
                try:
                    self._ctl.send(item[1], zmq.NOBLOCK)
                except zmq.Again:
                    self.stats["dropped_sends"] += 1
            elif item[0] == "close":
                self._close_sockets(int(item[1] * 1000))
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
        self.outbox.close()

    def _fail_futures(self) -> None:
        with self._futures_lock:
            futures, self._futures = self._futures, {}
        for future in futures.values():
            if not future.done():
                future.set_exception(MasterLost("the link to the master closed"))

    def _send_hello(self, subscribe: bool) -> None:
        self._hello_pending = True
        self._ctl.send(encode(Kind.HELLO, HELLO_ID, {**self.hello, "subscribe": subscribe}))

    # -- replies -------------------------------------------------------------------

    def _read_ctl(self) -> None:
        while True:
            try:
                frame = self._ctl.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = decode(frame, allowed=frozenset({Kind.REPLY}))
            except ProtocolError as exc:
                self.stats["bad_replies"] += 1
                log.warning("bad reply from master: %s", exc)
                continue
            self._on_reply(msg)

    def _on_reply(self, msg: Message) -> None:
        req_id = msg.req_id
        if req_id == HELLO_ID:
            self._on_welcome(msg)
            return
        if req_id == SNAPSHOT_ID:
            self._on_state_check(msg)
            return
        if req_id == 0:
            err = error_from_wire(msg.items[2])
            if getattr(err, "code", "") == "unknown_client" and self.joined.is_set():
                log.info("the master does not know this client; joining again")
                self._rejoin(subscribe=False)
            else:
                log.warning("master reported: %s", err)
            return
        with self._futures_lock:
            future = self._futures.pop(req_id, None)
        if future is None or future.done():
            return
        try:
            future.set_result(reply_result(msg))
        except Exception as exc:  # noqa: BLE001 - handed to the requesting thread
            future.set_exception(exc)

    def _on_welcome(self, msg: Message) -> None:
        try:
            snap = reply_result(msg)
        except Exception:
            log.exception("the master refused this client's HELLO")
            self._master_lost("the master refused HELLO")
            return
        self._hello_pending = False
        old_epoch, old_seq = self.epoch, self.seq
        self.epoch, snap_seq = int(snap["epoch"]), int(snap["seq"])
        self.client_id = int(snap["client_id"])
        self.heartbeat = float(snap["heartbeat"])
        self.pong_interval = float(snap.get("pong_interval") or self.heartbeat)
        self.liveness = int(snap["liveness"])
        self._last_heard = time.monotonic()
        self.lost.clear()
        buffered = [m for m in self._buffer if m[2] == self.epoch]
        self._buffer.clear()
        missed = 0
        if old_epoch == self.epoch and self.joined.is_set():
            older = [m for m in buffered if old_seq < m[3] <= snap_seq]
            for m in older:
                self._deliver_msg(m)
            missed = max(0, snap_seq - old_seq - len(older))
            self.stats["missed"] += missed
        self.seq = self._last_state_seq = snap_seq
        self.joined.set()
        self.settled.set()
        self._deliver_control(("snapshot", self.epoch, self.seq, snap["state"], missed))
        for m in buffered:
            self._on_broadcast(m)
        self._flush()

    # -- the published stream ----------------------------------------------------------

    def _read_sub(self) -> None:
        try:
            self._read_sub_frames()
        finally:
            self._flush()
            self._apply_check()

    def _read_sub_frames(self) -> None:
        recv, batch = self._sub.recv, self._batch
        for _ in range(DRAIN_LIMIT):
            try:
                frame = recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._last_heard = time.monotonic()
            try:
                msg = decode_broadcast(frame)
            except ProtocolError as exc:
                self.stats["bad_messages"] += 1
                if self.stats["bad_messages"] <= 5:
                    log.warning("bad message from master: %s", exc)
                continue
            # The common case, inline: the next message of our epoch, in order.
            if (msg[3] == self.seq + 1 and msg[2] == self.epoch and msg[1] != HEARTBEAT
                    and not self._hello_pending and batch is self._batch):
                self.seq = msg[3]
                self.received += 1
                if msg[1] == STATE:
                    self._last_state_seq = msg[3]
                if not batch:
                    self._batch_first = msg[3]
                batch.append(msg)
            else:
                self._on_broadcast(msg)
                batch = self._batch

    # A broadcast is the bare array [version, kind, epoch, seq, ...] (hot path).

    def _on_broadcast(self, msg: list[Any]) -> None:
        if self._hello_pending:
            self._hold(msg)
            return
        epoch, seq = msg[2], msg[3]
        if epoch != self.epoch:
            if self.lost.is_set() and not self.wait_for_new_master:
                return
            log.info("a new master incarnation (epoch %d); joining it", epoch)
            self.stats["new_epochs"] += 1
            self._rejoin(subscribe=True)
            self._hold(msg)
            return
        if msg[1] == HEARTBEAT:
            if self._pong_due():
                self._pong()
            if seq > self.seq:
                self._gap(msg)
            return
        if seq <= self.seq:
            return
        if seq != self.seq + 1:
            self._gap(msg)
            return
        self._deliver_msg(msg)

    def _deliver_msg(self, msg: list[Any]) -> None:
        self.seq = msg[3]
        self.received += 1
        if msg[1] == STATE:
            self._last_state_seq = msg[3]
        if not self._batch:
            self._batch_first = msg[3]
        self._batch.append(msg)

    def _flush(self) -> None:
        """Hand the messages read so far to the dispatcher, in one go."""
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        if not self.deliver(batch, False):
            # The dispatcher is full: drop them, and the next message shows the gap.
            self.stats["overflow"] += len(batch)
            self.seq = self._batch_first - 1

    def _deliver_control(self, item: tuple[Any, ...]) -> None:
        """A snapshot or a loss: after what came before it, and never dropped."""
        self._flush()
        self.deliver([item], True)

    def _gap(self, msg: list[Any]) -> None:
        """Messages were lost: count them, go on from here, and check the state.

        What was lost cannot come back; the state can.  The master is asked
        for ``(seq, state)``; once this client has delivered up to that seq,
        the state is mirrored unless a later STATE message already set it.
        """
        heartbeat = msg[1] == HEARTBEAT
        lost = msg[3] - self.seq - (0 if heartbeat else 1)
        self.stats["gaps"] += 1
        self.stats["missed"] += lost
        self._missed_since_check += lost
        log.warning("sequence gap: %d message(s) lost before seq %d; checking the state",
                    lost, msg[3])
        if heartbeat:
            self.seq = msg[3]
        else:
            self.seq = msg[3] - 1
            self._deliver_msg(msg)
        if not self._check_asked:
            self._check_asked = True
            self.stats["resyncs"] += 1
            self._ctl.send(encode(Kind.REQUEST, SNAPSHOT_ID, {"cmd": "snapshot"}))

    def _on_state_check(self, msg: Message) -> None:
        self._check_asked = False
        try:
            snap = reply_result(msg)
        except Exception:  # logged; the next gap or heartbeat asks again
            log.exception("the master would not give a snapshot")
            return
        self._check = (int(snap["seq"]), str(snap["state"]))
        self._flush()
        self._apply_check()

    def _apply_check(self) -> None:
        """Deliver a pending state check once the stream has reached its seq."""
        if self._check is None or self.seq < self._check[0]:
            return
        seq, state = self._check
        self._check = None
        missed, self._missed_since_check = self._missed_since_check, 0
        # A STATE delivered after the checked seq is newer than the check's state.
        fresh = state if self._last_state_seq <= seq else None
        self._deliver_control(("snapshot", self.epoch, seq, fresh, missed))

    def _hold(self, msg: list[Any]) -> None:
        if msg[1] == HEARTBEAT:
            return
        self._buffer.append(msg)
        if len(self._buffer) > JOIN_BUFFER:
            self._buffer.popleft()

    def _rejoin(self, subscribe: bool) -> None:
        if not self._hello_pending:
            self.stats["resyncs"] += 1
            self._send_hello(subscribe)

    def _check_master(self) -> None:
        if not self.joined.is_set() or self.lost.is_set():
            return
        silent = time.monotonic() - self._last_heard
        if silent > self.heartbeat * self.liveness:
            self._master_lost(f"no word from the master for {silent:.1f}s")

    def _master_lost(self, reason: str) -> None:
        if self.lost.is_set():
            return
        self.lost.set()
        self.stats["master_lost"] += 1
        log.warning("master lost: %s", reason)
        self._hello_pending = False
        self._deliver_control(("lost", reason))

    def statistics(self) -> dict[str, Any]:
        """Counters: received, gaps, missed, resyncs, new epochs, bad messages."""
        return {"epoch": self.epoch, "seq": self.seq, "client_id": self.client_id,
                "received": self.received, **dict(self.stats)}
