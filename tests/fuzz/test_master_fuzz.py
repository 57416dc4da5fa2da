"""Fuzzing the master's sockets that read from outside: the control ROUTER and the XPUB.

A real ``busd`` (``-w 0``) gets hostile frames from hypothesis on both
sockets while a real client stays connected; after every batch the master
must answer a ping, the client must still mirror STARTED.  At the end every
frame the codec refuses is counted under its error code in ``status``, the
master's RSS grew within a bound, and its output holds no traceback.

CI runs a fixed seed; ``BUSD_FUZZ_SEED`` picks another and
``BUSD_FUZZ_SCALE`` multiplies the number of frames (a longer run by hand).
"""

from __future__ import annotations

import collections
import os
import random
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from busd.client.bus import connect
from busd.core.endpoints import default_endpoints
from busd.core.errors import ProtocolError
from busd.core.wire import CLIENT_KINDS, JOIN_PREFIX, decode
from busd.testing import Processes
from tests.chaos.support import control, exit_busd, wait_status
from tests.fuzz.frames import batches, expand, frames

SEED = int(os.environ.get("BUSD_FUZZ_SEED", "13"))
SCALE = int(os.environ.get("BUSD_FUZZ_SCALE", "1"))
BATCH = 50
#: Frames of each batch drawn by hypothesis; the rest are their mutations.
BASE = 6
#: 6,000 frames on the control socket and 2,000 on the XPUB in CI.
CTL_BATCHES = 120 * SCALE
PUB_BATCHES = 40 * SCALE
#: How much the master's RSS may grow over the run.
RSS_GROWTH_LIMIT = 40 << 20

pytestmark = pytest.mark.slow


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking against processes
        suppress_health_check=list(HealthCheck),
    )


def expected_code(frame: bytes) -> str | None:
    """The error code the master counts for ``frame``, if the codec refuses it."""
    try:
        decode(frame, allowed=CLIENT_KINDS)
    except ProtocolError as exc:
        return str(exc.code)
    return None


def drain(sock: zmq.Socket[Any]) -> int:
    count = 0
    while True:
        try:
            sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return count
        count += 1


subscriptions = st.one_of(
    st.binary(max_size=40),
    st.binary(max_size=40).map(lambda b: b"\x01" + b),
    st.binary(max_size=40).map(lambda b: b"\x00" + b),
    st.binary(max_size=16).map(lambda b: b"\x01" + JOIN_PREFIX + b),
    st.binary(min_size=1, max_size=40).map(lambda b: bytes([2 + b[0] % 254]) + b[1:]),
)


def test_hostile_frames_on_the_control_and_pub_sockets_are_counted_and_survived(
    busd_procs: Processes, busd_dir: Path
) -> None:
    busd = busd_procs.spawn(
        [sys.executable, "-m", "busd", "--heartbeat", "0.2", "--log-level", "WARNING", "-w", "0"],
        name="busd",
    )
    endpoints = default_endpoints(busd_dir)
    expected: collections.Counter[str] = collections.Counter()
    sent = collections.Counter[str]()
    ctx: zmq.Context[Any] = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    xsub = ctx.socket(zmq.XSUB)
    for sock in (dealer, xsub):
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 100_000)
    try:
        with control(busd_dir) as ctl:
            wait_status(ctl, lambda d: d["state"] == "STARTED", what="a started master")
            dealer.connect(endpoints.ctl)
            xsub.connect(endpoints.pub)
            with connect(runtime_dir=busd_dir, role="fuzz-witness", mirror=True) as witness:
                master = psutil.Process(busd.pid)
                rss_start = master.memory_info().rss

                def still_serving() -> None:
                    assert ctl.request("ping", timeout=10)["pong"] is True
                    assert witness.state.name == "STARTED"

                @seed(SEED)
                @fuzz_settings(CTL_BATCHES)
                @given(
                    # A BATCH now and then: a master takes none (unknown_kind).
                    st.lists(
                        frames(sorted(CLIENT_KINDS)) | batches(), min_size=BASE, max_size=BASE
                    ),
                    st.randoms(use_true_random=False),
                    st.integers(0, BATCH - 1),
                )
                def control_batch(base: list[bytes], rng: random.Random, split: int) -> None:
                    batch = expand(base, rng, BATCH)
                    for frame in batch:
                        code = expected_code(frame)
                        if code is not None:
                            expected[code] += 1
                        dealer.send(frame)
                    # A request is one frame: a multipart one is malformed.
                    dealer.send_multipart([batch[split], b"extra"])
                    expected["malformed"] += 1
                    sent["ctl"] += BATCH + 1
                    still_serving()
                    drain(dealer)

                @seed(SEED)
                @fuzz_settings(PUB_BATCHES)
                @given(st.lists(subscriptions, min_size=BATCH, max_size=BATCH))
                def pub_batch(batch: list[bytes]) -> None:
                    for frame in batch:
                        if not frame or frame[0] > 1:
                            expected["bad_subscription"] += 1
                        xsub.send(frame)
                    sent["pub"] += BATCH
                    still_serving()
                    drain(xsub)

                print(f"fuzz seed {SEED}: {CTL_BATCHES} + {PUB_BATCHES} batches of {BATCH}")
                control_batch()
                pub_batch()
                doc = ctl.request("status", timeout=10)
                counters = doc["counters"]
                short = {
                    code: (counters.get(code, 0), n)
                    for code, n in expected.items()
                    if counters.get(code, 0) < n
                }
                assert short == {}, f"bad frames not counted (seed {SEED}): {short}"
                assert counters["bad_subscription"] == expected["bad_subscription"]
                growth = master.memory_info().rss - rss_start
                assert growth < RSS_GROWTH_LIMIT, f"RSS grew {growth >> 20} MiB (seed {SEED})"
                assert witness.state.name == "STARTED"
            assert sum(sent.values()) >= 8000 * SCALE
            assert exit_busd(ctl, busd) == 0
    finally:
        dealer.close(0)
        xsub.close(0)
        ctx.term()
    out = busd_procs.output(busd)
    assert "Traceback" not in out, out[-4000:]
