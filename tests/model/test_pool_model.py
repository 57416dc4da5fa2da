"""Model-based test of a real busd and its pool, driven from several clients at once.

Each hypothesis example starts a real ``busd -w 2`` and runs random steps
against a model (the master's state and the pool's size):

- lifecycle commands (start, stop, graceful; ``wait``) sent *concurrently*
  from two raw control connections, a ClientBus and ``busctl``;
- signals to the master (SIGHUP, SIGTTIN, SIGTTOU);
- ``scale N`` from a control connection or ``busctl``;
- a worker SIGKILLed (replaced), or SIGSTOPped and resumed (kept).

After every step, at quiescence: the master's state is one that some order
of the concurrent commands gives, every command got exactly one reply, the
pool's slots are 0..N-1 with a worker each, the witness ClientBus mirrors
the master; at the end of an example every worker's mirrored state agrees,
the PUB event stream counted every spawn, ``exit`` leaves no process.

CI runs a few derandomized examples (real processes are slow);
``BUSD_POOL_MODEL_EXAMPLES`` raises the count for a longer run by hand.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from busd.client.bus import ClientBus, connect
from busd.client.control import request_frame
from busd.core.endpoints import default_endpoints
from busd.core.errors import ProtocolError
from busd.core.wire import Kind, decode, decode_broadcast
from busd.testing import SOURCE_ROOT, Processes
from tests.chaos.support import control, gone, wait_status

EXAMPLES = int(os.environ.get("BUSD_POOL_MODEL_EXAMPLES", "8"))
STEPS = int(os.environ.get("BUSD_POOL_MODEL_STEPS", "15"))
TARGET = "busd.examples.hello:main"
LIFECYCLE = {"start": "STARTED", "stop": "STOPPED"}

pytestmark = pytest.mark.slow


class Raw:
    """A control connection that counts replies per request id (exactly one each)."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.ids = itertools.count(1)
        self.replies: dict[int, int] = {}

    def request(self, cmd: str, timeout: float = 30, **args: Any) -> Any:
        req_id = next(self.ids)
        self.sock.send(request_frame(req_id, cmd, args))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no reply to {cmd} within {timeout}s"
            if not self.sock.poll(int(remaining * 1000) + 1):
                continue
            msg = decode(self.sock.recv(), allowed=frozenset({Kind.REPLY}))
            self.replies[msg.req_id] = self.replies.get(msg.req_id, 0) + 1
            if msg.req_id == req_id:
                _, ok, payload = msg.items
                assert ok, f"{cmd} failed: {payload}"
                return payload

    def stray(self) -> int:
        """Replies that arrived for no pending request."""
        count = 0
        while self.sock.poll(0):
            self.sock.recv()
            count += 1
        return count

    def close(self) -> None:
        self.sock.close(0)


class Events:
    """The master's PUB stream, read in the background: states and events seen."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str) -> None:
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(endpoint)
        self.names: list[str] = []
        self.states: list[str] = []

    def wait_joined(self, timeout: float = 10) -> None:
        """Until a first frame (a heartbeat) arrives: the subscription is in place."""
        assert self.sock.poll(int(timeout * 1000)), "no heartbeat on the PUB socket"
        self.read()

    def read(self) -> None:
        """Take in everything that arrived (test thread only)."""
        while self.sock.poll(0):
            try:
                msg = decode_broadcast(self.sock.recv())
            except ProtocolError as exc:
                raise AssertionError(f"the master published a bad frame: {exc}") from exc
            if msg[1] == Kind.EVENT:
                self.names.append(msg[4])
            elif msg[1] == Kind.STATE:
                self.states.append(msg[4])

    def close(self) -> None:
        self.sock.close(0)


def outcomes(state: str, cmds: list[str]) -> set[str]:
    """Every state some order of ``cmds`` leaves the master in."""
    finals = set()
    for order in itertools.permutations(cmds):
        final = state
        for cmd in order:
            final = LIFECYCLE.get(cmd, final)
        finals.add(final)
    return finals


class PoolMachine(RuleBasedStateMachine):
    """One real busd per example; the model is (state, size, spawns)."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="bm", dir="/tmp"))
        os.chmod(self.dir, 0o700)
        env = {
            **os.environ,
            "BUSD_RUNTIME_DIR": str(self.dir),
            "PYTHONPATH": os.pathsep.join(
                p for p in (SOURCE_ROOT, os.environ.get("PYTHONPATH")) if p
            ),
        }
        self.procs = Processes(self.dir, self.dir, env)
        self.busd = self.procs.spawn(
            [
                sys.executable,
                "-m",
                "busd",
                "--heartbeat",
                "0.1",
                "--log-level",
                "WARNING",
                "--backoff",
                "0.01",
                "--graceful-timeout",
                "5",
                # The model has no flapping: one example may crash a slot more
                # than 5 times a minute (flapping has tests of its own).
                "--flap-limit",
                "1000",
                "-w",
                "2",
                TARGET,
            ],
            name="busd",
        )
        self.ctx: zmq.Context[Any] = zmq.Context()
        ep = default_endpoints(self.dir)
        self.state, self.size, self.spawns = "STARTED", 2, 0
        self.dead: set[int] = set()
        self.events = Events(self.ctx, ep.pub)
        self.raws = [Raw(self.ctx, ep.ctl), Raw(self.ctx, ep.ctl)]
        self.witness: ClientBus | None = None
        try:
            with control(self.dir) as ctl:
                wait_status(
                    ctl,
                    lambda d: (
                        d["state"] == "STARTED"
                        and len(d["workers"]) == 2
                        and all(w["state"] == "STARTED" for w in d["workers"])
                    ),
                )
            self.witness = connect(runtime_dir=self.dir, role="model-witness", mirror=True)
            self.quiesce()
            self.events.wait_joined()  # what is published from now on reaches us
        except BaseException:
            self.release()  # hypothesis calls no teardown when __init__ fails
            raise
        self.events.read()
        self.events.names.clear()

    # -- steps --------------------------------------------------------------

    @rule(
        cmds=st.lists(st.sampled_from(["start", "stop", "graceful"]), min_size=1, max_size=4),
        # One command per client at a time: each client is one connection.
        via=st.permutations(["raw0", "raw1", "witness", "busctl"]),
    )
    def lifecycle(self, cmds: list[str], via: list[str]) -> None:
        results: list[Any] = [None] * len(cmds)

        def send(i: int, cmd: str, who: str) -> None:
            if who == "busctl":
                done = self.busctl("--json", cmd, "--wait")
                assert done.returncode == 0, done.stderr
                results[i] = json.loads(done.stdout)
            elif who == "witness":
                assert self.witness is not None
                results[i] = getattr(self.witness, cmd)(wait=True, timeout=20)
            else:
                results[i] = self.raws[int(who[-1])].request(cmd, wait=True, timeout=20)

        threads = [threading.Thread(target=send, args=(i, c, via[i])) for i, c in enumerate(cmds)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert all(r is not None for r in results), f"unanswered: {cmds} via {via}"
        possible = outcomes(self.state, cmds)
        state = self.raws[0].request("status")["state"]
        assert state in possible, f"{cmds} from {self.state} gave {state}, not {possible}"
        self.state = state

    @rule(sig=st.sampled_from([signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU]))
    def signal_master(self, sig: signal.Signals) -> None:
        if sig == signal.SIGTTOU and self.size == 1:
            sig = signal.SIGTTIN
        before = self.caught(sig.name)
        os.kill(self.busd.pid, sig)
        with control(self.dir) as ctl:
            wait_status(
                ctl,
                lambda d: d["signals"]["caught"].get(sig.name, 0) == before + 1,
                what=f"{sig.name} caught",
            )
        if sig == signal.SIGTTIN:
            self.grow(self.size + 1)
        elif sig == signal.SIGTTOU:
            self.size -= 1

    @rule(n=st.integers(1, 4), via=st.sampled_from(["raw0", "busctl"]))
    def scale(self, n: int, via: str) -> None:
        if via == "busctl":
            done = self.busctl("scale", str(n))
            assert done.returncode == 0, done.stderr
            assert done.stdout.strip() == f"scale {n}: {n} workers"
        else:
            assert self.raws[0].request("scale", n=str(n)) == {"size": n}
        self.grow(n)

    @rule(index=st.integers(0, 3), how=st.sampled_from(["kill", "pause"]))
    def hit_worker(self, index: int, how: str) -> None:
        workers = self.raws[1].request("workers")
        pid = workers[index % len(workers)]["pid"]
        if how == "kill":
            os.kill(pid, signal.SIGKILL)
            self.dead.add(pid)
            self.spawns += 1
            assert gone([pid], 10) == []
        else:
            # Stopped for a round trip: well within the worker timeout, so kept.
            os.kill(pid, signal.SIGSTOP)
            try:
                self.raws[1].request("ping")
            finally:
                os.kill(pid, signal.SIGCONT)
            self.quiesce()
            assert pid in {w["pid"] for w in self.raws[1].request("workers")}

    @precondition(lambda self: self.state == "STARTED")
    @rule()
    def witness_mirrors(self) -> None:
        assert self.witness is not None
        assert self.witness.state.name == self.state

    # -- helpers ----------------------------------------------------------------

    def grow(self, size: int) -> None:
        self.spawns += max(0, size - self.size)
        self.size = size

    def busctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "busd.client.ctl.busctl", "--timeout", "20", *args],
            capture_output=True,
            text=True,
            env=self.procs.env,
            timeout=60,
            check=False,
        )

    def caught(self, name: str) -> int:
        count: int = self.raws[1].request("status")["signals"]["caught"].get(name, 0)
        return count

    def quiesce(self, workers_too: bool = False) -> dict[str, Any]:
        """Wait until status matches the model; return it."""

        def agrees(d: dict[str, Any]) -> bool:
            ws = d["workers"]
            return (
                d["state"] == self.state
                and [w["id"] for w in ws] == list(range(self.size))
                and all(w.get("pid") and w["state"] != "SPAWNED" for w in ws)
                and not {w["pid"] for w in ws} & self.dead
                and (not workers_too or all(w["state"] == self.state for w in ws))
            )

        with control(self.dir) as ctl:
            return wait_status(ctl, agrees, timeout=30, what=f"{self.state} x{self.size}")

    def teardown(self) -> None:
        try:
            if self.busd.poll() is None:
                doc = self.quiesce(workers_too=True)
                assert self.witness is not None
                assert self.witness.state.name == self.state
                assert sum(r.stray() for r in self.raws) == 0, "a command got two replies"
                assert all(n == 1 for r in self.raws for n in r.replies.values())
                self.events.read()
                # One event per spawn, named after why.
                spawned = sum(
                    self.events.names.count(e)
                    for e in ("worker_spawned", "worker_restarted", "worker_recycling")
                )
                assert spawned == self.spawns, (
                    f"{spawned} spawn events, model {self.spawns}: {self.events.names}"
                )
                assert self.events.states[-1:] in ([], [self.state])
                pids = [w["pid"] for w in doc["workers"]]
                self.raws[0].request("exit", timeout=30)
                assert self.busd.wait(30) == 0
                assert gone(pids, 10) == [], "a worker outlived exit"
        finally:
            self.release()

    def release(self) -> None:
        """Close every socket, end every process, remove the runtime dir."""
        if self.witness is not None:
            self.witness.close()
        for raw in self.raws:
            raw.close()
        self.events.close()
        self.ctx.term()
        survivors = self.procs.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)
        assert survivors == [], survivors

    @invariant()
    def settles(self) -> None:
        """After every step: quiescence that matches the model."""
        self.quiesce()


PoolMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.timeout(300)
def test_pool_lifecycle_from_many_clients_agrees_with_the_model() -> None:
    print(f"pool model: {EXAMPLES} examples of {STEPS} steps, derandomized")
    PoolMachine.TestCase("runTest").runTest()
