"""busd.master.registry without sockets: what a client may say, what a read-only one counts."""

from __future__ import annotations

import msgpack
import pytest

from busd.core.errors import ProtocolError
from busd.core.wire import (
    DESCRIBE_LIMIT,
    ERRORS_LIMIT,
    MAX_MESSAGE_SIZE,
    NAME_LIMIT,
    REASON_LIMIT,
    RESULT_LIMIT,
    Kind,
    encode,
)
from busd.master.acks import AckSink, wait_acks
from busd.master.clients import ClientTable
from busd.master.registry import RESULT_KEEP, Registry, bye_reason

WORKER = b"worker-identity"
READER = b"reader-identity"
HUGE = "x" * 600_000


def hello(**fields: object) -> dict[str, object]:
    return {
        "token": b"t" * 12,
        "pid": 4242,
        "host": "h",
        "name": "",
        "role": "worker",
        "worker": 0,
        **fields,
    }


class HubThread:
    """The hub's side of an ack wait, run at once (the registry's owner is this thread)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def watch_acks(self, seqs: tuple[int, ...], expected: frozenset[int], sink: AckSink) -> None:
        self.registry.watch(seqs, expected, sink)
        self.registry.deliver()

    def unwatch_acks(self, sink: AckSink) -> None:
        self.registry.unwatch(sink)

    def client_table(self) -> ClientTable:
        return self.registry.snapshot()


def joined(registry: Registry, identity: bytes, readonly: bool = False, **fields: object) -> None:
    registry.register(identity, hello(**fields), joined_seq=0, readonly=readonly)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pid", "x"),
        ("pid", -1),
        ("pid", 2**40),
        ("pid", 1.5),
        ("worker", "0"),
        ("name", 7),
        ("host", ["h"]),
        ("role", {"r": 1}),
        ("token", "not bytes"),
        ("token", b"t" * 65),
    ],
)
def test_a_hello_field_of_the_wrong_type_is_bad_arguments(field: str, value: object) -> None:
    with pytest.raises(ProtocolError) as info:
        Registry().register(WORKER, hello(**{field: value}), joined_seq=0)
    assert getattr(info.value, "code", None) == "bad_arguments"
    assert field in str(info.value)


def test_long_text_from_a_client_is_cut_and_its_event_stays_small() -> None:
    registry = Registry()
    info = registry.register(WORKER, hello(name=HUGE, host=HUGE, role=HUGE), joined_seq=0)
    assert len(info.name) == len(info.host) == len(info.role) == NAME_LIMIT
    reason = bye_reason({"reason": HUGE})
    assert len(reason) == REASON_LIMIT
    # The master's "client left" event: the client's map and the reason.
    event = encode(Kind.EVENT, 1, 2, "client_left", {**info.as_dict(), "reason": reason})
    assert len(event) < 4096


def test_an_ack_is_bounded() -> None:
    registry = Registry()
    joined(registry, WORKER)
    ack = registry.record_ack(
        WORKER,
        {
            "seq": 3,
            "ok": False,
            "result": ["y" * 100] * 2000,
            "errors": [{"type": HUGE, "message": HUGE}] * (ERRORS_LIMIT + 10),
        },
    )
    assert ack is not None
    assert isinstance(ack.result, str)
    assert "over the" in ack.result
    assert len(ack.errors) == ERRORS_LIMIT
    assert all(
        len(e["type"]) == NAME_LIMIT and len(e["message"]) == DESCRIBE_LIMIT for e in ack.errors
    )
    small = registry.record_ack(WORKER, {"seq": 4, "ok": True, "result": {"n": [1, 2]}})
    assert small is not None
    assert small.result == {"n": [1, 2]}
    assert len(msgpack.packb(ack.as_dict())) < MAX_MESSAGE_SIZE // 2
    assert RESULT_LIMIT < MAX_MESSAGE_SIZE


def known_acks(registry: Registry, seqs: tuple[int, ...]) -> dict[int, object]:
    """What a thread that watches ``seqs`` only now learns: each seq's result."""
    report = wait_acks(HubThread(registry), seqs, {1}, 1.0, lambda *_: AssertionError())
    assert len(report.acks) == 1
    [ack] = report.acks
    return {ack.seq: ack.result}


def test_results_are_kept_within_their_budget_the_acks_stay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = Registry()
    joined(registry, WORKER)
    result = {"families": ["x" * 100]}
    size = len(msgpack.packb(result))
    monkeypatch.setattr("busd.master.registry.RESULT_BYTES", 2 * size)
    for seq in (1, 2, 3):
        registry.record_ack(WORKER, {"seq": seq, "ok": True, "result": result})
    # The oldest result went past the budget; its ack (ok) stays and still counts.
    assert known_acks(registry, (1,)) == {1: None}
    assert known_acks(registry, (2,)) == {2: result}
    assert known_acks(registry, (3,)) == {3: result}


def test_results_are_forgotten_after_they_were_kept_long_enough(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Clock:
        now = 1000.0

        def monotonic(self) -> float:
            return self.now

    clock = Clock()
    monkeypatch.setattr("busd.master.registry.time", clock)
    registry = Registry()
    joined(registry, WORKER)
    registry.record_ack(WORKER, {"seq": 1, "ok": True, "result": {"n": 1}})
    clock.now += RESULT_KEEP / 2
    registry.record_ack(WORKER, {"seq": 2, "ok": True, "result": {"n": 2}})
    assert known_acks(registry, (1,)) == {1: {"n": 1}}
    clock.now += RESULT_KEEP / 2 + 1
    registry.record_ack(WORKER, {"seq": 3, "ok": True, "result": {"n": 3}})
    assert known_acks(registry, (1,)) == {1: None}
    assert known_acks(registry, (2,)) == {2: {"n": 2}}


@pytest.mark.parametrize("body", [{"seq": "x"}, {"seq": 0}, {"seq": 1, "errors": "e"}])
def test_a_malformed_ack_is_bad_arguments(body: dict[str, object]) -> None:
    registry = Registry()
    joined(registry, WORKER)
    with pytest.raises(ProtocolError, match="ACK"):
        registry.record_ack(WORKER, body)


def test_a_pong_state_must_be_a_state_name() -> None:
    registry = Registry()
    joined(registry, WORKER)
    registry.pong(WORKER, {"seq": 2, "state": "STARTED"})
    registry.pong(WORKER, {"seq": 3, "state": "\x1b[2JEXITING"})
    registry.pong(WORKER, {"seq": 4, "state": HUGE})
    info = registry.get(WORKER)
    assert info is not None
    assert (info.state, info.last_seq) == ("STARTED", 4)
    with pytest.raises(ProtocolError, match="PONG"):
        registry.pong(WORKER, {"seq": "x"})


def test_a_read_only_client_is_never_taken_for_a_worker() -> None:
    registry = Registry()
    joined(registry, WORKER, pid=4242, worker=0)
    registry.pong(WORKER, {"seq": 1, "state": "STARTED"})
    joined(registry, READER, readonly=True, pid=4242, worker=0, role="worker")
    reader = registry.get(READER)
    assert reader is not None
    assert (reader.pid, reader.worker, reader.role) == (0, None, "readonly")
    assert reader.as_dict()["readonly"] is True
    registry.pong(READER, {"seq": 1, "state": "STOPPING"})
    assert registry.by_pid()[4242].identity == WORKER
    assert registry.by_pid()[4242].state == "STARTED"
    assert 0 not in registry.by_pid()
    assert registry.get(READER).state == "STOPPED"  # type: ignore[union-attr]


def test_a_read_only_client_is_never_waited_for_and_its_acks_are_ignored() -> None:
    registry = Registry()
    joined(registry, WORKER)
    joined(registry, READER, readonly=True)
    expected = registry.expected(1)
    worker = registry.get(WORKER)
    assert worker is not None
    assert expected == {worker.id}
    assert (
        registry.record_ack(
            READER, {"seq": 1, "ok": False, "errors": [{"type": "Forged", "message": "x"}]}
        )
        is None
    )
    registry.record_ack(WORKER, {"seq": 1, "ok": True})
    report = wait_acks(
        HubThread(registry), [1], expected, 1.0, lambda *_: AssertionError("timed out")
    )
    assert report.ok
    assert [a.client for a in report.acks] == [worker.id]


def test_remove_pid_never_removes_a_read_only_client_claiming_it() -> None:
    registry = Registry()
    joined(registry, READER, readonly=True, pid=4242)
    joined(registry, WORKER, pid=4242)
    gone = registry.remove_pid(4242)
    assert gone is not None
    assert gone.identity == WORKER
    assert registry.get(READER) is not None
