"""What the master's command thread runs: the calls queued for it, and how to tell
that a call is made inside a command already.

::

    any thread --LocalCall / Shutdown--+
    [busd-hub] --Request, ClientChange,+--> SimpleQueue --> [busd-commands]
                 StatusWanted          |                    (MasterBus._run_commands)
    signal handler --LocalCall---------+  (put is reentrant: safe in a handler)
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from busd.master.hubmsg import ClientChange, Request, StatusWanted

#: Longest single wait for a command's result before looking whether the command thread
#: still runs (the command thread itself waits for its next command without a bound).
COMMAND_POLL = 30.0


@dataclass(frozen=True)
class LocalCall:
    """Run ``func(*args)`` on the command thread and settle ``future`` with its outcome."""

    func: Callable[..., Any]
    args: tuple[Any, ...]
    future: Future[Any] = field(default_factory=Future)


@dataclass(frozen=True)
class Shutdown:
    """End the command thread (after what was queued before it)."""


Command = LocalCall | Request | ClientChange | StatusWanted | Shutdown


#: True in the context of the command thread: a call made there is inside a command
#: (a listener, a hook, a queued call) and runs inline instead of queueing behind itself.
IN_COMMAND: contextvars.ContextVar[bool] = contextvars.ContextVar("busd_in_command", default=False)
