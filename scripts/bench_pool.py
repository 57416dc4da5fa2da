"""Pool benchmark: busd's start, reload, exit, busctl and idle cost, beside floors.

Run by hand (it is not a test), with the project's interpreter::

    .venv/bin/python scripts/bench_pool.py [--quick] [--cold-bytecode]

Every busd is a real subprocess (``python -m busd --runtime-dir D --log-level
WARNING ...``, its own session, output to a file), each in its own short
runtime dir under /tmp (removed after).  It is always ended: ``exit`` through
the control socket, then SIGKILL to its process group, every wait bounded;
afterwards no process of its session may be left (psutil), or the run fails.

1. start: from launching ``busd -w N busd.examples.hello:main`` until every
   slot of ``workers`` shows STARTED, for N = 1, 8, 32, beside the fork-server
   floor: one interpreter that imports the worker side (pyzmq, msgpack,
   busd.client.worker.main) and forks N children that each say hello from a DEALER to a
   ROUTER here, from its launch until all N hellos arrived.  ``--spawn exec``
   is measured beside the exec floor: N bare interpreters (posix_spawn, as the
   pool does) that ``import zmq`` and say hello.  Start 32 is also measured
   beside the client floor: the same fork server whose children join a bare
   ``busd -w 0`` that already runs as real clients (``client.connect``, mirrored
   to STARTED) before saying hello: a worker's own cost without busd's pool.
   The busd figure includes busd's own interpreter start and imports (that
   is what a user waits for); the time from busd's first answer (a ping
   queued before it bound, on sockets that retry every 1 ms) to all STARTED
   is printed beside it.  How the end is seen: the bench subscribes to the
   master's PUB and blocks on it (no CPU taken from the 2 cores the workers
   start on); once N ``client_joined`` events arrived it polls ``workers``
   back to back (STARTED follows a join by about a millisecond; a worker
   reports it in a PONG, which is not published).  A ``workers`` poll after
   1 s without events is the fallback should events be missed.  Also N = 32
   ``--preload`` and ``--spawn exec``, and N = 32 beside Circus's and
   gunicorn's start on this machine (1005 and 1735 ms).
2. ``--reload respawn`` of 32: ``graceful`` until all 32 slots are STARTED
   with new pids (none of the old): the default path, ``--preload``, ``--spawn exec``.
3. exit of 32: from sending ``exit`` until every worker (pids from
   ``status`` beforehand) and busd itself are gone: pidfds say when each
   ends (no polling), then ``Popen.wait`` and ``psutil.wait_procs`` confirm.
4. ``busctl status`` as a whole process, p50 of 20, beside
   ``python -c "import zmq, msgpack"``; with ``-X importtime`` when it misses.
1b. several pools: 3 pools of 8 from ``--config`` (three fork servers) beside one
   pool of 24 from flags, each until all 24 workers are STARTED.
5. idle master with 32 workers heartbeating (1 s): CPU % of one core
   (schedstat) and wake-ups/s (voluntary context switches of all its
   threads), in total (targets: CPU <= 0.05 %, wake-ups <= 2/s; PASS/MISS)
   and per thread (busd names its threads: busd-hub, busd-commands, ...).

Bytecode: this environment sets PYTHONDONTWRITEBYTECODE=1 and the source tree
has no __pycache__, so every busd, worker and busctl would compile busd's
modules from source each time.  An installed package has its .pyc files, so
by default every child runs with PYTHONPYCACHEPREFIX in the bench's temp dir,
warmed first; ``--cold-bytecode`` keeps the environment as it is.  Section 4
also shows busctl cold, for reference.

Other work on the machine shows up as noise: floor and busd alternate in
every round and medians are compared; only the ratios are meant to travel.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import zmq

from busd.core.control import Control
from busd.core.errors import BusError, NoMaster, ProtocolError
from busd.core.wire import BROADCAST_KINDS, Kind, decode

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
BUSCTL = str(VENV_BIN / "busctl")
PY_SPY = VENV_BIN / "py-spy"
TARGET = "busd.examples.hello:main"
OURS = ("busd", "client")
clock = time.perf_counter

#: Measured earlier on this machine (ms): start 32, reload 32, stop+reap 32, ctl status.
PEERS = {"circus 0.19": (592.0, 665.0, 190.0, 89.0), "gunicorn": (1600.0, 758.0, 640.0, 70.0)}
#: Starting 32 workers, medians measured on this machine for issue 11 (ms).
START32_PEERS = {"circus": 1005.0, "gunicorn": 1735.0}
#: The idle master's targets (section 5): % of one core, and wake-ups/s of all its threads.
IDLE_CPU = 0.05
IDLE_WAKEUPS = 2.0
#: ``workers`` is asked after this long without an event (should events be missed).
FALLBACK_POLL = 1.0

FLOOR_CHILD = """
import os, sys, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.DEALER)
s.setsockopt(zmq.LINGER, 0)
s.connect(sys.argv[1])
s.send(b"%d" % os.getpid())
s.poll(60000)
s.close()
ctx.term()
"""


#: The fork-server floor: an interpreter that imports the worker side (pyzmq,
#: msgpack, busd.client.worker.main), then forks N children that each say hello.
FORK_FLOOR = """
import os, sys, zmq, msgpack, busd.client.worker.main
n, endpoint = int(sys.argv[1]), sys.argv[2]
pids = []
for _ in range(n):
    pid = os.fork()
    if pid == 0:
        ctx = zmq.Context()
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(endpoint)
        s.send(b"%d" % os.getpid())
        s.poll(60000)
        s.close()
        ctx.term()
        os._exit(0)
    pids.append(pid)
for pid in pids:
    os.waitpid(pid, 0)
"""


#: The client floor: the same fork server, whose children each join a running
#: bare master as real clients (client.connect, mirrored to STARTED), then say hello.
CLIENT_FLOOR = """
import os, sys, zmq, msgpack, busd.client.worker.main
from busd.core.bus import State
from busd.client.bus import connect
n, endpoint = int(sys.argv[1]), sys.argv[2]
pids = []
for _ in range(n):
    pid = os.fork()
    if pid == 0:
        bus = connect()
        bus.wait(State.STARTED, timeout=60)
        ctx = zmq.Context()
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(endpoint)
        s.send(b"%d" % os.getpid())
        s.poll(60000)
        s.close()
        ctx.term()
        bus.leave("done")
        os._exit(0)
    pids.append(pid)
for pid in pids:
    os.waitpid(pid, 0)
"""


class BenchError(Exception):
    """The benchmark itself failed (not a slow figure: a broken run)."""


# -- processes ------------------------------------------------------------------------


def open_pidfds(pids: Iterable[int]) -> dict[int, int]:
    """pidfd -> pid for every process still there (an ended one has no pidfd)."""
    fds: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            fds[os.pidfd_open(pid)] = pid
    return fds


def wait_pidfds(fds: dict[int, int], deadline: float) -> dict[int, float]:
    """Wait until each process ended (bounded); pid -> when; closes the pidfds."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    ended: dict[int, float] = {}
    try:
        while len(ended) < len(fds):
            remaining = deadline - clock()
            if remaining <= 0:
                break
            for fd, _ in poller.poll(int(remaining * 1000) + 1):
                ended[fds[fd]] = clock()
                poller.unregister(fd)
    finally:
        for fd in fds:
            os.close(fd)
    return ended


@dataclass(frozen=True)
class Usage:
    """CPU time a process used, and time it sat runnable waiting for a CPU (seconds)."""

    cpu: float
    wait: float


def usage(pid: int) -> Usage | None:
    """Summed over its live threads, from schedstat (ns; psutil's ticks are 10 ms)."""
    cpu = wait = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                ran, waited, _ = (task / "schedstat").read_text().split()
                cpu += int(ran)
                wait += int(waited)
    except OSError:
        return None
    return Usage(cpu / 1e9, wait / 1e9)


def usages(pids: Iterable[int]) -> list[Usage]:
    """The usage of each process still there."""
    return [u for u in map(usage, pids) if u is not None]


def session_members(sid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes in session ``sid``."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


def child_env(pycache: Path | None) -> dict[str, str]:
    """The bench's environment without BUSD_* (and with a bytecode cache, if given)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUSD_")}
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def run_timed(cmd: Sequence[str], env: dict[str, str]) -> float:
    """Wall seconds of one whole process; BenchError if it fails."""
    return run_measured(cmd, env)[0]


def run_measured(cmd: Sequence[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one whole process; BenchError if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = clock()
    done = subprocess.run(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=30, check=False
    )
    took = clock() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise BenchError(
            f"{' '.join(cmd[:4])} ... exited {done.returncode}: "
            f"{done.stderr.decode(errors='replace')[-500:]}"
        )
    return took, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


# -- the floor: N bare interpreters saying hello ----------------------------------------


@dataclass(frozen=True)
class FloorStart:
    """N interpreters from the first spawn to the last hello; their CPU each."""

    seconds: float
    spawned: float
    each: list[Usage]


def floor_start(ctx: zmq.Context[Any], work: Path, n: int, env: dict[str, str]) -> FloorStart:
    """Spawn N ``import zmq`` + DEALER hello processes; time until all N hellos arrived."""
    endpoint = f"ipc://{work}/floor.sock"
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(endpoint)
    pids: list[int] = []
    identities: list[bytes] = []
    try:
        began = clock()
        for _ in range(n):
            pids.append(
                os.posix_spawn(PYTHON, [PYTHON, "-c", FLOOR_CHILD, endpoint], env, setsid=True)
            )
        spawned = clock() - began
        deadline = began + 60
        while len(identities) < n:
            if not router.poll(max(1, int((deadline - clock()) * 1000))):
                raise BenchError(f"floor: {len(identities)} of {n} hellos within 60 s")
            identities.append(router.recv_multipart()[0])
        took = clock() - began
        used = usages(pids)
        for identity in identities:
            router.send_multipart([identity, b"bye"])
    finally:
        reap_children(pids)
        router.close(linger=0)
    return FloorStart(took, spawned, used)


def fork_floor_start(
    ctx: zmq.Context[Any], work: Path, n: int, env: dict[str, str], script: str = FORK_FLOOR
) -> FloorStart:
    """Launch one fork server (worker side imported) forking N hello children; time
    from its launch until all N hellos arrived (busd's figure includes its launch too)."""
    endpoint = f"ipc://{work}/forkfloor.sock"
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(endpoint)
    hellos: list[tuple[bytes, int]] = []
    server: int | None = None
    try:
        began = clock()
        server = os.posix_spawn(PYTHON, [PYTHON, "-c", script, str(n), endpoint], env, setsid=True)
        deadline = began + 60
        while len(hellos) < n:
            if not router.poll(max(1, int((deadline - clock()) * 1000))):
                raise BenchError(f"fork floor: {len(hellos)} of {n} hellos within 60 s")
            identity, body = router.recv_multipart()
            hellos.append((identity, int(body)))
        took = clock() - began
        used = usages([pid for _, pid in hellos])
        for identity, _ in hellos:
            router.send_multipart([identity, b"bye"])
    finally:
        if server is not None:
            reap_children([server])
        router.close(linger=0)
    return FloorStart(took, took, used)


def client_floor_start(bench: Bench, n: int) -> FloorStart:
    """The client floor: N forked real clients joining a bare master that already runs."""
    with running_busd(bench, 0) as master:
        master.launch()
        env = {**bench.env, "BUSD_RUNTIME_DIR": str(master.runtime)}
        return fork_floor_start(bench.ctx, bench.work, n, env, CLIENT_FLOOR)


def reap_children(pids: list[int]) -> None:
    """Wait (bounded) for our own children, SIGKILL the late ones, reap all."""
    fds = open_pidfds(pids)
    ended = wait_pidfds(fds, clock() + 10)
    for pid in pids:
        if pid in fds.values() and pid not in ended:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


# -- one busd under test ---------------------------------------------------------------


@dataclass
class Started:
    """Times (s) from a reference to the steps of bringing N workers up."""

    all_started: float
    first_answer: float | None = None
    first_spawn: float | None = None
    last_spawn: float | None = None
    last_joined: float | None = None
    polls: int = 0
    unknown: int = 0
    workers: list[Usage] = field(default_factory=list)
    master: Usage | None = None

    def describe(self) -> str:
        """One line: each step in ms."""
        ms = _ms
        return (
            f"1st answer {ms(self.first_answer)}, spawns {ms(self.first_spawn)}.."
            f"{ms(self.last_spawn)}, last joined {ms(self.last_joined)}, all STARTED "
            f"{ms(self.all_started)} ms ({self.polls} workers polls"
            + (f", {self.unknown} answered 'unknown command'" if self.unknown else "")
            + ")"
        )


class Busd:
    """A busd subprocess with a control DEALER and an event SUB connected before it binds."""

    def __init__(
        self,
        ctx: zmq.Context[Any],
        env: dict[str, str],
        work: Path,
        workers: int,
        flags: Sequence[str] = (),
        config: Path | None = None,
    ) -> None:
        self.runtime = Path(tempfile.mkdtemp(prefix="bpd-", dir="/tmp"))
        self.log_path = work / f"{self.runtime.name}.log"
        pool = ["--config", str(config)] if config else ["-w", str(workers), *flags, TARGET]
        self.argv = [
            PYTHON,
            "-m",
            "busd",
            "--runtime-dir",
            str(self.runtime),
            "--log-level",
            "WARNING",
            *pool,
        ]
        self.workers = workers
        self.ctl = f"ipc://{self.runtime}/ctl.sock"
        self.control = Control(self.ctl, timeout=10, context=ctx)
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(f"ipc://{self.runtime}/pub.sock")
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.launched = 0.0
        self.unknown_workers = 0
        self.problems: list[str] = []

    @property
    def pid(self) -> int:
        """busd's pid (also its session and process group id)."""
        assert self.proc is not None
        return self.proc.pid

    def launch(self) -> Started:
        """Start busd and wait until all its workers are STARTED; times from the launch."""
        with open(self.log_path, "wb") as out:
            self.launched = clock()
            self.proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )
        first = self._first_answer()
        started = self.wait_started(set(), self.launched)
        started.first_answer = first
        return started

    def _first_answer(self) -> float:
        deadline = self.launched + 30
        while clock() < deadline:
            try:
                self.control.request("ping", timeout=0.5)
            except NoMaster:
                self._check_alive()
                continue
            return clock() - self.launched
        raise BenchError(f"busd did not answer within 30 s\n{self.log_tail()}")

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"busd exited with {self.proc.returncode}\n{self.log_tail()}")

    def wait_started(self, old: set[int], since: float, timeout: float = 60) -> Started:
        """Until every slot shows STARTED with a pid not in ``old``.

        ``workers`` is asked only once every new worker joined (events), or
        after a second without any event: the hub answers it under the pool's
        lock, which the command thread holds through a whole spawn burst.
        """
        spawns: list[float] = []
        joined: dict[int, float] = {}
        polls = 0
        rows: Any = None
        deadline = clock() + timeout
        next_poll = clock() + FALLBACK_POLL
        while True:
            if len(joined) >= self.workers or clock() >= next_poll:
                rows = self._workers()
                polls += 1
                if _all_started(rows, self.workers, old):
                    done = clock()
                    break
                next_poll = clock() + FALLBACK_POLL
            if clock() > deadline:
                raise BenchError(
                    f"workers not all STARTED within {timeout} s: {rows}\n{self.log_tail()}"
                )
            wait = 0.0 if len(joined) >= self.workers else max(0.0, next_poll - clock())
            if self.sub.poll(int(wait * 1000)):
                self._drain_events(old, spawns, joined)
                next_poll = clock() + FALLBACK_POLL
            self._check_alive()
        pids = [int(r["pid"]) for r in rows]
        return Started(
            all_started=done - since,
            polls=polls,
            unknown=self.unknown_workers,
            first_spawn=min(spawns) - since if spawns else None,
            last_spawn=max(spawns) - since if spawns else None,
            last_joined=max(joined.values()) - since if joined else None,
            workers=usages(pids),
            master=usage(self.pid),
        )

    def _workers(self) -> Any:
        """The ``workers`` rows; None while busd does not know the command yet.

        The hub answers from the moment it binds, but the pool adds ``workers``
        to its commands only later: a request in between is "unknown command".
        """
        try:
            return self.control.request("workers")
        except ProtocolError as exc:
            if getattr(exc, "code", "") != "unknown_command":
                raise
            self.unknown_workers += 1
            return None

    def _drain_events(self, old: set[int], spawns: list[float], joined: dict[int, float]) -> None:
        while True:
            try:
                frame = self.sub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            msg = decode(frame, allowed=BROADCAST_KINDS)
            if msg.kind is not Kind.EVENT:
                continue
            name, data = msg.items[2], msg.items[3]
            if name == "worker_spawned":
                spawns.append(clock())
            elif name == "client_joined" and data.get("pid") not in old:
                joined.setdefault(int(data["pid"]), clock())

    def log_tail(self) -> str:
        """The end of busd's output."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-1500:]
        return ""

    def close(self) -> None:
        """Exit busd (or kill its group), reap it, and check that nothing of it is left."""
        try:
            if self.proc is not None:
                self._end()
        finally:
            if self.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(5)
            self.control.close()
            self.sub.close(linger=0)
            shutil.rmtree(self.runtime, ignore_errors=True)

    def _end(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            with contextlib.suppress(BusError):
                self.control.request("exit", timeout=10)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.problems.append(f"busd {self.pid} did not exit in 15 s: killed")
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.proc.returncode not in (0, -signal.SIGKILL):
            self.problems.append(f"busd {self.pid} exited with {self.proc.returncode}")
        _, alive = psutil.wait_procs(session_members(self.pid), timeout=2)
        if alive:
            self.problems.append(
                f"left behind by busd {self.pid}: {[(p.pid, p.name()) for p in alive]}"
            )
            for proc in alive:
                with contextlib.suppress(psutil.Error):
                    proc.kill()


def _all_started(rows: Any, n: int, old: set[int]) -> bool:
    if not isinstance(rows, list) or len(rows) != n:
        return False
    return all(r.get("state") == "STARTED" and r.get("pid") not in old for r in rows)


@contextlib.contextmanager
def running_busd(
    bench: Bench, workers: int, *flags: str, config: Path | None = None
) -> Iterator[Busd]:
    """A Busd, always closed; its problems (leftovers, bad exits) go to the bench."""
    busd = Busd(bench.ctx, bench.env, bench.work, workers, flags, config)
    try:
        yield busd
    finally:
        try:
            busd.close()
        finally:
            bench.problems += busd.problems


# -- the bench's state and results ------------------------------------------------------


@dataclass
class Bench:
    """What every section shares, and what they found."""

    ctx: zmq.Context[Any]
    env: dict[str, str]
    work: Path
    quick: bool
    samples: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    problems: list[str] = field(default_factory=list)

    @property
    def reps(self) -> int:
        """Rounds of each start/reload/exit measurement."""
        return 1 if self.quick else 5

    def add(self, key: str, seconds: float) -> None:
        """Record one sample, in ms."""
        self.samples[key].append(seconds * 1000)

    def median(self, key: str) -> float:
        """The median of a metric's samples (ms)."""
        return statistics.median(self.samples[key])

    def spread(self, key: str) -> str:
        """median [min..max] of a metric, for the detail lines."""
        values = self.samples[key]
        return f"{statistics.median(values):.0f} [{min(values):.0f}..{max(values):.0f}]"


def usage_text(items: Sequence[Usage]) -> str:
    """Mean CPU and mean runqueue wait of some processes, in ms."""
    if not items:
        return "-"
    return (
        f"cpu {statistics.mean(u.cpu for u in items) * 1000:.0f} ms, waited for a cpu "
        f"{statistics.mean(u.wait for u in items) * 1000:.0f} ms"
    )


# -- 1. start, 2. respawn, 3. exit ------------------------------------------------------


def bench_start(bench: Bench, n: int) -> None:
    """Start N workers beside the floor, ``reps`` rounds, alternating."""
    for rep in range(bench.reps):
        floor = fork_floor_start(bench.ctx, bench.work, n, bench.env)
        with running_busd(bench, n) as busd:
            started = busd.launch()
        record_start(bench, f"start{n}", floor, started, rep)


def record_start(
    bench: Bench, key: str, floor: FloorStart | None, started: Started, rep: int
) -> None:
    """Keep a start's samples and print its line."""
    bench.add(key, started.all_started)
    master = [started.master] if started.master else []
    bench.add(key + ".cpu", sum(u.cpu for u in [*started.workers, *master]))
    if started.first_answer is not None:
        bench.add(key + ".after", started.all_started - started.first_answer)
    text = f"  {key} #{rep + 1} (load {os.getloadavg()[0]:.1f}): "
    if floor is not None:
        bench.add(key + ".floor", floor.seconds)
        bench.add(key + ".floor.cpu", sum(u.cpu for u in floor.each))
        text += (
            f"floor {floor.seconds * 1000:.0f} ms (spawned by {floor.spawned * 1000:.0f}, "
            f"per process {usage_text(floor.each)}); "
        )
    print(text + f"busd {started.describe()}")
    print(f"      per busd worker {usage_text(started.workers)}; busd master {usage_text(master)}")


def bench_pool32(bench: Bench) -> None:
    """Rounds of: both floors of 32; busd 32 start, respawn, exit on the default path
    (fork server), with --preload, with --spawn exec."""
    for rep in range(bench.reps):
        floors = {
            "": fork_floor_start(bench.ctx, bench.work, 32, bench.env),
            "-exec": floor_start(bench.ctx, bench.work, 32, bench.env),
        }
        clients = client_floor_start(bench, 32)
        bench.add("start32.clientfloor", clients.seconds)
        bench.add("start32.clientfloor.cpu", sum(u.cpu for u in clients.each))
        print(
            f"  client floor #{rep + 1}: {clients.seconds * 1000:.0f} ms "
            f"(per process {usage_text(clients.each)})"
        )
        for tag, flags in (("", ()), ("-preload", ("--preload",)), ("-exec", ("--spawn", "exec"))):
            with running_busd(bench, 32, "--reload", "respawn", *flags) as busd:
                started = busd.launch()
                record_start(bench, "start32" + tag, floors.get(tag), started, rep)
                respawn(bench, busd, "respawn32" + tag)
                exit_pool(bench, busd, "exit32" + tag)


def bench_pools(bench: Bench) -> None:
    """Rounds of: one pool of 24 from flags, then 3 pools of 8 from a config file (each
    its own fork server), alternating; each until all 24 are STARTED."""
    config = bench.work / "pools.toml"
    config.write_text(
        "".join(f'[pools.p{i}]\ntarget = "{TARGET}"\nworkers = 8\n\n' for i in range(3))
    )
    for rep in range(bench.reps):
        with running_busd(bench, 24) as busd:
            flat = busd.launch()
        with running_busd(bench, 24, config=config) as busd:
            pools = busd.launch()
        bench.add("start24", flat.all_started)
        bench.add("start3x8", pools.all_started)
        print(
            f"  #{rep + 1} (load {os.getloadavg()[0]:.1f}): -w 24 {flat.describe()}\n"
            f"      3 pools x 8 {pools.describe()}"
        )


class Background:
    """One Control request in a thread (its own socket), so the bench can watch meanwhile."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, cmd: str, timeout: float) -> None:
        self.control = Control(endpoint, timeout=timeout, context=ctx)
        self.replied: float | None = None
        self.error: BusError | None = None
        self._thread = threading.Thread(
            target=self._run, args=(cmd, timeout), name=f"bench-{cmd}", daemon=True
        )
        self._thread.start()

    def _run(self, cmd: str, timeout: float) -> None:
        try:
            self.control.request(cmd, timeout=timeout)
            self.replied = clock()
        except BusError as exc:
            self.error = exc

    def join(self, timeout: float) -> None:
        """Wait (bounded) for the reply, then close the socket."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise BenchError(f"a request thread is still waiting after {timeout} s")
        self.control.close()


def respawn(bench: Bench, busd: Busd, key: str) -> None:
    """graceful until every slot is STARTED with a new pid; then the old ones' end."""
    old = {int(r["pid"]) for r in busd.control.request("workers")}
    old_fds = open_pidfds(old)
    began = clock()
    request = Background(bench.ctx, busd.ctl, "graceful", 60)
    try:
        started = busd.wait_started(old, began)
    finally:
        request.join(70)
    if request.error is not None or request.replied is None:
        raise BenchError(f"graceful failed: {request.error}")
    gone = wait_pidfds(old_fds, clock() + 20)
    if len(gone) < len(old_fds):
        raise BenchError(f"{len(old_fds) - len(gone)} old workers still there after 20 s")
    bench.add(key, started.all_started)
    print(
        f"  {key}: all new STARTED {started.all_started * 1000:.0f} ms (spawns "
        f"{_ms(started.first_spawn)}..{_ms(started.last_spawn)}, last joined "
        f"{_ms(started.last_joined)}, graceful replied {_ms(request.replied - began)}, "
        f"{started.polls} polls; old workers ended {_ms(min(gone.values()) - began)}.."
        f"{_ms(max(gone.values()) - began)})"
    )
    print(f"      per new worker {usage_text(started.workers)}")


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def exit_pool(bench: Bench, busd: Busd, key: str) -> None:
    """exit until every worker (from status) and busd itself are gone."""
    status = busd.control.request("status")
    pids = [int(w["pid"]) for w in status["workers"] if w.get("pid")]
    procs = [psutil.Process(pid) for pid in pids]
    fds = open_pidfds([*pids, busd.pid])
    began = clock()
    request = Background(bench.ctx, busd.ctl, "exit", 30)
    try:
        ended = wait_pidfds(fds, began + 30)
    finally:
        request.join(35)
    assert busd.proc is not None
    busd.proc.wait(5)
    _, alive = psutil.wait_procs(procs, timeout=5)
    done = clock() - began
    if alive or len(ended) < len(fds):
        raise BenchError(f"exit: {len(alive)} workers and {len(fds) - len(ended)} pidfds left")
    bench.add(key, done)
    workers = [t - began for p, t in ended.items() if p != busd.pid]
    replied = None if request.replied is None else request.replied - began
    print(
        f"  {key}: all gone {done * 1000:.0f} ms (workers ended {_ms(min(workers))}.."
        f"{_ms(max(workers))}, exit replied {_ms(replied)}, busd ended "
        f"{_ms(ended[busd.pid] - began)})"
    )


def import_costs(bench: Bench) -> None:
    """Why a worker starts slower than the floor: whole-process import costs (CPU)."""
    imports = "import busd.client.worker.main, busd.examples.hello"
    cases = {
        "import zmq": "import zmq",
        "worker imports": imports,
        "busd imports": "import busd.__main__",
    }
    cpu: dict[str, list[float]] = collections.defaultdict(list)
    for _ in range(3 if bench.quick else 7):
        for name, code in cases.items():
            cpu[name].append(run_measured([PYTHON, "-c", code], bench.env)[1])
    print(
        "  whole process CPU, p50: "
        + ", ".join(f"{name} {statistics.median(v) * 1000:.0f} ms" for name, v in cpu.items())
    )
    show_importtime(
        [PYTHON, "-X", "importtime", "-c", "import zmq, msgpack; " + imports], bench.env, 8
    )


@dataclass
class Imported:
    """One line of ``-X importtime`` (microseconds), with the imports it caused."""

    name: str
    own: int
    cumulative: int
    children: list[Imported] = field(default_factory=list)

    def walk(self) -> Iterator[Imported]:
        """This entry and everything below it."""
        yield self
        for child in self.children:
            yield from child.walk()


def import_tree(cmd: list[str], env: dict[str, str]) -> list[Imported]:
    """The top-level imports of a process, each with its subtree."""
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30, check=False)
    waiting: dict[int, list[Imported]] = collections.defaultdict(list)
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if match:
            level = (len(match[3]) - 1) // 2  # children are printed before their parent
            entry = Imported(match[4], int(match[1]), int(match[2]), waiting.pop(level + 1, []))
            waiting[level].append(entry)
    return waiting[0]


def show_importtime(cmd: list[str], env: dict[str, str], top: int) -> None:
    """The heaviest top-level imports, and what busd's and client's modules pull in."""
    roots = import_tree(cmd, env)
    ours = [e for root in roots for e in root.walk() if e.name.split(".")[0] in OURS]
    pulled = sorted(
        (c for e in ours for c in e.children if c.name.split(".")[0] not in OURS),
        key=lambda c: -c.cumulative,
    )
    print(
        "  -X importtime (ms), top level: "
        + ", ".join(
            f"{e.name} {e.cumulative / 1000:.1f}"
            for e in sorted(roots, key=lambda e: -e.cumulative)[:top]
        )
    )
    print(
        f"    busd/client modules' own time {sum(e.own for e in ours) / 1000:.1f}; what they "
        "import (cumulative): "
        + ", ".join(f"{c.name} {c.cumulative / 1000:.1f}" for c in pulled[:top])
    )


# -- 4. busctl status, 5. idle -----------------------------------------------------------


def bench_busctl(bench: Bench, busd: Busd, cold_env: dict[str, str]) -> None:
    """busctl status as a whole process, beside ``python -c 'import zmq, msgpack'``."""
    status = [BUSCTL, "--runtime-dir", str(busd.runtime), "status"]
    cpu: dict[str, list[float]] = collections.defaultdict(list)
    for _ in range(20):
        for key, cmd in (
            ("busctl.floor", [PYTHON, "-c", "import zmq, msgpack"]),
            ("busctl", status),
        ):
            wall, used = run_measured(cmd, bench.env)
            bench.add(key, wall)
            cpu[key].append(used)
    cold = [run_timed(status, cold_env) for _ in range(5 if bench.quick else 10)]
    rtt = {cmd: ping_times(busd.control, cmd) for cmd in ("ping", "workers", "status")}
    print(
        f"  python -c 'import zmq, msgpack' p50 {bench.spread('busctl.floor')} ms "
        f"(cpu {statistics.median(cpu['busctl.floor']) * 1000:.0f}); busctl status p50 "
        f"{bench.spread('busctl')} ms (cpu {statistics.median(cpu['busctl']) * 1000:.0f})"
    )
    print(
        f"  busctl status without a bytecode cache (PYTHONDONTWRITEBYTECODE=1, no "
        f"__pycache__): p50 {statistics.median(cold) * 1000:.0f} ms"
    )
    print(
        "  request round trips from here, p50: "
        + ", ".join(f"{cmd} {t * 1000:.2f} ms" for cmd, t in rtt.items())
        + " (32 workers)"
    )
    if bench.median("busctl") > 60:
        show_importtime(
            [
                PYTHON,
                "-X",
                "importtime",
                "-m",
                "busd.client.ctl.busctl",
                "--runtime-dir",
                str(busd.runtime),
                "status",
            ],
            bench.env,
            8,
        )


def ping_times(control: Control, cmd: str) -> float:
    """p50 round trip of ``cmd`` (20 of them)."""
    times = []
    for _ in range(20):
        began = clock()
        control.request(cmd)
        times.append(clock() - began)
    return statistics.median(times)


@dataclass(frozen=True)
class ThreadSample:
    """One thread's counters at one moment."""

    comm: str
    cpu: float  # psutil: user + system, 10 ms ticks
    ran: float  # schedstat: ns precision
    voluntary: int
    involuntary: int


def thread_samples(pid: int) -> dict[int, ThreadSample]:
    """tid -> CPU seconds (psutil) and context switches (/proc) of each thread."""
    samples = {}
    for thread in psutil.Process(pid).threads():
        task = Path(f"/proc/{pid}/task/{thread.id}")
        try:
            comm = (task / "comm").read_text().strip()
            status = (task / "status").read_text()
            ran = int((task / "schedstat").read_text().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            continue
        counts = dict(re.findall(r"^(\w*voluntary_ctxt_switches):\s*(\d+)", status, re.M))
        samples[thread.id] = ThreadSample(
            comm,
            thread.user_time + thread.system_time,
            ran,
            int(counts["voluntary_ctxt_switches"]),
            int(counts["nonvoluntary_ctxt_switches"]),
        )
    return samples


def python_thread_names(pid: int) -> dict[int, str]:
    """tid -> Python thread name, from ``py-spy dump`` (empty if it is not there)."""
    if not PY_SPY.exists():
        return {}
    try:
        out = subprocess.run(
            [str(PY_SPY), "dump", "--pid", str(pid)],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {int(m[1]): m[2] for m in re.finditer(r'^Thread (\d+) \([^)]*\): "([^"]*)"', out, re.M)}


def bench_idle(bench: Bench, busd: Busd) -> None:
    """The master's CPU and wake-ups over a quiet window, in total and per thread."""
    seconds = 10.0 if bench.quick else 30.0
    workers = [int(r["pid"]) for r in busd.control.request("workers")]
    master = psutil.Process(busd.pid)
    before, cpu0, ctx0 = thread_samples(busd.pid), master.cpu_times(), master.num_ctx_switches()
    workers0 = {pid: thread_samples(pid) for pid in workers}
    began = clock()
    time.sleep(seconds)  # the measurement window itself, not a synchronisation
    took = clock() - began
    after, cpu1, ctx1 = thread_samples(busd.pid), master.cpu_times(), master.num_ctx_switches()
    workers1 = {pid: thread_samples(pid) for pid in workers}
    ticks = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / took * 100
    live = [(tid, old, after[tid]) for tid, old in sorted(before.items()) if tid in after]
    wakes = sum(new.voluntary - old.voluntary for _, old, new in live)
    # schedstat counts nanoseconds; psutil's 10 ms ticks are 0.1 % steps over 10 s.
    ran = sum(new.ran - old.ran for _, old, new in live) / took * 100
    bench.samples["idle.cpu"].append(ran)
    bench.samples["idle.wakeups"].append(wakes / took)
    print(
        f"  master pid {busd.pid}, {took:.1f} s: cpu {ran:.3f} % of a core (schedstat; "
        f"psutil's ticks say {ticks:.3f} %) {verdict(ran, IDLE_CPU)}, "
        f"{wakes / took:.2f} wake-ups/s (all threads) {verdict(wakes / took, IDLE_WAKEUPS)}"
        f"; psutil's num_ctx_switches gives {(ctx1.voluntary - ctx0.voluntary) / took:.2f}/s "
        "(the main thread's only)"
    )
    names = python_thread_names(busd.pid)
    for tid, old, new in live:
        name = names.get(tid) or ("main" if tid == busd.pid else new.comm)
        bench.samples[f"idle.{name}.cpu"].append((new.ran - old.ran) / took * 100)
        bench.samples[f"idle.{name}.wakeups"].append((new.voluntary - old.voluntary) / took)
        print(
            f"    tid {tid:<7} {name:<20} cpu {(new.ran - old.ran) / took * 100:6.3f} % "
            f"(ticks {(new.cpu - old.cpu) / took * 100:5.2f} %)  wake-ups "
            f"{(new.voluntary - old.voluntary) / took:5.2f}/s  preempted "
            f"{(new.involuntary - old.involuntary) / took:5.2f}/s"
        )
    summarize_workers(workers0, workers1, took)


def verdict(value: float, target: float) -> str:
    """``PASS (<= target)`` or ``MISS (> target)``."""
    return f"PASS (<= {target:g})" if value <= target else f"MISS (> {target:g})"


def summarize_workers(
    before: dict[int, dict[int, ThreadSample]],
    after: dict[int, dict[int, ThreadSample]],
    took: float,
) -> None:
    """The workers' idle cost, for reference (not a target)."""
    cpu = wakes = 0.0
    for pid, threads in before.items():
        for tid, old in threads.items():
            new = after.get(pid, {}).get(tid)
            if new is not None:
                cpu += new.ran - old.ran
                wakes += new.voluntary - old.voluntary
    count = max(1, len(before))
    print(
        f"  workers ({len(before)}, for reference): cpu {cpu / took * 100:.2f} % of a core "
        f"in all, {wakes / took / count:.1f} wake-ups/s each"
    )


def bench_status_and_idle(bench: Bench, cold_env: dict[str, str]) -> None:
    """One busd with 32 workers: busctl status, then an idle window."""
    with running_busd(bench, 32) as busd:
        busd.launch()
        print("4. busctl status (whole process, 20 runs, alternating with the floor)")
        bench_busctl(bench, busd, cold_env)
        print(f"5. idle master, 32 workers, heartbeat 1 s, {10 if bench.quick else 30} s")
        bench_idle(bench, busd)


# -- the report ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of the final table."""

    metric: str
    busd: float
    unit: str
    target: float | None
    floor: float | None = None
    ratio_target: bool = False  # the target is a ratio to the floor, not a value

    def ratio(self) -> float | None:
        """busd / floor."""
        return self.busd / self.floor if self.floor else None

    def verdict(self) -> str:
        """PASS, MISS, or 'info' without a target."""
        if self.target is None:
            return "info"
        value = self.ratio() if self.ratio_target else self.busd
        return "PASS" if value is not None and value <= self.target else "MISS"

    def cells(self) -> list[str]:
        """The printed cells."""

        def fmt(value: float | None) -> str:
            if value is None:
                return "-"
            if self.unit == "/s":
                return f"{value:.2f} {self.unit}"
            return f"{value:.3f} {self.unit}" if value < 1 else f"{value:.0f} {self.unit}"

        ratio = self.ratio()
        target = (
            "-"
            if self.target is None
            else (
                f"<= {self.target:g}x" if self.ratio_target else f"<= {self.target:g} {self.unit}"
            )
        )
        return [
            self.metric,
            fmt(self.floor),
            fmt(self.busd),
            "-" if ratio is None else f"{ratio:.2f}x",
            target,
            self.verdict(),
        ]


def table_rows(bench: Bench) -> list[Row]:
    """The summary rows from the medians."""
    med = bench.median
    rows = []
    for n in (1, 8, 32):
        key = f"start{n}"
        rows.append(
            Row(
                f"start {n} (incl. busd start)",
                med(key),
                "ms",
                1.3 if n == 32 else None,
                med(key + ".floor"),
                ratio_target=n == 32,
            )
        )
        rows.append(
            Row(
                f"  start {n}: 1st answer->STARTED",
                med(key + ".after"),
                "ms",
                None,
                med(key + ".floor"),
            )
        )
    rows.append(
        Row(
            "  start 32: CPU of all processes",
            med("start32.cpu"),
            "ms",
            None,
            med("start32.floor.cpu"),
        )
    )
    rows.append(
        Row(
            "start 32 vs the client floor",
            med("start32"),
            "ms",
            1.3,
            med("start32.clientfloor"),
            ratio_target=True,
        )
    )
    rows.append(
        Row("  client floor: CPU of its clients", med("start32.clientfloor.cpu"), "ms", None)
    )
    rows += [
        Row(f"start 32 vs {peer}", med("start32"), "ms", figure)
        for peer, figure in START32_PEERS.items()
    ]
    rows += [
        Row("start 32 --spawn exec", med("start32-exec"), "ms", None, med("start32-exec.floor")),
        Row("start 32 --preload", med("start32-preload"), "ms", 300),
        Row("  start 32 --preload: 1st ans.->", med("start32-preload.after"), "ms", None),
        Row(
            "start 3 pools x 8 vs -w 24",
            med("start3x8"),
            "ms",
            1.2,
            med("start24"),
            ratio_target=True,
        ),
        Row("respawn 32", med("respawn32"), "ms", 600),
        Row("respawn 32 --preload", med("respawn32-preload"), "ms", 600),
        Row("respawn 32 --spawn exec", med("respawn32-exec"), "ms", None),
        Row("exit 32, all reaped", med("exit32"), "ms", 200),
        Row("exit 32 --preload, all reaped", med("exit32-preload"), "ms", 200),
        Row("exit 32 --spawn exec, all reaped", med("exit32-exec"), "ms", 200),
        Row("busctl status p50", med("busctl"), "ms", 60, med("busctl.floor")),
        Row("idle master cpu", med("idle.cpu"), "%", IDLE_CPU),
        Row("idle master wake-ups", med("idle.wakeups"), "/s", IDLE_WAKEUPS),
    ]
    return rows + idle_thread_rows(bench)


def idle_thread_rows(bench: Bench) -> list[Row]:
    """The idle master's threads, each: wake-ups and CPU (for reference: the targets are
    the whole process's)."""
    names = sorted(
        key[len("idle.") : -len(".wakeups")]
        for key in bench.samples
        if key.startswith("idle.") and key.endswith(".wakeups") and key != "idle.wakeups"
    )
    rows = []
    for name in names:
        rows.append(
            Row(f"  idle {name} wake-ups", bench.median(f"idle.{name}.wakeups"), "/s", None)
        )
        rows.append(Row(f"  idle {name} cpu", bench.median(f"idle.{name}.cpu"), "%", None))
    return rows


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain text table."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for row in [list(headers), ["-" * w for w in widths], *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def print_peers(bench: Bench) -> None:
    """busd beside the peers measured earlier on this machine."""
    med = bench.median
    ours = (
        f"{med('start32'):.0f} ({med('start32-preload'):.0f} preload)",
        f"{med('respawn32'):.0f} ({med('respawn32-preload'):.0f} preload)",
        f"{med('exit32'):.0f} ({med('exit32-preload'):.0f} preload)",
        f"{med('busctl'):.0f}",
    )
    metrics = ("start 32", "reload 32", "stop+reap 32", "ctl status")
    rows = [[m, ours[i], *(f"{p[i]:.0f}" for p in PEERS.values())] for i, m in enumerate(metrics)]
    print_table(["ms (median)", "busd", *PEERS], rows)


# -- main ---------------------------------------------------------------------------------


def warm_up(bench: Bench) -> None:
    """Compile busd's bytecode into the cache and warm the page cache (not measured)."""
    run_timed(
        [
            PYTHON,
            "-c",
            "import busd.__main__, busd.client.worker.main, "
            "busd.client.ctl.busctl, "
            "busd.examples.hello",
        ],
        bench.env,
    )
    floor_start(bench.ctx, bench.work, 2, bench.env)


def run_sections(bench: Bench, cold_env: dict[str, str]) -> None:
    """Sections 1 to 5, printing details as they go."""
    print(
        "1. start (busd's figure includes its own interpreter start and imports; "
        "the time from its first answer is shown too)"
    )
    for n in (1, 8):
        bench_start(bench, n)
    print(
        "1-3. 32 workers, --reload respawn: start, respawn, exit; on the default path "
        "(fork server), with --preload, with --spawn exec"
    )
    bench_pool32(bench)
    print("1b. 24 workers: one pool from flags, then 3 pools of 8 from a config file")
    bench_pools(bench)
    import_costs(bench)
    bench_status_and_idle(bench, cold_env)


def main(argv: list[str] | None = None) -> int:
    """Run every section and print the summary; 1 if the run failed or left processes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round each, 10 s idle")
    parser.add_argument(
        "--cold-bytecode",
        action="store_true",
        help="no bytecode cache for the children (the environment as it is)",
    )
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bp-", dir="/tmp"))
    cold_env = child_env(None)
    env = cold_env if args.cold_bytecode else child_env(work / "pycache")
    ctx: zmq.Context[Any] = zmq.Context()
    ctx.setsockopt(zmq.RECONNECT_IVL, 1)  # sockets connected before busd binds find it at once
    bench = Bench(ctx, env, work, args.quick)
    began = clock()
    print(
        f"busd pool benchmark ({'quick' if args.quick else 'full'}): {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}, Python {sys.version.split()[0]}, pyzmq "
        f"{zmq.__version__}, libzmq {zmq.zmq_version()}; bytecode "
        f"{'as the environment has it' if args.cold_bytecode else 'cached (warm)'}"
    )
    if os.getloadavg()[0] > (os.cpu_count() or 1):
        print(
            "note: the machine is busy (load above its CPU count): wall times are inflated; "
            "floor and busd alternate, compare the ratios and the CPU figures"
        )
    try:
        warm_up(bench)
        run_sections(bench, cold_env)
    except (BenchError, BusError, OSError, psutil.Error, subprocess.SubprocessError) as exc:
        print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        ctx.destroy(linger=0)
        shutil.rmtree(work, ignore_errors=True)
    print("\npeers, measured earlier on this machine (ms)")
    print_peers(bench)
    print(
        f"\nsummary ({clock() - began:.0f} s; medians of {bench.reps} round(s); "
        f"load now {os.getloadavg()[0]:.1f})"
    )
    print_table(
        ["metric", "floor", "busd", "ratio", "target", "result"],
        [row.cells() for row in table_rows(bench)],
    )
    for problem in bench.problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if bench.problems else 0


if __name__ == "__main__":
    sys.exit(main())
