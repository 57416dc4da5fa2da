"""Complaints about a peer, logged at most once per interval per kind, none uncounted.

A master (or something pretending to be one) that sends garbage must not
turn into a log flood on every client: each kind of complaint is logged at
WARNING at most once per interval, in one line, and the next line of that
kind says how many were held back meanwhile.  The caller keeps its own exact
counters; this only decides what reaches the log.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from typing import Any


class Complaints:
    """Logs each kind of complaint on ``log`` at most once per ``interval`` seconds.

    The line that follows a quiet spell says how many were held back, so a
    peer sending garbage cannot flood the log, and nothing goes uncounted.
    """

    def __init__(
        self, log: logging.Logger, interval: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.log = log
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._held: collections.Counter[str] = collections.Counter()

    def warn(self, kind: str, message: str, *args: Any) -> None:
        """Log ``message % args`` at WARNING unless ``kind`` was logged within the interval."""
        now = self.clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._held[kind] += 1
            return
        self._last[kind] = now
        held = self._held.pop(kind, 0)
        if held and last is not None:
            message += " (and %d more in the last %.0fs)"
            args = (*args, held, now - last)
        self.log.warning(message, *args)
