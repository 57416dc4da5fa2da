"""Fuzzing a client's sockets that read from outside: its SUB and its DEALER.

A fake master (a thread here with an XPUB and a ROUTER, answering HELLO and
snapshot requests and sending heartbeats) serves a real ClientBus; hypothesis
frames go to the client's SUB (as broadcasts) and to its DEALER (as
replies).  The client must count every frame the codec refuses, keep its
link (no "master lost", no thread dying), and still deliver a real message
at the end.  Frames a real master could send on purpose (a STATE of
EXITING, a refused HELLO) are left out: obeying them is right.

The seed is fixed in CI (``BUSD_FUZZ_SEED``, ``BUSD_FUZZ_SCALE`` as for
the master's fuzz test).
"""

from __future__ import annotations

import collections
import logging
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from hypothesis import given, seed
from hypothesis import strategies as st

from busd.client.bus import connect
from busd.core.errors import ProtocolError
from busd.core.views import StateMsg, decode_frames, read_frame
from busd.core.wire import BROADCAST_KINDS, CLIENT_KINDS, VERSION, Kind, decode, encode
from tests.fuzz.frames import batches, expand, frames
from tests.fuzz.test_master_fuzz import BASE, BATCH, fuzz_settings

SEED = int(os.environ.get("BUSD_FUZZ_SEED", "13"))
SCALE = int(os.environ.get("BUSD_FUZZ_SCALE", "1"))
#: 1,000 frames on each of the client's two sockets in CI.
SUB_BATCHES = 20 * SCALE
DEALER_BATCHES = 20 * SCALE
EPOCH = 1  # a value hypothesis draws often, so many fuzzed broadcasts are "ours"
HELLO_ID = 1
#: BATCH frames drawn for each batch of frames on the SUB (beside those ``frames`` draws).
BATCHES = 3

pytestmark = pytest.mark.slow


class FakeMaster(threading.Thread):
    """Just enough of a master: welcome, snapshot, heartbeats; frames from the test."""

    def __init__(self, ctx: zmq.Context[Any], directory: Path) -> None:
        super().__init__(name="fake-master", daemon=True)
        self.pub_ep, self.ctl_ep = f"ipc://{directory}/fpub.sock", f"ipc://{directory}/fctl.sock"
        self.pub = ctx.socket(zmq.XPUB)
        self.ctl = ctx.socket(zmq.ROUTER)
        self.inbox = ctx.socket(zmq.PAIR)
        self.outbox = ctx.socket(zmq.PAIR)
        for sock in (self.pub, self.ctl, self.inbox, self.outbox):
            sock.setsockopt(zmq.LINGER, 0)
        self.pub.bind(self.pub_ep)
        self.ctl.bind(self.ctl_ep)
        self.inbox.bind(f"inproc://fake-{id(self)}")
        self.outbox.connect(f"inproc://fake-{id(self)}")
        self.identity: bytes | None = None
        self.seq = 0
        self.hellos = 0

    def run(self) -> None:
        poller = zmq.Poller()
        for sock in (self.ctl, self.pub, self.inbox):
            poller.register(sock, zmq.POLLIN)
        next_beat = time.monotonic()
        while True:
            ready = dict(poller.poll(max(1, int((next_beat - time.monotonic()) * 1000))))
            if self.pub in ready:
                while self.pub.poll(0):
                    self.pub.recv()
            if self.ctl in ready:
                self.answer(*self.ctl.recv_multipart())
            if self.inbox in ready:
                where, frame = self.inbox.recv_multipart()
                if where == b"stop":
                    return
                if where == b"pub":
                    self.pub.send(frame)
                elif self.identity is not None:
                    self.ctl.send_multipart([self.identity, frame])
                self.inbox.send(b"sent")
            if time.monotonic() >= next_beat:
                self.pub.send(encode(Kind.HEARTBEAT, EPOCH, self.seq, "STARTED", 0.2))
                next_beat = time.monotonic() + 0.2

    def answer(self, identity: bytes, frame: bytes) -> None:
        msg = decode(frame, allowed=CLIENT_KINDS)  # the client's frames are always valid
        if msg.kind is Kind.HELLO:
            self.identity = identity
            self.hellos += 1
            result: Any = {
                "client_id": 1,
                "epoch": EPOCH,
                "seq": self.seq,
                "state": "STARTED",
                "heartbeat": 0.2,
                "liveness": 10_000,
                "pong_interval": 1.0,
                "pub": [self.pub_ep],
            }
        elif msg.kind is Kind.REQUEST:
            result = (
                {"seq": self.seq, "state": "STARTED"} if msg.body.get("cmd") == "snapshot" else {}
            )
        else:
            return
        self.ctl.send_multipart([identity, encode(Kind.REPLY, msg.req_id, True, result)])

    def send(self, where: bytes, frame: bytes) -> None:
        """Hand ``frame`` to the fake master's thread; return once it was sent."""
        self.outbox.send_multipart([where, frame])
        assert self.outbox.poll(10_000), "the fake master is stuck"
        self.outbox.recv()

    def close(self) -> None:
        self.outbox.send_multipart([b"stop", b""])
        self.join(10)
        for sock in (self.pub, self.ctl, self.inbox, self.outbox):
            sock.close(0)


def obeyed(frame: bytes, broadcast: bool) -> bool:
    """A well-formed frame that a client must obey: an exit (alone or in a BATCH), a refused
    HELLO."""
    try:
        if broadcast:
            return any(
                type(msg) is StateMsg and msg.state == "EXITING" for msg in decode_frames(frame)
            )
        reply = decode(frame, allowed=frozenset({Kind.REPLY}))
    except ProtocolError:
        return False
    return reply.req_id == HELLO_ID


def refused(frame: bytes, broadcast: bool) -> bool:
    """The link refuses it (a PUB frame: ``read_frame``, a BATCH's header only)."""
    try:
        if broadcast:
            read_frame(frame)
        else:
            decode(frame, allowed=frozenset({Kind.REPLY}))
    except ProtocolError:
        return True
    return False


def whole_refused(frame: bytes) -> bool:
    """Decoded whole (``decode_frames``, each message checked), it is refused."""
    try:
        decode_frames(frame)
    except ProtocolError:
        return True
    return False


def is_batch(frame: bytes) -> bool:
    """A frame that says it is a BATCH (good or not)."""
    try:
        obj = msgpack.unpackb(frame, raw=False, strict_map_key=False)
    except Exception:  # noqa: BLE001 - not msgpack: not a BATCH
        return False
    return type(obj) is list and len(obj) > 1 and obj[:2] == [VERSION, Kind.BATCH]


def test_hostile_frames_on_a_clients_sub_and_dealer_are_counted_and_survived(
    busd_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    errors: list[str] = []
    old_hook = threading.excepthook
    threading.excepthook = lambda args: errors.append(f"{args.thread}: {args.exc_value!r}")
    ctx: zmq.Context[Any] = zmq.Context()
    fake = FakeMaster(ctx, busd_dir)
    fake.start()
    expected: collections.Counter[str] = collections.Counter()
    try:
        with connect(pub=fake.pub_ep, ctl=fake.ctl_ep, role="fuzzed", mirror=True) as client:
            alive = threading.Event()
            client.subscribe("alive", alive.set)

            def hostile(batch: list[bytes], where: bytes, broadcast: bool) -> None:
                for frame in batch:
                    if obeyed(frame, broadcast):
                        continue
                    if refused(frame, broadcast):
                        expected[where.decode()] += 1
                    if broadcast and is_batch(frame):
                        expected["bad_batches" if refused(frame, True) else "batches"] += 1
                        # Its header read well, a message in it does not: dropped later.
                        if not refused(frame, True) and whole_refused(frame):
                            expected["bad_inside"] += 1
                    fake.send(where, frame)
                assert not client.link.lost.is_set(), "the client took its master for lost"

            @seed(SEED)
            @fuzz_settings(SUB_BATCHES)
            @given(
                st.lists(frames(sorted(BROADCAST_KINDS)), min_size=BASE, max_size=BASE),
                st.lists(batches(), min_size=BATCHES, max_size=BATCHES),
                st.randoms(use_true_random=False),
            )
            def sub_batch(base: list[bytes], drawn: list[bytes], rng: random.Random) -> None:
                # The BATCH frames drawn go as they are, and among the frames mutated.
                hostile(expand(base + drawn, rng, BATCH), b"pub", True)

            @seed(SEED)
            @fuzz_settings(DEALER_BATCHES)
            @given(
                st.lists(frames([Kind.REPLY]), min_size=BASE, max_size=BASE),
                st.randoms(use_true_random=False),
            )
            def dealer_batch(base: list[bytes], rng: random.Random) -> None:
                hostile(expand(base, rng, BATCH), b"reply", False)

            sub_batch()
            dealer_batch()
            # Still joined and delivering: a real message after everything.
            deadline = time.monotonic() + 10
            stats = client.statistics()["link"]
            while (
                stats.get("bad_messages", 0) < expected["pub"]
                or stats.get("bad_replies", 0) < expected["reply"]
            ):
                assert time.monotonic() < deadline, f"not counted: {stats} vs {expected}"
                threading.Event().wait(0.05)
                stats = client.statistics()["link"]
            last = max(client.link.seq, fake.seq)
            fake.send(
                b"pub",
                msgpack.packb(
                    [VERSION, int(Kind.PUBLISH), EPOCH, last + 1, "alive", [], {}, False]
                ),
            )
            assert alive.wait(10), f"a real message was not delivered after the fuzz: {stats}"
            bad_batched = client.statistics()["bad_batched"]
            assert not client.link.lost.is_set()
    finally:
        threading.excepthook = old_hook
        fake.close()
        ctx.term()
    assert errors == [], errors
    assert "client link failed" not in caplog.text
    assert expected["pub"] > 500
    # BATCH frames among them, good ones and ones refused whole, each bad one counted.
    assert expected["batches"] >= 10, expected
    assert expected["bad_batches"] + expected["bad_inside"] >= 10, expected
    assert stats["bad_messages"] == expected["pub"], (stats, expected)
    # A BATCH whose header reads well but whose messages do not is dropped by the stream
    # (off its fast path) or, from the bad message on, by the dispatcher: counted either way.
    assert expected["bad_inside"] >= 5, expected
    assert stats["bad_batches"] + bad_batched > 0, (stats, bad_batched)
    assert expected["reply"] > 500
