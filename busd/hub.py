"""The master's I/O thread: its sockets, and nothing that runs listeners.

::

    any thread --Outbox--> [ hub thread ] --XPUB-->   clients' SUB
                               |   ^ <--ROUTER-->  clients' DEALER, busctl
                  commands --->|   |
                  (MasterBus queue)  acks, pongs -> Registry

The hub decodes and checks every frame, answers what needs no bus (ping,
status, bad input), registers clients, records acks and pongs, sends
heartbeats, declares silent clients lost, and hands commands to the bus's
queue. It never runs a listener, so heartbeats flow while a slow one runs.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

import zmq

from busd.auth import NEEDS_FULL_KEY, RefusalLog, Role, is_tcp, peer_role
from busd.endpoints import CTL_HWM, PUB_HWM, Endpoints, Outbox, configure, secure_ipc
from busd.errors import ProtocolError
from busd.registry import NOT_JOINED, ClientInfo, Registry
from busd.rundir import EndpointGuard
from busd.wire import (
    CLIENT_KINDS,
    JOIN_PREFIX,
    ErrorCode,
    Kind,
    Message,
    decode,
    encode,
    error_to_wire,
    wire_error,
)

if TYPE_CHECKING:
    from busd.zap import CurveServer

log = logging.getLogger(__name__)

#: How long a HELLO waits for its client's subscription to reach the XPUB.
JOIN_TIMEOUT = 2.0
#: Most frames read from one socket per wake-up, so no socket starves another.
DRAIN_LIMIT = 1000
#: Bad input: log the first few of each kind, then one in this many.
COMPLAINT_EVERY = 1000


class HubOwner(Protocol):
    """What the hub needs from the bus that owns it."""

    epoch: int

    def snapshot(self) -> tuple[int, str]:
        """The last sequence number and the state it reflects, consistently."""

    def quick_request(self, cmd: str, body: dict[str, Any]) -> Any:
        """Answer a read-only request at once, or raise LookupError to queue it."""

    def queue_request(self, identity: bytes, req_id: int, body: dict[str, Any]) -> None:
        """Queue a command; its reply comes later through :meth:`Hub.reply`."""

    def hub_event(self, event: str, data: dict[str, Any]) -> None:
        """A client joined, left or was lost."""


class Hub:
    """Owns the master's XPUB and ROUTER sockets in one thread."""

    def __init__(self, owner: HubOwner, endpoints: list[Endpoints], heartbeat: float,
                 liveness: int, context: zmq.Context[Any] | None = None,
                 pong_interval: float | None = None,
                 pub_hwm: int = PUB_HWM, curve: CurveServer | None = None) -> None:
        self.owner = owner
        self.registry = Registry()
        self.heartbeat = heartbeat
        self.liveness = liveness
        #: How often clients answer; they are lost after ``liveness`` of these.
        self.pong_interval = pong_interval or heartbeat
        self.outbox = Outbox()
        self.stats: collections.Counter[str] = collections.Counter()
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
        self.pub_endpoints: list[str] = []
        self.ctl_endpoints: list[str] = []
        #: Locks our ipc endpoints; rebinds them when their files are removed.
        self.guard = EndpointGuard()
        self._sent: tuple[Any, ...] = (0, "STOPPED")
        self._pending_hello: dict[bytes, tuple[bytes, int, float]] = {}
        self._joined_tokens: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            for ep in endpoints:
                self._bind(ep)
        except BaseException:
            self._close_sockets(0)
            raise

    def _bind(self, ep: Endpoints) -> None:
        for sock, endpoint, bound in ((self._pub, ep.pub, self.pub_endpoints),
                                      (self._ctl, ep.ctl, self.ctl_endpoints)):
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

    # -- called from any thread ---------------------------------------

    def start(self) -> None:
        """Start the I/O thread."""
        self._thread = threading.Thread(target=self._run, name="busd-hub", daemon=True)
        self._thread.start()

    def send_pub(self, frame: bytes, seq: int, state: str) -> None:
        """Publish frame number ``seq`` (leaving clients in ``state``) to every client."""
        self.outbox.put("pub", frame, seq, state)

    def reply(self, identity: bytes, req_id: int, ok: bool, payload: Any) -> None:
        """Answer request ``req_id`` of the client at ``identity``."""
        try:
            frame = encode(Kind.REPLY, req_id, ok, payload)
        except ProtocolError as exc:
            frame = encode(Kind.REPLY, req_id, False, error_to_wire(exc))
        if threading.current_thread() is self._thread:
            self._send_to(identity, frame)
        else:
            self.outbox.put("to", identity, frame)

    def close(self, flush: float = 0.5) -> None:
        """Send what is queued, then close the sockets (waits at most ``flush`` s)."""
        self.outbox.put("close", flush)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(flush + 2.0)
        if thread is None or not thread.is_alive():
            self._close_sockets(0)

    # -- the I/O thread -------------------------------------------------

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._pub, zmq.POLLIN)
        poller.register(self._ctl, zmq.POLLIN)
        poller.register(self.outbox.fileno, zmq.POLLIN)
        next_beat = time.monotonic()
        try:
            while not self._closing.is_set():
                wait_ms = max(0.0, (next_beat - time.monotonic()) * 1000) + 1
                ready = dict(poller.poll(int(wait_ms)))
                if self.outbox.fileno in ready and self._send_queued():
                    return
                if self._ctl in ready:
                    self._read_ctl()
                if self._pub in ready:
                    self._read_subscriptions()
                if time.monotonic() >= next_beat:
                    self._beat()
                    next_beat = time.monotonic() + self.heartbeat
        except Exception:
            log.exception("busd hub thread failed")
        finally:
            self._closing.set()

    def _send_queued(self) -> bool:
        """Send what other threads queued; True once the sockets are closed."""
        send = self._pub.send
        for item in self.outbox.drain():
            op = item[0]
            if op == "pub":
                send(item[1], zmq.NOBLOCK)
                self._sent = item[2:]
            elif op == "to":
                self._send_to(item[1], item[2])
            elif op == "close":
                self._close_sockets(int(item[1] * 1000))
                return True
        return False

    def _send_to(self, identity: bytes, frame: bytes) -> None:
        try:
            self._ctl.send_multipart([identity, frame], zmq.NOBLOCK)
        except zmq.Again:
            self._complain("reply_dropped", "a client's queue is full; a reply was dropped")

    def _close_sockets(self, linger_ms: int) -> None:
        self._closing.set()
        for sock in (self._pub, self._ctl):
            if not sock.closed:
                sock.close(linger=linger_ms)
        if self._curve is not None:
            self._curve.stop()
        if self._own_context and not self._ctx.closed:
            self._ctx.term()
        self.guard.close()
        self.outbox.close()

    def _read_ctl(self) -> None:
        for _ in range(DRAIN_LIMIT):
            try:
                frames, role, peer = self._recv_ctl()
            except zmq.Again:
                return
            identity = frames[0]
            if len(frames) != 2:
                self._reject(identity, 0, wire_error(
                    ErrorCode.MALFORMED, f"a request is one frame, got {len(frames) - 1}"))
                continue
            try:
                msg = decode(frames[1], allowed=CLIENT_KINDS)
            except ProtocolError as exc:
                self._reject(identity, 0, exc)
                continue
            try:
                self._dispatch(identity, msg, role, peer)
            except ProtocolError as exc:
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
        self.reply(identity, req_id, False, error_to_wire(exc))

    def _complain(self, code: str, message: str) -> None:
        self.stats[code] += 1
        count = self.stats[code]
        if count <= 5 or count % COMPLAINT_EVERY == 0:
            log.warning("%s (%s #%d)", message, code, count)

    def _dispatch(self, identity: bytes, msg: Message, role: Role = Role.FULL,
                  peer: str = "local") -> None:
        body: dict[str, Any] = msg.body
        if msg.kind is Kind.HELLO:
            self._hello(identity, msg.req_id, body)
        elif msg.kind is Kind.REQUEST:
            self._request(identity, msg.req_id, body, role, peer)
        elif self.registry.get(identity) is None:
            raise wire_error(ErrorCode.UNKNOWN_CLIENT,
                             f"{msg.kind.name} from a client that has not said HELLO "
                             "(to this master incarnation)")
        elif msg.kind is Kind.ACK:
            if body.get("epoch") != self.owner.epoch:
                # A seq of another incarnation: its numbers mean nothing here.
                self._complain("stale_ack", "ignored an ack for another master incarnation")
                return
            self.stats["acks"] += 1
            self.registry.record_ack(identity, body)
        elif msg.kind is Kind.PONG:
            fields: dict[str, Any] = {"last_seq": int(body.get("seq") or 0)}
            if isinstance(body.get("state"), str) and body["state"]:
                fields["state"] = body["state"]
            self.registry.touch(identity, **fields)
        elif msg.kind is Kind.BYE:
            info = self.registry.remove(identity)
            if info:
                self.owner.hub_event("client_left", {**info.as_dict(),
                                                     "reason": str(body.get("reason", ""))})

    def _request(self, identity: bytes, req_id: int, body: dict[str, Any],
                 role: Role = Role.FULL, peer: str = "local") -> None:
        cmd = body.get("cmd")
        if not isinstance(cmd, str):
            raise wire_error(ErrorCode.BAD_ARGUMENTS, "a REQUEST body needs a 'cmd' string")
        self.registry.touch(identity)
        self.stats["requests"] += 1
        if role is Role.READ_ONLY and cmd in NEEDS_FULL_KEY:
            self._forbid(identity, req_id, cmd, peer)
            return
        try:
            result = self.owner.quick_request(cmd, body)
        except LookupError:
            # Only the requests answered here are read-only; the rest change state.
            if role is Role.READ_ONLY:
                self._forbid(identity, req_id, cmd, peer)
                return
            self.owner.queue_request(identity, req_id, body)
            return
        self.reply(identity, req_id, True, result)

    def _forbid(self, identity: bytes, req_id: int, cmd: str, peer: str) -> None:
        self.stats["forbidden"] += 1
        self._forbidden.refused(peer, f"{cmd!r}")
        self.reply(identity, req_id, False, error_to_wire(wire_error(
            ErrorCode.FORBIDDEN, f"{cmd!r} is forbidden: this client's key is read-only "
            "(it may ping, status, workers, clients, watch and subscribe)")))

    def _hello(self, identity: bytes, req_id: int, body: dict[str, Any]) -> None:
        token = body.get("token")
        wants_sub = bool(body.get("subscribe", True))
        if wants_sub and not isinstance(token, bytes):
            raise wire_error(ErrorCode.BAD_ARGUMENTS, "HELLO needs a 'token' (bytes)")
        info = self.registry.register(identity, body, joined_seq=NOT_JOINED)
        self.stats["hellos"] += 1
        if wants_sub and token not in self._joined_tokens:
            assert isinstance(token, bytes)
            self._pending_hello[token] = (identity, req_id, time.monotonic())
            return
        self._welcome(identity, req_id, info)

    def _welcome(self, identity: bytes, req_id: int, info: ClientInfo | None) -> None:
        seq, state = self.owner.snapshot()
        self.registry.set_joined(identity, seq)
        self.reply(identity, req_id, True, {
            "client_id": info.id if info else 0, "epoch": self.owner.epoch, "seq": seq,
            "state": state, "heartbeat": self.heartbeat, "liveness": self.liveness,
            "pong_interval": self.pong_interval,
            "pub": self.pub_endpoints})
        if info is not None:
            self.owner.hub_event("client_joined", info.as_dict())

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
            token = frame[1 + len(JOIN_PREFIX):]
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
        # announcing a seq still in the outbox would make every client resync.
        seq, state = self._sent
        self.guard.check()
        self._pub.send(encode(Kind.HEARTBEAT, self.owner.epoch, seq, state, self.heartbeat),
                       zmq.NOBLOCK)
        now = time.monotonic()
        for token, (identity, req_id, since) in list(self._pending_hello.items()):
            if now - since > JOIN_TIMEOUT:
                # Its subscription never showed: answer anyway; the client's gap
                # check covers what it may miss.
                del self._pending_hello[token]
                self._welcome(identity, req_id, self.registry.get(identity))
        limit = now - self.pong_interval * self.liveness
        for info in self.registry.expired(limit):
            if self.registry.remove(info.identity):
                log.warning("%s lost: silent for %.1fs", info.label(), now - info.last_seen)
                self.owner.hub_event("client_lost", info.as_dict(now))

    def statistics(self) -> dict[str, Any]:
        """Counters of requests, acks and rejected input, and the bound endpoints."""
        return {"counters": dict(self.stats), "rundir": self.guard.statistics(),
                "pub": self.pub_endpoints,
                "ctl": self.ctl_endpoints, "clients": len(self.registry.clients()),
                "curve": self._curve.statistics() if self._curve is not None else None}

