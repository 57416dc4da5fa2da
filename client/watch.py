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
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import zmq

from busd.errors import BusError, ProtocolError
from busd.wire import (
    BROADCAST_KINDS,
    HEARTBEAT_INTERVAL,
    HEARTBEAT_LIVENESS,
    Kind,
    Message,
    decode,
)

EXIT_OK, EXIT_FAILED, EXIT_NO_MASTER = 0, 1, 3
#: After EXITING: how often to look whether the master's socket is gone.
EXIT_LOOK = 0.1


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return repr(value)


def dumps(doc: Any) -> str:
    """One JSON document on one line (bytes as text, anything else by repr)."""
    return json.dumps(doc, default=_jsonable, sort_keys=False)


@dataclass(frozen=True)
class Output:
    """Where the watcher writes: a line to stdout, an error line to stderr."""

    out: Callable[[str], None]
    error: Callable[[str], None]


class Watcher:
    """Reads the master's PUB socket and prints one line (or JSON object) per message."""

    def __init__(self, args: argparse.Namespace, sub: zmq.Socket[Any], endpoint: str,
                 output: Output, ctl_path: str | None = None,
                 status: Callable[[], Any] | None = None) -> None:
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
                self.output.out(dumps({"error": {"code": "no_master", "message": message,
                                                 "details": None}}))
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
                yield decode(frame, allowed=BROADCAST_KINDS)
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
            doc.update(channel=channel, args=args, kwargs=kwargs, ack=ack)
        else:
            doc.update(event=msg.items[2], data=msg.items[3])
        return doc

    @staticmethod
    def line(doc: dict[str, Any]) -> str:
        """The line people see for one message, after its local time."""
        stamp = time.strftime("%H:%M:%S", time.localtime(doc["time"]))
        stamp += f".{int(doc['time'] * 1000) % 1000:03d}"
        if doc["kind"] == "epoch":
            return (f"{stamp} epoch {doc['epoch']}: a new master (pid {doc.get('pid')}, "
                    f"state {doc.get('state')}); seq numbers start again")
        head = f"{stamp} seq {doc['seq']} {doc['kind']}"
        if doc["kind"] == "state":
            return f"{head} {doc['state']}"
        if doc["kind"] == "publish":
            return f"{head} {doc['channel']} {dumps(doc['args'])} {dumps(doc['kwargs'])}"
        return f"{head} {doc['event']} {dumps(doc['data'])}"

    def _ended(self) -> int:
        if self.state == "EXITING":
            self.output.error(f"busd at {self.endpoint} exited")
            return EXIT_OK
        self.output.error(f"lost busd at {self.endpoint}: silent for {self.silence:g}s")
        return EXIT_FAILED


__all__ = ["Output", "Watcher", "dumps"]
