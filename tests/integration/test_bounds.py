"""The master's resource bounds, attacked and fault-injected on real processes.

Each test makes the master hold what a peer does not take, or run out of
file descriptors, and checks the documented bound (docs/GUIDE.md, "Resource
bounds"): its memory grows by less than the bound, it stays up and answers,
and the clients it could not serve are told so (``busy``) or repaired with an
exact loss count.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq

from busd.client.ctl.busctl import main as busctl_main
from busd.core.wire import Kind, decode, encode
from busd.master.backlog import PEER_BYTES, PUB_BYTES
from busd.testing import Processes, Sink

MIB = 1 << 20

#: A master in a process of its own, publishing on demand: each line "N SIZE" read
#: from the fifo named by argv[2] publishes N messages of SIZE bytes on "big", then
#: one on "done".
MASTER = """
    import os, sys
    from busd.master.bus import MasterBus
    from busd.testing.probe import Probe

    probe = Probe()
    master = MasterBus(runtime_dir=os.environ["BUSD_RUNTIME_DIR"], heartbeat=0.2,
                       liveness=100, replay_bytes=int(sys.argv[1]))
    master.start()
    orders = open(os.open(sys.argv[2], os.O_RDWR))  # O_RDWR: never blocks, never EOF
    probe.report("master", pid=os.getpid(), epoch=master.epoch)
    for line in orders:
        count, size = (int(x) for x in line.split())
        blob = b"x" * size
        for i in range(count):
            master.publish("big", i, blob)
        master.publish("done", count)
        probe.report("published", count=count)
    master.close()
"""

#: A client counting what it gets on "big"; on "done" it reports that, and its losses.
WORKER = """
    import busd.client
    from busd.testing.probe import Probe

    probe = Probe()
    bus = busd.client.connect(master_timeout=60)
    got = []
    bus.subscribe("big", lambda i, blob: got.append(i))

    def done(count):
        link = bus.statistics()["link"]
        probe.report("done", count=count, got=got, missed=link.get("missed", 0), link=link,
                     state=bus.state.name)

    bus.subscribe("done", done)
    bus.wait(bus.states.STARTED, timeout=10)
    probe.report("joined", state=bus.state.name)
    bus.block()
"""


def rss(pid: int) -> int:
    """Resident bytes of process ``pid``."""
    return int(psutil.Process(pid).memory_info().rss)


@pytest.fixture
def dealers(busd_dir: Path) -> Iterator[Callable[..., zmq.Socket[Any]]]:
    """Makes raw DEALERs on the master's ctl socket; ``reads=False``: one that takes nothing."""
    context: zmq.Context[Any] = zmq.Context()
    made: list[zmq.Socket[Any]] = []

    def make(reads: bool = True) -> zmq.Socket[Any]:
        sock = context.socket(zmq.DEALER)
        made.append(sock)
        sock.setsockopt(zmq.LINGER, 0)
        if not reads:
            # libzmq would otherwise read replies into our own queue for us.
            sock.setsockopt(zmq.RCVHWM, 1)
            sock.setsockopt(zmq.RCVBUF, 4096)
        sock.connect(f"ipc://{busd_dir}/ctl.sock")
        return sock

    try:
        yield make
    finally:
        for sock in made:
            sock.close(linger=0)
        context.term()


def ask(
    sock: zmq.Socket[Any], req_id: int, cmd: str, timeout: float = 5.0, **args: Any
) -> tuple[Any, float]:
    """Send a request and return (its reply's items, seconds it took)."""
    started = time.monotonic()
    sock.send(encode(Kind.REQUEST, req_id, {"cmd": cmd, **args}))
    assert sock.poll(int(timeout * 1000)), f"no answer to {cmd} in {timeout}s"
    return decode(sock.recv()).items, time.monotonic() - started


def test_unread_replay_answers_do_not_grow_the_master(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path, dealers: Callable[..., Any]
) -> None:
    """A full-key peer asks for 300 huge replays and reads none: the master barely grows."""
    with start_master(busd_procs, busd_sink, busd_dir, 64 * MIB) as (info, orders):
        orders.write("60 250000\n")
        busd_sink.expect("published", timeout=30)
        attack_with_replays(dealers, info)


def attack_with_replays(dealers: Callable[..., Any], info: dict[str, Any]) -> None:
    attacker = dealers(reads=False)
    before = rss(info["pid"])
    for i in range(300):
        attacker.send(
            encode(
                Kind.REQUEST,
                10 + i,
                {"cmd": "replay", "epoch": info["epoch"], "from": 3, "to": 2**62},
            )
        )
    status = dealers()
    # Once a status after the asks is answered, the hub has read them all.
    (_, ok, answer), took = ask(status, 1, "status")
    assert ok
    assert took < 1.0, f"status took {took:.2f}s under the attack"
    grew = rss(info["pid"]) - before
    assert grew < 4 * PEER_BYTES + 8 * MIB, f"the master grew by {grew / MIB:.1f} MiB"
    assert answer["unread"]["replies"]["bytes"] <= PEER_BYTES


@contextlib.contextmanager
def start_master(
    procs: Processes, sink: Sink, directory: Path, window: int
) -> Iterator[tuple[dict[str, Any], Any]]:
    """Start the MASTER script; give its report and the fifo that orders publishes."""
    fifo = directory / "orders"
    os.mkfifo(fifo, 0o600)
    procs.python(MASTER, str(window), str(fifo), name="master")
    info = sink.expect("master", timeout=15)
    # The master has the fifo open by now: opening it cannot block.
    with open(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK), "w", buffering=1) as orders:
        yield info, orders


def test_a_stopped_subscriber_costs_the_master_a_bounded_number_of_bytes(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path, dealers: Callable[..., Any]
) -> None:
    """300 publishes of 1 MB while a worker is stopped: the master stays under window +
    bound, and the worker, continued, reports exactly what it lost and mirrors the state."""
    window = 32 * MIB
    with start_master(busd_procs, busd_sink, busd_dir, window) as (info, orders):
        worker = busd_procs.python(WORKER, name="worker")
        assert busd_sink.expect("joined", timeout=15)["state"] == "STARTED"
        before = rss(info["pid"])
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            orders.write("300 1000000\n")
            busd_sink.expect("published", timeout=60)
            # A snapshot is answered once the hub has sent all that was handed to it.
            (_, ok, _), _ = ask(dealers(), 1, "snapshot")
            assert ok
            grew = rss(info["pid"]) - before
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        bound = window + PUB_BYTES + 16 * MIB
        assert grew < bound, f"the master grew by {grew / MIB:.0f} MiB (bound {bound / MIB:.0f})"
        done = busd_sink.expect("done", timeout=30)
        kept = rss(info["pid"]) - before
        assert kept < bound, f"after the worker drained the master kept {kept / MIB:.0f} MiB"
        print(f"grew {grew / MIB:.0f} MiB, kept {kept / MIB:.0f} MiB, bound {bound / MIB:.0f}")
    got, missed = done["got"], done["missed"]
    assert got == sorted(set(got)), "delivered twice or out of order"
    assert missed > 0, "nothing was lost: the test did not fill the bound"
    assert len(got) + missed == 300, (
        str(done["link"]) + f"got {len(got)} ({_ranges(got)}), reported {missed} lost: not exact"
    )
    assert done["state"] == "STARTED"


def _ranges(numbers: list[int]) -> str:
    """``0-4, 9-12``: runs of consecutive numbers."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(f"{a}-{b}" for a, b in runs)


#: A client that joins and stays, or is refused (and says so in the one line busd logs).
CLIENT = """
    import sys
    import busd.client
    from busd.core.errors import Busy
    from busd.testing.probe import Probe

    with Probe() as probe:
        try:
            bus = busd.client.connect(timeout=10)
        except Busy as exc:
            probe.report("refused", text=str(exc))
            sys.exit(1)
        probe.report("joined")
    bus.block()
"""


def test_past_the_open_file_limit_clients_are_refused_busy_and_the_master_lives(
    busd_procs: Processes, busd_sink: Sink, busd_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """busd at 64 descriptors: clients join until one is refused ``busy`` (one line); the
    master stays up, its workers keep working, and status counts the refusals."""
    master = busd_procs.spawn(
        [
            "prlimit",
            "--nofile=64:64",
            sys.executable,
            "-m",
            "busd",
            "--runtime-dir",
            str(busd_dir),
            "-w",
            "2",
            "tests.integration.targets:main",
        ],
        name="busd",
    )
    busd_sink.collect("spawned", 2, timeout=20)
    joined = 0
    refused: list[subprocess.Popen[bytes]] = []
    for _ in range(40):
        client = busd_procs.python(CLIENT, name="client")
        report = busd_sink.get("joined", 15) if not refused else None
        if report is None:
            refused.append(client)
            busd_sink.expect("refused", timeout=15)
            if len(refused) == 3:
                break
        else:
            joined += 1
        assert master.poll() is None, f"busd died: {Processes.output(master)[-2000:]}"
    assert joined > 0, "no client fits: the test shows nothing"
    assert len(refused) == 3, f"{joined} joined and none was refused"

    for client in refused:
        assert client.wait(15) == 1
        lines = Processes.output(client).splitlines()
        assert len(lines) == 1, lines
        assert "busy" in lines[0], lines
    assert busctl(busd_dir, "graceful") == 0
    assert {r["worker"] for r in busd_sink.collect("graceful", 2)} == {0, 1}
    capsys.readouterr()
    assert busctl(busd_dir, "--json", "status") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["fds"]["refused"] >= 3
    assert status["fds"]["limit"] == 64
    assert master.poll() is None


def busctl(directory: Path, *args: str) -> int:
    """Run busctl in this process against the master in ``directory``."""
    return busctl_main(["--runtime-dir", str(directory), "--timeout", "10", *args])
