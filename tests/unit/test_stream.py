"""The client's sequenced stream, with no sockets and no threads.

Plain tests of each transition first (in order, a gap and its repair, a
duplicate, a loss older than the window, a stale replay reply, busy, a new
epoch, a lost master heard again, leaving), then a hypothesis state machine:
a master publishing seq 1..N in one or two epochs, alone or in BATCH frames
(really encoded, and read with ``decode_frames`` as the link reads them), a
network that reorders, duplicates and drops frames (a BATCH is lost whole),
and a replay window that answers asks in parts, as BATCH frames, with
losses (a lost BATCH may be partly older than the window), ``busy`` or
errors.  Whatever happens, what the stream delivers
is strictly increasing with no duplicates, and delivered + counted lost is
exactly everything up to the seq it has resolved; once the network settles,
that is everything the master published.

Deterministic in CI (``derandomize``); ``BUSD_MODEL_EXAMPLES`` asks for more.
"""

from __future__ import annotations

import collections
import itertools
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from busd.client.link.stream import BUSY_RETRY, REPAIR_RETRY, TRANSITIONS, Stream
from busd.client.link.streamtypes import (
    Action,
    AskReplay,
    AskStateCheck,
    BadTransition,
    Closing,
    CountLost,
    Deliver,
    Heartbeat,
    ReplayBusy,
    ReplayFailed,
    ReplayPart,
    SendHello,
    StreamState,
    Synced,
)
from busd.core.views import BatchMsg, Broadcast, decode_frames, decode_view, read_frame
from busd.core.wire import CLOSING_EVENT, Kind, batch_frames, encode, encode_batch, encode_publish

S = StreamState
E1, E2 = 104705332197348, 7
EXAMPLES = int(os.environ.get("BUSD_MODEL_EXAMPLES", "100"))


def frame(kind: Kind, *items: Any) -> Broadcast:
    """A message as the link hands it to the stream: encoded, then decoded."""
    return decode_view(encode(kind, *items))


def pub(epoch: int, seq: int) -> Broadcast:
    return frame(Kind.PUBLISH, epoch, seq, "ch", [seq], {}, False)


def state(epoch: int, seq: int, name: str = "STARTED") -> Broadcast:
    return frame(Kind.STATE, epoch, seq, name)


def beat(epoch: int, seq: int) -> Broadcast:
    return frame(Kind.HEARTBEAT, epoch, seq, "STARTED", 1.0)


def closing(epoch: int, seq: int) -> Broadcast:
    return frame(Kind.EVENT, epoch, seq, CLOSING_EVENT, {"reason": "exit", "drain": 1.0})


def new_stream(wait: bool = False) -> Stream:
    ids = itertools.count(3)
    return Stream(lambda: next(ids), wait_for_new_master=wait)


def joined(seq: int = 0, epoch: int = E1, wait: bool = False) -> Stream:
    stream = new_stream(wait)
    stream.join()
    stream.welcome(epoch, seq, "STARTED", False, 0.0)
    return stream


def seqs(actions: list[Action]) -> list[int]:
    """The seqs delivered, in order."""
    return [m.seq for a in actions if type(a) is Deliver for m in a.items]


def only(actions: list[Action], kind: type[Any]) -> list[Any]:
    return [a for a in actions if type(a) is kind]


def ask_of(actions: list[Action]) -> AskReplay:
    (ask,) = only(actions, AskReplay)
    return ask  # type: ignore[no-any-return]


# -- each transition -------------------------------------------------------------


def test_joining_buffers_until_the_welcome_and_skips_what_the_snapshot_holds() -> None:
    stream = new_stream()
    assert stream.join() == [SendHello(subscribe=True)]
    assert stream.receive([pub(E1, 1), beat(E1, 2), pub(E1, 2), pub(E1, 3)], 0.0) == []
    assert stream.state is S.JOINING

    actions = stream.welcome(E1, 1, "STARTED", False, 0.0)

    assert actions[0] == Synced(E1, 1, "STARTED", 0)
    assert seqs(actions) == [2, 3]
    assert (stream.state, stream.seq, stream.received) == (S.LIVE, 3, 2)


def test_in_order_frames_are_delivered_in_one_batch_and_duplicates_ignored() -> None:
    stream = joined()

    assert stream.receive([pub(E1, 1), state(E1, 2), pub(E1, 3)], 0.0) == [
        Deliver([pub(E1, 1), state(E1, 2), pub(E1, 3)])
    ]
    assert stream.receive([pub(E1, 2), pub(E1, 3), pub(E1, 1)], 0.0) == []
    assert (stream.state, stream.seq) == (S.LIVE, 3)


def test_a_gap_is_repaired_before_anything_newer_is_delivered() -> None:
    stream = joined()

    actions = stream.receive([pub(E1, 1), pub(E1, 3), pub(E1, 4)], 10.0)
    ask = ask_of(actions)
    assert seqs(actions) == [1]
    assert (ask.epoch, ask.first, ask.last) == (E1, 2, 2)
    assert (stream.state, stream.held) == (S.REPAIRING, 2)
    assert stream.deadline() == 10.0 + REPAIR_RETRY
    assert stream.receive([pub(E1, 5), pub(E1, 2)], 10.0) == []  # held, in arrival order

    actions = stream.replayed(ask.req_id, ReplayPart(2, [pub(E1, 2)], 0, False), 10.5)

    assert seqs(actions) == [2, 3, 4, 5]
    assert only(actions, CountLost) == []
    assert (stream.state, stream.seq, stream.held, stream.deadline()) == (S.LIVE, 5, 0, None)
    assert stream.stats["repaired"] == 1


def test_a_heartbeat_announcing_a_newer_seq_starts_a_repair() -> None:
    stream = joined(seq=4)

    actions = stream.receive([beat(E1, 6)], 0.0)

    assert only(actions, Heartbeat) == [Heartbeat()]
    assert (ask_of(actions).first, ask_of(actions).last) == (5, 6)
    assert stream.state is S.REPAIRING


def test_a_repair_in_parts_asks_again_from_the_next_seq() -> None:
    stream = joined()
    first = ask_of(stream.receive([beat(E1, 4)], 0.0))

    actions = stream.replayed(first.req_id, ReplayPart(1, [pub(E1, 1), pub(E1, 2)], 0, True), 0.0)

    again = ask_of(actions)
    assert seqs(actions) == [1, 2]
    assert (again.first, again.last) == (3, 4)
    assert again.req_id != first.req_id
    actions = stream.replayed(again.req_id, ReplayPart(3, [pub(E1, 3), pub(E1, 4)], 0, False), 0)
    assert seqs(actions) == [3, 4]
    assert stream.state is S.LIVE


def test_what_left_the_window_is_counted_exactly_and_the_state_checked() -> None:
    stream = joined()
    ask = ask_of(stream.receive([pub(E1, 6)], 0.0))  # 1..5 missing

    actions = stream.replayed(ask.req_id, ReplayPart(4, [pub(E1, 4), pub(E1, 5)], 3, False), 0)

    assert only(actions, CountLost) == [CountLost(3, 4)]
    assert only(actions, AskStateCheck) == [AskStateCheck()]
    assert seqs(actions) == [4, 5, 6]
    # The check: its state goes right after its seq, with the count since the last one.
    assert stream.state_checked(6, "STOPPED") == [Synced(E1, 6, "STOPPED", 3)]


def test_replayed_frames_that_do_not_follow_on_are_skipped() -> None:
    stream = joined(seq=1)
    ask = ask_of(stream.receive([pub(E1, 3)], 0.0))
    stray = [pub(E1, 1), pub(E2, 2), pub(E1, 2), pub(E1, 2)]

    actions = stream.replayed(ask.req_id, ReplayPart(2, stray, 0, False), 0.0)

    assert actions == [Deliver([pub(E1, 2), pub(E1, 3)])]


def test_a_range_the_window_ends_before_is_lost_too() -> None:
    stream = joined()
    ask = ask_of(stream.receive([beat(E1, 4)], 0.0))

    actions = stream.replayed(ask.req_id, ReplayPart(1, [pub(E1, 1)], 0, False), 0.0)

    assert seqs(actions) == [1]
    assert only(actions, CountLost) == [CountLost(3, 5)]
    assert stream.seq == 4


def test_a_failed_replay_loses_the_whole_range_and_one_check_covers_two_losses() -> None:
    stream = joined()
    ask = ask_of(stream.receive([pub(E1, 3)], 0.0))
    actions = stream.replayed(ask.req_id, ReplayFailed(), 0.0)
    assert only(actions, CountLost) == [CountLost(2, 3)]
    assert seqs(actions) == [3]

    ask = ask_of(stream.receive([pub(E1, 6)], 0.0))
    actions = stream.replayed(ask.req_id, ReplayFailed(), 0.0)
    assert only(actions, CountLost) == [CountLost(2, 6)]
    assert only(actions, AskStateCheck) == []  # the first check is still out

    assert stream.state_checked(None) == []  # refused: the next loss asks again
    assert stream.state_checked(6, "STARTED") == [Synced(E1, 6, "STARTED", 4)]


def test_a_state_newer_than_the_check_wins_over_the_check() -> None:
    stream = joined()
    ask = ask_of(stream.receive([state(E1, 3, "STOPPING")], 0.0))
    stream.replayed(ask.req_id, ReplayFailed(), 0.0)

    assert stream.state_checked(2, "STARTED") == [Synced(E1, 2, None, 2)]


def test_a_stale_replay_reply_is_ignored_after_the_ask_was_repeated() -> None:
    stream = joined()
    old = ask_of(stream.receive([pub(E1, 3)], 0.0))
    assert stream.tick(REPAIR_RETRY) == []  # not overdue yet
    new = ask_of(stream.tick(REPAIR_RETRY + 0.1))
    assert (new.first, new.last) == (1, 2)
    assert new.req_id != old.req_id
    assert not stream.expects(old.req_id)
    assert stream.expects(new.req_id)

    assert stream.replayed(old.req_id, ReplayPart(1, [], 2, False), 6.0) == []
    assert (stream.seq, stream.state) == (0, S.REPAIRING)
    actions = stream.replayed(new.req_id, ReplayPart(1, [pub(E1, 1), pub(E1, 2)], 0, False), 6)
    assert seqs(actions) == [1, 2, 3]
    assert stream.stats["repair_retries"] == 1


def test_busy_is_no_loss_and_asks_again_shortly() -> None:
    stream = joined()
    ask = ask_of(stream.receive([pub(E1, 2)], 100.0))

    assert stream.replayed(ask.req_id, ReplayBusy(), 100.0) == []
    assert stream.deadline() == pytest.approx(100.0 + BUSY_RETRY)
    again = ask_of(stream.tick(100.0 + 2 * BUSY_RETRY))
    assert (again.first, again.last) == (1, 1)
    assert stream.stats["repair_busy"] == 1


def test_a_new_epoch_joins_again_and_resyncs_from_its_snapshot() -> None:
    stream = joined()
    stream.receive([pub(E1, 1), pub(E1, 3)], 0.0)  # a repair of E1 in flight

    assert stream.receive([pub(E2, 1), pub(E2, 2)], 0.0) == [SendHello(subscribe=True)]
    assert stream.state is S.REJOINING
    actions = stream.welcome(E2, 1, "STOPPED", False, 0.0)

    assert actions == [Synced(E2, 1, "STOPPED", 0), Deliver([pub(E2, 2)])]
    assert (stream.epoch, stream.seq, stream.repair, stream.held) == (E2, 2, None, 0)
    assert stream.stats["new_epochs"] == 1


def test_a_welcome_in_the_same_epoch_repairs_then_checks_the_state() -> None:
    stream = joined(seq=2)
    assert stream.unknown_client() == [SendHello(subscribe=False)]
    stream.receive([pub(E1, 4)], 0.0)

    actions = stream.welcome(E1, 4, "STARTED", False, 0.0)

    ask = ask_of(actions)
    assert (ask.first, ask.last, stream.state) == (3, 3, S.REPAIRING)
    actions = stream.replayed(ask.req_id, ReplayPart(3, [pub(E1, 3)], 0, False), 0.0)
    assert actions == [Deliver([pub(E1, 3), pub(E1, 4)]), Synced(E1, 4, "STARTED", 0)]


def test_a_lost_master_heard_again_is_joined_again_when_waiting() -> None:
    stream = joined(seq=1, wait=True)
    stream.master_lost()

    assert stream.receive([pub(E1, 3)], 0.0) == [SendHello(subscribe=False)]
    assert stream.state is S.REJOINING
    # That HELLO went unanswered: it is said again.
    assert stream.hello_overdue() == [SendHello(subscribe=False)]
    actions = stream.welcome(E1, 3, "STARTED", False, 0.0)
    ask = ask_of(actions)
    assert (ask.first, ask.last) == (2, 2)
    actions = stream.replayed(ask.req_id, ReplayPart(2, [pub(E1, 2)], 0, False), 0.0)
    assert actions == [Deliver([pub(E1, 2), pub(E1, 3)]), Synced(E1, 3, "STARTED", 0)]


def test_a_lost_master_not_waited_for_still_delivers_its_epoch_and_ignores_others() -> None:
    stream = joined()
    stream.master_lost()

    assert stream.receive([pub(E2, 1)], 0.0) == []
    assert seqs(stream.receive([pub(E1, 1)], 0.0)) == [1]
    assert stream.state is S.LOST


def test_after_bye_the_stream_never_joins_again_but_delivers_its_epoch() -> None:
    stream = joined(wait=True)
    stream.leave()

    assert stream.receive([pub(E2, 1)], 0.0) == []
    assert stream.unknown_client() == []
    assert seqs(stream.receive([pub(E1, 1)], 0.0)) == [1]
    stream.master_lost()
    assert seqs(stream.receive([pub(E1, 2)], 0.0)) == [2]
    assert stream.state is S.LOST


def test_the_closing_message_is_noted_once() -> None:
    stream = joined(wait=True)

    actions = stream.receive([pub(E1, 1), closing(E1, 2)], 0.0)

    assert only(actions, Closing) == [Closing(2)]
    assert stream.closed
    stream.master_lost()
    assert stream.receive([pub(E1, 3)], 0.0) != [SendHello(subscribe=False)]  # no rejoin


def test_a_first_hello_refused_for_being_busy_goes_back_to_idle() -> None:
    stream = new_stream()
    stream.join()

    assert stream.refused_hello(first_busy=True) == []
    assert (stream.state, stream.refused) == (S.IDLE, True)


def test_a_move_outside_the_table_is_refused() -> None:
    stream = new_stream()
    assert S.REPAIRING not in TRANSITIONS[S.IDLE]
    with pytest.raises(BadTransition, match="IDLE -> REPAIRING"):
        stream._enter(S.REPAIRING)
    assert set(TRANSITIONS) == set(StreamState)


# -- the state machine: a master, a hostile network, a bounded window -------------

#: Frames the master's window keeps, and most frames per replay answer.
WINDOW = 4
PART = 3


def encoded(epoch: int, seq: int, publish: bool = False) -> bytes:
    """Message ``seq`` of the master as it encodes it: a PUBLISH, every fifth a STATE
    (unless ``publish``)."""
    if seq % 5 == 0 and not publish:
        return encode(Kind.STATE, epoch, seq, "STARTED")
    return encode_publish(epoch, seq, "ch", [seq], {}, False)


def on_the_wire(epoch: int, first: int, frames: list[bytes], cut: int) -> list[bytes]:
    """Frames numbered from ``first`` as the hub sends them: runs of ``cut`` as BATCH frames.

    The real encoder builds each BATCH from the frames as they are; a run of
    one goes alone, and so does a STATE (a BATCH holds PUBLISH messages only).
    """
    out, run, at = [], [], first
    for seq, frame in enumerate(frames, first):
        if frame[2] != Kind.PUBLISH:
            out += on_the_wire(epoch, at, run, cut) if run else []
            out.append(frame)
            run, at = [], seq + 1
        elif len(run) == cut:
            out.append(run[0] if len(run) == 1 else encode_batch(epoch, at, run))
            run, at = [frame], seq
        else:
            run.append(frame)
    if run:
        out.append(run[0] if len(run) == 1 else encode_batch(epoch, at, run))
    return out


def read(frames: list[bytes]) -> list[Broadcast]:
    """What the link hands the stream for frames read together: one item per frame, a
    BATCH read up to its header (a BatchMsg the stream expands only off its fast path)."""
    return [read_frame(frame) for frame in frames]


def seqs_of(msg: Broadcast) -> list[int]:
    """The seqs an item the stream delivered stands for (a BatchMsg: its whole range)."""
    return list(range(msg.seq, msg.last + 1)) if type(msg) is BatchMsg else [msg.seq]


def is_batch(frame: bytes) -> bool:
    return frame[:3] == b"\x95\x02\x05"


class NetworkMachine(RuleBasedStateMachine):
    """A master publishing in one or two epochs, alone or in BATCH frames, on a hostile network.

    Every frame is really encoded (``encode``, ``encode_batch``; replay answers
    through ``batch_frames``, as the master's desk) and read with
    ``decode_frames``, as the link does: the codec is in the loop.
    """

    def __init__(self) -> None:
        super().__init__()
        ids = itertools.count(3)
        self.stream = Stream(lambda: next(ids), wait_for_new_master=True)
        self.now = 0.0
        self.epoch = E1
        self.sent: list[bytes] = []  # the master's messages of its epoch, by seq
        self.flight: list[bytes] = []  # PUB frames on the wire (alone or BATCH), any epoch
        self.wire: list[bytes] = []  # every PUB frame sent, any epoch (old ones come again)
        self.asks: list[AskReplay] = []
        self.checks = 0
        self.hellos = 0
        self.lost_link = False
        self.delivered: dict[int, list[int]] = collections.defaultdict(list)
        self.lost: collections.Counter[int] = collections.Counter()
        self.base: dict[int, int] = {}
        self.perform(self.stream.join())

    def perform(self, actions: list[Action]) -> int:
        """Do what the stream asks; return how many messages it counted lost."""
        counted = 0
        for action in actions:
            if type(action) is Deliver:
                for msg in action.items:
                    assert msg.epoch == self.stream.epoch, "a message of another epoch delivered"
                    self.delivered[msg.epoch] += seqs_of(msg)
            elif type(action) is CountLost:
                assert action.count > 0
                counted += action.count
                self.lost[self.stream.epoch] += action.count
            elif type(action) is AskReplay:
                assert action.first <= action.last, action
                self.asks.append(action)
            elif type(action) is AskStateCheck:
                self.checks += 1
            elif type(action) is SendHello:
                self.hellos += 1
        return counted

    # -- the master and the network --

    @rule(n=st.integers(1, 6), cut=st.integers(1, 4), reach=st.booleans())
    def publish(self, n: int, cut: int, reach: bool) -> None:
        """``n`` messages go out, in runs of ``cut`` per BATCH frame (a run of one alone).

        Unless they ``reach`` the wire, a full queue drops them (a BATCH whole).
        """
        first = len(self.sent) + 1
        frames = [encoded(self.epoch, seq) for seq in range(first, first + n)]
        self.sent += frames
        out = on_the_wire(self.epoch, first, frames, cut)
        self.wire += out
        if reach:
            self.flight += out

    @rule(n=st.integers(WINDOW - 1, WINDOW + 2), reach=st.booleans())
    def burst(self, n: int, reach: bool) -> None:
        """One BATCH as long as the replay window, or longer: lost, part of it may leave it."""
        first = len(self.sent) + 1
        frames = [encoded(self.epoch, seq, publish=True) for seq in range(first, first + n)]
        self.sent += frames
        batch = encode_batch(self.epoch, first, frames)
        self.wire.append(batch)
        if reach:
            self.flight.append(batch)

    @rule(picks=st.lists(st.integers(0, 10**6), min_size=1, max_size=6))
    def arrive(self, picks: list[int]) -> None:
        """Some frames arrive, in any order, read in one go."""
        batch = [self.flight.pop(p % len(self.flight)) for p in picks if self.flight]
        self.perform(self.stream.receive(read(batch), self.now))

    @precondition(lambda self: self.flight)
    @rule(pick=st.integers(0, 10**6), how=st.sampled_from(["duplicate", "old", "drop"]))
    def mess(self, pick: int, how: str) -> None:
        """A frame arrives twice, an old one arrives again, or one is dropped."""
        if how == "drop":
            self.flight.pop(pick % len(self.flight))
            return
        pool = self.flight if how == "duplicate" else self.wire
        self.perform(self.stream.receive(read([pool[pick % len(pool)]]), self.now))

    @precondition(lambda self: any(map(is_batch, self.flight)))
    @rule(pick=st.integers(0, 10**6))
    def lose_batch(self, pick: int) -> None:
        """A BATCH frame is lost on the way: every message in it, none delivered."""
        batches = [i for i, frame in enumerate(self.flight) if is_batch(frame)]
        self.flight.pop(batches[pick % len(batches)])

    @rule()
    def heartbeat(self) -> None:
        beat = encode(Kind.HEARTBEAT, self.epoch, len(self.sent), "STARTED", 1.0)
        self.perform(self.stream.receive(read([beat]), self.now))

    @rule(dt=st.sampled_from([0.01, 1.0, REPAIR_RETRY + 0.5]))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        self.perform(self.stream.tick(self.now))

    # -- the master's answers --

    @precondition(lambda self: self.asks)
    @rule(
        pick=st.integers(0, 10**6),
        how=st.sampled_from(["part", "part", "part", "short", "busy", "error"]),
        size=st.integers(1, PART),
    )
    def answer_replay(self, pick: int, how: str, size: int) -> None:
        ask = self.asks.pop(pick % len(self.asks))
        answer: ReplayBusy | ReplayFailed | ReplayPart
        if how == "busy":
            answer = ReplayBusy()
        elif how == "error" or ask.epoch != self.epoch:
            answer = ReplayFailed()
        else:
            answer = self.window_slice(ask.first, ask.last, size)
            if how == "short":  # a window cut short (a master that restarted its window)
                answer = ReplayPart(answer.first, answer.frames, answer.lost, more=False)
        current, before = self.stream.expects(ask.req_id), self.stream.seq
        if current:
            assert ask.first == before + 1, "a repair not from the next seq"
        counted = self.perform(self.stream.replayed(ask.req_id, answer, self.now))
        # Exactly what the master said is gone, and only that: nothing it replayed.
        assert counted == (self.told_lost(ask, answer) if current else 0), (ask, answer)
        if current and type(answer) is ReplayPart:
            got = set(self.delivered[self.stream.epoch])
            assert all(f.seq in got for f in answer.frames), "a replayed frame not delivered"

    @staticmethod
    def told_lost(ask: AskReplay, answer: ReplayBusy | ReplayFailed | ReplayPart) -> int:
        if type(answer) is ReplayFailed:
            return ask.last + 1 - ask.first
        if type(answer) is ReplayPart:
            tail = 0 if answer.more else ask.last - (answer.first + len(answer.frames) - 1)
            return answer.lost + tail
        return 0

    def window_slice(self, first: int, last: int, size: int) -> ReplayPart:
        """What the master answers (ReplayWindow.slice, ``size`` frames at most), as it sends it.

        The frames go as the desk sends them (``batch_frames``: a run of
        several as one BATCH) and are read as the link reads them.
        """
        last = min(last, len(self.sent))
        oldest = max(1, len(self.sent) - WINDOW + 1)
        lost = max(0, min(last + 1, oldest) - first)
        start = min(max(first, oldest), last + 1)
        frames = self.sent[start - 1 : min(last, start + size - 1)]
        msgs = [
            m for f in batch_frames(self.epoch, start, frames, mixed=True) for m in decode_frames(f)
        ]
        assert [m.seq for m in msgs] == list(range(start, start + len(frames)))
        return ReplayPart(start, msgs, lost, start + len(frames) <= last)

    @precondition(lambda self: self.checks)
    @rule(refuse=st.booleans())
    def answer_check(self, refuse: bool) -> None:
        self.checks -= 1
        self.perform(
            self.stream.state_checked(None)
            if refuse
            else self.stream.state_checked(len(self.sent), "STARTED")
        )

    @precondition(lambda self: self.hellos)
    @rule()
    def answer_hello(self) -> None:
        self.hellos -= 1
        if not self.stream.joined or self.stream.epoch != self.epoch:
            self.base[self.epoch] = len(self.sent)
        self.lost_link = False
        self.perform(self.stream.welcome(self.epoch, len(self.sent), "STARTED", False, self.now))

    # -- rarer: a new master, the link's own events --

    @rule(
        what=st.sampled_from(
            ["new_epoch", "master_lost", "hello_overdue", "unknown_client"] + ["none"] * 8
        )
    )
    def now_and_then(self, what: str) -> None:
        stream = self.stream
        if what == "new_epoch" and self.epoch == E1:
            self.epoch, self.sent = E2, []  # old frames may still arrive
        elif what == "master_lost" and stream.joined and not self.lost_link:
            self.lost_link = True
            self.perform(stream.master_lost())
        elif what == "hello_overdue" and self.lost_link and stream.state is S.REJOINING:
            self.perform(stream.hello_overdue())
        elif what == "unknown_client":
            self.perform(stream.unknown_client())

    @rule()
    def settle(self) -> None:
        """The network heals: everything is answered until the stream catches up."""
        for _ in range(100):
            if self.caught_up():
                break
            self.arrive([0] * len(self.flight) or [0])
            self.heartbeat()
            # Each bounded: a stream that keeps asking must fail here, not hang.
            for _ in range(self.hellos):
                self.answer_hello()
            for _ in range(len(self.asks)):
                self.answer_replay(0, "part", PART)
            for _ in range(self.checks):
                self.answer_check(False)
            self.time_passes(REPAIR_RETRY + 0.5)
        assert self.caught_up(), (self.stream.state, self.stream.seq, len(self.sent))
        epoch = self.epoch
        assert len(self.delivered[epoch]) + self.lost[epoch] == len(self.sent) - self.base[epoch]
        if not self.lost[epoch]:
            assert self.delivered[epoch] == list(range(self.base[epoch] + 1, len(self.sent) + 1))

    def caught_up(self) -> bool:
        stream = self.stream
        return (
            stream.epoch == self.epoch
            and stream.seq == len(self.sent)
            and stream.state is S.LIVE
            and not self.flight
            and not self.asks
            and not self.hellos
            and not self.checks
        )

    # -- what must always hold --

    @invariant()
    def delivered_in_order_exactly_once_or_counted_lost(self) -> None:
        stream = self.stream
        for epoch, delivered in self.delivered.items():
            assert all(a < b for a, b in itertools.pairwise(delivered)), delivered
            assert all(self.base[epoch] < s for s in delivered), (self.base, delivered)
        if stream.joined:
            epoch = stream.epoch
            delivered = self.delivered[epoch]
            assert all(s <= stream.seq for s in delivered)
            assert len(delivered) + self.lost[epoch] == stream.seq - self.base[epoch], (
                delivered,
                self.lost[epoch],
                stream.seq,
                self.base[epoch],
            )

    @invariant()
    def repairing_exactly_when_a_repair_is_out(self) -> None:
        stream = self.stream
        if stream.state is S.LIVE:
            assert stream.repair is None
            assert stream.held == 0
        elif stream.state is S.REPAIRING:
            assert stream.repair is not None


NetworkMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=50,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_the_stream_delivers_in_order_exactly_once_or_counts_each_loss() -> None:
    """The state machine above, run as one test (its steps printed on failure)."""
    NetworkMachine.TestCase("runTest").runTest()
