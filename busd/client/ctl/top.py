"""``busctl top``: a live view of a master in the terminal, its pools, workers and events.

::

    master PUB --SUB--> event lines (states, worker, reload and client events) --+
    master ctl <--DEALER-- status, once a second -> Sample -> Rates -------------+
                                                                                 v
    terminal keys (q) --> Top.run: one poll on SUB + stdin     render(status, events, rates,
                          up to the next second's status   <-- size) -> lines -> curses

One thread, one wait: a poll on the SUB socket and the terminal, bounded by
the time left to the next status request, so it never busy-polls.  What is
drawn is :func:`render`, a pure function of the last status document, the
event lines, the rates and the window's size; the curses side only writes
those lines (``erase``, then one ``refresh`` a frame: no flicker).

Rates come from two successive status documents of one master: the relay's
sequence numbers used per second (every state, publish and event relayed),
and the hub's ``requests`` and ``acks`` counters per second (the requests
include this view's own status requests, shown beside them).

A master that goes away is said on screen; the view asks again every
second and shows the new master when one answers.  ``q`` quits (exit 0);
Ctrl-C exits 130; the terminal is restored either way (``curses.wrapper``).

Only ``busctl top`` loads this module (and curses): busctl's other commands
keep their imports small.
"""

from __future__ import annotations

import argparse
import contextlib
import curses
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from busd.client.ctl.console import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, dumps
from busd.client.ctl.console import error as _error
from busd.client.ctl.waitcmd import unreachable
from busd.client.ctl.watch import pub_endpoint, subscriber
from busd.commands.text import cell, duration, percent, plural, printable, size, table
from busd.core.control import Control
from busd.core.errors import BusError, NoMaster, ProtocolError
from busd.core.wire import CLOSING_EVENT, Kind, Message, decode_messages

#: Seconds between two status requests (the longest the screen goes unrefreshed).
PERIOD = 1.0
#: The longest one status request may wait (keys wait meanwhile).
STATUS_WAIT = 0.5
#: Event lines kept; the screen shows the last ones that fit.
KEPT_EVENTS = 200
#: The most messages read off the SUB socket between two frames (a flood of
#: publishes cannot keep the screen from being drawn, nor q from being read).
DRAIN_MAX = 10_000
#: What an event line shows of its data, in this order.
EVENT_KEYS = ("pool", "worker", "pid", "role", "name", "reason", "status", "mode", "ok")
#: The pool of workers whose status row names none (a master from before pools).
DEFAULT_POOL = "main"
QUIT_KEYS = frozenset({ord("q"), ord("Q")})


# -- rates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """What two status documents are compared by, and when each was answered."""

    at: float
    epoch: Any
    seq: int
    requests: int
    acks: int
    #: How many status requests this view had sent by then.
    asked: int


@dataclass(frozen=True)
class Rates:
    """Per second, between two status documents of one master."""

    #: Messages the master relayed (sequence numbers used: states, publishes, events).
    relay: float
    #: Control requests the hub answered, this view's among them.
    requests: float
    #: This view's own status requests.
    own: float
    #: Acks of relayed messages from clients.
    acks: float


def sample(status: Mapping[str, Any], at: float, asked: int) -> Sample | None:
    """The figures rates are made of (None: the document lacks its sequence number)."""
    seq = status.get("seq")
    counters = status.get("counters")
    counters = counters if isinstance(counters, Mapping) else {}
    if not isinstance(seq, int):
        return None
    requests, acks = counters.get("requests", 0), counters.get("acks", 0)
    return Sample(
        at,
        status.get("epoch"),
        seq,
        requests if isinstance(requests, int) else 0,
        acks if isinstance(acks, int) else 0,
        asked,
    )


def rates(before: Sample | None, after: Sample | None) -> Rates | None:
    """Rates between two samples; None across a new master or with no time between."""
    if before is None or after is None or before.epoch != after.epoch:
        return None
    span = after.at - before.at
    if span <= 0 or after.seq < before.seq or after.requests < before.requests:
        return None
    return Rates(
        relay=(after.seq - before.seq) / span,
        requests=(after.requests - before.requests) / span,
        own=(after.asked - before.asked) / span,
        acks=max(0, after.acks - before.acks) / span,
    )


# -- event lines ---------------------------------------------------------------------


def clock(at: float) -> str:
    """``HH:MM:SS`` local time of the wall-clock time ``at``."""
    return time.strftime("%H:%M:%S", time.localtime(at))


def event_line(msg: Message, at: float) -> str | None:
    """One line for a STATE or EVENT message (None: not shown, e.g. a publish)."""
    if msg.kind is Kind.STATE:
        return f"{clock(at)} state {printable(msg.items[2])}"
    if msg.kind is not Kind.EVENT or msg.items[2] == CLOSING_EVENT:
        return None
    return f"{clock(at)} {printable(msg.items[2])} {summary(msg.items[3])}".rstrip()


def summary(data: Any) -> str:
    """The fields of an event's data people look for, ``key=value`` (else its JSON)."""
    if isinstance(data, Mapping):
        shown = [
            f"{key}={printable(data[key])}"
            for key in EVENT_KEYS
            if data.get(key) is not None and data.get(key) != ""
        ]
        if shown:
            return " ".join(shown)
    return "" if data is None or data == {} else printable(dumps(data))


# -- drawing: a pure function ----------------------------------------------------------


def render(
    status: Mapping[str, Any] | None,
    events: Sequence[str],
    rates: Rates | None,
    size: tuple[int, int],
    note: str | None = None,
) -> list[str]:
    """The screen for a window of ``size`` (lines, columns), one string a line.

    At most ``lines`` lines, each shorter than ``columns`` (curses cannot
    write a window's last cell).  The master and the pools come first; the
    last events fill what is left.  ``note`` (a lost master; its lines apart
    by newlines) heads it all.
    """
    height, width = size
    top = note.split("\n") if note else []
    if status is None:
        top.append("waiting for busd's first status...")
    else:
        top += header(status, rates)
        top += pools_lines(status)
    room = height - len(top) - 2
    shown = list(events)[-room:] if room > 0 else []
    lines = [*top, "", f"EVENTS (last {len(shown)}; q quits)", *shown]
    if len(lines) > height:
        hidden = len(lines) - height + 1
        lines = [*lines[: max(0, height - 1)], f"... {hidden} more lines (a taller window)"]
    return [line[: max(0, width - 1)] for line in lines[: max(0, height)]]


def header(status: Mapping[str, Any], rates: Rates | None) -> list[str]:
    """The master: name, pid, state, uptime; its usage; the rates."""
    host = f" on {cell(status['host'])}" if status.get("host") else ""
    lines = [
        f"busd {cell(status.get('name'))}  pid {cell(status.get('pid'))}{host}  "
        f"{cell(status.get('state'))}  up {duration(status.get('uptime'))}  "
        f"epoch {cell(status.get('epoch'))}  seq {cell(status.get('seq'))}"
    ]
    usage = status.get("master")
    if isinstance(usage, Mapping) and usage:
        lines.append(
            f"master cpu {percent(usage.get('cpu_percent'))}  rss {size(usage.get('rss'))}  "
            f"fds {cell(usage.get('fds'))}  threads {cell(usage.get('threads'))}"
        )
    clients = len([c for c in status.get("clients") or [] if isinstance(c, Mapping)])
    if rates is None:
        lines.append(
            f"relayed -  requests -  acks - (rates from the next status)  clients {clients}"
        )
    else:
        lines.append(
            f"relayed {rates.relay:.1f} msg/s  ctl requests {rates.requests:.1f}/s "
            f"(this view's {rates.own:.1f}/s among them)  acks {rates.acks:.1f}/s  "
            f"clients {clients}"
        )
    return lines


#: The worker columns: header, how to show a row (with the heartbeats by pid).
COLUMNS: tuple[tuple[str, Callable[[Mapping[str, Any], Mapping[Any, Any]], str]], ...] = (
    ("SLOT", lambda w, _: cell(w.get("id"))),
    ("PID", lambda w, _: cell(w.get("pid"))),
    ("STATE", lambda w, _: cell(w.get("state"))),
    ("CPU", lambda w, _: percent(w.get("cpu_percent"))),
    ("RSS", lambda w, _: size(w.get("rss"))),
    ("RESTARTS", lambda w, _: cell(w.get("restarts"))),
    ("UPTIME", lambda w, _: duration(w.get("uptime"))),
    ("HEARTBEAT", lambda w, beats: ago(beats.get(w.get("pid")))),
)


def ago(seconds: Any) -> str:
    """``0.3s ago``; "-" for none (a worker that is no client, or not yet)."""
    return f"{duration(seconds)} ago" if isinstance(seconds, int | float) else "-"


def pools_lines(status: Mapping[str, Any]) -> list[str]:
    """Each pool by name, then its workers' table."""
    workers = [w for w in status.get("workers") or [] if isinstance(w, Mapping)]
    beats = {
        c.get("pid"): c.get("last_heartbeat")
        for c in status.get("clients") or []
        if isinstance(c, Mapping) and c.get("pid") is not None
    }
    pools = {str(p.get("name")): p for p in status.get("pools") or [] if isinstance(p, Mapping)}
    names = list(pools)
    for w in workers:
        name = str(w.get("pool") or DEFAULT_POOL)
        if name not in names:
            names.append(name)
    lines: list[str] = []
    for name in names:
        rows = [w for w in workers if str(w.get("pool") or DEFAULT_POOL) == name]
        lines += ["", pool_title(name, pools.get(name), len(rows))]
        if not rows:
            lines.append("  no workers")
            continue
        body = [[show(w, beats) for _, show in COLUMNS] for w in rows]
        lines += ["  " + line for line in table([h for h, _ in COLUMNS], body).split("\n")]
    return lines


def pool_title(name: str, pool: Mapping[str, Any] | None, count: int) -> str:
    """``POOL web  2/2 STARTED  asgi:app``."""
    if pool is None:
        return f"POOL {printable(name)}  {plural(count, 'worker')}"
    command = pool.get("command")
    runs = " ".join(map(str, command)) if isinstance(command, list) else pool.get("target")
    return (
        f"POOL {printable(name)}  {cell(pool.get('started'))}/{cell(pool.get('workers'))} "
        f"STARTED  {cell(runs)}"
    )


# -- the live view (curses) -----------------------------------------------------------


class Top:
    """The view's state and its loop: status once a second, events as they come, keys."""

    def __init__(
        self,
        args: argparse.Namespace,
        control: Control,
        sub: zmq.Socket[Any],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.args = args
        self.control = control
        self.sub = sub
        self.monotonic = monotonic
        self.status: Mapping[str, Any] | None = None
        self.events: deque[str] = deque(maxlen=KEPT_EVENTS)
        self.rates: Rates | None = None
        self.note: str | None = None
        self.last: Sample | None = None
        self.asked = 0
        self.lost_at: float | None = None
        self.epoch: Any = None

    def run(self, screen: curses.window) -> int:
        """Draw until ``q`` (0); Ctrl-C raises KeyboardInterrupt through curses.wrapper."""
        with contextlib.suppress(curses.error):
            curses.curs_set(0)
        screen.nodelay(True)
        poller = zmq.Poller()
        poller.register(self.sub, zmq.POLLIN)
        poller.register(sys.stdin.fileno(), zmq.POLLIN)
        next_status = self.monotonic()
        while True:
            dirty = False
            if self.monotonic() >= next_status:
                self.ask_status()
                next_status = max(next_status + PERIOD, self.monotonic())
                dirty = True
            for key in iter(screen.getch, -1):
                if key in QUIT_KEYS:
                    return EXIT_OK
                dirty = dirty or key == curses.KEY_RESIZE
            dirty = self.read_events() or dirty
            if dirty:
                self.draw(screen)
            wait = max(0.0, next_status - self.monotonic())
            poller.poll(int(wait * 1000) + 1)

    def ask_status(self) -> None:
        """Ask the master for its status (bounded); on no answer, say so and keep the last."""
        why = unreachable(self.control.endpoint)
        status: Any = None
        if why is None:
            self.asked += 1
            try:
                status = self.control.request("status", timeout=min(STATUS_WAIT, self.args.timeout))
            except NoMaster as exc:
                why = str(exc)
            except BusError as exc:
                why = f"busd answered status with an error: {exc}"
        if why is None and not isinstance(status, Mapping):
            why = f"busd's status is not a map: {dumps(status)}"
        if why is not None:
            self.lost_at = self.lost_at or time.time()
            self.note = (
                f"LOST since {clock(self.lost_at)}; asking again every second (q quits); "
                f"below: its last status\n  {printable(why)}"
            )
            self.rates, self.last = None, None
            return
        self.lost_at, self.note, self.status = None, None, status
        now = sample(status, self.monotonic(), self.asked)
        self.rates, self.last = rates(self.last, now), now

    def read_events(self) -> bool:
        """Take what the SUB socket holds (at most DRAIN_MAX); True if a line was added."""
        added = False
        for _ in range(DRAIN_MAX):
            try:
                frame = self.sub.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                msgs = decode_messages(frame)  # a BATCH: each of its messages
            except ProtocolError as exc:
                self.events.append(f"{clock(time.time())} skipped a message: {printable(exc)}")
                added = True
                continue
            for msg in msgs:
                added = self.take(msg, time.time()) or added
        return added

    def take(self, msg: Message, at: float) -> bool:
        """Keep the line of one message (a new master's epoch first); True if one was added."""
        added = False
        if msg.epoch != self.epoch:
            if self.epoch is not None:
                self.events.append(f"{clock(at)} a new master: epoch {printable(msg.epoch)}")
                added = True
            self.epoch = msg.epoch
        line = event_line(msg, at)
        if line is not None:
            self.events.append(line)
            added = True
        return added

    def draw(self, screen: curses.window) -> None:
        """One frame: erase, write every line, refresh once."""
        lines = render(self.status, self.events, self.rates, screen.getmaxyx(), self.note)
        screen.erase()
        for y, line in enumerate(lines):
            attr = curses.A_BOLD if y == 0 or line.startswith(("POOL ", "EVENTS")) else 0
            with contextlib.suppress(curses.error):
                screen.addstr(y, 0, line, attr)
        screen.refresh()


def top(args: argparse.Namespace, control: Control) -> int:
    """``busctl top``: the live view until ``q`` (0) or Ctrl-C (130)."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        _error("top: a live view needs a terminal (stdin and stdout); try busctl status")
        return EXIT_USAGE
    pub = pub_endpoint(args, control)
    with subscriber(args, control, pub) as sub:
        view = Top(args, control, sub)
        try:
            return int(curses.wrapper(view.run))
        except curses.error as exc:  # no terminfo for $TERM, say
            _error(f"top: the terminal cannot show the view: {exc}")
            return EXIT_FAILED
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED


__all__ = [
    "PERIOD",
    "Rates",
    "Sample",
    "Top",
    "event_line",
    "header",
    "pools_lines",
    "rates",
    "render",
    "sample",
    "summary",
    "top",
]
