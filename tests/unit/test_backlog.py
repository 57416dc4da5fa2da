"""The unread-bytes bookkeeping of busd.master.backlog, with trackers the test sets done."""

from __future__ import annotations

from dataclasses import dataclass

from busd.master.backlog import ENTRY_OVERHEAD, Published, Replies


@dataclass
class FakeTracker:
    """Stands for pyzmq's MessageTracker: done once libzmq let go of the message."""

    done: bool = False


def test_a_peer_that_does_not_read_gets_no_more_than_its_bound() -> None:
    replies = Replies(max_bytes=4000)
    first = FakeTracker()

    assert replies.room(b"a", 5000)  # nothing unread: even a big reply goes
    replies.sent(b"a", first, 1000)
    assert replies.unread(b"a") == 1000 + ENTRY_OVERHEAD
    assert replies.room(b"a", 1000)
    replies.sent(b"a", FakeTracker(), 1000)
    assert not replies.room(b"a", 1000)
    assert replies.room(b"b", 1000), "another peer is not charged"
    first.done = True
    assert replies.unread(b"a") == 1000 + ENTRY_OVERHEAD


def test_replies_already_taken_cost_nothing_and_taken_peers_are_forgotten() -> None:
    replies = Replies()
    replies.sent(b"a", FakeTracker(done=True), 10)
    tracker = FakeTracker()
    replies.sent(b"b", tracker, 10)
    tracker.done = True

    replies.sweep()
    assert replies.statistics() == {"peers": 0, "bytes": 0, "max_bytes": replies.max_bytes}


def test_published_frames_past_the_bound_are_withheld_until_the_slowest_reads() -> None:
    published = Published(max_bytes=2 * (100 + ENTRY_OVERHEAD))
    trackers = [FakeTracker(), FakeTracker()]
    for tracker in trackers:
        assert published.room(100)
        published.sent(tracker, 100)

    assert not published.room(100)
    assert published.statistics()["withheld"] == 1
    trackers[0].done = True
    assert published.room(100)
    assert published.unread() == 100 + ENTRY_OVERHEAD


def test_one_frame_bigger_than_the_bound_still_goes_when_nothing_is_unread() -> None:
    assert Published(max_bytes=10).room(1000)
