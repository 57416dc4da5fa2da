"""A client's I/O thread: its SUB and DEALER sockets, joining, repairs and liveness.

::

    master XPUB --> SUB  --+                          +--deliver([msg...] | Synced | Gone)-->
                           +--> [ busd-link thread ] -+    ClientBus inbox (unbounded,
    master ROUTER <-> DEALER     ^ Outbox[LinkMessage]     counted) --> [busd-dispatch]
    master's pidfd (same host) --+  Send, Bye, Close          runs listeners, sends acks
                                    (any thread)

Joining is the Clone pattern: subscribe (to everything, plus a join topic
the master's XPUB reports), say HELLO, get a snapshot ``(epoch, seq,
state)``, then deliver only messages newer than it.  A sequence gap, or a
heartbeat announcing a newer seq, is repaired: the link asks the master's
replay window for the missing range over DEALER and delivers it, in order,
exactly once, before anything newer (held meanwhile).  Only what the window
no longer holds is lost; then the loss is counted exactly and the state is
checked.  A new epoch makes the link join again; it never guesses.

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
import contextlib
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import zmq

from busd.client.link.complaints import Complaints
from busd.core.auth import ClientKeys, HandshakeWatch, secure_client, watch_handshakes
from busd.core.control import reply_result, request_frame
from busd.core.endpoints import CTL_HWM, PUB_HWM, Endpoints, Outbox, configure
from busd.core.errors import Busy, KeyRefused, MasterLost, ProtocolError
from busd.core.wire import (
    CLOSING_EVENT,
    HEARTBEAT_INTERVAL,
    HEARTBEAT_LIVENESS,
    Kind,
    Message,
    decode,
    decode_broadcast,
    encode,
    error_from_wire,
    join_topic,
    pid_namespace,
)

log = logging.getLogger(__name__)

#: A PONG goes out unasked when none went for this many pong intervals.
PONG_SLACK = 1.5
#: Messages held while a snapshot is on its way; past this, the oldest go.
JOIN_BUFFER = 1_000_000
#: Seconds a client waits for a silent master by default (BUSD_MASTER_TIMEOUT).
DEFAULT_MASTER_TIMEOUT = 30.0
#: A master_timeout of this means: the master's heartbeat x liveness, from its
#: welcome (a pool joined over the network follows its master that closely).
#: Such a client also answers every heartbeat, for the master counts a joined
#: host lost after the same heartbeat x liveness of silence: one number, both sides.
FOLLOW_HEARTBEAT = 0.0
#: A repair request unanswered this long is sent again.
REPAIR_RETRY = 5.0
#: A repair the master answered ``busy`` (an earlier answer still on its way) is asked
#: again after this long.
BUSY_RETRY = 0.05
HELLO_ID = 1
#: The request id of the link's own state checks after a loss.
SNAPSHOT_ID = 2
#: Request ids above this are the link's repairs and the bus's requests.
REPLAY_ID = 3
STATE = int(Kind.STATE)
EVENT = int(Kind.EVENT)
HEARTBEAT = int(Kind.HEARTBEAT)
PUBLISH = int(Kind.PUBLISH)
#: A kind of complaint (a bad reply, a bad message...) is logged once per this many seconds.
COMPLAINT_INTERVAL = 10.0
#: Most frames read from the SUB socket before the thread looks at its timers.
DRAIN_LIMIT = 1000


# -- what other threads send the link -------------------------------------------


@dataclass(frozen=True)
class Send:
    """Send one frame to the master (a request, an ack, a pong)."""

    frame: bytes


@dataclass(frozen=True)
class Bye:
    """Say BYE: from now on the link never pongs or joins again."""

    frame: bytes


@dataclass(frozen=True)
class Close:
    """Flush for at most ``linger`` seconds, close the sockets, end the thread."""

    linger: float


LinkMessage = Send | Bye | Close


# -- what the link hands the dispatcher, besides messages (bare lists) ---------------


@dataclass(frozen=True)
class Synced:
    """The state to mirror (None: keep it) after a join or a loss of ``missed`` messages."""

    epoch: int
    seq: int
    state: str | None
    missed: int


@dataclass(frozen=True)
class Gone:
    """The master is lost, for ``reason``; everything up to ``seq`` of ``epoch`` came first."""

    reason: str
    epoch: int = 0
    seq: int = 0


@dataclass
class _Repair:
    """The range still to come from the replay window, and when it was asked for."""

    next: int
    last: int
    asked: float = 0.0
    #: The request id of the last ask: a reply to an older ask (one asked
    #: again after REPAIR_RETRY, say) is stale and ignored.
    req_id: int = 0


#: Hands items to the dispatcher, in order; never refuses.
Deliver = Callable[[Sequence[Any]], None]


def master_timeout_from_env(default: float = DEFAULT_MASTER_TIMEOUT) -> float:
    """``BUSD_MASTER_TIMEOUT`` (seconds, > 0), else ``default``; ValueError if malformed."""
    text = os.environ.get("BUSD_MASTER_TIMEOUT", "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"BUSD_MASTER_TIMEOUT must be a number of seconds > 0, not {text!r}")
    return value


class Link:
    """The sockets of one client and the thread that owns them."""

    def __init__(self, endpoints: Endpoints, deliver: Deliver, hello: dict[str, Any],
                 wait_for_new_master: bool = False,
                 local_state: Callable[[], str] = lambda: "",
                 master_timeout: float = DEFAULT_MASTER_TIMEOUT,
                 curve: ClientKeys | None = None) -> None:
        self.endpoints = endpoints
        self.local_state = local_state
        self.deliver = deliver
        self.wait_for_new_master = wait_for_new_master
        self._follow_heartbeat = master_timeout == FOLLOW_HEARTBEAT
        self.master_timeout = master_timeout or HEARTBEAT_INTERVAL * HEARTBEAT_LIVENESS
        self.token = os.urandom(12)
        self.hello = {"token": self.token, "pid": os.getpid(), "host": os.uname().nodename,
                      "pidns": pid_namespace(), **hello}
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
        #: True once the master's closing message arrived (in order): its end is no loss.
        self.closed_by_master = False
        self._complaints = Complaints(log, COMPLAINT_INTERVAL)
        self.epoch = 0
        self.seq = 0
        self.client_id = 0
        self.heartbeat = HEARTBEAT_INTERVAL
        self.pong_interval = HEARTBEAT_INTERVAL
        self.liveness = HEARTBEAT_LIVENESS
        self.stats: collections.Counter[str] = collections.Counter()
        self.received = 0
        self._ids = itertools.count(REPLAY_ID + 1)
        self._check: tuple[int, str] | None = None
        self._check_asked = False
        self._missed_since_check = 0
        self._last_state_seq = 0
        self._futures: dict[int, Future[Any]] = {}
        self._futures_lock = threading.Lock()
        self._buffer: collections.deque[list[Any]] = collections.deque()
        self._hello_pending = False
        self._hello_sent = 0.0
        #: The master refused our HELLO: hearing it again is no reason to join again.
        self._refused = False
        self._left = False
        #: Set by the thread that queues a BYE (the link thread sets _left when it sends it).
        self._bye_queued = False
        # A repair in flight: the range [next, last] still to come, when asked.
        self._repair: _Repair | None = None
        self._held: collections.deque[list[Any]] = collections.deque()
        self._batch: list[Any] = []
        self._last_heard = time.monotonic()
        self._last_pong = time.monotonic()
        self._pong_slot = -1
        self._master_fd: int | None = None
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._sub = self._ctx.socket(zmq.SUB)
        self._ctl = self._ctx.socket(zmq.DEALER)
        configure(self._sub, PUB_HWM)
        configure(self._ctl, CTL_HWM)
        self._poller = zmq.Poller()
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
        self.outbox.put(Send(frame))
        return future

    def forget(self, future: Future[Any]) -> None:
        """Stop waiting for a request's reply (its caller timed out)."""
        with self._futures_lock:
            self._futures.pop(getattr(future, "req_id", -1), None)

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
                ready = dict(poller.poll(int(self._poll_ms())))
                if self.outbox.fileno in ready and self._send_queued():
                    return
                if self._sub in ready:
                    self._read_sub()
                if self._ctl in ready:
                    self._read_ctl()
                if self._watch is not None and self._watch.socket in ready:
                    self._check_handshake()
                if self._master_fd is not None and self._master_fd in ready:
                    self._unwatch_master()
                    self._master_lost("the master's process ended")
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
        deadline = min(self._last_heard + self.master_timeout,
                       self._last_pong + PONG_SLACK * self.pong_interval)
        if self._repair is not None:
            deadline = min(deadline, self._repair.asked + REPAIR_RETRY)
        return max(0.0, deadline - time.monotonic()) * 1000.0 + 1.0

    def _pong(self) -> None:
        self._last_pong = time.monotonic()
        self._send_now(encode(Kind.PONG, 0, {"epoch": self.epoch, "seq": self.seq,
                                             "state": self.local_state()}))

    def _send_now(self, frame: bytes) -> None:
        try:
            self._ctl.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            self.stats["dropped_sends"] += 1

    def _keep_alive(self) -> None:
        # A heartbeat stuck behind a backlog must not make the master think
        # this client is dead: past the slack, answer without waiting for it.
        if (self.joined.is_set() and not self.lost.is_set() and not self._left
                and time.monotonic() - self._last_pong > PONG_SLACK * self.pong_interval):
            self._pong()
        if (self._hello_pending and self.lost.is_set()
                and time.monotonic() - self._hello_sent > REPAIR_RETRY):
            # A HELLO sent as the link came back may have gone down with it again.
            self._hello_pending = False
            self._heard_again()
        if self._repair is not None and time.monotonic() - self._repair.asked > REPAIR_RETRY:
            self.stats["repair_retries"] += 1
            self._ask_replay()

    def _pong_due(self) -> bool:
        # Answer the first heartbeat of each wall-clock slot of pong_interval:
        # every client on the host picks the same heartbeat, so the master
        # reads their answers in one wake-up instead of one each.
        slot = int(time.time() / self.pong_interval)
        if slot == self._pong_slot or self._left:
            return False
        self._pong_slot = slot
        return True

    def _send_queued(self) -> bool:
        for item in self.outbox.drain():
            if type(item) is Send:
                self._send_now(item.frame)
            elif type(item) is Bye:
                self._left = True
                self._send_now(item.frame)
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
        self._unwatch_master()
        self.outbox.close()

    def _fail_futures(self) -> None:
        with self._futures_lock:
            futures, self._futures = self._futures, {}
        for future in futures.values():
            if not future.done():
                future.set_exception(MasterLost("the link to the master closed"))

    def _send_hello(self, subscribe: bool) -> None:
        self._hello_pending = True
        self._hello_sent = time.monotonic()
        self._ctl.send(encode(Kind.HELLO, HELLO_ID, {**self.hello, "subscribe": subscribe}))

    def _watch_master(self, snap: dict[str, Any]) -> None:
        pid = snap.get("pid")
        self._unwatch_master()
        if (type(pid) is not int or pid <= 0 or not self.hello["pidns"]
                or snap.get("pidns") != self.hello["pidns"]):
            return
        try:
            self._master_fd = os.pidfd_open(pid)
        except OSError:
            self._master_lost("the master's process is gone")
            return
        self._poller.register(self._master_fd, zmq.POLLIN)

    def _unwatch_master(self) -> None:
        fd, self._master_fd = self._master_fd, None
        if fd is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._poller.unregister(fd)
            os.close(fd)

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
        self._flush()

    def _on_reply(self, msg: Message) -> None:
        req_id = msg.req_id
        if req_id == HELLO_ID:
            self._on_welcome(msg)
        elif req_id == SNAPSHOT_ID:
            self._on_state_check(msg)
        elif self._repair is not None and req_id == self._repair.req_id:
            self._on_replay(msg)
        elif req_id == 0:
            err = error_from_wire(msg.items[2])
            if getattr(err, "code", "") != "unknown_client":
                self._complaints.warn("reported", "master reported: %s", err)
            elif self.joined.is_set() and not self._left and not self.closed_by_master:
                # The master declared us lost (we were silent too long): join again.
                log.info("the master does not know this client; joining again")
                self._rejoin(subscribe=False)
        else:
            self._settle(req_id, msg)

    def _settle(self, req_id: int, msg: Message) -> None:
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
        except Exception as exc:  # noqa: BLE001 - a refusal, said in one line
            log.error("the master refused this client's HELLO: %s", exc)
            self._refused = True
            if isinstance(exc, Busy) and not self.joined.is_set():
                # A first HELLO refused (the master is full): connect() says so at once.
                self.refused = exc
                self.refusal = str(exc)
                self._hello_pending = False
                self.settled.set()
                return
            self._master_lost("the master refused HELLO")
            return
        self._hello_pending = False
        self.stats["welcomes"] += 1
        same_epoch = int(snap["epoch"]) == self.epoch and self.joined.is_set()
        self.epoch, snap_seq = int(snap["epoch"]), int(snap["seq"])
        self.client_id = int(snap["client_id"])
        self.heartbeat = float(snap["heartbeat"])
        self.pong_interval = float(snap.get("pong_interval") or self.heartbeat)
        self.liveness = int(snap["liveness"])
        if self._follow_heartbeat:
            self.master_timeout = self.heartbeat * self.liveness
            self.pong_interval = min(self.pong_interval, self.heartbeat)
        self._last_heard = time.monotonic()
        self.lost.clear()
        self._watch_master(snap)
        buffered = [m for m in self._buffer if m[2] == self.epoch]
        self._buffer.clear()
        if not same_epoch:
            # A first join, or a new master: start from its snapshot.
            self._repair = None
            self._held.clear()
            self.seq = self._last_state_seq = snap_seq
            self._deliver_control(Synced(self.epoch, self.seq, snap["state"], 0))
        self.joined.set()
        self.settled.set()
        # Joined again in the same epoch: what we missed meanwhile is repaired,
        # then the state is mirrored again (a lost master made us stop, maybe).
        for m in buffered:
            self._on_broadcast(m)
        if same_epoch:
            if snap_seq > self.seq and self._repair is None:
                self._start_repair(self.seq + 1, snap_seq)
            self._check = (snap_seq, str(snap["state"]))
            self._apply_check()
        elif snap.get("closing"):  # joined a master that is closing: nothing more comes
            self._closing(snap_seq)

    # -- the published stream ----------------------------------------------------------

    def _read_sub(self) -> None:
        self._last_heard = time.monotonic()
        try:
            self._read_sub_frames()
        finally:
            self._flush()
            self._apply_check()

    def _read_sub_frames(self) -> None:
        recv, batch = self._sub.recv, self._batch
        fast = self._fast()
        for _ in range(DRAIN_LIMIT):
            try:
                frame = recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = decode_broadcast(frame)
            except ProtocolError as exc:
                self.stats["bad_messages"] += 1
                self._complaints.warn("bad_message", "bad message from master: %s", exc)
                continue
            # The common case, inline: the next message of our epoch, in order.
            if fast and msg[3] == self.seq + 1 and msg[2] == self.epoch and msg[1] != HEARTBEAT:
                self.seq = msg[3]
                self.received += 1
                if msg[1] != PUBLISH:
                    self._noted(msg)
                batch.append(msg)
            else:
                self._on_broadcast(msg)
                # It may have handed the batch over (a state check): use the new one.
                batch, fast = self._batch, self._fast()

    def _fast(self) -> bool:
        """True when the next in-order message needs nothing but delivering."""
        return (self._repair is None and not self._hello_pending and self._check is None
                and not self.lost.is_set())

    # A broadcast is the bare array [version, kind, epoch, seq, ...] (hot path).

    def _on_broadcast(self, msg: list[Any]) -> None:
        if self._hello_pending:
            self._hold(msg)
            return
        epoch, seq = msg[2], msg[3]
        if epoch == self.epoch and self.lost.is_set() and self._heard_again():
            self._hold(msg)
            return
        if epoch != self.epoch:
            if (self.lost.is_set() and not self.wait_for_new_master) or self._left:
                return
            log.info("a new master incarnation (epoch %d); joining it", epoch)
            self.stats["new_epochs"] += 1
            self._rejoin(subscribe=True)
            self._hold(msg)
            return
        if msg[1] == HEARTBEAT:
            if self._pong_due():
                self._pong()
            if seq > self.seq and self._repair is None:
                self._start_repair(self.seq + 1, seq)
            return
        if self._repair is not None:
            self._held.append(msg)
            return
        if seq <= self.seq:
            return
        if seq != self.seq + 1:
            self._start_repair(self.seq + 1, seq - 1)
            self._held.append(msg)
            return
        self._deliver_msg(msg)

    def _deliver_msg(self, msg: list[Any]) -> None:
        self.seq = msg[3]
        self.received += 1
        if msg[1] != PUBLISH:
            self._noted(msg)
        self._batch.append(msg)
        if self._check is not None and self.seq >= self._check[0]:
            self._apply_check()  # the checked state goes right after its seq

    def _noted(self, msg: list[Any]) -> None:
        """A STATE or EVENT delivered in order: remember what the stream says of the master."""
        if msg[1] == STATE:
            self._last_state_seq = msg[3]
        elif msg[1] == EVENT and msg[4] == CLOSING_EVENT:
            self._closing(msg[3])

    def _closing(self, seq: int) -> None:
        """The master closes on purpose, and this client has everything up to ``seq``."""
        if self.closed_by_master:
            return
        self.closed_by_master = True
        log.info("the master is closing; every message up to seq %d arrived", seq)
        self._pong()  # the master waits for this to close

    def _flush(self) -> None:
        """Hand the messages read so far to the dispatcher, in one go."""
        if self._batch:
            batch, self._batch = self._batch, []
            self.deliver(batch)

    def _deliver_control(self, item: Synced | Gone) -> None:
        """A snapshot or a loss: after what came before it."""
        self._flush()
        self.deliver([item])

    # -- repairs -------------------------------------------------------------------

    def _start_repair(self, first: int, last: int) -> None:
        """Ask the master's replay window for ``first..last``; hold newer messages meanwhile."""
        self.stats["gaps"] += 1
        self._repair = _Repair(first, last)
        self._ask_replay()

    def _ask_replay(self) -> None:
        assert self._repair is not None
        self._repair.asked = time.monotonic()
        self._repair.req_id = next(self._ids)
        self._send_now(encode(Kind.REQUEST, self._repair.req_id, {
            "cmd": "replay", "epoch": self.epoch, "from": self._repair.next,
            "to": self._repair.last}))

    def _on_replay(self, msg: Message) -> None:
        if self._repair is None:
            return
        last = self._repair.last
        if not msg.items[1] and _code(msg.items[2]) == "busy":
            # Not a loss: the master still holds our last answer. Ask again shortly.
            self.stats["repair_busy"] += 1
            self._repair.asked = time.monotonic() - REPAIR_RETRY + BUSY_RETRY
            return
        try:
            part = reply_result(msg)
            if part.get("epoch") != self.epoch:
                raise ProtocolError("a replay of another master incarnation")
            first, frames, lost = int(part["first"]), part["frames"], int(part["lost"])
        except Exception as exc:  # noqa: BLE001 - whatever it was, the range is gone
            self._complaints.warn("replay", "the master could not replay messages %d..%d: %s",
                                  self._repair.next, last, exc)
            first, frames, lost = last + 1, [], last + 1 - self._repair.next
            part = {"more": False}
        if lost:
            self._lose(lost, first)
        for frame in frames:
            replayed = decode_broadcast(frame)
            if replayed[2] == self.epoch and replayed[3] == self.seq + 1:
                self.stats["repaired"] += 1
                self._deliver_msg(replayed)
        if part.get("more") and self.seq < last:
            self._repair.next = self.seq + 1
            self._ask_replay()
            return
        self._repair = None
        if self.seq < last:  # the window ended before our range did: gone too
            self._lose(last - self.seq, last + 1)
        held, self._held = self._held, collections.deque()
        for m in held:
            self._on_broadcast(m)
        self._flush()
        self._apply_check()

    def _lose(self, count: int, next_seq: int) -> None:
        """``count`` messages before ``next_seq`` are gone for good: count them, check state."""
        self.stats["missed"] += count
        self._missed_since_check += count
        log.warning("%d message(s) before seq %d were older than the master's replay "
                    "window: lost; checking the state", count, next_seq)
        self.seq = max(self.seq, next_seq - 1)
        if not self._check_asked:
            self._check_asked = True
            self.stats["resyncs"] += 1
            self._send_now(encode(Kind.REQUEST, SNAPSHOT_ID, {"cmd": "snapshot"}))

    def _on_state_check(self, msg: Message) -> None:
        self._check_asked = False
        try:
            snap = reply_result(msg)
        except Exception as exc:  # noqa: BLE001 - logged in one line; the next loss asks again
            self._complaints.warn("snapshot", "the master would not give a snapshot: %s", exc)
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
        self._deliver_control(Synced(self.epoch, seq, fresh, missed))

    def _hold(self, msg: list[Any]) -> None:
        if msg[1] == HEARTBEAT:
            return
        self._buffer.append(msg)
        if len(self._buffer) > JOIN_BUFFER:
            self._buffer.popleft()

    def _rejoin(self, subscribe: bool) -> None:
        if not self._hello_pending and not self._left:
            self.stats["rejoins"] += 1
            self._send_hello(subscribe)

    def _heard_again(self) -> bool:
        """A master we counted lost speaks again, same epoch: a partition healed.

        Waiting for it (``on_master_lost="wait"``), join again: the welcome
        repairs what was published meanwhile from the replay window (counting
        exactly what it no longer holds) and hands over the state to mirror.
        This side may have noticed the silence first, while the master still
        counts this client joined: then nothing else would make it rejoin.
        True while that HELLO is unanswered (what comes meanwhile is held).
        """
        if (self.wait_for_new_master and self.joined.is_set() and not self._left
                and not self._refused and not self.closed_by_master):
            if not self._hello_pending:
                log.info("the master answers again (epoch %d, after seq %d); joining again",
                         self.epoch, self.seq)
            self._rejoin(subscribe=False)
        return self._hello_pending

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
        self._hello_pending = False
        self._deliver_control(Gone(reason, self.epoch, self.seq))

    def statistics(self) -> dict[str, Any]:
        """Counters: received, gaps, repaired, missed, resyncs, new epochs, bad messages."""
        return {"epoch": self.epoch, "seq": self.seq, "client_id": self.client_id,
                "received": self.received, "held": len(self._held), **dict(self.stats)}


def _code(error: Any) -> Any:
    """The ``code`` of an error map from the wire (None if it is not one)."""
    return error.get("code") if isinstance(error, dict) else None
