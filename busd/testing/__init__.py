"""The busd pytest plugin: fixtures for tests that coordinate real processes.

Fixtures:

``busd_dir``
    a short runtime dir under /tmp (ipc paths must stay under 108 bytes).
``busd_sink``
    a :class:`Sink` collecting :mod:`busd.testing.probe` reports from children.
``busd_procs``
    a :class:`Processes` factory; every process it started is killed (its
    whole process group) and reaped at teardown, and the test fails if one
    would not die.
``busd_master``
    a factory of in-process :class:`busd.MasterBus` objects on ``busd_dir``,
    closed at teardown.
``busd_pool``
    a factory: ``busd_pool(target, *flags, workers=N)`` starts a real
    ``busd`` command, waits until every worker is STARTED and returns a
    :class:`busd.testing.pool.BusdPool`; at teardown busd exits, what remains is
    killed, and the test fails naming any process left behind.
``busd_client``
    a :class:`TestClient`: a ClientBus in the test process, connected (at
    first use) to the test's busd, with ``collect``, ``wait_state``,
    ``publish`` and ``broadcast``.
``busd_run``
    ``busd_run(func, n, *args)`` calls ``func(bus, index, *args)`` in ``n``
    separate processes and returns their return values, or fails the test
    with the traceback of a process that raised.  ``bus.barrier(name)``
    lines them up.

Each test gets its own runtime dir under /tmp, so ``pytest -n`` (xdist)
runs tests side by side.  docs/TESTING.md shows them all.

Child processes get ``BUSD_RUNTIME_DIR``, ``BUSD_PROBE`` and a
``PYTHONPATH`` that finds busd, so ``busd.client.connect()`` and
``busd.testing.probe.Probe()`` work with no arguments.

This module is the plugin's face (the pytest11 entry point): the fixtures
and the names tests import.  The modules below it never import it back::

    busd.testing ----> pool (BusdPool) ----> events (Events), procs
         |       ----> run (Runner) -------> events, procs
         |       ----> sink (Sink), probe (Probe, in children)
         +-----------> procs (Processes, process trees)
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from busd.core.endpoints import Endpoints, default_endpoints
from busd.testing.pool import BusdPool, config_file, start_pool
from busd.testing.probe import ENV as PROBE_ENV
from busd.testing.procs import (
    Processes,
    child_subreaper,
    descendants,
    kill_session,
    reap_adopted,
    session_of,
)
from busd.testing.run import Runner, importable
from busd.testing.sink import Report, Sink

__all__ = [
    "SOURCE_ROOT",
    "BusdPool",
    "BusdTest",
    "PoolFactory",
    "Processes",
    "Report",
    "Runner",
    "Sink",
    "TestClient",
    "child_subreaper",
    "descendants",
    "importable",
    "kill_session",
    "reap_adopted",
    "session_of",
    "start_pool",
]

SOURCE_ROOT = str(Path(__file__).resolve().parents[1])


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
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SOURCE_ROOT, env.get("PYTHONPATH", "")) if p)
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
    from busd.master.bus import MasterBus

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


# -- busd_pool, busd_client, busd_run ------------------------------------------------


def _import_root(path: Path) -> Path:
    """The directory pytest puts on sys.path for a test file (its first non-package parent)."""
    directory = path.parent
    while (directory / "__init__.py").exists():
        directory = directory.parent
    return directory


class BusdTest:
    """What the fixtures of one test share: its runtime dir, pools and in-process master."""

    def __init__(self, directory: Path, procs: Processes, test_file: Path) -> None:
        self.directory = directory
        self.procs = procs
        self.pools: list[BusdPool] = []
        self._master: Any = None
        paths = [str(_import_root(test_file)), os.getcwd(), procs.env.get("PYTHONPATH", "")]
        self.env = {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}

    def endpoints(self) -> Endpoints:
        """The first pool's master, else a MasterBus started in the test process."""
        if self.pools:
            return self.pools[0].endpoints
        if self._master is None:
            from busd.master.bus import MasterBus

            self._master = MasterBus(runtime_dir=self.directory / "m", heartbeat=0.5)
            self._master.start()
        return default_endpoints(self._master.runtime_dir)

    def close(self) -> list[str]:
        """Tear down the pools (last first), then the master; name what was left behind."""
        leaks = []
        for pool in reversed(self.pools):
            leaks += pool.close()
        if self._master is not None:
            self._master.exit()
            self._master.close()
        return leaks


class PoolFactory:
    """``busd_pool(target, *flags, workers=1, timeout=30.0, env=None, config=None)``: a
    started pool.

    ``target`` is ``"pkg.mod:func"``, a module-level function (of the test
    module, say), or None for a master alone (or for a ``-- CMD`` pool, with
    ``"--", CMD...`` last among the flags); ``flags`` are busd's.  ``config``
    (TOML text, or the path of a file) starts ``busd --config`` with its pools
    instead (``target`` None): the handle's commands then take ``pool=``.
    """

    def __init__(self, test: BusdTest) -> None:
        self.test = test

    def __call__(
        self,
        target: str | Callable[..., Any] | None,
        *flags: str,
        workers: int = 1,
        timeout: float = 30.0,
        env: dict[str, str] | None = None,
        config: str | Path | None = None,
    ) -> BusdPool:
        if callable(target):
            where = importable(target)
            target = f"{where['module']}:{where['qualname']}"
        runtime = self.test.directory / f"p{len(self.test.pools)}"
        sizes = None
        if config is not None:
            path, sizes = config_file(config, self.test.directory / f"p{len(self.test.pools)}.toml")
            flags = ("--config", str(path), *flags)
        pool = start_pool(
            self.test.procs,
            runtime,
            target,
            flags,
            workers,
            timeout,
            {**self.test.env, **(env or {})},
            self.test.pools.append,
            sizes,
        )
        return pool


class TestClient:
    """A ClientBus in the test process, connected to the test's busd at first use.

    ``collect`` and ``listen`` subscribe to channels; a message is kept from
    the moment its channel is listened to (``listen`` early to miss nothing).
    """

    __test__ = False  # not a test class, whatever pytest's naming rules say

    def __init__(self, test: BusdTest) -> None:
        self.test = test
        self._bus: Any = None
        self._cond = threading.Condition()
        self._received: dict[str, list[tuple[Any, ...]]] = {}

    @property
    def bus(self) -> Any:
        """The connected :class:`busd.client.ClientBus` (``role="test"``)."""
        if self._bus is None:
            from busd.client.bus import ClientBus

            self._bus = ClientBus(
                self.test.endpoints(), name="busd_client", role="test", on_master_lost="wait"
            )
            self._bus.connect(mirror=True)
        return self._bus

    def listen(self, *channels: str) -> None:
        """Start keeping what arrives on ``channels``."""
        for channel in channels:
            with self._cond:
                if channel in self._received:
                    continue
                self._received[channel] = []
            self.bus.subscribe(channel, lambda *args, _ch=channel, **kw: self._keep(_ch, args, kw))

    def _keep(self, channel: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        with self._cond:
            self._received[channel].append((*args, kwargs) if kwargs else args)
            self._cond.notify_all()

    def collect(self, channel: str, count: int, timeout: float = 10.0) -> list[tuple[Any, ...]]:
        """The first ``count`` messages on ``channel`` (taken); fail past ``timeout``.

        Each is the tuple of its positional arguments, with a dict of the
        keyword arguments at the end when there are any.
        """
        self.listen(channel)
        deadline = time.monotonic() + timeout
        with self._cond:
            got = self._received[channel]
            while len(got) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(
                        f"busd_client: {len(got)} of {count} {channel!r} messages "
                        f"within {timeout}s: {got}",
                        pytrace=False,
                    )
                self._cond.wait(remaining)
            taken, got[:count] = got[:count], []
        return taken

    def wait_state(self, state: str | Any, timeout: float = 10.0) -> None:
        """Wait until the master (mirrored here) is in ``state``; fail past ``timeout``."""
        from busd.core.bus import State
        from busd.core.errors import WaitTimeout

        wanted = State[state] if isinstance(state, str) else state
        try:
            self.bus.wait(wanted, timeout=timeout)
        except WaitTimeout:
            pytest.fail(
                f"busd_client: the bus stayed {self.bus.state.name}, not "
                f"{wanted.name}, for {timeout}s",
                pytrace=False,
            )

    def publish(self, channel: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Publish in this process only (wspbus semantics)."""
        return list(self.bus.publish(channel, *args, **kwargs))

    def broadcast(self, channel: str, *args: Any, **kwargs: Any) -> Any:
        """Publish in every process, through the master."""
        return self.bus.broadcast(channel, *args, **kwargs)

    def close(self) -> None:
        """Leave the master and close the bus."""
        if self._bus is not None:
            self._bus.leave("test over")


@pytest.fixture
def _busd_test(
    busd_dir: Path,
    busd_procs: Processes,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[BusdTest]:
    # Output and run files go beside the test's tmp_path, never into it.
    procs = Processes(busd_dir, tmp_path_factory.mktemp("busd"), busd_procs.env)
    test = BusdTest(busd_dir, procs, Path(str(request.path)))
    before = descendants()
    was_reaper = child_subreaper(True)
    try:
        yield test
    finally:
        leaks = test.close()
        leaks += procs.cleanup()
        # What the test itself started and left running (busd_procs' own go next).
        theirs = {proc.pid for proc in busd_procs.started}
        leaks += kill_session(
            -1,
            [
                p
                for p in descendants() - before
                if session_of(p) not in theirs and p.pid not in theirs
            ],
        )
        child_subreaper(was_reaper)
        reap_adopted(before)
        if leaks:
            pytest.fail(
                "busd left processes behind (killed now):\n" + "\n".join(leaks), pytrace=False
            )


@pytest.fixture
def busd_pool(_busd_test: BusdTest) -> PoolFactory:
    """Start real busd pools: ``pool = busd_pool("app:main", "--reload", "respawn", workers=4)``."""
    return PoolFactory(_busd_test)


@pytest.fixture
def busd_client(_busd_test: BusdTest) -> Iterator[TestClient]:
    """A ClientBus in the test process (connected at first use), with helpers."""
    client = TestClient(_busd_test)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def busd_run(_busd_test: BusdTest) -> Runner:
    """``busd_run(func, n, *args)``: ``func(bus, index, *args)`` in n processes; their results."""
    return Runner(_busd_test.procs, _busd_test.endpoints)
