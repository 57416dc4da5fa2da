"""SIGINT and SIGTERM in a joined process: this process alone leaves the bus.

While ``ClientBus.block()`` runs in the main thread, both signals (where
Python's defaults are still installed) call ``leave_on_signal``, which only
queues the signal for the dispatcher (one hop); ``block()`` puts the
defaults back when it returns.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

#: The signals ``block()`` takes over, each with the handler it must find there.
LEAVE_SIGNALS = ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL))


def take_leave_signals(leave: Callable[[int], None]) -> dict[int, Any]:
    """Install ``leave(signum)`` where Python's defaults are; return what it replaced.

    Nothing outside the main thread: ``signal.signal`` works only there.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}
    saved: dict[int, Any] = {}
    for signum, default in LEAVE_SIGNALS:
        if signal.getsignal(signum) == default:
            saved[signum] = default
            signal.signal(signum, lambda signum, _frame: leave(signum))
    return saved


def restore_signals(saved: dict[int, Any]) -> None:
    """Put back the handlers :func:`take_leave_signals` replaced."""
    for signum, handler in saved.items():
        signal.signal(signum, handler)


__all__ = ["LEAVE_SIGNALS", "restore_signals", "take_leave_signals"]
