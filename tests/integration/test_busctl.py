"""busctl against a real master process (a MasterBus alone, or the busd pool), with clients.

The master and the clients are child processes (new session, output to files
in ``tmp_path``, process group killed and reaped on the way out).  busctl
runs in-process (``main([...])``) and as a real command (``python -m
busd.client.ctl.busctl`` and the ``busctl`` console script).  Nothing waits on a
clock: readiness is a ping that answers, a status that lists the clients,
an ack, or a process that ended; each wait is bounded and fails with a message.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import zmq
import zmq.auth

from busd.client.control import Control
from busd.client.ctl.busctl import main
from busd.core.endpoints import default_endpoints

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Upper bound of every wait; the normal case takes milliseconds.
TIMEOUT = 8.0
T = TypeVar("T")

MASTER = """
    import json, sys
    import busd

    directory, out = sys.argv[1], sys.argv[2]

    def chan(*args, **kwargs):
        with open(out + "/master.chan", "a") as f:
            f.write(json.dumps([list(args), kwargs]) + "\\n")

    def boom(*args, **kwargs):
        raise RuntimeError("the master refuses " + repr(args))

    master = busd.MasterBus(runtime_dir=directory, heartbeat=0.2)
    master.subscribe("chan", chan)
    master.subscribe("boom", boom)
    master.start()
    master.block()
"""

CLIENT = """
    import json, sys, threading
    from busd import client

    directory, out, tag, behaviour = sys.argv[1:5]
    bus = client.connect(runtime_dir=directory, mirror=False)

    def graceful():
        with open(f"{out}/{tag}.graceful", "a") as f:
            f.write("graceful\\n")
        if behaviour == "fail":
            raise ValueError(f"{tag} refuses to reload")
        if behaviour == "slow":
            threading.Event().wait(5)

    def chan(*args, **kwargs):
        with open(f"{out}/{tag}.chan", "a") as f:
            f.write(json.dumps([list(args), kwargs]) + "\\n")

    bus.subscribe("graceful", graceful)
    bus.subscribe("chan", chan)
    bus.block()
"""


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUSD_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


def spawn(out: Path, name: str, source: str, *args: str) -> subprocess.Popen[bytes]:
    """Run ``source`` as a script in a new session, its output to files in ``out``."""
    script = out / f"{name}.py"
    script.write_text(textwrap.dedent(source))
    return spawn_command(out, name, [sys.executable, str(script), *args])


def spawn_command(out: Path, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
    """Run ``argv`` in a new session, its output to files in ``out``."""
    with (
        (out / f"{name}.stdout").open("wb") as stdout,
        (out / f"{name}.stderr").open("wb") as stderr,
    ):
        return subprocess.Popen(
            argv,
            cwd=out,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )


@dataclass
class Bus:
    """A master process in a short runtime dir, and the processes started against it."""

    directory: Path
    out: Path
    master: subprocess.Popen[bytes]
    capsys: pytest.CaptureFixture[str]
    clients: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    @property
    def ctl(self) -> str:
        return default_endpoints(self.directory).ctl

    def busctl(self, *argv: str, timeout: float = 2.0) -> tuple[int, str, str]:
        """busctl in-process; returns (status, stdout, stderr)."""
        self.capsys.readouterr()
        code = main(["--runtime-dir", str(self.directory), "--timeout", str(timeout), *argv])
        out, err = self.capsys.readouterr()
        return code, out, err

    def status(self) -> dict[str, Any]:
        with Control(self.ctl, timeout=TIMEOUT) as control:
            result: dict[str, Any] = control.request("status")
            return result

    def wait_ready(self) -> None:
        """Retry ``busctl ping`` (each try waits up to 0.3 s) until the master answers,
        then wait until it is STARTED (it answers from its constructor on, before start())."""
        deadline = time.monotonic() + TIMEOUT
        while self.busctl("ping", timeout=0.3)[0] != 0:
            if self.master.poll() is not None:
                output = "".join(p.read_text() for p in self.out.glob("*.stderr"))
                pytest.fail(f"the master ended with {self.master.returncode}:\n{output}")
            if time.monotonic() > deadline:
                pytest.fail(f"the master did not answer ping within {TIMEOUT}s")
        self.wait_for(lambda: self.status()["state"] == "STARTED", "the master to start")

    def start_clients(self, **behaviours: str) -> dict[str, int]:
        """Start one client process per tag; returns their client ids once all joined."""
        for tag, behaviour in behaviours.items():
            proc = spawn(self.out, tag, CLIENT, str(self.directory), str(self.out), tag, behaviour)
            self.procs.append(proc)
            self.clients[tag] = proc
        pids = {proc.pid: tag for tag, proc in self.clients.items()}

        def joined() -> dict[str, int] | None:
            ids = {pids[c["pid"]]: c["id"] for c in self.status()["clients"] if c["pid"] in pids}
            return ids if len(ids) == len(pids) else None

        return self.wait_for(joined, "every client to join")

    def wait_for(self, check: Callable[[], T | None], what: str) -> T:
        """Check again each time the master publishes (it beats every 0.2 s), bounded."""
        deadline = time.monotonic() + TIMEOUT
        with Watch(default_endpoints(self.directory).pub) as watch:
            while True:
                value = check()
                if value:
                    return value
                if time.monotonic() > deadline:
                    pytest.fail(f"timed out after {TIMEOUT}s waiting for {what}")
                watch.next_message(deadline - time.monotonic())

    def lines(self, name: str) -> list[str]:
        path = self.out / name
        return path.read_text().splitlines() if path.exists() else []


class Watch:
    """A SUB socket on the master's PUB: a wake-up each time the master sends."""

    def __init__(self, endpoint: str) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(endpoint)

    def next_message(self, timeout: float) -> None:
        if self.sub.poll(max(1, int(timeout * 1000))):
            self.sub.recv()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.sub.close(linger=0)
        self.ctx.term()


def reap(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


@contextlib.contextmanager
def running_bus(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    start: Callable[[Path], subprocess.Popen[bytes]],
) -> Iterator[Bus]:
    """A master that ``start`` runs, ready (it answers ping); all killed and reaped after."""
    directory = Path(tempfile.mkdtemp(dir="/tmp", prefix="bc"))
    running: Bus | None = None
    try:
        master = start(directory)
        running = Bus(directory, tmp_path, master, capsys, procs=[master])
        running.wait_ready()
        yield running
    finally:
        for proc in running.procs if running else []:
            reap(proc)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def bus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Bus]:
    """A MasterBus alone in a child process (no pool), with a 'chan' and a 'boom' listener."""

    def start(directory: Path) -> subprocess.Popen[bytes]:
        return spawn(tmp_path, "master", MASTER, str(directory), str(tmp_path))

    with running_bus(tmp_path, capsys, start) as running:
        yield running


@pytest.fixture
def pool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Bus]:
    """The ``busd`` command with a pool of two workers that only connect and block."""

    def start(directory: Path) -> subprocess.Popen[bytes]:
        return spawn_command(
            tmp_path,
            "busd",
            [
                sys.executable,
                "-m",
                "busd",
                "--runtime-dir",
                str(directory),
                "--heartbeat",
                "0.2",
                "-w",
                "2",
                "--",
                sys.executable,
                "-c",
                "from busd import client; client.connect().block()",
            ],
        )

    with running_bus(tmp_path, capsys, start) as running:
        yield running


def busctl_commands() -> list[tuple[str, list[str]]]:
    """busctl as a real process: ``python -m busd.client.ctl.busctl``, and the console script."""
    commands = [("module", [sys.executable, "-m", "busd.client.ctl.busctl"])]
    # Not shutil.which: on a systemd host that finds systemd's busctl (D-Bus) first.
    script = Path(sys.executable).parent / "busctl"
    if os.access(script, os.X_OK):
        commands.append(("script", [str(script)]))
    return commands


def run_busctl(command: list[str], bus: Bus, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, "--runtime-dir", str(bus.directory), "--timeout", "3", *argv],
        cwd=bus.out,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


# -- the tests ----------------------------------------------------------------------


@pytest.mark.parametrize(("how", "command"), busctl_commands())
def test_json_status_as_a_real_command(bus: Bus, how: str, command: list[str]) -> None:
    ids = bus.start_clients(a="ok")

    done = run_busctl(command, bus, "--json", "status")

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    status = json.loads(done.stdout)  # exactly one document
    assert status["state"] == "STARTED"
    assert status["pid"] == bus.master.pid
    assert isinstance(status["epoch"], int)
    assert status["uptime"] > 0
    assert status["workers"] == []
    assert [(c["id"], c["pid"]) for c in status["clients"]] == [(ids["a"], bus.clients["a"].pid)]


def test_status_for_people(bus: Bus) -> None:
    ids = bus.start_clients(a="ok")

    code, out, err = bus.busctl("status")

    assert (code, err) == (0, "")
    assert f"pid:     {bus.master.pid} on " in out
    assert "state:   STARTED" in out
    assert "WORKERS: none" in out
    header = out.splitlines().index("CLIENTS") + 1
    assert out.splitlines()[header].split() == ["ID", "PID", "WORKER", "STATE", "LAST-HEARTBEAT"]
    assert out.splitlines()[header + 1].split()[:2] == [str(ids["a"]), str(bus.clients["a"].pid)]


def test_graceful_wait_runs_each_clients_listener_once(bus: Bus) -> None:
    bus.start_clients(a="ok", b="ok")

    code, out, err = bus.busctl("graceful", "--wait")

    assert (code, err) == (0, ""), out
    assert out == "graceful: state STARTED; 2 clients acked\n"
    for tag in ("a", "b"):
        assert bus.wait_for(
            lambda tag=tag: bus.lines(f"{tag}.graceful"),  # type: ignore[misc]
            f"{tag}'s graceful listener",
        ) == ["graceful"]

    code, out, _ = bus.busctl("--json", "graceful", "--wait")
    result = json.loads(out)
    assert code == 0
    assert result["acks"]["ok"] is True
    assert len(result["acks"]["acks"]) == 2
    assert all(len(bus.lines(f"{tag}.graceful")) == 2 for tag in ("a", "b"))


def test_graceful_wait_fails_naming_the_client_whose_listener_raised(bus: Bus) -> None:
    ids = bus.start_clients(good="ok", bad="fail")

    code, out, err = bus.busctl("graceful", "--wait")

    assert code == 1
    assert out.startswith("graceful: state STARTED; 2 clients acked, 1 failed")
    pid = bus.clients["bad"].pid
    assert err == f"busctl: client {ids['bad']} (pid {pid}): ValueError: bad refuses to reload\n"

    code, out, err = bus.busctl("--json", "graceful", "--wait")
    acks = json.loads(out)["acks"]
    assert code == 1
    assert acks["ok"] is False
    assert [(a["client"], a["ok"]) for a in acks["acks"]] == sorted(
        [(ids["good"], True), (ids["bad"], False)]
    )


def test_graceful_wait_times_out_naming_the_silent_client(bus: Bus) -> None:
    ids = bus.start_clients(quick="ok", slow="slow")

    code, out, err = bus.busctl("--json", "graceful", "--wait", "--ack-timeout", "1")

    assert code == 1
    error = json.loads(out)["error"]
    assert error["code"] == "timeout"
    assert error["details"]["silent"] == [ids["slow"]]
    assert err.splitlines() == [
        f"busctl: no ack within 1.0s from client {ids['slow']} (pid {bus.clients['slow'].pid})"
    ]


def test_timeout_bounds_graceful_wait(bus: Bus) -> None:
    ids = bus.start_clients(quick="ok", slow="slow")  # slow: 5 s in its graceful listener

    began = time.monotonic()
    code, out, err = bus.busctl("--json", "graceful", "--wait", timeout=1.5)
    took = time.monotonic() - began

    assert code == 1, (out, err)
    assert took < 2.5, f"--timeout 1.5 but graceful --wait took {took:.1f}s"
    error = json.loads(out)["error"]
    assert error["details"]["silent"] == [ids["slow"]]
    assert f"(pid {bus.clients['slow'].pid})" in err


@pytest.mark.parametrize(("how", "command"), busctl_commands())
def test_publish_reaches_every_process_with_json_arguments(
    bus: Bus, how: str, command: list[str]
) -> None:
    bus.start_clients(a="ok", b="ok")

    done = run_busctl(command, bus, "publish", "chan", "1", '"x"', "--kw", "a=2", "--wait")

    assert done.returncode == 0, done.stderr
    assert done.stdout == "publish chan: relayed; 2 clients acked\n"
    expected = [json.dumps([[1, "x"], {"a": 2}])]
    for name in ("a.chan", "b.chan", "master.chan"):
        assert (
            bus.wait_for(
                lambda name=name: bus.lines(name),  # type: ignore[misc]
                f"{name} to be written",
            )
            == expected
        )


def test_publish_without_wait_and_refused_channels(bus: Bus) -> None:
    bus.start_clients(a="ok")

    assert bus.busctl("publish", "chan", "[1, 2]", "--kw", "who=ann")[:2] == (
        0,
        "publish chan: relayed\n",
    )
    assert bus.wait_for(lambda: bus.lines("a.chan"), "a.chan to be written") == [
        json.dumps([[[1, 2]], {"who": "ann"}])
    ]

    code, _, err = bus.busctl("publish", "stop")
    assert code == 1
    assert err == "busctl: 'stop' is not broadcast: use the command of that name\n"


def test_watch_prints_one_json_line_per_message_with_increasing_seq(bus: Bus) -> None:
    stdout = (bus.out / "watch.stdout").open("w+")
    watch = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "busd.client.ctl.busctl",
            "--endpoint",
            bus.ctl,
            "--timeout",
            "5",
            "--json",
            "watch",
            "--count",
            "3",
        ],
        env=child_env(),
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    bus.procs.append(watch)
    try:
        # The watcher subscribes at some point: publish until it has seen three.
        deadline = time.monotonic() + TIMEOUT
        code = None
        while code is None and time.monotonic() < deadline:
            assert bus.busctl("graceful")[0] == 0
            try:
                code = watch.wait(timeout=0.3)
            except subprocess.TimeoutExpired:
                continue
        assert code == 0, watch.stderr.read() if watch.stderr else ""
        stdout.seek(0)
        docs = [json.loads(line) for line in stdout.read().splitlines()]
    finally:
        stdout.close()
        if watch.stderr:
            watch.stderr.close()

    assert len(docs) == 3
    assert [d["kind"] for d in docs] == ["publish"] * 3
    assert all(d["channel"] == "graceful" and d["args"] == [] for d in docs)
    seqs = [d["seq"] for d in docs]
    assert seqs == sorted(set(seqs))
    assert {d["epoch"] for d in docs} == {bus.status()["epoch"]}


def test_watch_for_people_filters_channels_and_ends_when_busd_exits(bus: Bus) -> None:
    bus.start_clients(a="ok")
    watch = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "busd.client.ctl.busctl",
            "--runtime-dir",
            str(bus.directory),
            "watch",
            "chan",
        ],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
        start_new_session=True,
    )
    bus.procs.append(watch)
    try:
        # Publish until the watcher prints (it subscribes when it is ready).
        first = bus.wait_for(lambda: publish_and_read(bus, watch), "watch's first line")
        assert bus.busctl("exit")[0] == 0
        out, err = watch.communicate(timeout=TIMEOUT)
    finally:
        for pipe in (watch.stdout, watch.stderr):
            if pipe:
                pipe.close()

    assert re.match(r"[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3} seq ", first), first
    assert first.endswith(' publish chan ["ping"] {}'), first
    assert watch.returncode == 0, err
    lines = out.decode().splitlines()
    assert not [line for line in lines if "graceful" in line]
    assert lines[-1].endswith(" state EXITING"), lines
    assert err.decode().strip().endswith("exited"), err
    assert bus.master.wait(timeout=TIMEOUT) == 0


def start_watch(bus: Bus) -> subprocess.Popen[bytes]:
    """``busctl watch`` as a real process with its output on pipes, reaped by ``bus``."""
    watch = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "busd.client.ctl.busctl",
            "--runtime-dir",
            str(bus.directory),
            "watch",
        ],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
        start_new_session=True,
    )
    bus.procs.append(watch)
    return watch


def test_watch_ends_130_on_ctrl_c(bus: Bus) -> None:
    watch = start_watch(bus)
    try:
        bus.wait_for(lambda: publish_and_read(bus, watch), "watch's first line")
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=TIMEOUT)
    finally:
        for pipe in (watch.stdout, watch.stderr):
            if pipe:
                pipe.close()

    assert watch.returncode == 130
    assert err == b""


def test_watch_ends_141_when_its_reader_goes_away(bus: Bus) -> None:
    watch = start_watch(bus)
    try:
        bus.wait_for(lambda: publish_and_read(bus, watch), "watch's first line")
        assert watch.stdout is not None
        watch.stdout.close()  # like `busctl watch | head -1`

        def ended() -> bool:
            assert bus.busctl("graceful")[0] == 0  # something more to print
            return watch.poll() is not None

        bus.wait_for(ended, "watch to end")
        err = watch.stderr.read() if watch.stderr else b""
    finally:
        if watch.stderr:
            watch.stderr.close()

    assert watch.returncode == 141
    assert err == b""


def publish_and_read(bus: Bus, watch: subprocess.Popen[bytes]) -> str | None:
    """Publish graceful and chan; the first line the watcher prints after, if any."""
    assert bus.busctl("graceful")[0] == 0
    assert bus.busctl("publish", "chan", "ping")[0] == 0
    assert watch.stdout is not None
    # An unbuffered pipe: readline takes no more than one line, so select stays true.
    if select.select([watch.stdout], [], [], 0.3)[0]:
        return watch.stdout.readline().decode().rstrip("\n")
    return None


def test_a_failing_listener_in_the_master_is_a_failure(bus: Bus) -> None:
    code, out, err = bus.busctl("publish", "boom", "1")

    assert code == 1
    assert out == ""
    assert (
        err == "busctl: boom listeners failed in the master: RuntimeError: "
        "the master refuses (1,)\n"
    )


def test_restart_reexecutes_the_master_with_a_new_epoch(bus: Bus) -> None:
    before = bus.status()

    code, out, err = bus.busctl("restart")

    assert (code, out, err) == (0, "restart: state EXITING\n", "")
    bus.wait_ready()  # answers ping, and STARTED again
    after = bus.status()
    assert after["pid"] == before["pid"] == bus.master.pid
    assert after["epoch"] != before["epoch"]


def test_exit_ends_the_master_and_its_clients(bus: Bus) -> None:
    bus.start_clients(a="ok", b="ok")

    code, out, err = bus.busctl("exit", "--wait")

    assert (code, err) == (0, "")
    assert out == "exit: state EXITING; 2 clients acked\n"
    assert bus.master.wait(timeout=TIMEOUT) == 0
    assert [bus.clients[t].wait(timeout=TIMEOUT) for t in ("a", "b")] == [0, 0]
    # Nobody is left to answer.
    assert bus.busctl("ping", timeout=0.3)[0] == 3


def test_lifecycle_commands(bus: Bus) -> None:
    ids = bus.start_clients(a="ok")

    assert bus.busctl("stop", "--wait")[:2] == (0, "stop: state STOPPED; 1 client acked\n")
    assert bus.status()["state"] == "STOPPED"
    assert bus.busctl("start")[:2] == (0, "start: state STARTED\n")
    # wspbus semantics: start while STARTED runs the start listeners again, everywhere.
    code, out, _ = bus.busctl("--json", "start", "--wait")
    result = json.loads(out)
    assert code == 0
    assert result["state"] == "STARTED"
    assert result["acks"]["ok"] is True
    assert [a["client"] for a in result["acks"]["acks"]] == [ids["a"]]
    assert bus.clients["a"].poll() is None


def started_workers(pool: Bus, count: int) -> dict[int, int] | None:
    """Slot -> pid when exactly ``count`` workers are STARTED, else None."""
    code, out, err = pool.busctl("--json", "workers")
    assert code == 0, err
    workers = {w["id"]: w["pid"] for w in json.loads(out) if w["state"] == "STARTED"}
    return workers if len(workers) == count else None


def test_workers_scale_and_signal_with_the_busd_pool(pool: Bus) -> None:
    first = pool.wait_for(lambda: started_workers(pool, 2), "two workers to start")

    code, out, err = pool.busctl("workers")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[1].split() == ["ID", "PID", "STATE", "RESTARTS", "CPU", "RSS", "UPTIME"]
    assert [line.split()[:3] for line in lines[2:]] == [
        [str(slot), str(pid), "STARTED"] for slot, pid in sorted(first.items())
    ]
    assert "WORKERS" in pool.busctl("status")[1]

    assert pool.busctl("scale", "+1")[:2] == (0, "scale +1: 3 workers\n")
    pool.wait_for(lambda: started_workers(pool, 3), "a third worker")

    # SIGTERM to one worker: it leaves, and the pool replaces it.
    code, out, _ = pool.busctl("--json", "signal", "term", "1")
    assert (code, json.loads(out)) == (0, {"signal": "SIGTERM", "workers": [1], "pids": [first[1]]})

    def replaced() -> dict[int, int] | None:
        workers = started_workers(pool, 3)
        return workers if workers and workers[1] != first[1] else None

    after = pool.wait_for(replaced, "worker 1 to be replaced")
    assert after[0] == first[0]

    assert pool.busctl("exit")[0] == 0
    assert pool.master.wait(timeout=TIMEOUT) == 0


def test_workers_without_a_pool_is_an_empty_list(bus: Bus) -> None:
    code, out, err = bus.busctl("--json", "workers")
    assert (code, err) == (0, "")
    assert json.loads(out) == []


@pytest.mark.parametrize(
    ("argv", "command"), [(["scale", "+1"], "scale"), (["signal", "hup", "0"], "signal")]
)
def test_pool_commands_without_a_pool_fail_with_busds_message(
    bus: Bus, argv: list[str], command: str
) -> None:
    code, out, err = bus.busctl(*argv)

    assert code == 1
    assert out == ""
    assert err.startswith(f"busctl: unknown command {command!r} (known: ")
    assert len(err.splitlines()) == 1

    code, out, _ = bus.busctl("--json", *argv)
    assert code == 1
    assert json.loads(out)["error"]["code"] == "unknown_command"


def test_ping(bus: Bus) -> None:
    code, out, err = bus.busctl("ping")
    assert (code, err) == (0, "")
    assert out.startswith(f"pong from busd pid {bus.master.pid} (epoch ")

    code, out, _ = bus.busctl("--json", "ping")
    assert json.loads(out) == {"pong": True, "pid": bus.master.pid, "epoch": bus.status()["epoch"]}


@pytest.mark.parametrize(("how", "command"), busctl_commands())
def test_keygen_creates_key_pairs(tmp_path: Path, how: str, command: list[str]) -> None:
    keys = tmp_path / "new" / "keys"

    done = subprocess.run(
        [*command, "--json", "keygen", str(keys)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout)
    assert set(made) == {"server", "client"}
    for pair in made.values():
        public, secret = zmq.auth.load_certificate(pair["secret"])
        assert secret is not None
        assert zmq.auth.load_certificate(pair["public"]) == (public, None)
        assert stat.S_IMODE(os.stat(pair["secret"]).st_mode) == 0o600
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert sorted(p.name for p in keys.iterdir()) == [
        "client.key",
        "client.key_secret",
        "server.key",
        "server.key_secret",
    ]


def test_keygen_keeps_existing_keys_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keygen", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (f"server public: {tmp_path / 'server.key'}")
    before = (tmp_path / "server.key_secret").read_text()

    assert main(["keygen", str(tmp_path)]) == 2
    assert "use --force" in capsys.readouterr().err
    assert (tmp_path / "server.key_secret").read_text() == before

    assert main(["keygen", "--force", str(tmp_path)]) == 0
    assert (tmp_path / "server.key_secret").read_text() != before
