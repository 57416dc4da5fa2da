"""Attacks on a running busd, by another local user or by a read-only CURVE key.

Each test is one attack from docs/SECURITY.md's threat model, made for
real: a raw ZeroMQ peer holding the read-only key of a master started with
``--readonly-keys``, or another local user (made with ``useradd`` for the
test and removed with ``userdel`` after it, even on failure; skipped only
without root or ``useradd``).  Every attack must be refused, and the master
must go on serving.  Traffic stays on 127.0.0.1 and in ipc sockets under
/tmp.  Waits are bounded: a reply, a heartbeat, a process that ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq

from busd import client
from busd.client.ctl.busctl import main
from busd.core.auth import ClientKeys, KeyPair, client_keys, secure_client
from busd.core.control import Control
from busd.core.endpoints import UnsafeRuntimeDir
from busd.core.errors import BusError, KeyRefused, NoMaster
from busd.core.wire import Kind, decode, encode
from busd.testing import PoolFactory, Processes
from busd.testing.pool import BusdPool
from tests.integration.accounts import made_user
from tests.integration.test_security import Keys, make_keys

TIMEOUT = 10.0
SYSTEM_PYTHON = "/usr/bin/python3"
#: What a channel name may try to print: clear the screen, then forge a watch line.
EVIL = "evil\x1b[2J\n12:00:00.000 seq 99 state EXITING"


def idle(bus: Any) -> None:
    """A worker that only mirrors the master (its target)."""


# -- fixtures --------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@dataclass
class Secured:
    """A pool whose master serves tcp with CURVE, full and read-only keys."""

    pool: BusdPool
    keys: Keys
    ctl: str
    pub: str

    def control(self) -> Control:
        return Control(
            self.ctl, TIMEOUT, curve=client_keys(self.keys.server, self.keys.client_secret)
        )


@pytest.fixture
def secured(busd_pool: PoolFactory, keys: Keys) -> Secured:
    pool = busd_pool(
        idle,
        "--heartbeat",
        "0.2",
        "--worker-timeout",
        "1.5",
        "--bind",
        "tcp://127.0.0.1:*",
        "--curve-secret",
        str(keys.server_secret),
        "--authorized-keys",
        str(keys.authorized),
        "--readonly-keys",
        str(keys.readonly),
        workers=1,
    )
    status = pool.status()
    ctl = next(e for e in status["endpoints"]["ctl"] if e.startswith("tcp://"))
    pub = next(e for e in status["endpoints"]["pub"] if e.startswith("tcp://"))
    return Secured(pool, keys, ctl, pub)


@dataclass
class Peer:
    """A raw client: a DEALER (and a SUB when asked), CURVE with the given secret over tcp."""

    ctx: zmq.Context[Any]
    dealer: zmq.Socket[Any]
    curve: ClientKeys | None
    sub: zmq.Socket[Any] | None = None
    next_id: int = 100
    epoch: int = 0
    seen: list[list[Any]] = field(default_factory=list)

    def send(self, kind: Kind, req_id: int, body: dict[str, Any]) -> None:
        self.dealer.send(encode(kind, req_id, body))

    def answer(self, req_id: int) -> tuple[bool, Any]:
        """The REPLY to ``req_id`` (``(ok, payload)``); fails past TIMEOUT."""
        deadline = time.monotonic() + TIMEOUT
        while self.dealer.poll(max(1, int((deadline - time.monotonic()) * 1000))):
            msg = decode(self.dealer.recv())
            if msg.kind is Kind.REPLY and msg.req_id == req_id:
                return bool(msg.items[1]), msg.items[2]
        pytest.fail(f"no reply to request {req_id} within {TIMEOUT}s")

    def hello(self, **body: Any) -> dict[str, Any]:
        self.send(Kind.HELLO, 1, {"token": os.urandom(12), "subscribe": False, **body})
        ok, welcome = self.answer(1)
        assert ok, welcome
        self.epoch = welcome["epoch"]
        return dict(welcome)

    def request(self, cmd: str) -> tuple[bool, Any]:
        self.next_id += 1
        self.send(Kind.REQUEST, self.next_id, {"cmd": cmd})
        return self.answer(self.next_id)

    def subscribe(self, pub: str) -> None:
        """A SUB on ``pub``, returned once it gets traffic (a heartbeat: it is subscribed)."""
        sub = self.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        secure_client(sub, self.curve, pub)
        sub.connect(pub)
        self.sub = sub
        assert self.next_broadcast() is not None, "the SUB got nothing"

    def next_broadcast(self, timeout: float = TIMEOUT) -> list[Any] | None:
        assert self.sub is not None
        if not self.sub.poll(int(timeout * 1000)):
            return None
        msg = decode(self.sub.recv())
        return [msg.kind, *msg.items]


@contextlib.contextmanager
def peer(endpoint: str, keys: Keys | None = None, secret: Path | None = None) -> Iterator[Peer]:
    ctx: zmq.Context[Any] = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    curve = client_keys(keys.server, secret) if keys is not None and secret else None
    secure_client(dealer, curve, endpoint)
    dealer.connect(endpoint)
    made = Peer(ctx, dealer, curve)
    try:
        yield made
    finally:
        dealer.close(linger=0)
        if made.sub is not None:
            made.sub.close(linger=0)
        ctx.term()


def reader(secured: Secured) -> contextlib.AbstractContextManager[Peer]:
    return peer(secured.ctl, secured.keys, secured.keys.reader_secret)


@pytest.fixture
def local_user() -> Iterator[pwd.struct_passwd]:
    """Another local user, made for this test and removed after it."""
    with made_user() as user:
        yield user


def short_dir(prefix: str) -> Path:
    """A dir under /tmp (ipc paths stay short), everyone may traverse it."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


# -- a read-only key (items: caps, posing as a worker, log flood, bad fields) -------


def test_a_read_only_key_cannot_pose_as_a_worker(secured: Secured) -> None:
    worker = secured.pool.workers[0]
    with reader(secured) as fake:
        fake.hello(pid=worker["pid"], worker=worker["id"], role="worker", name="worker-0")
        fake.send(Kind.PONG, 0, {"epoch": fake.epoch, "seq": 1, "state": "STOPPING"})
        fake.send(Kind.PONG, 0, {"epoch": fake.epoch, "seq": 2, "state": f"{EVIL}"})
        assert fake.request("ping")[0]  # every PONG before it was handled
        status = secured.pool.status()
    assert [w["state"] for w in status["workers"]] == ["STARTED"]
    fakes = [c for c in status["clients"] if c.get("readonly")]
    assert len(fakes) == 1, status["clients"]
    assert (fakes[0]["pid"], fakes[0]["worker"], fakes[0]["role"]) == (0, None, "readonly")
    assert fakes[0]["state"] == "STOPPED"
    assert not any(EVIL in str(c) for c in status["clients"])


def test_a_read_only_key_cannot_keep_a_stopped_worker_alive(secured: Secured) -> None:
    worker = secured.pool.workers[0]
    victim = psutil.Process(worker["pid"])
    with reader(secured) as fake:
        fake.hello(pid=worker["pid"], worker=worker["id"], role="worker")
        fake.subscribe(secured.pub)
        victim.suspend()
        try:
            deadline = time.monotonic() + TIMEOUT
            # Answer every heartbeat as the worker would, until busd kills it.
            while victim.is_running() and victim.status() != psutil.STATUS_ZOMBIE:
                assert time.monotonic() < deadline, "busd never killed the stopped worker"
                beat = fake.next_broadcast(0.5)
                if beat is not None and beat[0] is Kind.HEARTBEAT:
                    fake.send(
                        Kind.PONG, 0, {"epoch": fake.epoch, "seq": beat[2], "state": "STARTED"}
                    )
        except psutil.NoSuchProcess:
            pass
        finally:
            with contextlib.suppress(psutil.NoSuchProcess):
                victim.resume()
    secured.pool.wait_for(
        lambda s: s["workers"][0]["pid"] != worker["pid"] and s["workers"][0]["state"] == "STARTED"
    )


@pytest.mark.parametrize("command", ["broadcast", "graceful"])
def test_forged_acks_of_a_read_only_key_do_not_count(secured: Secured, command: str) -> None:
    outcome: dict[str, Any] = {}
    body = {"channel": "deploy", "args": [], "kwargs": {}} if command == "broadcast" else {}
    channel = "deploy" if command == "broadcast" else "graceful"

    def run() -> None:
        try:
            with secured.control() as control:
                outcome["result"] = control.call(
                    command, {**body, "wait": True, "timeout": 5.0}, TIMEOUT
                )
        except BusError as exc:
            outcome["error"] = exc

    worker = secured.pool.workers[0]
    with reader(secured) as fake:
        fake.hello(pid=worker["pid"], worker=worker["id"], role="worker")
        fake.subscribe(secured.pub)
        thread = threading.Thread(target=run)
        thread.start()
        try:
            while True:
                msg = fake.next_broadcast()
                assert msg is not None, f"never saw the {channel!r} message"
                if msg[0] is Kind.PUBLISH and msg[3] == channel:
                    break
            fake.send(
                Kind.ACK,
                0,
                {
                    "epoch": msg[1],
                    "seq": msg[2],
                    "ok": False,
                    "result": None,
                    "errors": [{"type": "Forged", "message": "by a reader"}],
                },
            )
        finally:
            thread.join(TIMEOUT + 5)
    assert "error" not in outcome, outcome.get("error")
    acks = outcome["result"]["acks"]
    assert acks["ok"] is True, acks
    assert len(acks["acks"]) == 1, acks
    assert "Forged" not in str(acks)


def test_a_huge_hello_and_bye_cannot_disable_the_master(secured: Secured) -> None:
    with reader(secured) as fake:
        fake.hello(name="n" * 600_000, host="h" * 100_000, role="r" * 100_000)
        fake.send(Kind.BYE, 0, {"reason": "r" * 600_000})
        assert fake.request("ping")[0]
    with secured.control() as control:
        for _ in range(2):  # queued commands still run: the command thread lives
            result = control.call(
                "broadcast",
                {"channel": "after", "args": [1], "kwargs": {}, "wait": True, "timeout": 5.0},
                TIMEOUT,
            )
            assert result["acks"]["ok"] is True
    text = secured.pool.log.text
    assert "too_large" not in text
    assert "Traceback" not in text


def test_a_bad_hello_field_is_bad_arguments_without_a_traceback(secured: Secured) -> None:
    with peer(secured.pool.endpoints.ctl) as local:
        for _ in range(100):
            local.send(Kind.HELLO, 7, {"token": os.urandom(12), "pid": "x", "subscribe": False})
            ok, error = local.answer(7)
            assert not ok
            assert error["code"] == "bad_arguments", error
            assert "pid" in error["message"]
        assert local.request("ping")[0]
    text = secured.pool.log.text
    assert "Traceback" not in text
    assert text.count("bad_arguments") <= 6, text


def test_fresh_keys_per_try_cannot_flood_the_log(secured: Secured) -> None:
    mine = client_keys(secured.keys.server, secured.keys.client_secret)
    assert mine is not None
    server = mine.server
    tries = 60
    for _ in range(tries):
        public, secret = zmq.curve_keypair()
        with (
            Control(secured.ctl, 5.0, curve=ClientKeys(server, KeyPair(public, secret))) as c,
            pytest.raises(KeyRefused),
        ):
            c.request("ping")
    with secured.control() as control:
        assert control.request("ping")["pong"] is True
    lines = [line for line in secured.pool.log.text.splitlines() if "refused the CURVE key" in line]
    assert 1 <= len(lines) <= 10, f"{len(lines)} lines for {tries} refused handshakes"


# -- another local user (items: the lock, a planted runtime dir, key dirs) -----------


def old_lock_name(path: Path) -> str:
    """The abstract socket name busd used to lock an ipc path with: anyone could take it."""
    digest = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:32]
    return f"busd-ipc-{os.getuid()}-{digest}"


SQUATTER = """
import socket, sys
held = []
for name in sys.argv[1:]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind("\\0" + name)
    s.listen(1)
    held.append(s)
print("bound", flush=True)
sys.stdin.read()
"""


def test_another_user_cannot_keep_busd_from_starting(
    local_user: pwd.struct_passwd, busd_procs: Processes, busd_dir: Path
) -> None:
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"{SYSTEM_PYTHON} is needed to run a process as another user")
    runtime = busd_dir / "rt"
    names = [old_lock_name(runtime / "ctl.sock"), old_lock_name(runtime / "pub.sock")]
    squatter = subprocess.Popen(
        ["runuser", "-u", local_user.pw_name, "--", SYSTEM_PYTHON, "-c", SQUATTER, *names],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd="/",
    )
    try:
        assert squatter.stdout is not None
        ready, _, _ = select.select([squatter.stdout], [], [], TIMEOUT)
        assert ready, "the other user's process did not start"
        assert squatter.stdout.readline().strip() == b"bound"
        busd = busd_procs.spawn(
            [sys.executable, "-m", "busd", "--runtime-dir", str(runtime)], name="busd"
        )
        with Control(f"ipc://{runtime}/ctl.sock", TIMEOUT) as control:
            try:
                assert control.request("ping")["pid"] == busd.pid
            except NoMaster:
                pytest.fail(f"busd did not start: {busd_procs.output(busd)}")
        assert busd.poll() is None, busd_procs.output(busd)
        lock = runtime / "ctl.sock.lock"
        assert lock.is_file()
        assert lock.stat().st_uid == os.getuid()
        with Control(f"ipc://{runtime}/ctl.sock", TIMEOUT) as control:
            control.request("exit")
        assert busd.wait(TIMEOUT) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(squatter.pid, signal.SIGKILL)
        squatter.wait(TIMEOUT)
        if squatter.stdin is not None:
            squatter.stdin.close()
        if squatter.stdout is not None:
            squatter.stdout.close()


class FakeMaster:
    """What another user serves in a runtime dir they planted: it says yes to everything."""

    def __init__(self, endpoint: str) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self.sock.poll(50):
                continue
            identity, frame = self.sock.recv_multipart()
            self.received.append(frame)
            msg = decode(frame)
            self.sock.send_multipart(
                [
                    identity,
                    encode(
                        Kind.REPLY,
                        msg.req_id,
                        True,
                        {"pong": True, "pid": 1, "epoch": 1, "state": "STARTED"},
                    ),
                ]
            )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(TIMEOUT)
        self.sock.close(linger=0)
        self.ctx.term()


@pytest.mark.parametrize("planted", ["another user's", "world-writable"])
def test_busctl_and_connect_refuse_a_planted_default_runtime_dir(
    planted: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    xdg = short_dir("xa")
    runtime = xdg / "busd" / "busd"
    runtime.mkdir(parents=True)
    fake = FakeMaster(f"ipc://{runtime}/ctl.sock")
    try:
        if planted == "another user's":
            user: pwd.struct_passwd = request.getfixturevalue("local_user")
            for path in (xdg / "busd", runtime):
                os.chown(path, user.pw_uid, user.pw_gid)
            expected = f"belongs to uid {user.pw_uid}"
        else:
            runtime.chmod(0o777)
            expected = "writable by group or others"
        for name in (
            "BUSD_RUNTIME_DIR",
            "BUSD_NAME",
            "BUSD_CTL_ENDPOINT",
            "BUSD_PUB_ENDPOINT",
            "BUSD_SERVER_KEY",
            "BUSD_CURVE_SECRET",
        ):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))

        capsys.readouterr()
        code = main(["--timeout", "3", "publish", "deploy", "SECRET"])
        out, err = capsys.readouterr()
        assert code == 3, (out, err)
        assert err.count("\n") == 1, err
        assert expected in err
        assert not any(b"SECRET" in frame for frame in fake.received), "the secret was sent"
        assert fake.received == []
        with pytest.raises(NoMaster, match=expected):
            client.connect(timeout=2)
        # Endpoints given outright: the default dir is not looked at.
        with pytest.raises(NoMaster) as nobody:
            client.connect(ctl=f"ipc://{xdg}/none.sock", pub=f"ipc://{xdg}/none.pub", timeout=0.5)
        assert not isinstance(nobody.value, UnsafeRuntimeDir)
        # Named on purpose, the same dir is trusted (and the fake answers).
        code = main(["--timeout", "3", "--runtime-dir", str(runtime), "ping"])
        assert code == 0
    finally:
        fake.close()
        shutil.rmtree(xdg, ignore_errors=True)


def test_a_key_dir_another_user_owns_is_refused(
    local_user: pwd.struct_passwd, keys: Keys, tmp_path: Path
) -> None:
    theirs = tmp_path / "authorized"
    shutil.copytree(keys.authorized, theirs)
    os.chown(theirs, local_user.pw_uid, local_user.pw_gid)
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "busd",
                "--runtime-dir",
                str(tmp_path / "rt"),
                "--bind",
                "tcp://127.0.0.1:*",
                "--curve-secret",
                str(keys.server_secret),
                "--authorized-keys",
                str(theirs),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        os.chown(theirs, 0, 0)
    assert done.returncode != 0
    assert f"belongs to uid {local_user.pw_uid}" in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr


# -- what busctl prints (item: terminal injection) -----------------------------------


def test_watch_escapes_what_a_publisher_chose(busd_pool: PoolFactory) -> None:
    pool = busd_pool(idle, "--heartbeat", "0.2", workers=1)
    watcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "busd.client.ctl.busctl",
            "--runtime-dir",
            str(pool.runtime_dir),
            "--timeout",
            "10",
            "watch",
            "--count",
            "1",
            EVIL,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        # The watcher's SUB joins when it joins: publish until it has seen one.
        while watcher.poll() is None:
            assert time.monotonic() < deadline, "the watcher never saw the message"
            pool.broadcast(EVIL, 1)
            with contextlib.suppress(subprocess.TimeoutExpired):
                watcher.wait(0.2)
        out, err = watcher.communicate(timeout=TIMEOUT)
    finally:
        if watcher.poll() is None:
            os.killpg(watcher.pid, signal.SIGKILL)
            watcher.communicate(timeout=TIMEOUT)
    assert watcher.returncode == 0, err
    assert b"\x1b" not in out
    lines = out.decode().splitlines()
    assert len(lines) == 1, lines
    assert "evil\\x1b[2J\\n12:00:00.000 seq 99 state EXITING [1]" in lines[0], lines[0]
