"""The handle ``busd_pool`` returns: a real ``busd`` command with N workers, driven from a test.

::

    test thread --Control (DEALER)--> busd master --> workers
         ^                               |
         +------- SUB (Events) ----------+   state changes, channels, worker events

Everything here runs in the test's own thread: there is no background
thread.  Waits ask the master for its status again whenever it publishes
something (or every ``POLL`` seconds at most), and end with a failure that
shows the last status and busd's output.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import psutil
import pytest

from busd.core.control import Control
from busd.core.endpoints import Endpoints, default_endpoints
from busd.core.errors import NoMaster
from busd.testing.events import Events
from busd.testing.procs import Processes, describe, kill_session

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, before the standard library took it in
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = ["BusdPool", "Events", "PoolLog", "Status", "start_pool"]

#: The longest a wait goes without asking the master again.
POLL = 0.05
#: What a worker (busd.client.worker.descendants), or the fork server for a worker
#: (busd.pool.strays), logs when it ends processes the worker left running.
LEFT_RUNNING = re.compile(
    r"ending \d+ process\(es\) (?:this worker|worker pid \d+|a worker "
    r"that ended) left running: ([\d, ]+)"
)
Status = dict[str, Any]


class PoolLog:
    """What busd and its workers printed: one file, or one per worker with ``--log-dir``."""

    def __init__(self, path: Path, log_dir: Path | None = None, name: str = "busd") -> None:
        self.path = path
        self.log_dir = log_dir
        self.name = name

    @property
    def text(self) -> str:
        """Everything printed so far."""
        return self.path.read_text(errors="replace") if self.path.exists() else ""

    def worker(self, slot: int) -> str:
        """Worker ``slot``'s output: its --log-dir file, else its lines here."""
        if self.log_dir is not None:
            path = self.log_dir / f"{self.name}-worker-{slot}.log"
            return path.read_text(errors="replace") if path.exists() else ""
        tag = f"worker {slot} ["
        return "".join(line for line in self.text.splitlines(keepends=True) if tag in line)

    def everything(self) -> str:
        """busd's output and, with ``--log-dir``, every worker's file."""
        texts = [self.text]
        if self.log_dir is not None:
            texts += [
                path.read_text(errors="replace")
                for path in sorted(self.log_dir.glob(f"{self.name}-worker-*.log"))
            ]
        return "\n".join(texts)

    def __str__(self) -> str:
        return self.text


class BusdPool:
    """One ``busd`` process with its workers; see ``busd_pool`` in :mod:`busd.testing`.

    ``proc`` is the busd process, ``runtime_dir`` its sockets, ``log`` its
    output.  Commands go through the control socket like busctl's.
    """

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        runtime_dir: Path,
        log: PoolLog,
        size: int,
        timeout: float,
        sizes: dict[str, int] | None = None,
    ) -> None:
        self.proc = proc
        self.runtime_dir = runtime_dir
        self.endpoints: Endpoints = default_endpoints(runtime_dir)
        self.log = log
        #: Each pool's size (a config file's pools; else the one pool, ``main``).
        self.sizes: dict[str, int] = dict(sizes) if sizes is not None else {"main": size}
        self.size = sum(self.sizes.values())
        self.timeout = timeout
        self.pids_seen: set[int] = set()
        self._control = Control(self.endpoints.ctl, timeout=timeout)
        self._events = Events(self.endpoints.pub)

    # -- commands ---------------------------------------------------------

    def request(self, cmd: str, timeout: float | None = None, **args: Any) -> Any:
        """Any control command (as busctl sends it); its result."""
        try:
            return self._control.request(cmd, timeout, **args)
        except NoMaster as exc:
            self._fail(f"{cmd}: {exc}")

    def status(self) -> Status:
        """The master's status (what ``busctl --json status`` prints)."""
        status: Status = self.request("status")
        self.pids_seen.update(w["pid"] for w in status.get("workers", []) if w.get("pid"))
        return status

    @property
    def workers(self) -> list[dict[str, Any]]:
        """Every slot: ``id``, ``pid``, ``state``, ``restarts``, ..."""
        return list(self.status().get("workers", []))

    @property
    def pids(self) -> list[int]:
        """The workers' pids, by slot."""
        return [w["pid"] for w in self.workers if w.get("pid")]

    def pool_pids(self, pool: str) -> list[int]:
        """The pids of one pool's workers, by slot."""
        return [w["pid"] for w in self.workers if w.get("pid") and w.get("pool") == pool]

    def graceful(
        self, wait: bool = True, timeout: float | None = None, pool: str | None = None
    ) -> Any:
        """Graceful reload (of one ``pool``); with ``wait``, until every worker acked."""
        limit = self.timeout if timeout is None else timeout
        body: dict[str, Any] = {"wait": wait, "timeout": limit}
        if pool is not None:
            body["pool"] = pool
        return self._control.call("graceful", body, limit + 5)

    def stop(self, wait: bool = True) -> Any:
        """Stop the bus (workers run their stop listeners and stay)."""
        return self._control.call("stop", {"wait": wait, "timeout": self.timeout}, self.timeout + 5)

    def start(self, wait: bool = True) -> Any:
        """Start the bus again after :meth:`stop`."""
        return self._control.call(
            "start", {"wait": wait, "timeout": self.timeout}, self.timeout + 5
        )

    def broadcast(self, channel: str, *args: Any, **kwargs: Any) -> Any:
        """Publish ``channel`` in the master and every worker."""
        return self.request("broadcast", channel=channel, args=list(args), kwargs=kwargs)

    def scale(self, n: int | str, wait: bool = True, pool: str | None = None) -> Any:
        """Set (``3``) or change (``"+1"``, ``"-2"``) the (``pool``'s) size; wait for it by
        default."""
        result = self.request("scale", None, n=str(n), **({"pool": pool} if pool else {}))
        size = result.get("size") if isinstance(result, dict) else None
        if isinstance(size, int):
            self.sizes[pool or next(iter(self.sizes))] = size
            self.size = sum(self.sizes.values())
        if wait:
            self.wait_for("STARTED")
        return result

    def kill_worker(self, slot: int, sig: int = signal.SIGKILL, pool: str | None = None) -> int:
        """Send ``sig`` to the worker in ``slot`` (of ``pool``); returns its pid."""
        row = next(
            (
                w
                for w in self.workers
                if w["id"] == slot and w.get("pid") and (pool is None or w.get("pool") == pool)
            ),
            None,
        )
        if row is None:
            self._fail(f"no worker in slot {slot}")
        os.kill(row["pid"], sig)
        return int(row["pid"])

    def exit(self, timeout: float | None = None) -> int:
        """Exit busd (workers run their exit listeners); its exit status."""
        limit = self.timeout if timeout is None else timeout
        with contextlib.suppress(NoMaster):
            self._control.request("exit", limit)
        try:
            return self.proc.wait(limit)
        except subprocess.TimeoutExpired:
            self._fail(f"busd did not exit within {limit}s")

    # -- waiting ----------------------------------------------------------

    def wait_for(
        self, what: str | Callable[[Status], bool], timeout: float | None = None
    ) -> Status:
        """Wait until the status satisfies ``what``; return that status.

        A state name (``"STARTED"``) means the master and ``size`` workers
        are all in it; a callable gets the status dict.
        """
        predicate = _all_in(what, self) if isinstance(what, str) else what
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            if self.proc.poll() is not None:
                self._fail(f"busd exited with status {self.proc.returncode} while waiting")
            status = self.status()
            if predicate(status):
                return status
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._fail(
                    f"gave up after {limit}s waiting for {_name(what)}; last status: "
                    f"state {status.get('state')}, workers "
                    f"{[(w['id'], w['state']) for w in status.get('workers', [])]}"
                )
            self._events.wait_readable(min(POLL, remaining))
            while self._events.next(0) is not None:
                pass

    def wait_answering(self) -> None:
        """Wait until busd answers a ping (fail at once if it exits first)."""
        deadline = time.monotonic() + self.timeout
        while True:
            if self.proc.poll() is not None:
                self._fail(f"busd exited with status {self.proc.returncode} at start")
            try:
                self._control.request("ping", 0.25)
                return
            except NoMaster:
                if time.monotonic() > deadline:
                    self._fail(f"busd did not answer within {self.timeout}s")

    def events(self) -> Events:
        """A new watch stream, live (use it as a context manager, or close it)."""
        return Events(self.endpoints.pub, self._control)

    # -- teardown ---------------------------------------------------------

    def close(self, timeout: float = 30.0) -> list[str]:
        """Exit busd, kill what remains of its session; name every process left behind.

        Processes the workers started count too: those alive before the exit
        and still alive after it (once orphaned, init may reap them first).
        """
        leaks: list[str] = []
        started_by_workers: list[psutil.Process] = []
        named: dict[int, str] = {}
        if self.proc.poll() is None:
            with contextlib.suppress(NoMaster):
                workers = {
                    w["pid"]
                    for w in self._control.request("workers", 2.0) or []
                    if isinstance(w, dict) and w.get("pid")
                }
                started_by_workers = _started_by_workers(self.proc.pid, workers)
                named = {proc.pid: describe(proc) for proc in started_by_workers}
            with contextlib.suppress(NoMaster):
                self._control.request("exit", 5.0)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                leaks.append(f"busd (pid {self.proc.pid}) did not exit within {timeout}s")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        leaks += kill_session(self.proc.pid, started_by_workers)
        leaks += self._ended_for_workers(named, leaks)
        self._control.close()
        self._events.close()
        return leaks

    def _ended_for_workers(self, named: dict[int, str], named_already: list[str]) -> list[str]:
        """The processes of ``named`` a worker still had once its exit listeners ran.

        The worker ends them itself (``busd.client.worker.descendants``) and says so
        in its log; the process is gone by now, but the test left it running.
        """
        ended: set[int] = set()
        for found in LEFT_RUNNING.finditer(self.log.everything()):
            ended.update(int(pid) for pid in re.findall(r"\d+", found.group(1)))
        return [
            f"{line} (left running by its worker, which ended it)"
            for pid, line in named.items()
            if pid in ended and not any(n.startswith(f"pid {pid}:") for n in named_already)
        ]

    def _fail(self, message: str) -> NoReturn:
        pytest.fail(
            f"busd_pool: {message}\n--- busd log ({self.log.path}) ---\n{self.log.text[-6000:]}",
            pytrace=False,
        )


def _started_by_workers(master: int, workers: set[int]) -> list[psutil.Process]:
    """What the workers started: their descendants, and what the fork server adopted.

    A worker's daemon whose parent ended first is the fork server's child
    (its subreaper), not the worker's; busd's own processes are the
    master's children (the fork server, exec'd workers) and the workers.
    """
    found = {p.pid: p for p in _children_of(workers)}
    try:
        own = psutil.Process(master).children()
        below = psutil.Process(master).children(recursive=True)
    except psutil.Error:
        return list(found.values())
    ours = {p.pid for p in own} | workers
    found.update((p.pid, p) for p in below if p.pid not in ours)
    return list(found.values())


def _children_of(pids: set[int]) -> list[psutil.Process]:
    """Every live descendant of the processes ``pids``."""
    found = []
    for pid in pids:
        try:
            found += psutil.Process(pid).children(recursive=True)
        except psutil.Error:
            continue
    return found


def _all_in(state: str, pool: BusdPool) -> Callable[[Status], bool]:
    def check(status: Status) -> bool:
        workers = status.get("workers", [])
        return bool(
            status.get("state") == state
            and len(workers) == pool.size
            and all(w.get("state") == state for w in workers)
        )

    check.__name__ = f"master and {pool.size} workers {state}"
    return check


def _name(what: object) -> str:
    return what if isinstance(what, str) else getattr(what, "__name__", repr(what))


def start_pool(
    procs: Processes,
    runtime_dir: Path,
    target: str | None,
    flags: tuple[str, ...],
    workers: int,
    timeout: float,
    env: dict[str, str],
    keep: Callable[[BusdPool], None],
    sizes: dict[str, int] | None = None,
) -> BusdPool:
    """Start ``busd`` on ``runtime_dir``; return once it and every worker is STARTED.

    ``keep`` gets the pool as soon as it exists, so teardown finds it even
    when the start fails.
    """
    argv = [
        sys.executable,
        "-m",
        "busd",
        "--runtime-dir",
        str(runtime_dir),
        "-w",
        str(workers),
        *flags,
    ]
    if target:
        argv.append(target)
    proc = procs.spawn(argv, name=f"busd-{runtime_dir.name}", env=env)
    log = PoolLog(
        proc.log_path,  # type: ignore[attr-defined]
        _flag(flags, "--log-dir", None),
        _flag(flags, "--name", "busd"),
    )
    pool = BusdPool(
        proc, runtime_dir, log, workers if target or "--" in flags else 0, timeout, sizes
    )
    keep(pool)
    pool.wait_answering()
    pool.wait_for("STARTED")
    return pool


def config_file(config: str | Path, write_to: Path) -> tuple[Path, dict[str, int]]:
    """A config file (``config`` is one, or TOML text written to ``write_to``) and the
    size of each of its pools."""
    if isinstance(config, Path) or "\n" not in config:
        path = Path(config)
    else:
        path = write_to
        path.write_text(config)
    with path.open("rb") as file:
        pools = tomllib.load(file).get("pools", {})
    return path, {name: int(table.get("workers", 1)) for name, table in pools.items()}


def _flag(flags: tuple[str, ...], name: str, default: Any) -> Any:
    """The value of ``name`` in busd's ``flags`` (``--x V`` or ``--x=V``), else ``default``."""
    for i, flag in enumerate(flags):
        if flag == name and i + 1 < len(flags):
            value = flags[i + 1]
        elif flag.startswith(name + "="):
            value = flag.split("=", 1)[1]
        else:
            continue
        return Path(value) if name == "--log-dir" else value
    return default
