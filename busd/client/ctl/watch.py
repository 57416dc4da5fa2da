"""``busctl watch``: follow what a master publishes, across its restarts.

::

    master PUB --SUB--> Watcher.run: poll (bounded) -> decode -> one line or JSON doc each
                          |  a new epoch: "epoch E: new master", its state asked over ctl
                          |  EXITING, then silence: the master's ctl socket gone -> "exited"
                          |                         still there -> wait --timeout for a restart
                          v
                        stdout (lines) / stderr (why it ended)

Ends after ``--count`` messages (0); when the master exited (0, saying so
on stderr); when it went silent for its heartbeat x liveness while not
exiting (1); never waits unbounded.  A restarted master (``busctl
restart``) is a new epoch: the sequence numbers start again, and the
watcher says so and keeps streaming.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import zmq

from busd.client.ctl.console import EXIT_FAILED, EXIT_NO_MASTER, EXIT_OK, dumps
from busd.client.ctl.sanitize import printable
from busd.core.auth import secure_client
from busd.core.control import Control
from busd.core.endpoints import PUB_HWM, client_endpoints, configure
from busd.core.errors import BusError, NoMaster, ProtocolError
from busd.core.wire import (
    CLOSING_EVENT,
    HEARTBEAT_INTERVAL,
    HEARTBEAT_LIVENESS,
    METRICS_CHANNEL,
    Kind,
    Message,
    decode_messages,
)

#: After EXITING: how often to look whether the master's socket is gone.
EXIT_LOOK = 0.1


@dataclass(frozen=True)
class Output:
    """Where the watcher writes: a line to stdout, an error line to stderr."""

    out: Callable[[str], None]
    error: Callable[[str], None]


class Watcher:
    """Reads the master's PUB socket and prints one line (or JSON object) per message."""

    def __init__(
        self,
        args: argparse.Namespace,
        sub: zmq.Socket[Any],
        endpoint: str,
        output: Output,
        ctl_path: str | None = None,
        status: Callable[[], Any] | None = None,
    ) -> None:
        self.args = args
        self.sub = sub
        self.endpoint = endpoint
        self.output = output
        self.ctl_path = ctl_path
        self.status = status
        self.channels = frozenset(args.channels)
        self.left: int | None = args.count
        self.silence = HEARTBEAT_INTERVAL * HEARTBEAT_LIVENESS
        self.state = ""
        self.epoch: int | None = None

    def run(self) -> int:
        """Follow the master until done; returns the exit status."""
        if not self.sub.poll(int(self.args.timeout * 1000) + 1):
            message = f"no busd answered at {self.endpoint} within {self.args.timeout:g}s"
            if self.args.json:
                self.output.out(
                    dumps({"error": {"code": "no_master", "message": message, "details": None}})
                )
            self.output.error(message)
            return EXIT_NO_MASTER
        while self.left != 0:
            if not self._wait_traffic():
                return self._ended()
            for msg in self._drain():
                self._show(msg)
                if self.left == 0:
                    break
        return EXIT_OK

    def _wait_traffic(self) -> bool:
        """True when a message is ready; False once the master is silent (or gone)."""
        if self.state != "EXITING":
            return bool(self.sub.poll(int(self.silence * 1000) + 1))
        # Exiting: gone for good once its socket file is removed (a clean exit);
        # a restart keeps the file and binds it again within --timeout.
        deadline = time.monotonic() + self.silence + self.args.timeout
        while time.monotonic() < deadline:
            if self.sub.poll(int(EXIT_LOOK * 1000)):
                return True
            if self.ctl_path is not None and not os.path.exists(self.ctl_path):
                return False
        return False

    def _drain(self) -> Iterator[Message]:
        while True:
            try:
                frame = self.sub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                yield from decode_messages(frame)  # a BATCH: each of its messages
            except ProtocolError as exc:
                self.output.error(f"skipped a message: {exc}")

    def _show(self, msg: Message) -> None:
        if msg.epoch != self.epoch:
            if self.epoch is not None:
                self._new_epoch(msg.epoch)
            self.epoch = msg.epoch
        if msg.kind is Kind.HEARTBEAT:
            interval = msg.items[3]
            if isinstance(interval, int | float) and interval > 0:
                self.silence = float(interval) * HEARTBEAT_LIVENESS
            return
        doc = self.describe(msg)
        if doc is not None:
            self._print(doc)

    def _print(self, doc: dict[str, Any]) -> None:
        doc["time"] = round(time.time(), 3)
        self.output.out(dumps(doc) if self.args.json else self.line(doc))
        if self.left is not None:
            self.left -= 1

    def _new_epoch(self, epoch: int) -> None:
        """A restarted master: say so, with its state (its first ones may be missed)."""
        doc: dict[str, Any] = {"kind": "epoch", "epoch": epoch, "previous": self.epoch}
        if self.status is not None:
            try:
                status = self.status()
            except BusError:
                status = None
            if isinstance(status, dict):
                doc.update(state=status.get("state"), pid=status.get("pid"))
                self.state = str(status.get("state") or self.state)
        self._print(doc)

    def describe(self, msg: Message) -> dict[str, Any] | None:
        """A STATE, PUBLISH or EVENT as a map (None: filtered out)."""
        doc: dict[str, Any] = {"seq": msg.seq, "kind": msg.kind.name.lower(), "epoch": msg.epoch}
        if msg.kind is Kind.STATE:
            self.state = str(msg.items[2])
            doc["state"] = msg.items[2]
        elif msg.kind is Kind.PUBLISH:
            channel, args, kwargs, ack = msg.items[2:]
            if self.channels and channel not in self.channels:
                return None
            if channel == METRICS_CHANNEL and channel not in self.channels:
                return None  # a scrape asking the workers: housekeeping, unless asked for
            doc.update(channel=channel, args=args, kwargs=kwargs, ack=ack)
        elif msg.items[2] == CLOSING_EVENT:
            return None  # housekeeping, like a heartbeat: EXITING said it all
        else:
            doc.update(event=msg.items[2], data=msg.items[3])
        return doc

    @staticmethod
    def line(doc: dict[str, Any]) -> str:
        """The line people see for one message, after its local time."""
        stamp = time.strftime("%H:%M:%S", time.localtime(doc["time"]))
        stamp += f".{int(doc['time'] * 1000) % 1000:03d}"
        # Every field a peer could have chosen is escaped: a newline or an escape
        # sequence in a channel name must not forge or erase a line.
        if doc["kind"] == "epoch":
            return (
                f"{stamp} epoch {doc['epoch']}: a new master (pid "
                f"{printable(doc.get('pid'))}, state {printable(doc.get('state'))}); "
                "seq numbers start again"
            )
        head = f"{stamp} seq {doc['seq']} {doc['kind']}"
        if doc["kind"] == "state":
            return f"{head} {printable(doc['state'])}"
        if doc["kind"] == "publish":
            return f"{head} {printable(doc['channel'])} {dumps(doc['args'])} {dumps(doc['kwargs'])}"
        return f"{head} {printable(doc['event'])} {dumps(doc['data'])}"

    def _ended(self) -> int:
        if self.state == "EXITING":
            self.output.error(f"busd at {self.endpoint} exited")
            return EXIT_OK
        self.output.error(f"lost busd at {self.endpoint}: silent for {self.silence:g}s")
        return EXIT_FAILED


@contextlib.contextmanager
def subscriber(args: argparse.Namespace, control: Control, pub: str) -> Iterator[zmq.Socket[Any]]:
    """A SUB socket on the master's ``pub`` endpoint (CURVE as busctl's), closed after."""
    sub = control.context.socket(zmq.SUB)
    try:
        configure(sub, PUB_HWM)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        secure_client(sub, args.curve, pub)
        sub.connect(pub)
        yield sub
    finally:
        sub.close(linger=0)


def follow(args: argparse.Namespace, control: Control, output: Output, ctl_path: str | None) -> int:
    """``busctl watch``: stream what the master publishes until it ends."""
    pub = pub_endpoint(args, control)
    with subscriber(args, control, pub) as sub:
        watcher = Watcher(
            args,
            sub,
            pub,
            output,
            ctl_path=ctl_path,
            status=lambda: control.request("status", timeout=min(1.0, args.timeout)),
        )
        return watcher.run()


def pub_endpoint(args: argparse.Namespace, control: Control) -> str:
    """The master's PUB endpoint: beside the runtime dir's, else from its status."""
    if not args.endpoint:
        return client_endpoints(args.name, args.runtime_dir).pub
    status = control.request("status")
    endpoints = status.get("endpoints", {}) if isinstance(status, dict) else {}
    pubs, ctls = endpoints.get("pub") or [], endpoints.get("ctl") or []
    if not pubs:
        raise ProtocolError("the master's status names no PUB endpoint")
    if args.endpoint in ctls and ctls.index(args.endpoint) < len(pubs):
        return str(pubs[ctls.index(args.endpoint)])
    return str(pubs[0])


def wait_restarted(
    args: argparse.Namespace,
    control: Control,
    pub: str,
    old_epoch: Any,
    left: Callable[[argparse.Namespace], float],
) -> dict[str, Any]:
    """The new master's status once it and every worker are STARTED (NoMaster past --timeout).

    Woken by the master's own traffic (states, worker events, heartbeats) on a
    SUB socket between asks, so it neither spins nor sleeps.
    """
    with subscriber(args, control, pub) as sub:
        while True:
            try:
                status = control.request("status", timeout=min(0.5, left(args)))
            except NoMaster:
                status = None
            if _restarted(status, old_epoch):
                assert isinstance(status, dict)
                return status
            if left(args) <= 0.01:
                raise NoMaster(
                    f"busd at {control.endpoint} was not STARTED again with all its "
                    f"workers within --timeout {args.timeout:g}s"
                )
            if sub.poll(int(min(0.5, left(args)) * 1000) + 1):
                while sub.poll(0):
                    sub.recv()


def _restarted(status: Any, old_epoch: Any) -> bool:
    if not isinstance(status, dict) or status.get("epoch") == old_epoch:
        return False
    workers = status.get("workers") or []
    return status.get("state") == "STARTED" and all(
        isinstance(w, dict) and w.get("state") == "STARTED" for w in workers
    )


__all__ = ["Output", "Watcher", "follow", "pub_endpoint", "wait_restarted"]
