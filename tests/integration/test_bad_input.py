"""A real MasterBus under bad input, over its real ipc sockets, from raw pyzmq sockets.

Each test throws something at the master that breaks docs/PROTOCOL.md
(garbage, an oversized frame, a wrong version, an unknown kind or command,
acks from strangers, a subscriber that never reads, a flood) and then checks
the reply it documents, that the master counted it, and that a well-behaved
client is still served.  The master runs in this process; every wait polls
a socket or a condition with a timeout.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import psutil
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

import busd
from busd.client import ClientBus, Control
from busd.core import wire
from busd.core.endpoints import Endpoints
from busd.core.errors import ProtocolError
from busd.master.bus import MasterBus

#: Every wait for a reply is bounded by this (seconds).
TIMEOUT = 3.0
EPOCH_OF_NOBODY = 1
V = wire.VERSION


def pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


class Raw:
    """Raw pyzmq sockets connected to one master; all closed (linger 0) by close()."""

    def __init__(self, master: MasterBus) -> None:
        self.ctl = master.hub.ctl_endpoints[0]
        self.pub = master.hub.pub_endpoints[0]
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.sockets: list[zmq.Socket[Any]] = []

    def socket(self, kind: int, endpoint: str, **options: int) -> zmq.Socket[Any]:
        sock: zmq.Socket[Any] = self.ctx.socket(kind)
        self.sockets.append(sock)
        sock.setsockopt(zmq.LINGER, 0)
        for name, value in options.items():
            sock.setsockopt(getattr(zmq, name), value)
        sock.connect(endpoint)
        return sock

    def dealer(self, **options: int) -> zmq.Socket[Any]:
        return self.socket(zmq.DEALER, self.ctl, **options)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close(linger=0)
        self.ctx.term()


def recv(sock: zmq.Socket[Any], timeout: float = TIMEOUT) -> list[Any]:
    """One message from ``sock``, decoded without checks; fails after ``timeout``."""
    assert sock.poll(int(timeout * 1000), zmq.POLLIN), f"nothing received within {timeout}s"
    decoded: list[Any] = msgpack.unpackb(sock.recv(zmq.NOBLOCK), raw=False)
    return decoded


def exchange(sock: zmq.Socket[Any], *frames: bytes) -> list[Any]:
    sock.send_multipart(list(frames))
    return recv(sock)


def assert_error_reply(reply: list[Any], req_id: int, code: str) -> dict[str, Any]:
    assert reply[:4] == [wire.VERSION, wire.Kind.REPLY, req_id, False], reply
    error: dict[str, Any] = reply[4]
    assert error["code"] == code, error
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


def assert_serving(master: MasterBus) -> None:
    """A well-behaved control client gets its ping answered."""
    with Control(master.hub.ctl_endpoints[0], timeout=TIMEOUT) as control:
        pong = control.request("ping")
    assert pong == {"pong": True, "pid": os.getpid(), "epoch": master.epoch}


def counters(master: MasterBus) -> dict[str, int]:
    result: dict[str, int] = master.statistics()["hub"]["counters"]
    return result


@pytest.fixture
def master(busd_master: Callable[..., MasterBus]) -> MasterBus:
    """A real master on a short runtime dir (the busd plugin closes it)."""
    return busd_master()


@pytest.fixture
def raw(master: MasterBus) -> Iterator[Raw]:
    sockets = Raw(master)
    try:
        yield sockets
    finally:
        sockets.close()


@pytest.fixture
def client_bus(master: MasterBus) -> Iterator[ClientBus]:
    endpoints = Endpoints(pub=master.hub.pub_endpoints[0], ctl=master.hub.ctl_endpoints[0])
    # "wait": a slow test machine must not make the probe exit on its own.
    bus = ClientBus(endpoints, name="probe", timeout=TIMEOUT, on_master_lost="wait")
    try:
        bus.connect(mirror=True, timeout=TIMEOUT)
        yield bus
    finally:
        bus.close()


def assert_client_bus_works(master: MasterBus, bus: ClientBus) -> None:
    """The joined ClientBus still runs a relayed message and its ack reaches the master."""
    seen: list[str] = []
    bus.subscribe("probe", seen.append)
    try:
        report = master.broadcast_and_wait("probe", ["hello"], timeout=TIMEOUT)
    finally:
        bus.unsubscribe("probe", seen.append)
    assert seen == ["hello"]
    assert report.ok
    assert [a.client for a in report.acks] == [bus.link.client_id]


# -- one bad frame at a time ----------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        pytest.param(b"\xc1", "malformed", id="not-msgpack"),
        pytest.param(b"", "malformed", id="empty-frame"),
        pytest.param(b"\x94\x01\x0b", "malformed", id="truncated"),
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", "malformed", id="http"),
        pytest.param(pack({"cmd": "ping"}), "malformed", id="a-map"),
        pytest.param(pack([V]), "malformed", id="one-item"),
        pytest.param(pack([V, 99, 5, {"cmd": "ping"}]), "unknown_kind", id="unknown-kind"),
        pytest.param(pack([V, "REQUEST", 5, {"cmd": "ping"}]), "unknown_kind", id="kind-str"),
        pytest.param(pack([V, 1, 7, 1, "STARTED"]), "unknown_kind", id="state-to-master"),
        pytest.param(pack([V, 20, 5, True, None]), "unknown_kind", id="reply-to-master"),
        pytest.param(pack([V, 11, 5]), "malformed", id="request-too-short"),
        pytest.param(pack([V, 11, 5, {"cmd": "ping"}, 0]), "malformed", id="request-too-long"),
        pytest.param(pack([V, 11, "5", {"cmd": "ping"}]), "malformed", id="req-id-str"),
        pytest.param(pack([V, 11, 5, "ping"]), "malformed", id="body-str"),
        pytest.param(pack([V, 10, 5, [b"token"]]), "malformed", id="hello-body-array"),
    ],
)
def test_undecodable_frame_gets_an_unsolicited_error(
    master: MasterBus, raw: Raw, frame: bytes, code: str
) -> None:
    dealer = raw.dealer()

    reply = exchange(dealer, frame)

    assert_error_reply(reply, 0, code)
    assert counters(master)[code] == 1
    assert_serving(master)


@pytest.mark.parametrize("version", [3, 0, "2"])
def test_wrong_protocol_version_gets_bad_version(master: MasterBus, raw: Raw, version: Any) -> None:
    dealer = raw.dealer()

    reply = exchange(dealer, pack([version, wire.Kind.REQUEST, 5, {"cmd": "ping"}]))

    error = assert_error_reply(reply, 0, "bad_version")
    got = version if isinstance(version, int) else repr(version)
    assert error["details"] == {"got": got, "supported": [2]}
    assert counters(master)["bad_version"] == 1
    assert_serving(master)
    # The same connection is still served once it speaks version 2.
    again = exchange(dealer, wire.encode(wire.Kind.REQUEST, 6, {"cmd": "snapshot"}))
    assert again[:4] == [2, wire.Kind.REPLY, 6, True]


def test_a_version_1_peer_gets_its_refusal_in_version_1_with_its_own_req_id(
    master: MasterBus, raw: Raw
) -> None:
    dealer = raw.dealer()
    hello = {"token": os.urandom(12), "pid": os.getpid(), "role": "worker", "subscribe": True}

    refused_hello = exchange(dealer, pack([1, wire.Kind.HELLO, 1, hello]))
    refused_ping = exchange(dealer, pack([1, wire.Kind.REQUEST, 41, {"cmd": "ping"}]))

    for reply, req_id in ((refused_hello, 1), (refused_ping, 41)):
        assert reply[:4] == [1, wire.Kind.REPLY, req_id, False], reply
        assert reply[4]["code"] == "bad_version"
        assert reply[4]["details"] == {"got": 1, "supported": [2]}
        assert "version 1" in reply[4]["message"]
    assert counters(master)["bad_version"] == 2
    assert master.clients() == []  # the HELLO registered nobody
    # The master goes on serving, that connection too once it speaks version 2.
    assert_serving(master)
    pong = exchange(dealer, wire.encode(wire.Kind.REQUEST, 42, {"cmd": "ping"}))
    assert pong[:4] == [2, wire.Kind.REPLY, 42, True]
    assert pong[4]["pong"] is True


def test_two_frame_request_is_malformed(master: MasterBus, raw: Raw) -> None:
    dealer = raw.dealer()
    ping = wire.encode(wire.Kind.REQUEST, 5, {"cmd": "ping"})

    reply = exchange(dealer, ping, ping)

    error = assert_error_reply(reply, 0, "malformed")
    assert "one frame" in error["message"]
    assert counters(master)["malformed"] == 1
    assert_serving(master)


def test_a_req_style_delimiter_is_refused_with_a_reply_req_could_not_read(
    master: MasterBus, raw: Raw
) -> None:
    # What a REQ socket sends: an empty delimiter, then the request.
    dealer = raw.dealer()
    dealer.send_multipart([b"", wire.encode(wire.Kind.REQUEST, 5, {"cmd": "ping"})])

    assert dealer.poll(int(TIMEOUT * 1000), zmq.POLLIN)
    frames = dealer.recv_multipart(zmq.NOBLOCK)

    # One frame, no empty delimiter before it: a REQ socket drops such a reply.
    assert len(frames) == 1
    assert_error_reply(msgpack.unpackb(frames[0], raw=False), 0, "malformed")
    assert_serving(master)


@pytest.mark.parametrize(
    "body", [{}, {"cmd": None}, {"cmd": 5}, {"cmd": b"ping"}, {"command": "ping"}]
)
def test_request_without_a_cmd_string_gets_bad_arguments(
    master: MasterBus, raw: Raw, body: dict[str, Any]
) -> None:
    dealer = raw.dealer()

    reply = exchange(dealer, wire.encode(wire.Kind.REQUEST, 41, body))

    assert_error_reply(reply, 41, "bad_arguments")
    assert counters(master)["bad_arguments"] == 1
    assert_serving(master)


def test_hello_without_a_token_gets_bad_arguments(master: MasterBus, raw: Raw) -> None:
    dealer = raw.dealer()

    reply = exchange(dealer, wire.encode(wire.Kind.HELLO, 9, {"pid": 1, "token": "not bytes"}))

    assert_error_reply(reply, 9, "bad_arguments")
    assert master.clients() == []
    assert_serving(master)


@pytest.mark.parametrize(
    ("body", "what"),
    [
        ({"cmd": "graceful", "wait": 1}, "'wait'"),
        ({"cmd": "stop", "timeout": "soon"}, "'timeout'"),
        ({"cmd": "stop", "timeout": -1}, "'timeout'"),
        ({"cmd": "broadcast"}, "'channel'"),
        ({"cmd": "broadcast", "channel": "stop"}, "'stop'"),
        ({"cmd": "broadcast", "channel": "x", "args": "a"}, "'args'"),
    ],
)
def test_command_with_bad_arguments_is_refused(
    master: MasterBus, raw: Raw, body: dict[str, Any], what: str
) -> None:
    dealer = raw.dealer()

    reply = exchange(dealer, wire.encode(wire.Kind.REQUEST, 12, body))

    error = assert_error_reply(reply, 12, "bad_arguments")
    assert what in error["message"]
    assert master.state is busd.states.STOPPED
    assert_serving(master)


def test_unknown_command_gets_unknown_command_and_the_master_keeps_running(
    master: MasterBus, raw: Raw
) -> None:
    dealer = raw.dealer()

    reply = exchange(dealer, wire.encode(wire.Kind.REQUEST, 77, {"cmd": "reboot-the-world"}))
    after = exchange(dealer, wire.encode(wire.Kind.REQUEST, 78, {"cmd": "start"}))

    error = assert_error_reply(reply, 77, "unknown_command")
    assert "ping" in error["message"]
    assert after[2:4] == [78, True]
    assert after[4]["state"] == "STARTED"
    assert master.state is busd.states.STARTED
    assert_serving(master)


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        (
            wire.Kind.ACK,
            {"epoch": EPOCH_OF_NOBODY, "seq": 1, "ok": True, "result": None, "errors": []},
        ),
        (wire.Kind.PONG, {"epoch": EPOCH_OF_NOBODY, "seq": 0, "state": "STOPPED"}),
        (wire.Kind.BYE, {"reason": "never came"}),
    ],
    ids=lambda v: v.name if isinstance(v, wire.Kind) else "",
)
def test_stranger_ack_pong_bye_get_unknown_client(
    master: MasterBus, raw: Raw, kind: wire.Kind, body: dict[str, Any]
) -> None:
    dealer = raw.dealer()

    reply = exchange(dealer, wire.encode(kind, 0, body))

    assert_error_reply(reply, 0, "unknown_client")
    assert counters(master)["unknown_client"] == 1
    assert master.clients() == []
    assert_serving(master)


def test_a_hello_whose_join_subscription_never_shows_is_not_waited_for(
    master: MasterBus, raw: Raw
) -> None:
    # PROTOCOL.md section 7: the HELLO is held until the join topic shows (at
    # most JOIN_TIMEOUT); the snapshot then includes every earlier seq, so the
    # client will never receive (nor ack) a message sent while it was held, and
    # a wait must not count on it, nor report it lost.
    dealer = raw.dealer()
    dealer.send(
        wire.encode(wire.Kind.HELLO, 1, {"token": os.urandom(12), "pid": 1, "role": "worker"})
    )
    pong = exchange(dealer, wire.encode(wire.Kind.REQUEST, 2, {"cmd": "ping"}))
    assert pong[2:4] == [2, True]  # the HELLO before it was handled: it is held
    assert len(master.clients()) == 1

    report = master.graceful(wait=True, timeout=TIMEOUT)

    assert report is not None
    assert report.as_dict()["lost"] == []
    assert report.acks == ()
    assert report.ok


def test_pong_after_bye_is_ignored_quietly(master: MasterBus, raw: Raw) -> None:
    # A pong already on its way when the client said BYE must not make it rejoin.
    dealer = raw.dealer()
    welcome = exchange(dealer, wire.encode(wire.Kind.HELLO, 1, {"subscribe": False, "pid": 1}))
    assert welcome[2:4] == [1, True]
    assert [c.id for c in master.clients()] == [welcome[4]["client_id"]]
    dealer.send(wire.encode(wire.Kind.BYE, 0, {"reason": "done"}))
    dealer.send(wire.encode(wire.Kind.PONG, 0, {"epoch": master.epoch, "seq": 0}))

    # The next answer is the ping's: the pong got none (no unknown_client error).
    reply = exchange(dealer, wire.encode(wire.Kind.REQUEST, 7, {"cmd": "ping"}))

    assert reply[2:4] == [7, True]
    assert master.clients() == []
    assert master.hub.statistics()["counters"]["after_bye"] == 1


# -- size ---------------------------------------------------------------------------------


def wait_for_event(monitor: zmq.Socket[Any], event: int) -> None:
    deadline = time.monotonic() + TIMEOUT
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {event!r} event within {TIMEOUT}s"
        if (
            monitor.poll(int(remaining * 1000) + 1, zmq.POLLIN)
            and recv_monitor_message(monitor)["event"] == event
        ):
            return


def test_oversized_frame_drops_only_that_connection(
    master: MasterBus, raw: Raw, client_bus: ClientBus
) -> None:
    dealer = raw.dealer()
    assert exchange(dealer, wire.encode(wire.Kind.REQUEST, 1, {"cmd": "ping"}))[3] is True
    monitor = dealer.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    raw.sockets.insert(0, monitor)
    try:
        dealer.send(b"\xc1" * (wire.MAX_MESSAGE_SIZE + 1))

        wait_for_event(monitor, zmq.EVENT_DISCONNECTED)
    finally:
        dealer.disable_monitor()

    assert_serving(master)
    assert_client_bus_works(master, client_bus)
    # ZeroMQ discarded the frame: the hub never saw it, so it sent no reply.
    assert counters(master).get("malformed", 0) == 0
    # The DEALER reconnects by itself and is served again.
    reply = exchange(dealer, wire.encode(wire.Kind.REQUEST, 2, {"cmd": "ping"}))
    assert reply[2:4] == [2, True]


def test_a_frame_of_exactly_the_limit_reaches_the_decoder(master: MasterBus, raw: Raw) -> None:
    dealer = raw.dealer()

    reply = exchange(dealer, b"\xc1" * wire.MAX_MESSAGE_SIZE)

    error = assert_error_reply(reply, 0, "malformed")
    assert "not msgpack" in error["message"]
    assert_serving(master)


def test_a_reply_too_large_to_send_becomes_too_large(master: MasterBus, raw: Raw) -> None:
    master.add_command("huge", lambda body: "x" * wire.MAX_MESSAGE_SIZE, readonly=True)
    dealer = raw.dealer()

    reply = exchange(dealer, wire.encode(wire.Kind.REQUEST, 3, {"cmd": "huge"}))

    assert_error_reply(reply, 3, "too_large")
    assert_serving(master)


# -- floods -------------------------------------------------------------------------------


def test_a_subscriber_that_never_reads_does_not_stall_or_bloat_the_master(
    master: MasterBus, raw: Raw
) -> None:
    messages, payload = 25_000, "p" * 1000
    sleeper = raw.socket(zmq.SUB, raw.pub)
    sleeper.setsockopt(zmq.SUBSCRIBE, b"")
    recv(sleeper)  # its subscription is in place: from now on it never reads
    rss_before = psutil.Process().memory_info().rss
    failures: list[BaseException] = []

    def publish() -> None:
        try:
            for n in range(messages):
                master.publish("flood", n, payload)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            failures.append(exc)

    publisher = threading.Thread(target=publish, name="flood-publisher")
    latencies = []
    with Control(master.hub.ctl_endpoints[0], timeout=TIMEOUT) as control:
        publisher.start()
        try:
            while publisher.is_alive():
                started = time.monotonic()
                assert control.request("ping")["epoch"] == master.epoch
                latencies.append(time.monotonic() - started)
        finally:
            publisher.join(30)
        started = time.monotonic()
        seq = control.request("snapshot")["seq"]
        latencies.append(time.monotonic() - started)

    growth = psutil.Process().memory_info().rss - rss_before
    assert not failures
    assert not publisher.is_alive()
    assert seq >= messages
    assert max(latencies) < 1.0, f"ping took up to {max(latencies):.3f}s"
    assert growth < 200 * 2**20, f"RSS grew by {growth / 2**20:.0f} MiB"


def test_a_burst_of_garbage_is_answered_counted_and_logged_sparingly(
    master: MasterBus, raw: Raw, caplog: pytest.LogCaptureFixture
) -> None:
    garbage = (
        [(b"\xc1", "malformed")] * 2500
        + [(pack([7, 11, 1, {"cmd": "ping"}]), "bad_version")] * 1500
        + [(pack([V, 42, 1, {}]), "unknown_kind")] * 1000
    )
    dealer = raw.dealer(RCVHWM=0, SNDHWM=0)
    caplog.set_level(logging.WARNING, logger="busd.master.hub")

    for frame, _code in garbage:
        dealer.send(frame)
    dealer.send(wire.encode(wire.Kind.REQUEST, 99, {"cmd": "ping"}))
    codes: dict[str, int] = {}
    while True:
        reply = recv(dealer)
        if reply[2] == 99:
            break
        code = assert_error_reply(reply, 0, reply[4]["code"])["code"]
        codes[code] = codes.get(code, 0) + 1

    expected = {"malformed": 2500, "bad_version": 1500, "unknown_kind": 1000}
    assert reply[3] is True
    assert codes == expected
    hub = counters(master)
    assert {code: hub.get(code) for code in expected} == expected
    lines = [r for r in caplog.records if r.name == "busd.master.hub"]
    assert 3 <= len(lines) <= 50, f"{len(lines)} log lines for {len(garbage)} bad frames"
    assert_serving(master)


# -- a well-behaved client that only has docs/PROTOCOL.md -----------------------------------


class DocClient:
    """A client written from docs/PROTOCOL.md alone, on raw sockets."""

    def __init__(self, raw: Raw) -> None:
        self.token = os.urandom(12)
        self.sub = raw.socket(zmq.SUB, raw.pub)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.setsockopt(zmq.SUBSCRIBE, wire.JOIN_PREFIX + self.token)
        self.dealer = raw.dealer()
        self.buffer: list[list[Any]] = []
        self.epoch = self.seq = self.client_id = 0
        self.state = ""

    def join(self) -> None:
        # Allowed by the doc, and it keeps the HELLO from waiting on the join
        # topic: the first heartbeat shows the SUB is connected and subscribed.
        first = recv(self.sub)
        if first[1] != wire.Kind.HEARTBEAT:
            self.buffer.append(first)
        self.dealer.send(
            pack(
                [
                    V,
                    10,
                    1,
                    {
                        "token": self.token,
                        "pid": os.getpid(),
                        "host": "doc",
                        "name": "doc",
                        "role": "worker",
                        "worker": None,
                        "subscribe": True,
                    },
                ]
            )
        )
        deadline = time.monotonic() + TIMEOUT
        while not self.dealer.poll(0, zmq.POLLIN):
            assert time.monotonic() < deadline, "no HELLO reply"
            if self.sub.poll(10, zmq.POLLIN):
                msg = msgpack.unpackb(self.sub.recv(), raw=False)
                if msg[1] != wire.Kind.HEARTBEAT:
                    self.buffer.append(msg)
        welcome = recv(self.dealer)
        assert welcome[:4] == [V, 20, 1, True], welcome
        snapshot = welcome[4]
        self.epoch, self.seq = snapshot["epoch"], snapshot["seq"]
        self.client_id, self.state = snapshot["client_id"], snapshot["state"]

    def next_message(self) -> list[Any]:
        """The next PUB message newer than the snapshot, answering heartbeats on the way."""
        while True:
            msg = self.buffer.pop(0) if self.buffer else recv(self.sub)
            if msg[1] == wire.Kind.BATCH:  # its messages, in order, as if each came alone
                assert [m[3] for m in msg[4]] == list(range(msg[3], msg[3] + len(msg[4])))
                self.buffer[:0] = msg[4]
                continue
            if msg[1] == wire.Kind.HEARTBEAT:
                self.dealer.send(
                    pack([V, 13, 0, {"epoch": self.epoch, "seq": self.seq, "state": self.state}])
                )
                continue
            if msg[2] != self.epoch or msg[3] <= self.seq:
                continue
            assert msg[3] == self.seq + 1, f"gap: had {self.seq}, got {msg}"
            self.seq = msg[3]
            return msg

    def ack(self, seq: int) -> None:
        self.dealer.send(
            pack(
                [
                    V,
                    12,
                    0,
                    {
                        "epoch": self.epoch,
                        "seq": seq,
                        "ok": True,
                        "result": "reloaded",
                        "errors": [],
                    },
                ]
            )
        )


def test_after_bad_input_a_client_written_from_the_doc_joins_and_acks(
    master: MasterBus, raw: Raw
) -> None:
    noise = raw.dealer()
    for frame in (b"\xc1", pack([3, 11, 1, {}]), pack([V, 12, 0, {"seq": 1}])):
        assert exchange(noise, frame)[3] is False
    client = DocClient(raw)

    client.join()
    joined = client.next_message()
    control = raw.dealer()
    control.send(
        wire.encode(wire.Kind.REQUEST, 5, {"cmd": "graceful", "wait": True, "timeout": TIMEOUT})
    )
    graceful = client.next_message()
    client.ack(graceful[3])
    reply = recv(control, TIMEOUT + 1)

    assert client.client_id > 0
    assert client.state == "STOPPED"
    assert joined[1] == wire.Kind.EVENT
    assert joined[4] == "client_joined"
    assert joined[5]["id"] == client.client_id
    assert graceful[1] == wire.Kind.PUBLISH
    assert graceful[4:] == ["graceful", [], {}, True]
    assert reply[2:4] == [5, True], reply
    acks = reply[4]["acks"]
    assert acks["ok"] is True
    assert acks["seqs"] == [graceful[3]]
    assert acks["acks"] == [
        {
            "client": client.client_id,
            "seq": graceful[3],
            "ok": True,
            "result": "reloaded",
            "errors": [],
        }
    ]


def test_after_bad_input_a_client_bus_still_works(
    master: MasterBus, raw: Raw, client_bus: ClientBus
) -> None:
    noise = raw.dealer()
    for frame in (b"\xc1", pack([9, 1]), pack([V, 13, 0, {}]), b"\x00" * 1000):
        assert exchange(noise, frame)[3] is False

    assert_client_bus_works(master, client_bus)
    assert_serving(master)
    assert client_bus.status()["clients"][0]["id"] == client_bus.link.client_id


def test_protocol_error_is_what_a_control_client_raises_for_an_unknown_command(
    master: MasterBus,
) -> None:
    with (
        Control(master.hub.ctl_endpoints[0], timeout=TIMEOUT) as control,
        pytest.raises(ProtocolError) as info,
    ):
        control.request("no-such-command")

    assert info.value.code == "unknown_command"  # type: ignore[attr-defined]
    assert_serving(master)
