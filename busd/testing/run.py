"""``busd_run``: call a function in N processes, each with its own connected bus.

::

    test thread --spec files--> N x `python -m busd.client.testing.harness SPEC`
        |                              | connect, broadcast busd.run.ready
        | <--- SUB (Events) -----------+
        | --- Control: broadcast busd.run.go (all N are connected) --->
        | <--- result files (msgpack: value, or the traceback) -------

No background thread: the test's thread waits on the SUB socket and on
the processes, every wait bounded by the run's ``timeout``.
"""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import msgpack
import pytest

from busd.core.control import Control
from busd.core.endpoints import Endpoints
from busd.testing.events import Events
from busd.testing.procs import Processes, kill_session

READY, GO = "busd.run.ready", "busd.run.go"


def importable(func: Callable[..., Any]) -> dict[str, Any]:
    """How another process finds ``func``: module, qualified name, file, sys.path entry."""
    qualname = getattr(func, "__qualname__", "")
    if "<locals>" in qualname or "<lambda>" in qualname or not qualname:
        raise TypeError(f"{func!r} must be a module-level function (another process imports it)")
    module = sys.modules.get(func.__module__)
    path = inspect.getsourcefile(module) if module is not None else None
    basedir = None
    if path is not None:
        parts = func.__module__.split(".")
        up = len(parts) - (0 if Path(path).name == "__init__.py" else 1)
        basedir = str(Path(path).resolve().parents[up])
    return {"module": func.__module__, "qualname": qualname, "path": path, "basedir": basedir}


class Runner:
    """The ``busd_run`` fixture's value: ``busd_run(func, n, *args, timeout=60, **kwargs)``."""

    def __init__(self, procs: Processes, endpoints: Callable[[], Endpoints]) -> None:
        self.procs = procs
        self._endpoints = endpoints

    def __call__(
        self, func: Callable[..., Any], n: int, *args: Any, timeout: float = 60.0, **kwargs: Any
    ) -> list[Any]:
        """Run ``func(bus, index, *args, **kwargs)`` in ``n`` processes; their return values."""
        if n < 1:
            raise ValueError("busd_run needs n >= 1")
        where = importable(func)
        endpoints = self._endpoints()
        run_id = uuid.uuid4().hex[:12]
        deadline = time.monotonic() + timeout
        with (
            Control(endpoints.ctl, timeout=10) as control,
            Events(endpoints.pub, control) as events,
        ):
            procs, results = self._spawn(where, n, args, kwargs, endpoints, run_id, timeout)
            _wait_ready(events, procs, run_id, n, deadline, self.procs)
            control.request("broadcast", channel=GO, args=[run_id], kwargs={})
        _wait_done(procs, deadline, self.procs, timeout)
        leaks = [name for proc in procs for name in kill_session(proc.pid)]
        if leaks:
            pytest.fail(
                "busd_run: processes left behind by the run (killed now):\n" + "\n".join(leaks),
                pytrace=False,
            )
        return [
            _outcome(i, n, proc, path, self.procs)
            for i, (proc, path) in enumerate(zip(procs, results, strict=True))
        ]

    def _spawn(
        self,
        where: dict[str, Any],
        n: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        endpoints: Endpoints,
        run_id: str,
        timeout: float,
    ) -> tuple[list[subprocess.Popen[bytes]], list[Path]]:
        procs, results = [], []
        for index in range(n):
            stem = self.procs.logs / f"run-{run_id[:6]}-{index}"
            spec = {
                **where,
                "index": index,
                "size": n,
                "run": run_id,
                "args": list(args),
                "kwargs": kwargs,
                "pub": endpoints.pub,
                "ctl": endpoints.ctl,
                "timeout": timeout,
                "result": f"{stem}.result",
            }
            try:
                data = msgpack.packb(spec, use_bin_type=True)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"busd_run arguments must be msgpack values: {exc}") from None
            Path(f"{stem}.spec").write_bytes(data)
            procs.append(
                self.procs.spawn(
                    [sys.executable, "-m", "busd.client.testing.harness", f"{stem}.spec"],
                    name=f"run{index}",
                )
            )
            results.append(Path(f"{stem}.result"))
        return procs, results


def _wait_ready(
    events: Events,
    procs: list[subprocess.Popen[bytes]],
    run_id: str,
    n: int,
    deadline: float,
    owner: Processes,
) -> None:
    ready: set[int] = set()
    while len(ready) < n:
        for index, proc in enumerate(procs):
            if index not in ready and proc.poll() is not None:
                _fail_early(index, n, proc, owner)
        if time.monotonic() > deadline:
            missing = sorted(set(range(n)) - ready)
            pytest.fail(f"busd_run: processes {missing} never connected", pytrace=False)
        doc = events.next(0.2)
        if doc is not None and doc.get("channel") == READY and doc["args"][0] == run_id:
            ready.add(int(doc["args"][1]))


def _wait_done(
    procs: list[subprocess.Popen[bytes]], deadline: float, owner: Processes, timeout: float
) -> None:
    hung = []
    for index, proc in enumerate(procs):
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            hung.append(index)
    if not hung:
        return
    for index in hung:  # faulthandler in the child prints every thread's stack
        os.kill(procs[index].pid, signal.SIGUSR1)
    for index in hung:
        try:
            procs[index].wait(1.0)
        except subprocess.TimeoutExpired:
            procs[index].kill()
            procs[index].wait(5.0)
    report = "\n".join(f"--- process {i} ---\n{owner.output(procs[i])[-3000:]}" for i in hung)
    pytest.fail(
        f"busd_run: processes {hung} of {len(procs)} did not finish within "
        f"{timeout}s; their output and stacks:\n{report}",
        pytrace=False,
    )


def _fail_early(index: int, n: int, proc: subprocess.Popen[bytes], owner: Processes) -> NoReturn:
    pytest.fail(
        f"busd_run: process {index} of {n} exited with status {proc.returncode} "
        f"before it connected; its output:\n{owner.output(proc)[-3000:]}",
        pytrace=False,
    )


def _outcome(
    index: int, n: int, proc: subprocess.Popen[bytes], path: Path, owner: Processes
) -> Any:
    if not path.exists():
        pytest.fail(
            f"busd_run: process {index} of {n} exited with status {proc.returncode} "
            f"and no result; its output:\n{owner.output(proc)[-3000:]}",
            pytrace=False,
        )
    outcome = msgpack.unpackb(path.read_bytes(), raw=False)
    if not outcome["ok"]:
        pytest.fail(
            f"busd_run: process {index} of {n} (pid {proc.pid}) raised:\n{outcome['error']}",
            pytrace=False,
        )
    return outcome["value"]
