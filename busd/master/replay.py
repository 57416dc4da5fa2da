"""The master's replay window: the most recent sequenced frames, kept for repairs.

::

    [busd-hub] sends frame seq N on PUB --> window.add(N, frame)
                                            | oldest ........ newest |
    a client missed [a, b]  --REQUEST replay {epoch, from: a, to: b}-->  window.slice(a, b)
                            <--REPLY {first, frames, lost, more}-------

Only the hub thread touches a window (it owns the PUB socket that numbers
go out on), so there is no lock.  The window is bounded twice: by a count
of frames and by bytes, where each frame is charged its length plus
:data:`ENTRY_OVERHEAD` (what CPython spends on a bytes object and its slot),
so the bound is close to the memory it really takes.  The oldest frames
are dropped first; a client asking for one of them learns exactly how many
it lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from busd.core.stats import Stats

#: Default bounds of the window: 64 MiB and a million frames.
DEFAULT_BYTES = 64 << 20
DEFAULT_COUNT = 1_000_000
#: Bytes charged per frame beyond its length (bytes object header, deque slot).
ENTRY_OVERHEAD = 64
#: Most frame bytes put in one replay reply (a reply must stay under 1 MiB).
REPLY_BYTES = 512 << 10


@dataclass(frozen=True)
class Slice:
    """What a window holds of a requested range.

    ``lost`` counts the requested frames no longer held (older than the
    window); ``frames`` follow from ``first`` without a hole; ``more`` says
    the reply was cut at :data:`REPLY_BYTES` and the client should ask again.
    """

    first: int
    frames: tuple[bytes, ...]
    lost: int
    more: bool


@dataclass(frozen=True, eq=False)
class ReplayStats(Stats):
    """What a window holds, its bounds, and what it dropped."""

    #: Frames held, and their bytes (each charged ENTRY_OVERHEAD beyond its length).
    frames: int
    bytes: int
    #: The oldest seq held.
    oldest: int
    max_bytes: int
    max_count: int
    #: Frames dropped since the window was made (too old, or a jump in numbers).
    dropped: int


class ReplayWindow:
    """The last sequenced frames, bounded by ``max_bytes`` and ``max_count``."""

    def __init__(self, max_bytes: int = DEFAULT_BYTES, max_count: int = DEFAULT_COUNT) -> None:
        if max_bytes < 0 or max_count < 0:
            raise ValueError("a replay window's bounds are not negative")
        self.max_bytes = max_bytes
        self.max_count = max_count
        # A list with a moving head: O(1) access by seq (a deque is O(n) inside).
        self._frames: list[bytes] = []
        self._head = 0
        self._first = 1  # the seq of _frames[_head]
        self._bytes = 0
        self.dropped = 0

    @property
    def oldest(self) -> int:
        """The oldest seq still held (one past the newest when empty)."""
        return self._first

    @property
    def newest(self) -> int:
        """The newest seq held, or ``oldest - 1`` when empty."""
        return self._first + len(self._frames) - self._head - 1

    def add(self, seq: int, frame: bytes) -> None:
        """Keep frame ``seq``; numbers must follow each other (a jump restarts the window)."""
        frames = self._frames
        if seq != self.newest + 1:
            self.dropped += len(frames) - self._head
            frames.clear()
            self._head = 0
            self._bytes = 0
            self._first = seq
        frames.append(frame)
        self._bytes += len(frame) + ENTRY_OVERHEAD
        self._trim()

    def extend(self, first: int, frames: Sequence[bytes]) -> None:
        """Keep frames ``first``, ``first + 1``, ... (as many :meth:`add` calls would)."""
        if len(frames) == 1 or first != self.newest + 1:
            for seq, frame in enumerate(frames, first):
                self.add(seq, frame)
            return
        self._frames.extend(frames)
        self._bytes += sum(map(len, frames)) + ENTRY_OVERHEAD * len(frames)
        self._trim()

    def _trim(self) -> None:
        frames = self._frames
        while self._head < len(frames) and (
            self._bytes > self.max_bytes or len(frames) - self._head > self.max_count
        ):
            self._bytes -= len(frames[self._head]) + ENTRY_OVERHEAD
            frames[self._head] = b""
            self._head += 1
            self._first += 1
            self.dropped += 1
        if self._head > 4096 and self._head * 2 > len(frames):
            del frames[: self._head]
            self._head = 0

    def slice(self, first: int, last: int, limit: int = REPLY_BYTES) -> Slice:
        """The frames ``first..last`` still held, up to ``limit`` bytes of them."""
        last = min(last, self.newest)
        lost = max(0, min(last + 1, self._first) - first)
        # A range wholly older than the window: nothing held, and the next seq is last + 1
        # (not the window's oldest, which would skip messages nobody counted).
        start = min(max(first, self._first), last + 1)
        frames: list[bytes] = []
        size = 0
        offset = self._head - self._first
        for index in range(start + offset, last + offset + 1):
            frame = self._frames[index]
            if frames and size + len(frame) > limit:
                break
            frames.append(frame)
            size += len(frame)
        more = start + len(frames) <= last
        return Slice(first=start, frames=tuple(frames), lost=lost, more=more)

    def statistics(self) -> ReplayStats:
        """Frames and bytes held, bounds, and how many frames were dropped."""
        return ReplayStats(
            frames=len(self._frames) - self._head,
            bytes=self._bytes,
            oldest=self._first,
            max_bytes=self.max_bytes,
            max_count=self.max_count,
            dropped=self.dropped,
        )
