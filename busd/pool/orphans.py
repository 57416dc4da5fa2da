"""Workers left behind by a busd of the same name that died: found and killed.

The pool writes ``workers.pids`` in the runtime dir (one ``pid start-time``
line per worker; a config file's pool ``workers-POOL.pids``).  A new master
reads them before it starts: a process with that pid and that start time is
a worker of the dead master (the start time tells it from an unrelated
process that reused the pid), and is killed.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import psutil

from busd.core.endpoints import ensure_runtime_dir
from busd.core.errors import BusError

log = logging.getLogger(__name__)
PIDS_FILE = "workers.pids"


def write_pids(path: Path, procs: Iterable[psutil.Process]) -> bool:
    """Record the pool's workers (atomically: write, then rename); False if it cannot.

    A runtime dir removed under the master is made again (mode 0700); any
    other failure (a full disk) is logged and the pool goes on: this file
    only helps a later master, it must never stop this one.
    """
    lines = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            lines.append(f"{proc.pid} {proc.create_time():.3f}\n")
    text = "".join(lines)
    tmp = path.with_suffix(".tmp")
    try:
        try:
            tmp.write_text(text)
        except FileNotFoundError:
            ensure_runtime_dir(path.parent)
            tmp.write_text(text)
        os.replace(tmp, path)
    except (OSError, BusError) as exc:
        log.warning("cannot record the workers in %s: %s", path, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()
        return False
    return True


def reap_orphans(runtime: Path, timeout: float = 5.0) -> list[int]:
    """Kill the workers a previous master in ``runtime`` left (every pool's
    ``workers*.pids``); return their pids."""
    found = []
    for path in sorted({runtime / PIDS_FILE, *runtime.glob("workers-*.pids")}):
        found += _reap_file(path, timeout)
    return found


def _reap_file(path: Path, timeout: float) -> list[int]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    orphans = []
    for line in text.splitlines():
        try:
            pid_text, started = line.split()
            proc = psutil.Process(int(pid_text))
            if abs(proc.create_time() - float(started)) < 0.01:
                orphans.append(proc)
        except (ValueError, psutil.Error):
            continue
    for proc in orphans:
        log.warning("killing pid %d, a worker left by a previous busd", proc.pid)
        with contextlib.suppress(psutil.Error):
            proc.kill()
    _, alive = psutil.wait_procs(orphans, timeout=timeout)
    if alive:
        log.error("orphans still alive after SIGKILL: %s", [p.pid for p in alive])
    path.unlink(missing_ok=True)
    return [p.pid for p in orphans]
