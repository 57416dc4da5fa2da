"""``busctl wait``: until a master, perhaps not started yet, is in a state with every worker.

::

    no socket file yet, or nobody listens on it   look again after 10 ms, 20 ms, ... 200 ms
    socket there -> status (bounded by what is left of --timeout)
                    master and every worker in STATE -> one line (or document), exit 0
                    not yet -> ask again when the master publishes something (a state,
                               a worker event, a heartbeat), 0.5 s at most
    --timeout passed -> one line saying what was seen last, exit 3

A socket that does not exist cannot be waited on with the standard library
(no inotify), so its path is looked at with a short, growing pause; the
pauses are the SUB socket's bounded polls, which the master's first
message also ends.  Once it answers, the master's own traffic paces the asks.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from typing import Any

import zmq

from busd.client.ctl.console import EXIT_NO_MASTER, EXIT_OK, emit, error, error_doc, print_json
from busd.client.ctl.reach import DEFAULT_WAIT, unreachable
from busd.client.ctl.watch import subscriber
from busd.core.control import Control
from busd.core.endpoints import client_endpoints
from busd.core.errors import KeyRefused, NoMaster, ProtocolError

#: The states ``--for`` takes (the master's lifecycle states).
STATES = ("STOPPED", "STARTING", "STARTED", "STOPPING", "EXITING")
FIRST_LOOK, LAST_LOOK = 0.01, 0.2
#: The longest the master's silence may delay the next ask.
ASK_EVERY = 0.5
Status = dict[str, Any]


def add_options(parser: argparse.ArgumentParser) -> None:
    """``--for STATE``."""
    parser.add_argument(
        "--for",
        dest="state",
        type=state_name,
        default="STARTED",
        metavar="STATE",
        help="the state to wait for: "
        + ", ".join(STATES)
        + " (default STARTED); the master and every worker must be in it",
    )


def state_name(text: str) -> str:
    """``started`` -> ``STARTED``; anything else is a usage error."""
    if text.upper() not in STATES:
        raise argparse.ArgumentTypeError(f"not a state: {text!r} (one of {', '.join(STATES)})")
    return text.upper()


def reached(status: Any, state: str) -> bool:
    """The master and every one of its workers are in ``state``."""
    if not isinstance(status, dict) or status.get("state") != state:
        return False
    workers = status.get("workers") or []
    return all(isinstance(w, dict) and w.get("state") == state for w in workers)


def describe(status: Status) -> str:
    """``state STARTING; workers 0 SPAWNED, 1 STARTED``."""
    workers = [w for w in status.get("workers") or [] if isinstance(w, dict)]
    text = f"state {status.get('state')}"
    if workers:
        text += "; workers " + ", ".join(f"{w.get('id')} {w.get('state')}" for w in workers)
    return text


def wait_command(
    args: argparse.Namespace, control: Control, left: Callable[[argparse.Namespace], float]
) -> int:
    """Run ``busctl wait``; its exit status (0 reached, 3 past --timeout).

    ``left(args)`` is what is left of --timeout; a refused CURVE key raises
    :class:`KeyRefused` (busctl says so, exit 3).
    """
    began = time.monotonic()
    endpoint = control.endpoint
    with contextlib.ExitStack() as stack:
        waiter = _Waiter(args, control, left, stack)
        status = waiter.run(_pub_beside(args, endpoint))
    if status is None:
        code = "no_master" if waiter.seen is None else "timeout"
        return _gave_up(
            args,
            code,
            f"wait: busd at {endpoint} was not {args.state} with every "
            f"worker {args.state} within --timeout {args.timeout:g}s: {waiter.last}",
        )
    workers = [w for w in status.get("workers") or [] if isinstance(w, dict)]
    waited = round(time.monotonic() - began, 3)
    doc = {
        "state": status.get("state"),
        "pid": status.get("pid"),
        "epoch": status.get("epoch"),
        "workers": [
            {"id": w.get("id"), "pid": w.get("pid"), "state": w.get("state")} for w in workers
        ],
        "waited": waited,
    }
    many = "" if len(workers) == 1 else "s"
    emit(
        args,
        doc,
        f"wait: busd pid {status.get('pid')} {args.state} with {len(workers)} "
        f"worker{many} {args.state} (waited {waited:.2f}s)",
    )
    return EXIT_OK


class _Waiter:
    """Asks, and between asks waits on the master's traffic (or its socket's path)."""

    def __init__(
        self,
        args: argparse.Namespace,
        control: Control,
        left: Callable[[argparse.Namespace], float],
        stack: contextlib.ExitStack,
    ) -> None:
        self.args = args
        self.control = control
        self.left = left
        self.stack = stack
        self.sub: zmq.Socket[Any] | None = None
        self.seen: Status | None = None
        self.last = "nothing answered"

    def run(self, pub: str | None) -> Status | None:
        """The first status in the wanted state; None past --timeout.

        ``pub`` is the master's PUB endpoint; None (a tcp --endpoint): the
        one its first status names.
        """
        if pub is not None:
            self.sub = self.stack.enter_context(subscriber(self.args, self.control, pub))
        pause = FIRST_LOOK
        while True:
            why = unreachable(self.control.endpoint)
            if why is None:
                status = self._ask()
                if reached(status, self.args.state):
                    return status
                if self.sub is None and status is not None:
                    pub = _pub_named(status, self.control.endpoint)
                    self.sub = self.stack.enter_context(subscriber(self.args, self.control, pub))
            else:
                self.last = why.split(": ", 1)[-1]
            remaining = self.left(self.args)
            if remaining <= 0.01:
                return None
            look = min(remaining, pause if why is not None else ASK_EVERY)
            pause = min(LAST_LOOK, pause * 2) if why is not None else FIRST_LOOK
            self._idle(look)

    def _ask(self) -> Status | None:
        try:
            status = self.control.request("status", timeout=min(ASK_EVERY, self.left(self.args)))
        except KeyRefused:
            raise
        except NoMaster:
            self.last = "it did not answer"
            return None
        if isinstance(status, dict):
            self.seen = status
            self.last = "last seen: " + describe(status)
            return status
        return None

    def _idle(self, timeout: float) -> None:
        """Until the master publishes something, or ``timeout``; what came is dropped."""
        if self.sub is None:
            return  # not answered yet over tcp: the ask's own timeout was the pause
        if self.sub.poll(int(timeout * 1000) + 1):
            while self.sub.poll(0):
                self.sub.recv()


def _pub_beside(args: argparse.Namespace, endpoint: str) -> str | None:
    """The PUB endpoint of the master at ``endpoint``, where it is known without asking."""
    if not args.endpoint:
        return client_endpoints(args.name, args.runtime_dir).pub
    if endpoint.startswith("ipc://") and endpoint.endswith("/ctl.sock"):
        return endpoint.removesuffix("ctl.sock") + "pub.sock"
    return None


def _pub_named(status: Status, ctl: str) -> str:
    """The PUB endpoint beside control endpoint ``ctl`` in a master's status."""
    endpoints = status.get("endpoints") or {}
    pubs, ctls = endpoints.get("pub") or [], endpoints.get("ctl") or []
    if not pubs:
        raise ProtocolError("the master's status names no PUB endpoint")
    index = ctls.index(ctl) if ctl in ctls else 0
    return str(pubs[index] if index < len(pubs) else pubs[0])


def _gave_up(args: argparse.Namespace, code: str, message: str) -> int:
    print_json(args, error_doc(code, message, None))
    error(message)
    return EXIT_NO_MASTER


__all__ = ["DEFAULT_WAIT", "STATES", "add_options", "reached", "unreachable", "wait_command"]
