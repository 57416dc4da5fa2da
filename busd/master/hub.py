"""The master's I/O thread: every socket, pidfd and timer, and no user code.

::

    publishers (any thread) --Outbox[HubMessage]--> [ busd-hub ] --XPUB-->  clients' SUB
    command thread: replies, --^  Publish, SendTo,    |  ^  <--ROUTER-->  clients' DEALER,
      boards                      NewBoard, Close     |  |                busctl
                  owner.post(Request | ClientChange   |  +-- pidfds of local clients
                             | StatusWanted) <--------+  +-- heartbeat timer
                                                      +--> ReplayWindow, Registry, Board

The hub owns the XPUB and ROUTER sockets, the replay window, the pidfds of
local clients and the heartbeat timer.  It decodes and checks every frame,
registers clients and records their pongs and acks, serves repairs from the
replay window, and answers read-only requests (ping, snapshot, status,
workers, clients) itself: status and workers from the newest
:class:`busd.master.board.Board` the command thread published (a fresh one when
that thread can make it within 10 ms, else the last), laying its own live
parts over it.  Everything else becomes a
:class:`Request` posted to the command thread, whose answer comes back as a
:class:`SendTo`.  It never runs a listener or a hook and takes no lock but
the registry's (its own), so heartbeats and status answers flow while a
slow listener or a spawn runs.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import zmq

from busd.core.auth import NEEDS_FULL_KEY, RefusalLog, Role, is_tcp, peer_role
from busd.core.endpoints import CTL_HWM, PUB_HWM, Endpoints, Outbox, configure, secure_ipc
from busd.core.errors import Busy, ProtocolError
from busd.core.wire import (
    CLIENT_KINDS,
    JOIN_PREFIX,
    ErrorCode,
    Kind,
    Message,
    decode,
    encode,
    error_to_wire,
    pid_namespace,
    wire_error,
)
from busd.master.backlog import (
    PUB_BYTES,
    REPLAY_SLACK,
    TRACK_MIN,
    Published,
    Replies,
    pin_mmap_threshold,
)
from busd.master.board import Board, live_status, live_workers
from busd.master.fdbudget import AcceptWatch, FdGate
from busd.master.hosts import HOST_ROLE
from busd.master.pidwatch import PidWatch
from busd.master.registry import NOT_JOINED, ClientInfo, Registry, bye_reason, hello_fields
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
#: Most outbox items (a Publish holds at most PUBLISH_BATCH frames) sent per wake-up.
OUTBOX_LIMIT = 10_000
PUBLISH_BATCH = 1000
#: Bad input: log the first few of each kind, then one in this many.
COMPLAINT_EVERY = 1000
#: Requests the hub answers itself, never queued behind a command.
HUB_COMMANDS = frozenset({"ping", "snapshot", "replay", "clients"})
#: Requests answered from the board: a fresh one if it comes within BOARD_WAIT.
BOARD_COMMANDS = frozenset({"status", "workers"})
#: How long a status request waits for a fresh board before the last one answers it.
BOARD_WAIT = 0.01


# -- what other threads send the hub (through its Outbox) ------------------------


@dataclass(frozen=True)
class Publish:
    """Send frames numbered ``first``, ``first + 1``, ... on PUB, leaving clients in ``state``."""

    frames: tuple[bytes, ...]
    first: int
    state: str


@dataclass(frozen=True)
class SendTo:
    """Send one frame to the client at ``identity`` (a reply)."""

    identity: bytes
    frame: bytes


@dataclass(frozen=True)
class Close:
    """Flush for at most ``flush`` seconds, then close the sockets and end.

    With a ``final`` message (the master's closing EVENT), send it first and
    keep serving (replays, heartbeats, BYEs) until every live client has it
    or the ``drain`` seconds have passed; publishes after it are dropped.
    """

    flush: float
    final: Publish | None = None
    drain: float = 0.0


@dataclass(frozen=True)
class _Drain:
    """The closing: the final seq every client must reach, by when, then how to close."""

    seq: int
    deadline: float
    started: float
    flush: float


@dataclass(frozen=True)
class NewBoard:
    """The command thread's latest read-only answers."""

    board: Board


HubMessage = Publish | SendTo | Close | NewBoard


# -- what the hub posts to its owner's command thread ------------------------------


@dataclass(frozen=True)
class Request:
    """A command to run on the command thread; answer it with :meth:`Hub.reply`."""

    identity: bytes
    req_id: int
    body: dict[str, Any]


@dataclass(frozen=True)
class ClientChange:
    """A client joined, left (BYE) or was lost (silent, or its process ended)."""

    event: str
    client: dict[str, Any]


@dataclass(frozen=True)
class StatusWanted:
    """The board is stale and somebody asked: publish a new one."""


class HubOwner(Protocol):
    """What the hub needs from the bus that owns it."""

    epoch: int

    def post(self, message: Request | ClientChange | StatusWanted) -> None:
        """Queue a message for the command thread (never blocks, never runs it here)."""


class Hub:
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
        self.owner = owner
        self.epoch = owner.epoch
        self.pid = os.getpid()
        self.pidns = pid_namespace()
        self.registry = Registry()
        self.window = window or ReplayWindow()
        #: Unread bytes: of replies, per peer; of big published frames (busd.master.backlog).
        self.replies = Replies()
        self.published = Published(pub_bytes)
        pin_mmap_threshold()
        self.heartbeat = heartbeat
        self.liveness = liveness
        #: How often clients answer; they are lost after ``liveness`` of these.
        self.pong_interval = pong_interval or heartbeat
        self.outbox: Outbox[HubMessage] = Outbox()
        self.stats: collections.Counter[str] = collections.Counter()
        self._board = Board()
        self._board_asked = False
        self._board_waiters: list[tuple[float, bytes, int, str]] = []
        self._own_context = context is None
        self._ctx = context or zmq.Context()
        #: CURVE on the tcp endpoints, with pyzmq's ZAP thread on our context.
        self._curve = curve
        self._forbidden = RefusalLog("forbidden request from read-only key")
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
        self._sent: tuple[int, str] = (0, "STOPPED")
        self._pending_hello: dict[bytes, tuple[bytes, int, float]] = {}
        self._joined_tokens: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        # Identities and tokens of clients that said BYE: never registered again.
        self._departed: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._ended: list[tuple[float, bytes]] = []
        self._poller = zmq.Poller()
        self._pids = PidWatch(self._poller, self.pid, self.pidns)
        self._closing = threading.Event()
        self._drain: _Drain | None = None
        self._thread = threading.Thread(target=self._run, name="busd-hub", daemon=True)
        try:
            for ep in endpoints:
                self._bind(ep)
        except BaseException:
            self._close_sockets(0)
            raise

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

    def send_many(self, frames: tuple[bytes, ...], first: int, state: str) -> None:
        """Publish frames numbered from ``first``, in order, with nothing between them."""
        self.outbox.put(Publish(frames, first, state))

    def reply(self, identity: bytes, req_id: int, ok: bool, payload: Any) -> None:
        """Answer request ``req_id`` of the client at ``identity`` (from another thread)."""
        self.outbox.put(SendTo(identity, _reply_frame(req_id, ok, payload)))

    def publish_board(self, answers: dict[str, Any], quick: frozenset[str] = frozenset()) -> None:
        """Replace the read-only answers (called by their owner, the command thread)."""
        self.outbox.put(NewBoard(Board.of(answers, quick)))

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

    def wait_closed(self, timeout: float) -> None:
        """Wait at most ``timeout`` for the I/O thread to end, then close what it left."""
        if self._thread.ident is not None:
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self._close_sockets(0)

    # -- the I/O thread ----------------------------------------------------------------

    def _run(self) -> None:
        poller = self._poller
        for item in (self._pub, self._ctl, self.outbox.fileno, *self._accepts.monitors):
            poller.register(item, zmq.POLLIN)
        log.info("%s", self.fdgate.describe())
        next_beat = time.monotonic()
        try:
            while not self._closing.is_set():
                wake = min(
                    [
                        next_beat,
                        *(w[0] for w in self._board_waiters),
                        *(e[0] for e in self._ended),
                        *((self._drain.deadline,) if self._drain else ()),
                    ]
                )
                wait_ms = max(0.0, (wake - time.monotonic()) * 1000) + 1
                ready = dict(poller.poll(int(wait_ms)))
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
                if time.monotonic() >= next_beat:
                    self._beat()
                    next_beat = time.monotonic() + self.heartbeat
                if self._drain is not None and self._drained(time.monotonic()):
                    self._close_sockets(int(self._drain.flush * 1000))
                    return
        except Exception:
            log.exception("busd hub thread failed")
        finally:
            self._closing.set()

    def _send_queued(self) -> bool:
        """Send what other threads queued; True once the sockets are closed."""
        send, add = self._pub.send, self.window.add
        # Bounded, so that a flood of publishes never keeps requests unread.
        for item in self.outbox.drain(OUTBOX_LIMIT):
            if type(item) is Publish:
                if self._drain is not None:  # after the closing message: never sent
                    self.stats["after_close"] += len(item.frames)
                    continue
                seq = item.first
                for frame in item.frames:
                    if len(frame) < TRACK_MIN:
                        send(frame, zmq.NOBLOCK)
                    else:
                        self.published.send(self._pub, frame)
                    add(seq, frame)
                    seq += 1
                self._sent = (seq - 1, item.state)
            elif type(item) is SendTo:
                self._send_to(item.identity, item.frame)
            elif type(item) is NewBoard:
                self._board, self._board_asked = item.board, False
                self._answer_board_waiters(None)
            elif type(item) is Close:
                if item.final is None or self._drain is not None:
                    self._close_sockets(int(item.flush * 1000))
                    return True
                self._begin_drain(item)
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
        self._drain = _Drain(last, now + close.drain, now, close.flush)
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
        if not self.replies.send(self._ctl, identity, frame):
            self._complain(
                "reply_dropped",
                "a client leaves its replies unread (or its queue is full); one was dropped",
            )

    def _answer(self, identity: bytes, req_id: int, ok: bool, payload: Any) -> None:
        if not self._ctl.closed:
            self._send_to(identity, _reply_frame(req_id, ok, payload))

    def _close_sockets(self, linger_ms: int) -> None:
        self._closing.set()
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
                self._reject(identity, 0, exc)
                continue
            try:
                self._dispatch(identity, msg, role, peer)
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

    def _reject(self, identity: bytes, req_id: int, exc: Exception) -> None:
        code = getattr(exc, "code", ErrorCode.INTERNAL.value)
        self._complain(str(code), f"rejected a message: {exc}")
        self._answer(identity, req_id, False, error_to_wire(exc))

    def _complain(self, code: str, message: str) -> None:
        self.stats[code] += 1
        count = self.stats[code]
        if count <= 5 or count % COMPLAINT_EVERY == 0:
            log.warning("%s (%s #%d)", message, code, count)

    def _dispatch(
        self, identity: bytes, msg: Message, role: Role = Role.FULL, peer: str = "local"
    ) -> None:
        body: dict[str, Any] = msg.body
        if msg.kind is Kind.HELLO:
            self._hello(identity, msg.req_id, body, role)
        elif msg.kind is Kind.REQUEST:
            self._request(identity, msg.req_id, body, role, peer)
        elif self.registry.get(identity) is None:
            if identity in self._departed:
                # Said BYE, and a pong or ack was still on its way: nothing to do.
                self.stats["after_bye"] += 1
                return
            raise wire_error(
                ErrorCode.UNKNOWN_CLIENT,
                f"{msg.kind.name} from a client that has not said HELLO "
                "(to this master incarnation)",
            )
        elif msg.kind is Kind.ACK:
            if body.get("epoch") != self.epoch:
                # A seq of another incarnation: its numbers mean nothing here.
                self._complain("stale_ack", "ignored an ack for another master incarnation")
                return
            self.stats["acks"] += 1
            self.registry.record_ack(identity, body)
        elif msg.kind is Kind.PONG:
            self.registry.pong(identity, body)
        elif msg.kind is Kind.BYE:
            self._departed[identity] = None
            info = self.registry.get(identity)
            if info is not None and info.token:
                self._departed[info.token] = None
            while len(self._departed) > CTL_HWM:
                self._departed.popitem(last=False)
            self._client_gone(identity, "client_left", bye_reason(body))

    def _client_gone(self, identity: bytes, event: str, reason: str) -> None:
        self._pids.forget_client(identity)
        info = self.registry.remove(identity)
        if info is not None:
            self.owner.post(ClientChange(event, {**info.as_dict(), "reason": reason}))

    def _request(
        self,
        identity: bytes,
        req_id: int,
        body: dict[str, Any],
        role: Role = Role.FULL,
        peer: str = "local",
    ) -> None:
        cmd = body.get("cmd")
        if not isinstance(cmd, str):
            raise wire_error(ErrorCode.BAD_ARGUMENTS, "a REQUEST body needs a 'cmd' string")
        self.registry.touch(identity)
        self.stats["requests"] += 1
        if role is Role.READ_ONLY and (
            cmd in NEEDS_FULL_KEY
            or not (cmd in HUB_COMMANDS or cmd in BOARD_COMMANDS or cmd in self._board.quick)
        ):
            # Only the requests answered here are read-only; the rest change state.
            self._forbid(identity, req_id, cmd, peer)
            return
        if cmd in HUB_COMMANDS:
            self._answer(identity, req_id, True, self._hub_answer(identity, cmd, body))
        elif cmd in BOARD_COMMANDS:
            # A fresh board if the command thread is free to make one at once,
            # else the last one: never wait on a busy command thread (nor a gone one).
            if self._board_asked or self._drain is not None:
                # The command thread has not answered the last ask: it is busy.
                self._board_waiters.append((0.0, identity, req_id, cmd))
                self._answer_board_waiters(time.monotonic())
                return
            self._board_waiters.append((time.monotonic() + BOARD_WAIT, identity, req_id, cmd))
            self._board_asked = True
            self.owner.post(StatusWanted())
        elif self._drain is not None:  # the command thread has ended
            self._answer(
                identity,
                req_id,
                False,
                error_to_wire(wire_error(ErrorCode.ILLEGAL_TRANSITION, "the master is exiting")),
            )
        else:
            self.owner.post(Request(identity, req_id, body))

    def _forbid(self, identity: bytes, req_id: int, cmd: str, peer: str) -> None:
        self.stats["forbidden"] += 1
        self._forbidden.refused(peer, f"{cmd!r}")
        self._answer(
            identity,
            req_id,
            False,
            error_to_wire(
                wire_error(
                    ErrorCode.FORBIDDEN,
                    f"{cmd!r} is forbidden: this client's key is read-only "
                    "(it may ping, status, workers, clients, watch and subscribe)",
                )
            ),
        )

    def _hub_answer(self, identity: bytes, cmd: str, body: dict[str, Any]) -> Any:
        if cmd == "ping":
            return {"pong": True, "pid": self.pid, "epoch": self.epoch}
        if cmd == "snapshot":
            # Everything handed over before this request counts as sent.
            for _ in range(len(self.outbox) // OUTBOX_LIMIT + 1):
                if self._send_queued():
                    break
            seq, state = self._sent
            return {"seq": seq, "state": state, "closing": self._drain is not None}
        if cmd == "replay":
            return self._replay(identity, body)
        now = time.monotonic()
        return [c.as_dict(now) for c in self.registry.clients()]

    def _answer_board_waiters(self, now: float | None) -> None:
        """Answer status requests: all of them (now None: a new board), or those due."""
        due = [w for w in self._board_waiters if now is None or w[0] <= now]
        if not due:
            return
        self._board_waiters = [w for w in self._board_waiters if w not in due]
        clients = self.registry.clients()
        board, mono = self._board, time.monotonic()
        for _, identity, req_id, cmd in due:
            if cmd == "workers":
                answer: Any = live_workers(board.answers.get("workers", []), clients)
            else:
                answer = live_status(board, clients, self._sent[0], mono)
                answer["replay"] = self.window.statistics()
                answer["unread"] = self._unread()
                answer["fds"] = self.fdgate.statistics().as_dict()
            self._answer(identity, req_id, True, answer)

    def _replay(self, identity: bytes, body: dict[str, Any]) -> dict[str, Any]:
        first, last = body.get("from"), body.get("to")
        if type(first) is not int or type(last) is not int or first < 1 or last < first:
            raise wire_error(ErrorCode.BAD_ARGUMENTS, "replay needs integers 1 <= from <= to")
        if body.get("epoch") != self.epoch:
            raise wire_error(ErrorCode.BAD_ARGUMENTS, "replay of another master incarnation")
        if self.replies.unread(identity) > REPLAY_SLACK:
            self.stats["replay_busy"] += 1
            raise wire_error(
                ErrorCode.BUSY,
                "an earlier replay answer to this client is "
                "still unread: ask again once it is read",
            )
        part = self.window.slice(first, min(last, self._sent[0]))
        if part.lost:
            self.stats["replay_lost"] += part.lost
            self.registry.add_lost(identity, part.lost)
        self.stats["replayed"] += len(part.frames)
        return {
            "epoch": self.epoch,
            "first": part.first,
            "frames": list(part.frames),
            "lost": part.lost,
            "more": part.more,
        }

    def _hello(
        self, identity: bytes, req_id: int, body: dict[str, Any], role: Role = Role.FULL
    ) -> None:
        hello_fields(body)  # every field checked before any is used (bad_arguments)
        token = body.get("token")
        wants_sub = bool(body.get("subscribe", True))
        if wants_sub and not isinstance(token, bytes):
            raise wire_error(ErrorCode.BAD_ARGUMENTS, "HELLO needs a 'token' (bytes)")
        if token in self._departed:
            raise wire_error(
                ErrorCode.BAD_ARGUMENTS, "this client said BYE: joining again takes a new token"
            )
        self._departed.pop(identity, None)
        if self.registry.get(identity) is None:
            refusal = self.fdgate.admit()
            if refusal is not None:
                self.stats["refused_busy"] += 1
                raise wire_error(ErrorCode.BUSY, f"busy: {refusal}")
        info = self.registry.register(
            identity, body, joined_seq=NOT_JOINED, readonly=role is Role.READ_ONLY
        )
        self.stats["hellos"] += 1
        if self._pids.watch(identity, body):
            # Gone before its HELLO was read (a worker killed just after its
            # spawn): removed now, never kept until the liveness timeout.
            self.stats["processes_ended"] += 1
            self._ended.append((time.monotonic(), identity))
        if wants_sub and token not in self._joined_tokens:
            assert isinstance(token, bytes)
            self._pending_hello[token] = (identity, req_id, time.monotonic())
            return
        self._welcome(identity, req_id, info)

    def _drop_ended(self, now: float) -> None:
        due = [e for e in self._ended if e[0] <= now]
        self._ended = [e for e in self._ended if e[0] > now]
        for _, identity in due:
            self._client_gone(identity, "client_lost", "its process ended")

    def _welcome(self, identity: bytes, req_id: int, info: ClientInfo | None) -> None:
        seq, state = self._sent
        self.registry.set_joined(identity, seq)
        self._answer(
            identity,
            req_id,
            True,
            {
                "client_id": info.id if info else 0,
                "epoch": self.epoch,
                "seq": seq,
                "state": state,
                "heartbeat": self.heartbeat,
                "liveness": self.liveness,
                "pong_interval": self.pong_interval,
                "pid": self.pid,
                "pidns": self.pidns,
                "pub": self.pub_endpoints,
                "closing": self._drain is not None,
            },
        )
        if info is not None:
            self.owner.post(ClientChange("client_joined", info.as_dict()))

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

    def statistics(self) -> dict[str, Any]:
        """Counters of requests, acks, repairs and rejected input; the bound endpoints."""
        return {
            "counters": dict(self.stats),
            "rundir": self.guard.statistics(),
            "pub": self.pub_endpoints,
            "ctl": self.ctl_endpoints,
            "clients": len(self.registry.clients()),
            "curve": self._curve.statistics() if self._curve is not None else None,
            "replay": self.window.statistics(),
            "unread": self._unread(),
            "fds": self.fdgate.statistics(),
        }

    def _unread(self) -> dict[str, Any]:
        return {"replies": self.replies.statistics(), "published": self.published.statistics()}


def _reply_frame(req_id: int, ok: bool, payload: Any) -> bytes:
    try:
        return encode(Kind.REPLY, req_id, ok, payload)
    except ProtocolError as exc:
        return encode(Kind.REPLY, req_id, False, error_to_wire(exc))
