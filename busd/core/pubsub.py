"""Channels and their listeners: the publish/subscribe half of a bus (wspbus semantics).

``listeners`` maps a channel name to the set of its callbacks; adding a key
declares a channel, as CherryPy code does.  Listeners of a channel run in
ascending priority, ties in subscription order; the order is cached per
channel and rebuilt when the set or a priority changes.  A client's
dispatcher runs relayed messages through :meth:`PubSub.relay_listeners`, a
cheaper cache: dropped by every ``subscribe`` and ``unsubscribe``, and kept
while the channel's set is the same object of the same size (code that
swaps one callback for another in ``bus.listeners`` directly, without
subscribing, is seen at the next subscribe).
"""

from __future__ import annotations

import itertools
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from busd.core.errors import ChannelFailures

__all__ = ["BUILTIN_CHANNELS", "DEFAULT_PRIORITY", "PubSub", "bridge_log"]

F = TypeVar("F", bound=Callable[..., Any])

logger = logging.getLogger("busd")

DEFAULT_PRIORITY = 50
BUILTIN_CHANNELS = ("start", "stop", "exit", "graceful", "log", "main")


def bridge_log(*args: Any, **kwargs: Any) -> None:
    """Forward the bus's 'log' channel to the stdlib logger 'busd'.

    It takes whatever anyone publishes on 'log' (wspbus lets users publish
    any arguments there, CherryPy's own tests publish none): ``(msg,
    level)`` as :meth:`PubSub.log` sends them, by position or by name; a
    publish with no message logs nothing, and a level that is not a number
    is INFO.  It never raises, so it is never a user-visible failure.
    """
    msg = args[0] if args else kwargs.get("msg")
    if msg is None:
        return
    level = args[1] if len(args) > 1 else kwargs.get("level", logging.INFO)
    if not isinstance(level, int) or isinstance(level, bool):
        level = logging.INFO
    logger.log(level, "%s", msg)


bridge_log.priority = 100  # type: ignore[attr-defined]


class PubSub:
    """Channels, their listeners in order, ``publish`` and the 'log' channel."""

    def __init__(self) -> None:
        self.listeners: dict[str, set[Callable[..., Any]]] = {
            channel: set() for channel in BUILTIN_CHANNELS
        }
        self._priorities: dict[tuple[str, Callable[..., Any]], int] = {}
        self._order: dict[tuple[str, Callable[..., Any]], int] = {}
        self._counter = itertools.count()
        self._sorted: dict[str, tuple[frozenset[Callable[..., Any]], list[Callable[..., Any]]]] = {}
        #: channel -> (its set, the set's size, its listeners in order): see relay_listeners.
        self._relayed: dict[str, tuple[set[Callable[..., Any]], int, list[Callable[..., Any]]]] = {}
        self._lock = threading.RLock()
        self._add("log", bridge_log, None)

    def subscribe(
        self, channel: str, callback: Callable[..., Any] | None = None, priority: int | None = None
    ) -> Any:
        """Add ``callback`` to ``channel``; without a callback, return a decorator.

        The priority is the argument, else ``callback.priority``, else 50.
        Subscribing again updates the priority and keeps the original order.
        """
        if callback is None:

            def decorator(func: F) -> F:
                self.subscribe(channel, func, priority)
                return func

            return decorator
        self._add(channel, callback, priority)
        self._subscribed(channel)
        return None

    def _add(self, channel: str, callback: Callable[..., Any], priority: int | None) -> None:
        if priority is None:
            priority = getattr(callback, "priority", DEFAULT_PRIORITY)
        key = (channel, callback)
        with self._lock:
            self._sorted.pop(channel, None)
            self._relayed.pop(channel, None)
            self.listeners.setdefault(channel, set()).add(callback)
            self._priorities[key] = int(priority)
            if key not in self._order:
                self._order[key] = next(self._counter)

    def _subscribed(self, channel: str) -> None:
        """Called after every subscription; for subclasses (a waiter may want to know)."""

    def unsubscribe(self, channel: str, callback: Callable[..., Any]) -> None:
        """Remove ``callback`` from ``channel``; nothing happens if it is absent."""
        key = (channel, callback)
        with self._lock:
            self._sorted.pop(channel, None)
            self._relayed.pop(channel, None)
            self.listeners.get(channel, set()).discard(callback)
            self._priorities.pop(key, None)
            self._order.pop(key, None)

    def _sorted_listeners(self, channel: str) -> list[Callable[..., Any]]:
        with self._lock:
            members = self.listeners.get(channel)
            if not members:
                return []
            cached = self._sorted.get(channel)
            # Valid while the set holds the same callbacks (code may edit
            # bus.listeners directly, as CherryPy code does) and no priority changed.
            if cached is not None and cached[0] == members:
                return cached[1]
            keyed = [
                (
                    self._priorities.get((channel, cb), DEFAULT_PRIORITY),
                    self._order.get((channel, cb), sys.maxsize),
                    cb,
                )
                for cb in members
            ]
            keyed.sort(key=lambda item: (item[0], item[1]))
            ordered = [cb for _, _, cb in keyed]
            self._sorted[channel] = (frozenset(members), ordered)
            return ordered

    def relay_listeners(self, channel: str) -> list[Callable[..., Any]]:
        """The listeners of ``channel`` in order, from a cache with no lock (see above)."""
        members = self.listeners.get(channel)
        cached = self._relayed.get(channel)
        if cached is not None and cached[0] is members and cached[1] == len(members):
            return cached[2]
        with self._lock:  # built and kept in one hold: a subscribe drops it before or after
            members = self.listeners.get(channel)
            if members is None:
                return []
            ordered = self._sorted_listeners(channel)
            self._relayed[channel] = (members, len(ordered), ordered)
            return ordered

    def publish(self, channel: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Run every listener of ``channel``; return their results in order.

        All listeners run even when some raise; their failures are then raised
        together as :class:`ChannelFailures`.  KeyboardInterrupt and SystemExit
        propagate at once (a ``SystemExit(0)`` after a failure becomes code 1).
        """
        if channel not in self.listeners:
            return []
        return self.call_listeners(channel, self._sorted_listeners(channel), args, kwargs)

    def call_listeners(
        self,
        channel: str,
        listeners: list[Callable[..., Any]],
        args: Sequence[Any],
        kwargs: dict[str, Any],
    ) -> list[Any]:
        """Run ``listeners`` of ``channel`` as :meth:`publish` does; their results in order."""
        failures: ChannelFailures | None = None
        output = []
        for listener in listeners:
            try:
                output.append(listener(*args, **kwargs))
            except KeyboardInterrupt:
                raise
            except SystemExit as exc:
                if failures and exc.code == 0:
                    exc.code = 1
                raise
            except Exception:  # noqa: BLE001 - a listener is a boundary; all failures collected
                if failures is None:
                    failures = ChannelFailures(channel=channel)
                failures.handle_exception()
                if channel != "log":
                    self.log(
                        f"Error in {channel!r} listener {listener!r}", level=40, traceback=True
                    )
        if failures:
            raise failures
        return output

    def log(self, msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
        """Publish ``(msg, level)`` on the 'log' channel, with the traceback if asked."""
        if traceback:
            import traceback as _traceback  # only when a failure is logged

            msg += "\n" + "".join(_traceback.format_exception(*sys.exc_info()))
        try:
            self.publish("log", msg, level)
        except ChannelFailures as exc:
            # Reporting must not fail the code that reports: say so, and go on.
            logger.error("a 'log' listener failed: %s (message was: %s)", exc, msg)
