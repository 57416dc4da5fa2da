"""The hub's answering side: what it does with each client message and each request.

::

    [busd-hub] (this runs on the hub thread only; busd.master.hub adds the sockets)
      ROUTER frame, decoded --> dispatch
        HELLO    --> Registry.register --(its join subscription shows)--> welcome, ClientChange
        REQUEST  --> ping, snapshot, replay, clients: answered here
                     status, workers: the newest Board, live parts laid over it
                                      (StatusWanted: a fresh one if it comes within 10 ms)
                     anything else: Request --owner.post--> [busd-commands] --SendTo--> reply
        ACK, PONG --> Registry (an ack goes on to the watches of it: busd.master.acks)
        BYE      --> Registry.remove, ClientChange
      Outbox: ExcusePid, ForgetPid, AddStateHook, WatchAcks, Unwatch, StatsAsked, NewBoard
      after each change, before anything leaves: HubViews.publish(HubView) --> other threads

Only the hub thread changes the registry; every other thread reads the
views it publishes or asks it by message.  A view is published before any
reply, post, ack news or answer leaves the hub, so whoever hears of a
change finds it in the newest view.
"""

from __future__ import annotations

import collections
import logging
import os
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from busd.core.auth import NEEDS_FULL_KEY, RefusalLog, Role
from busd.core.endpoints import CTL_HWM, Outbox
from busd.core.errors import ProtocolError
from busd.core.wire import (
    ErrorCode,
    Kind,
    Message,
    batch_frames,
    encode,
    error_to_wire,
    pid_namespace,
    wire_error,
)
from busd.master.backlog import REPLAY_SLACK, Published, Replies
from busd.master.board import Board, live_status, live_workers
from busd.master.clients import NOT_JOINED, ClientInfo, bye_reason, hello_fields
from busd.master.fdbudget import FdGate
from busd.master.hubmsg import (
    AddStateHook,
    ClientChange,
    ExcusePid,
    ForgetPid,
    HubMessage,
    HubOwner,
    NewBoard,
    Request,
    StatsAsked,
    StatusWanted,
    Unwatch,
    WatchAcks,
)
from busd.master.hubview import HubStats, HubView, HubViews, UnreadStats
from busd.master.pidwatch import PidWatch
from busd.master.registry import Registry
from busd.master.replay import ReplayWindow

#: The hub's logger: this is part of the hub (its log lines keep their name).
log = logging.getLogger("busd.master.hub")

#: Bad input: log the first few of each kind, then one in this many.
COMPLAINT_EVERY = 1000
#: Requests the hub answers itself, never queued behind a command.
HUB_COMMANDS = frozenset({"ping", "snapshot", "replay", "clients"})
#: Requests answered from the board: a fresh one if it comes within BOARD_WAIT.
BOARD_COMMANDS = frozenset({"status", "workers"})
#: How long a status request waits for a fresh board before the last one answers it.
BOARD_WAIT = 0.01
#: Most outbox items (a Publish holds at most PUBLISH_BATCH frames) sent per wake-up.
OUTBOX_LIMIT = 10_000


@dataclass(frozen=True)
class Drain:
    """The closing: the final seq every client must reach, by when, then how to close."""

    seq: int
    deadline: float
    started: float
    flush: float


class Desk:
    """Everything the hub does but socket I/O: its clients, its answers, its board."""

    # The sockets' side, made by busd.master.hub.Hub.
    outbox: Outbox[HubMessage]
    replies: Replies
    published: Published
    fdgate: FdGate
    pub_endpoints: list[str]
    _pids: PidWatch

    def __init__(
        self,
        owner: HubOwner,
        heartbeat: float,
        liveness: int,
        pong_interval: float,
        window: ReplayWindow,
    ) -> None:
        self.owner = owner
        self.epoch = owner.epoch
        self.pid = os.getpid()
        self.pidns = pid_namespace()
        self.registry = Registry()
        self.window = window
        self.heartbeat = heartbeat
        self.liveness = liveness
        #: How often clients answer; they are lost after ``liveness`` of these.
        self.pong_interval = pong_interval
        #: The hub thread's own counters; other threads read the views' copy.
        self.stats: collections.Counter[str] = collections.Counter()
        #: What other threads read: the clients and counters, after each change.
        self.views = HubViews()
        self._board = Board()
        self._board_asked = False
        self._board_waiters: list[tuple[float, bytes, int, str]] = []
        self._forbidden = RefusalLog("forbidden request from read-only key")
        #: The last seq sent on PUB, and the state it leaves clients in.
        self._sent: tuple[int, str] = (0, "STOPPED")
        #: Set once the closing message is sent: every live client must reach it.
        self._drain: Drain | None = None
        self._pending_hello: dict[bytes, tuple[bytes, int, float]] = {}
        self._joined_tokens: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        # Identities and tokens of clients that said BYE: never registered again.
        self._departed: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._ended: list[tuple[float, bytes]] = []

    # -- what the sockets' side provides -----------------------------------------------

    def _answer(self, identity: bytes, req_id: int, ok: bool, payload: Any) -> None:
        """Reply to request ``req_id`` of the client at ``identity``."""
        raise NotImplementedError

    def _send_queued(self) -> bool:
        """Send what other threads queued; True once the sockets are closed."""
        raise NotImplementedError

    def _statistics(self) -> HubStats:
        """The hub's statistics, made on its thread."""
        raise NotImplementedError

    # -- the views other threads read --------------------------------------------------

    def _flush_view(self) -> None:
        """Publish the clients if they changed, then the registry's news (ack news, state
        hooks): called before anything leaves the hub."""
        if self.registry.changed:
            self._publish_view()
        self.registry.deliver()

    def _publish_view(self) -> None:
        self.registry.changed = self.registry.stale = False
        counters = MappingProxyType(dict(self.stats))
        self.views.publish(HubView(self.registry.snapshot(), counters))

    def _refresh_view(self) -> None:
        """Publish a view if the clients or the counters changed, then the news (each wake-up)."""
        registry = self.registry
        if registry.changed or registry.stale or self.stats != self.views.current().counters:
            self._publish_view()
        self.registry.deliver()

    def _post(self, message: Request | ClientChange | StatusWanted) -> None:
        self._flush_view()
        self.owner.post(message)

    def _take(self, item: HubMessage) -> None:
        """Act on one request of another thread (publishes, replies and closes aside)."""
        if type(item) is NewBoard:
            self._board, self._board_asked = item.board, False
            self._answer_board_waiters(None)
        elif type(item) is ExcusePid:
            excused = {pid: self.registry.excuse_pid(pid) for pid in item.pids}
            self._flush_view()
            item.answer.set_result(excused)
        elif type(item) is ForgetPid:
            forgotten = {pid: self.registry.remove_pid(pid) for pid in item.pids}
            self._flush_view()
            item.answer.set_result(forgotten)
        elif type(item) is WatchAcks:
            self.registry.watch(item.seqs, item.expected, item.sink)
            self._flush_view()
        elif type(item) is Unwatch:
            self.registry.unwatch(item.sink)
        elif type(item) is AddStateHook:
            self.registry.state_hooks.append(item.hook)
        elif type(item) is StatsAsked:
            self._flush_view()
            item.answer.set_result(self._statistics())

    # -- what clients send ---------------------------------------------------------------

    def _complain(self, code: str, message: str) -> None:
        self.stats[code] += 1
        count = self.stats[code]
        if count <= 5 or count % COMPLAINT_EVERY == 0:
            log.warning("%s (%s #%d)", message, code, count)

    def _dispatch(
        self,
        identity: bytes,
        msg: Message,
        role: Role = Role.FULL,
        peer: str = "local",
        size: int = 0,
    ) -> None:
        """Act on one message from a client (``size``: its frame's, if known)."""
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
            self.registry.record_ack(identity, body, size)
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
            self._post(ClientChange(event, {**info.as_dict(), "reason": reason}))

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
            self._post(StatusWanted())
        elif self._drain is not None:  # the command thread has ended
            self._answer(
                identity,
                req_id,
                False,
                error_to_wire(wire_error(ErrorCode.ILLEGAL_TRANSITION, "the master is exiting")),
            )
        else:
            self._post(Request(identity, req_id, body))

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
                answer["counters"] = dict(self.stats)  # the hub's own, as of now
                answer["replay"] = self.window.statistics().as_dict()
                answer["unread"] = self._unread().as_dict()
                answer["fds"] = self.fdgate.statistics()
            self._answer(identity, req_id, True, answer)

    def _unread(self) -> UnreadStats:
        return UnreadStats(self.replies.statistics(), self.published.statistics())

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
            "frames": batch_frames(self.epoch, part.first, part.frames, mixed=True),
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
            self._post(ClientChange("client_joined", info.as_dict()))


def reply_frame(req_id: int, ok: bool, payload: Any) -> bytes:
    """The REPLY to request ``req_id`` (an error if ``payload`` cannot be encoded)."""
    try:
        return encode(Kind.REPLY, req_id, ok, payload)
    except ProtocolError as exc:
        return encode(Kind.REPLY, req_id, False, error_to_wire(exc))
