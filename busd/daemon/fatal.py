"""A thread of busd's own that dies ends busd: it never keeps running deaf.

An exception that no handler caught in one of busd's threads (named
``busd-*``: the hub, the command thread, the pool's supervisor, the fork
server's owner) is a bug or an input no check foresaw.  Nobody can tell
what that thread left undone, and a master without its hub or its command
thread answers nothing while it looks alive.  So the daemon logs the death
once, at CRITICAL with the traceback, ends every worker and exits 70, for
its supervisor (systemd's ``Restart=``, supervisord's ``autorestart``) to
start a new master.  A library master is left to its program: only the
``busd`` command installs this.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

#: The names of busd's own threads begin so.
THREAD_PREFIX = "busd-"


def end_on_thread_death(on_death: Callable[[], None]) -> Callable[[], None]:
    """Call ``on_death`` when a ``busd-*`` thread dies of an exception; returns an undo.

    Other threads' exceptions go to the hook that was there before.
    """
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        thread = args.thread
        if (
            thread is None
            or not thread.name.startswith(THREAD_PREFIX)
            or (args.exc_type is SystemExit)
        ):
            previous(args)
            return
        log.critical(
            "thread %s died: busd ends so that its supervisor starts a new one",
            thread.name,
            exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback),
        )
        on_death()

    threading.excepthook = hook

    def undo() -> None:
        threading.excepthook = previous

    return undo


__all__ = ["THREAD_PREFIX", "end_on_thread_death"]
