"""A client's sequenced stream: in-order, exactly-once delivery, with no sockets and no threads.

The link thread (``busd.client.link.thread``) owns the sockets; it feeds a
:class:`Stream` what it reads and performs the actions the stream returns::

    link thread                      Stream (this module)
    -----------                      --------------------
    join()                      -->  [SendHello(subscribe=True)]
    frames read on SUB          -->  receive(msgs, now)     -> [Deliver, AskReplay, Heartbeat, ...]
    HELLO reply (a snapshot)    -->  welcome(...)           -> [Synced, Deliver, AskReplay, ...]
    replay reply                -->  replayed(req_id, part) -> [CountLost, Deliver, AskStateCheck]
    snapshot reply (a check)    -->  state_checked(seq, st) -> [Deliver, Synced]
    its timers                  -->  tick(now)              -> [AskReplay] (asked again)
    the master lost, BYE sent   -->  master_lost(), leave()

Sequencing is docs/PROTOCOL.md sections 7 and 8: a gap (or a heartbeat
announcing a newer seq) is repaired from the master's replay window before
anything newer is delivered; what the window no longer holds is counted
lost, exactly, and the state is then checked; a new epoch makes the client
join again.  Time only enters as ``now`` (seconds, any monotonic clock), so
tests drive every transition without waiting.

States, and who moves them (``TRANSITIONS`` is the table; ``_enter`` checks it)::

            join()              welcome                gap (a frame or a heartbeat ahead)
      IDLE -------> JOINING ------------> LIVE ------------------------> REPAIRING
       ^               |                  |  ^<------ repair done --------+  |
       +-first HELLO --+                  |  |                              |
         refused busy     new epoch,      |  | welcome (REPAIRING if a      |
                          unknown_client  v  | repair is still out)         |
                                       REJOINING <--------------------------+
                                          |  ^
                      master_lost()       v  | heard again, or a new epoch
      (from every state) -------------->  LOST   (waiting for the master)
                                          |
                                          +--welcome--> LIVE | REPAIRING

A BATCH arrives as one :class:`busd.core.views.BatchMsg` (PUBLISH messages
``seq`` to ``last``, not decoded): in order on the fast path it is handed
over whole, as one item; anywhere else (a gap, a repair, a join, a
duplicate) it is decoded and taken message by message.

A welcome is taken in any state (a late one too: the master answered a
HELLO this side gave up on), and a refused first HELLO goes back to IDLE.
A repair asked before a HELLO or a loss is still in flight in REJOINING or
LOST: its answer is applied there too (it does not change the state).  In
JOINING and REJOINING every frame (heartbeats aside) is buffered until the
welcome.  Leaving (BYE) is a fact, not a state: after it no HELLO is sent
and another epoch's frames are ignored, while the current epoch's are still
delivered in order.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Sequence

from busd.client.link.streamtypes import (
    BUSY_RETRY,
    JOIN_BUFFER,
    REPAIR_RETRY,
    TRANSITIONS,
    Action,
    AskReplay,
    AskStateCheck,
    BadTransition,
    Closing,
    CountLost,
    Deliver,
    Heartbeat,
    Repair,
    ReplayAnswer,
    ReplayBusy,
    ReplayFailed,
    ReplayPart,
    SendHello,
    StreamState,
    Synced,
)
from busd.core.errors import ProtocolError
from busd.core.views import (
    BatchMsg,
    Broadcast,
    EventMsg,
    HeartbeatMsg,
    PublishMsg,
    StateMsg,
    batch_views,
)
from busd.core.wire import CLOSING_EVENT

__all__ = [
    "BUSY_RETRY",
    "JOIN_BUFFER",
    "REPAIR_RETRY",
    "TRANSITIONS",
    "Action",
    "AskReplay",
    "AskStateCheck",
    "BadTransition",
    "Closing",
    "CountLost",
    "Deliver",
    "Heartbeat",
    "Repair",
    "ReplayAnswer",
    "ReplayBusy",
    "ReplayFailed",
    "ReplayPart",
    "SendHello",
    "Stream",
    "StreamState",
    "Synced",
]

S = StreamState


class Stream:
    """The sequencing of one client: feed it what arrives, perform what it returns."""

    def __init__(
        self,
        next_id: Callable[[], int],
        wait_for_new_master: bool = False,
        log: logging.Logger | None = None,
        expand: Callable[[BatchMsg], list[Broadcast]] = batch_views,
    ) -> None:
        self._next_id = next_id
        #: Decodes a BATCH's messages, for the slow path (a ProtocolError refuses it).
        self._expand = expand
        self.wait_for_new_master = wait_for_new_master
        self._log = log or logging.getLogger(__name__)
        self.state = S.IDLE
        self.epoch = 0
        self.seq = 0
        #: Messages delivered in order (replayed ones included).
        self.received = 0
        self.stats: collections.Counter[str] = collections.Counter()
        #: Welcomed at least once.
        self.joined = False
        #: BYE was sent: no HELLO from now on.
        self.left = False
        #: The master refused a HELLO: hearing it again is no reason to join again.
        self.refused = False
        #: The master's closing message arrived (in order): its end is no loss.
        self.closed = False
        self.repair: Repair | None = None
        self._held: collections.deque[Broadcast] = collections.deque()
        self._buffer: collections.deque[Broadcast] = collections.deque()
        self._check: tuple[int, str] | None = None
        self._check_asked = False
        self._missed_since_check = 0
        self._last_state_seq = 0
        self._batch: list[Broadcast] = []
        self._out: list[Action] = []

    # -- the choke point ------------------------------------------------------------

    def _enter(self, new: StreamState) -> None:
        old = self.state
        if new is old:
            return
        if new not in TRANSITIONS[old]:
            raise BadTransition(f"stream: {old.name} -> {new.name} is not a transition")
        if new in (S.JOINING, S.REJOINING) and self.left:
            raise BadTransition(f"stream: {new.name} after BYE")
        self._log.debug(
            "stream: %s -> %s (epoch %d, seq %d)", old.name, new.name, self.epoch, self.seq
        )
        self.state = new

    def _actions(self) -> list[Action]:
        """Hand over the batch and everything asked for since the last event."""
        if self._batch:
            self._out.append(Deliver(self._batch))
            self._batch = []
        out, self._out = self._out, []
        return out

    # -- events -----------------------------------------------------------------------

    def join(self) -> list[Action]:
        """The first HELLO (the link says it as it starts)."""
        self._enter(S.JOINING)
        self._out.append(SendHello(subscribe=True))
        return self._actions()

    def receive(self, msgs: Sequence[Broadcast], now: float) -> list[Action]:
        """Frames read from SUB, in arrival order (each a checked view)."""
        batch = self._batch
        fast = self._fast()
        for msg in msgs:
            # The common case, inline: the next message of our epoch, in order.
            kind = type(msg)
            if (
                fast
                and msg.seq == self.seq + 1
                and msg.epoch == self.epoch
                and kind is not HeartbeatMsg
            ):
                if kind is BatchMsg:  # PUBLISHes only: handed over whole, still encoded
                    self.received += msg.last - self.seq  # type: ignore[union-attr]
                    self.seq = msg.last  # type: ignore[union-attr]
                else:
                    self.seq = msg.seq
                    self.received += 1
                    if kind is not PublishMsg:
                        self._noted(msg)
                batch.append(msg)
            else:
                self._one(msg, now)
                # It may have handed the batch over (a state check): use the new one.
                batch, fast = self._batch, self._fast()
        self._apply_check()
        return self._actions()

    def welcome(self, epoch: int, seq: int, state: str, closing: bool, now: float) -> list[Action]:
        """The master answered a HELLO with its snapshot ``(epoch, seq, state)``."""
        same_epoch = epoch == self.epoch and self.joined
        self.epoch = epoch
        buffered = [m for m in self._buffer if m.epoch == epoch]
        self._buffer.clear()
        if not same_epoch:
            # A first join, or a new master: start from its snapshot.
            self.repair = None
            self._held.clear()
            self.seq = self._last_state_seq = seq
            self._control(Synced(epoch, seq, state, 0))
        self.joined = True
        self._enter(S.LIVE if self.repair is None else S.REPAIRING)
        # Joined again in the same epoch: what we missed meanwhile is repaired,
        # then the state is mirrored again (a lost master made us stop, maybe).
        for m in buffered:
            self._one(m, now)
        if same_epoch:
            if seq > self.seq and self.repair is None:
                self._start_repair(self.seq + 1, seq, now)
            self._check = (seq, state)
            self._apply_check()
        elif closing:  # joined a master that is closing: nothing more comes
            self._closing(seq)
        return self._actions()

    def refused_hello(self, first_busy: bool) -> list[Action]:
        """The master refused a HELLO; ``first_busy``: the first one, for being full."""
        self.refused = True
        if first_busy and not self.joined:
            self._enter(S.IDLE)
        return self._actions()

    def expects(self, req_id: int) -> bool:
        """True if ``req_id`` is the replay ask now in flight (any other is stale)."""
        return self.repair is not None and req_id == self.repair.req_id

    def replayed(self, req_id: int, answer: ReplayAnswer, now: float) -> list[Action]:
        """The answer to a replay ask; one to an ask no longer in flight is ignored."""
        repair = self.repair
        if repair is None or req_id != repair.req_id:
            self.stats["stale_replies"] += 1
            return self._actions()
        last = repair.last
        if type(answer) is ReplayBusy:
            # Not a loss: the master still holds our last answer. Ask again shortly.
            self.stats["repair_busy"] += 1
            repair.asked = now - REPAIR_RETRY + BUSY_RETRY
            return self._actions()
        if type(answer) is ReplayPart:
            part = answer
        else:
            part = ReplayPart(first=last + 1, frames=(), lost=last + 1 - repair.next, more=False)
        if part.lost:
            self._lose(part.lost, part.first)
        for msg in part.frames:
            if msg.epoch == self.epoch and msg.seq == self.seq + 1:
                self.stats["repaired"] += 1
                self._deliver(msg)
        if part.more and self.seq < last:
            repair.next = self.seq + 1
            self._ask_replay(now)
            return self._actions()
        self.repair = None
        if self.state is S.REPAIRING:
            self._enter(S.LIVE)
        if self.seq < last:  # the window ended before our range did: gone too
            self._lose(last - self.seq, last + 1)
        held, self._held = self._held, collections.deque()
        for m in held:
            self._one(m, now)
        self._apply_check()
        return self._actions()

    def state_checked(self, seq: int | None, state: str = "") -> list[Action]:
        """The answer to a state check: ``(seq, state)``, or None if the master refused it."""
        self._check_asked = False
        if seq is not None:
            self._check = (seq, state)
            self._apply_check()
        return self._actions()

    def tick(self, now: float) -> list[Action]:
        """Time passed: a repair unanswered for REPAIR_RETRY seconds is asked again."""
        if self.repair is not None and now - self.repair.asked > REPAIR_RETRY:
            self.stats["repair_retries"] += 1
            self._ask_replay(now)
        return self._actions()

    def deadline(self) -> float | None:
        """When :meth:`tick` next has something to do (None: nothing is waited for)."""
        return None if self.repair is None else self.repair.asked + REPAIR_RETRY

    def unknown_client(self) -> list[Action]:
        """The master does not know this client (it counted it lost): join again."""
        if self.joined and not self.left and not self.closed:
            self._log.info("the master does not know this client; joining again")
            self._rejoin(subscribe=False)
        return self._actions()

    def master_lost(self) -> list[Action]:
        """The link counted the master lost (silence, its process ended, a refusal)."""
        self._enter(S.LOST)
        return self._actions()

    def hello_overdue(self) -> list[Action]:
        """A HELLO sent while the master was lost went unanswered: say it again, if still due."""
        if self.state is S.REJOINING:
            self._enter(S.LOST)
            self._heard_again()
        return self._actions()

    def leave(self) -> None:
        """BYE was sent: never join again."""
        self.left = True

    @property
    def held(self) -> int:
        """Messages held behind a repair."""
        return len(self._held)

    # -- the sequencing --------------------------------------------------------------

    def _fast(self) -> bool:
        """True when the next in-order message needs nothing but delivering."""
        return self.state is S.LIVE and self._check is None

    def _one(self, msg: Broadcast, now: float) -> None:
        """One frame, as docs/PROTOCOL.md section 8 says."""
        if type(msg) is BatchMsg:
            # Off the fast path (a gap, a repair, a join...): message by message.
            try:
                views = self._expand(msg)
            except ProtocolError as exc:
                # Dropped whole; its seqs are repaired as any gap (or counted lost).
                self.stats["bad_batches"] += 1
                self._log.warning("dropped a BATCH from the master: %s", exc)
                return
            for view in views:
                self._one(view, now)
            return
        if self.state in (S.JOINING, S.REJOINING):
            self._hold(msg)
            return
        epoch, seq = msg.epoch, msg.seq
        if epoch == self.epoch and self.state is S.LOST and self._heard_again():
            self._hold(msg)
            return
        if epoch != self.epoch:
            if (self.state is S.LOST and not self.wait_for_new_master) or self.left:
                return
            self._log.info("a new master incarnation (epoch %d); joining it", epoch)
            self.stats["new_epochs"] += 1
            self._rejoin(subscribe=True)
            self._hold(msg)
            return
        if type(msg) is HeartbeatMsg:
            self._out.append(Heartbeat())
            if seq > self.seq and self.repair is None:
                self._start_repair(self.seq + 1, seq, now)
            return
        if self.repair is not None:
            self._held.append(msg)
            return
        if seq <= self.seq:
            return
        if seq != self.seq + 1:
            self._start_repair(self.seq + 1, seq - 1, now)
            self._held.append(msg)
            return
        self._deliver(msg)

    def _deliver(self, msg: Broadcast) -> None:
        self.seq = msg.seq
        self.received += 1
        if type(msg) is not PublishMsg:
            self._noted(msg)
        self._batch.append(msg)
        if self._check is not None and self.seq >= self._check[0]:
            self._apply_check()  # the checked state goes right after its seq

    def _noted(self, msg: Broadcast) -> None:
        """A STATE or EVENT delivered in order: remember what the stream says of the master."""
        if type(msg) is StateMsg:
            self._last_state_seq = msg.seq
        elif type(msg) is EventMsg and msg.name == CLOSING_EVENT:
            self._closing(msg.seq)

    def _closing(self, seq: int) -> None:
        if not self.closed:
            self.closed = True
            self._out.append(Closing(seq))

    def _control(self, item: Synced) -> None:
        """A snapshot or a loss: after what came before it."""
        if self._batch:
            self._out.append(Deliver(self._batch))
            self._batch = []
        self._out.append(item)

    def _hold(self, msg: Broadcast) -> None:
        if type(msg) is HeartbeatMsg:
            return
        self._buffer.append(msg)
        if len(self._buffer) > JOIN_BUFFER:
            self._buffer.popleft()

    # -- repairs, losses, state checks -------------------------------------------

    def _start_repair(self, first: int, last: int, now: float) -> None:
        """Ask the replay window for ``first..last``; hold newer messages meanwhile."""
        self.stats["gaps"] += 1
        self.repair = Repair(first, last)
        if self.state is S.LIVE:
            self._enter(S.REPAIRING)
        self._ask_replay(now)

    def _ask_replay(self, now: float) -> None:
        repair = self.repair
        assert repair is not None
        repair.asked = now
        repair.req_id = self._next_id()
        self._out.append(AskReplay(self.epoch, repair.next, repair.last, repair.req_id))

    def _lose(self, count: int, next_seq: int) -> None:
        """``count`` messages before ``next_seq`` are gone for good: count them, check state."""
        self._missed_since_check += count
        self._out.append(CountLost(count, next_seq))
        self.seq = max(self.seq, next_seq - 1)
        if not self._check_asked:
            self._check_asked = True
            self.stats["resyncs"] += 1
            self._out.append(AskStateCheck())

    def _apply_check(self) -> None:
        """Deliver a pending state check once the stream has reached its seq."""
        if self._check is None or self.seq < self._check[0]:
            return
        seq, state = self._check
        self._check = None
        missed, self._missed_since_check = self._missed_since_check, 0
        # A STATE delivered after the checked seq is newer than the check's state.
        fresh = state if self._last_state_seq <= seq else None
        self._control(Synced(self.epoch, seq, fresh, missed))

    # -- joining again -------------------------------------------------------------

    def _rejoin(self, subscribe: bool) -> None:
        if self.state in (S.JOINING, S.REJOINING) or self.left:
            return
        self.stats["rejoins"] += 1
        self._enter(S.REJOINING if self.joined else S.JOINING)
        self._out.append(SendHello(subscribe))

    def _heard_again(self) -> bool:
        """A master counted lost speaks again, same epoch: a partition healed.

        Waiting for it (``on_master_lost="wait"``), join again: the welcome
        repairs what was published meanwhile from the replay window (counting
        exactly what it no longer holds) and hands over the state to mirror.
        This side may have noticed the silence first, while the master still
        counts this client joined: then nothing else would make it rejoin.
        True while that HELLO is unanswered (what comes meanwhile is buffered).
        """
        if (
            self.wait_for_new_master
            and self.joined
            and not self.left
            and not self.refused
            and not self.closed
        ):
            if self.state is S.LOST:
                self._log.info(
                    "the master answers again (epoch %d, after seq %d); joining again",
                    self.epoch,
                    self.seq,
                )
            self._rejoin(subscribe=False)
        return self.state is S.REJOINING
