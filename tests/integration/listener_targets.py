"""Master plugins and worker targets for the tests of where the master's listeners run.

Each writes what it saw, one JSON line per call, to ``$BUSD_TEST_RECORD_DIR``.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from busd.client.bus import ClientBus

#: How long a worker's graceful listener takes: longer than the master needs to
#: relay graceful and run its own listeners, so an early reload_end shows.
SLOW = 0.5


def _record_dir() -> Path:
    return Path(os.environ["BUSD_TEST_RECORD_DIR"])


def _append(name: str, record: dict[str, Any]) -> None:
    with open(_record_dir() / name, "a") as out:
        out.write(json.dumps(record) + "\n")


def log_threads(master: Any) -> None:
    """``--plugin``: record the thread of every call of a master 'log' listener."""

    def on_log(msg: str = "", level: int = 20, *args: Any, **kwargs: Any) -> None:
        _append("log.jsonl", {"thread": threading.current_thread().name, "msg": msg})

    master.subscribe("log", on_log)


def reload_order(master: Any) -> None:
    """``--plugin``: at each reload_end, record which workers had finished their graceful."""

    def on_reload_end(info: dict[str, Any]) -> None:
        done = sorted(int(p.name.split("-")[1]) for p in _record_dir().glob("graceful-*"))
        _append("reload.jsonl", {"info": info, "graceful_done": done})

    master.subscribe("reload_end", on_reload_end)


def slow_graceful(bus: ClientBus) -> None:
    """A worker whose graceful listener takes SLOW seconds, then says it is done."""

    def on_graceful() -> None:
        threading.Event().wait(SLOW)  # a slow listener, not a synchronisation
        (_record_dir() / f"graceful-{os.getpid()}").touch()

    bus.subscribe("graceful", on_graceful)


def failing_graceful(bus: ClientBus) -> None:
    """A worker whose graceful listener fails (its ack carries the error)."""

    def on_graceful() -> None:
        raise RuntimeError("cannot reload")

    bus.subscribe("graceful", on_graceful)


def held_graceful(bus: ClientBus) -> None:
    """A worker whose graceful listener says it holds, then waits (at most 30 s) for a
    ``release`` file: a reload that lasts as long as the test wants."""

    def on_graceful() -> None:
        (_record_dir() / f"holding-{os.getpid()}").touch()
        release = _record_dir() / "release"
        pause = threading.Event()
        for _ in range(600):  # bounded: 30 s
            if release.exists():
                return
            pause.wait(0.05)  # the workload of this listener, not a synchronisation

    bus.subscribe("graceful", on_graceful)
