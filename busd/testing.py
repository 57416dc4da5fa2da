"""The busd pytest plugin: fixtures for tests that coordinate real processes.

Fixtures:

``busd_dir``
    a short runtime dir under /tmp (ipc paths must stay under 108 bytes).
``busd_sink``
    a :class:`Sink` collecting :mod:`busd.probe` reports from children.
``busd_procs``
    a :class:`Processes` factory; every process it started is killed (its
    whole process group) and reaped at teardown, and the test fails if one
    would not die.
``busd_master``
    a factory of in-process :class:`busd.MasterBus` objects on ``busd_dir``,
    closed at teardown.

Child processes get ``BUSD_RUNTIME_DIR``, ``BUSD_PROBE`` and a
``PYTHONPATH`` that finds busd, so ``client.connect()`` and
``busd.probe.Probe()`` work with no arguments.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import psutil
import pytest
import zmq

from busd.probe import ENV as PROBE_ENV

SOURCE_ROOT = str(Path(__file__).resolve().parents[1])
Report = dict[str, Any]


class Sink:
    """The test's end of the probes: a PULL socket, read with deadlines."""

    def __init__(self, directory: Path) -> None:
        self.endpoint = f"ipc://{directory}/probe.sock"
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._sock = self._ctx.socket(zmq.PULL)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(self.endpoint)
        self.seen: list[Report] = []
        self._unclaimed: collections.deque[Report] = collections.deque()

    def _read(self, timeout: float) -> Report | None:
        if not self._sock.poll(max(1, int(timeout * 1000))):
            return None
        report: Report = msgpack.unpackb(self._sock.recv(), raw=False)
        self.seen.append(report)
        return report

    def get(self, event: str, timeout: float,
            where: Callable[[Report], bool] | None = None) -> Report | None:
        """The next report of ``event`` (matching ``where``), or None past ``timeout``."""
        def wanted(r: Report) -> bool:
            return bool(r.get("event") == event and (where is None or where(r)))

        for r in self._unclaimed:
            if wanted(r):
                self._unclaimed.remove(r)
                return r
        deadline = time.monotonic() + timeout
        while True:
            report = self._read(deadline - time.monotonic())
            if report is None:
                return None
            if wanted(report):
                return report
            self._unclaimed.append(report)

    def expect(self, event: str, timeout: float = 10.0,
               where: Callable[[Report], bool] | None = None) -> Report:
        """The next report of ``event`` (matching ``where``); fail past ``timeout``."""
        return self.collect(event, 1, timeout, where)[0]

    def collect(self, event: str, count: int, timeout: float = 10.0,
                where: Callable[[Report], bool] | None = None) -> list[Report]:
        """``count`` reports of ``event``, in arrival order; fail past ``timeout``."""
        def wanted(r: Report) -> bool:
            return bool(r.get("event") == event and (where is None or where(r)))

        found = [r for r in self._unclaimed if wanted(r)][:count]
        for r in found:
            self._unclaimed.remove(r)
        deadline = time.monotonic() + timeout
        while len(found) < count:
            report = self._read(deadline - time.monotonic())
            if report is None:
                pytest.fail(f"got {len(found)} of {count} {event!r} reports in {timeout}s; "
                            f"other reports: {list(self._unclaimed)[-10:]}")
            if wanted(report):
                found.append(report)
            else:
                self._unclaimed.append(report)
        return found

    def close(self) -> None:
        """Close the socket and its context."""
        self._sock.close(linger=0)
        self._ctx.term()


class Processes:
    """Starts child processes in their own sessions and always cleans them up."""

    def __init__(self, directory: Path, logs: Path, env: dict[str, str]) -> None:
        self.directory = directory
        self.logs = logs
        self.env = env
        self.started: list[subprocess.Popen[bytes]] = []

    def python(self, source: str, *args: str, name: str = "child",
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Run ``source`` (dedented) as a script with the test's Python."""
        script = self.logs / f"{name}-{len(self.started)}.py"
        script.write_text(textwrap.dedent(source))
        return self.spawn([sys.executable, str(script), *args], name=name, env=env)

    def spawn(self, argv: list[str], name: str = "child",
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` with stdout and stderr in files named after ``name``."""
        index = len(self.started)
        out = open(self.logs / f"{name}-{index}.out", "wb")  # noqa: SIM115 - closed below
        try:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    env={**self.env, **(env or {})})
        finally:
            out.close()
        proc.log_path = self.logs / f"{name}-{index}.out"  # type: ignore[attr-defined]
        self.started.append(proc)
        return proc

    @staticmethod
    def output(proc: subprocess.Popen[bytes]) -> str:
        """What the process printed so far."""
        path: Path = proc.log_path  # type: ignore[attr-defined]
        return path.read_text(errors="replace")

    def cleanup(self, timeout: float = 5.0) -> list[str]:
        """Kill every process group we started, reap, and name any survivor."""
        for proc in self.started:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
        survivors = []
        for proc in self.started:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                survivors.append(f"{proc.pid} {proc.args!r}")
        survivors += _session_leftovers([p.pid for p in self.started], timeout)
        return survivors


def _session_leftovers(sids: list[int], timeout: float) -> list[str]:
    """Processes still in the sessions we created (grandchildren), killed."""
    left = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getsid(proc.pid) in sids:
                left.append(proc)
        except (ProcessLookupError, PermissionError):
            continue
    for proc in left:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(left, timeout=timeout)
    return [f"{p.pid} (session leftover)" for p in alive]


@pytest.fixture
def busd_dir() -> Iterator[Path]:
    """A short, private runtime dir, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="bt", dir="/tmp"))
    os.chmod(path, 0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def busd_sink(busd_dir: Path) -> Iterator[Sink]:
    """Reports from child processes (they find it through BUSD_PROBE)."""
    sink = Sink(busd_dir)
    try:
        yield sink
    finally:
        sink.close()


@pytest.fixture
def busd_procs(busd_dir: Path, busd_sink: Sink, tmp_path: Path) -> Iterator[Processes]:
    """Start processes that know the runtime dir and the sink; all reaped after."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (SOURCE_ROOT, env.get("PYTHONPATH", "")) if p)
    env.update({"BUSD_RUNTIME_DIR": str(busd_dir), PROBE_ENV: busd_sink.endpoint})
    procs = Processes(busd_dir, tmp_path, env)
    try:
        yield procs
    finally:
        survivors = procs.cleanup()
        if survivors:
            pytest.fail(f"processes would not die: {survivors}", pytrace=False)


@pytest.fixture
def busd_master(busd_dir: Path) -> Iterator[Callable[..., Any]]:
    """A factory of MasterBus objects on busd_dir (heartbeat 0.2 s), closed after."""
    from busd.master import MasterBus

    made: list[MasterBus] = []

    def make(**kwargs: Any) -> MasterBus:
        kwargs.setdefault("runtime_dir", busd_dir)
        kwargs.setdefault("heartbeat", 0.2)
        master = MasterBus(**kwargs)
        made.append(master)
        return master

    try:
        yield make
    finally:
        for master in made:
            master.close()
