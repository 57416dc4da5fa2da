"""The replay window's bounds and slices, and the outbox's bounded drain."""

from __future__ import annotations

import pytest

from busd.core.endpoints import Outbox
from busd.master.replay import ENTRY_OVERHEAD, ReplayWindow


def filled(window: ReplayWindow, last: int, size: int = 10) -> ReplayWindow:
    for seq in range(1, last + 1):
        window.add(seq, bytes([seq % 256]) * size)
    return window


def test_a_window_keeps_the_newest_frames_within_its_count() -> None:
    window = filled(ReplayWindow(max_count=5), 10)

    assert (window.oldest, window.newest) == (6, 10)
    part = window.slice(3, 10)
    assert (part.first, part.lost, part.more) == (6, 3, False)
    assert [f[0] for f in part.frames] == [6, 7, 8, 9, 10]
    assert window.statistics()["dropped"] == 5


def test_a_window_is_bounded_by_bytes_counting_each_frame_s_overhead() -> None:
    window = filled(ReplayWindow(max_bytes=3 * (100 + ENTRY_OVERHEAD)), 10, size=100)

    assert (window.oldest, window.newest) == (8, 10)
    assert window.statistics()["bytes"] == 3 * (100 + ENTRY_OVERHEAD)


def test_a_slice_is_cut_at_its_byte_limit_and_says_there_is_more() -> None:
    window = filled(ReplayWindow(), 100, size=100)

    part = window.slice(10, 100, limit=250)
    assert (part.first, len(part.frames), part.lost, part.more) == (10, 2, 0, True)
    rest = window.slice(12, 100, limit=10**6)
    assert (rest.first, len(rest.frames), rest.more) == (12, 89, False)


def test_a_range_wholly_out_of_the_window_is_all_lost() -> None:
    window = filled(ReplayWindow(max_count=10), 100)

    part = window.slice(5, 20)
    # The next seq after the range, not the window's oldest: 21..90 are not this
    # range's to count, and a client jumping to 91 would lose them uncounted.
    assert (part.first, part.frames, part.lost, part.more) == (21, (), 16, False)


def test_the_window_compacts_and_still_finds_frames_by_seq() -> None:
    window = filled(ReplayWindow(max_count=1000), 20_000, size=1)

    assert (window.oldest, window.newest) == (19_001, 20_000)
    assert window.slice(19_500, 19_500).frames == (bytes([19_500 % 256]),)


def test_a_jump_in_numbers_restarts_the_window() -> None:
    window = filled(ReplayWindow(), 5)
    window.add(9, b"x")

    assert (window.oldest, window.newest) == (9, 9)


def test_negative_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="not negative"):
        ReplayWindow(max_bytes=-1)


def test_a_bounded_drain_leaves_the_rest_and_wakes_again() -> None:
    box: Outbox[int] = Outbox()
    try:
        for i in range(5):
            box.put(i)
        assert box.drain(2) == [0, 1]
        assert box.wait_readable(0), "the rest must wake the I/O thread again"
        assert box.drain(2) == [2, 3]
        assert box.drain() == [4]
        assert not box.wait_readable(0)
    finally:
        box.close()
