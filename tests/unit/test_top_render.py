"""``busctl top``'s drawing, a pure function: (status, events, rates, size) -> lines.

Also the rates made from two status documents, the event lines made from
PUB messages, and ``--json top`` refused before anything is asked.
"""

from __future__ import annotations

from typing import Any

import pytest

from busd.client.ctl.busctl import main
from busd.client.ctl.top import Rates, event_line, rates, render, sample
from busd.core.wire import Kind, decode, encode

EPOCH = 70444924295555


def worker(slot: int, pid: int, pool: str = "main", state: str = "STARTED") -> dict[str, Any]:
    return {
        "id": slot,
        "pid": pid,
        "state": state,
        "restarts": slot,
        "uptime": 200.0 + slot,
        "cpu_percent": 1.5 * slot,
        "rss": 20 * 1024 * 1024,
        "pool": pool,
    }


def client(pid: int, heartbeat: float) -> dict[str, Any]:
    return {"pid": pid, "role": "worker", "state": "STARTED", "last_heartbeat": heartbeat}


def status(**over: Any) -> dict[str, Any]:
    """A status document shaped like the one ``busctl --json status`` prints."""
    doc: dict[str, Any] = {
        "name": "busd",
        "state": "STARTED",
        "pid": 3268,
        "host": "vm",
        "epoch": EPOCH,
        "seq": 15,
        "uptime": 125.0,
        "counters": {"hellos": 3, "requests": 8, "acks": 3},
        "workers": [worker(0, 3280), worker(1, 3281), worker(2, 3282)],
        "clients": [client(3280, 0.25), client(3281, 1.5)],
        "pools": [{"name": "main", "target": "app:main", "workers": 3, "started": 3}],
        "master": {"cpu_percent": 0.5, "rss": 32043008, "fds": 41, "threads": 7},
    }
    doc.update(over)
    return doc


def row_of(lines: list[str], pid: int) -> list[str]:
    found = [line.split() for line in lines if line.split()[1:2] == [str(pid)]]
    assert len(found) == 1, lines
    return found[0]


def test_every_worker_has_its_slot_pid_state_cpu_rss_restarts_uptime_and_heartbeat() -> None:
    lines = render(status(), [], None, (40, 120))

    assert lines[0].startswith("busd busd  pid 3268 on vm  STARTED  up 2m 5s  epoch ")
    assert "POOL main  3/3 STARTED  app:main" in lines
    heads = next(line.split() for line in lines if "SLOT" in line)
    assert heads == ["SLOT", "PID", "STATE", "CPU", "RSS", "RESTARTS", "UPTIME", "HEARTBEAT"]
    assert row_of(lines, 3280)[:8] == ["0", "3280", "STARTED", "0.0%", "20.0M", "0", "3m", "20s"]
    assert row_of(lines, 3280)[8:] == ["0.2s", "ago"]
    assert row_of(lines, 3281)[:7] == ["1", "3281", "STARTED", "1.5%", "20.0M", "1", "3m"]
    assert row_of(lines, 3281)[-2:] == ["1.5s", "ago"]
    # A worker that is not (yet) a client has no heartbeat to show.
    assert row_of(lines, 3282)[-1] == "-"


def test_several_pools_each_under_its_name_in_the_masters_order() -> None:
    doc = status(
        workers=[worker(0, 11, "web"), worker(0, 21, "jobs"), worker(1, 12, "web")],
        pools=[
            {"name": "web", "target": "asgi:app", "workers": 2, "started": 2},
            {"name": "jobs", "command": ["python3", "-m", "x"], "workers": 1, "started": 0},
            {"name": "idle", "target": "a:b", "workers": 0, "started": 0},
        ],
    )

    lines = render(doc, [], None, (40, 120))

    titles = [i for i, line in enumerate(lines) if line.startswith("POOL ")]
    assert [lines[i] for i in titles] == [
        "POOL web  2/2 STARTED  asgi:app",
        "POOL jobs  0/1 STARTED  python3 -m x",
        "POOL idle  0/0 STARTED  a:b",
    ]
    web = lines[titles[0] : titles[1]]
    assert [row_of(web, pid)[0] for pid in (11, 12)] == ["0", "1"]
    assert row_of(lines[titles[1] : titles[2]], 21)[0] == "0"
    assert lines[titles[2] + 1] == "  no workers"


def test_workers_of_a_pool_the_pools_list_lacks_are_still_shown() -> None:
    doc = status(pools=[], workers=[worker(0, 7, pool=""), worker(0, 8, pool="extra")])

    lines = render(doc, [], None, (40, 120))

    assert "POOL main  1 worker" in lines
    assert "POOL extra  1 worker" in lines
    assert row_of(lines, 7)[1] == "7"


def test_rates_from_two_status_documents_of_one_master() -> None:
    before = sample(status(seq=100, counters={"requests": 10, "acks": 4}), at=50.0, asked=3)
    after = sample(status(seq=130, counters={"requests": 16, "acks": 10}), at=52.0, asked=5)

    assert rates(before, after) == Rates(relay=15.0, requests=3.0, own=1.0, acks=3.0)
    # A new master (a new epoch) starts its seq and counters again: no rate across it.
    restarted = sample(status(epoch=EPOCH + 1, seq=3), at=53.0, asked=6)
    assert rates(after, restarted) is None
    assert rates(None, after) is None
    assert sample({"state": "STARTED"}, at=1.0, asked=0) is None


def test_the_rates_line_says_what_each_figure_is() -> None:
    shown = render(status(), [], Rates(relay=15.0, requests=3.0, own=1.0, acks=2.5), (40, 120))
    waiting = render(status(), [], None, (40, 120))

    line = next(line for line in shown if line.startswith("relayed "))
    assert line == (
        "relayed 15.0 msg/s  ctl requests 3.0/s (this view's 1.0/s among them)  "
        "acks 2.5/s  clients 2"
    )
    assert any(line.startswith("relayed -") for line in waiting)


def test_the_last_events_that_fit_fill_the_rest_of_the_window() -> None:
    events = [f"12:00:{n:02d} worker_exited pool=main worker=0 pid={n}" for n in range(50)]

    lines = render(status(), events, None, (24, 80))

    assert len(lines) == 24
    assert all(len(line) < 80 for line in lines)
    title = lines.index(next(line for line in lines if line.startswith("EVENTS")))
    shown = lines[title + 1 :]
    assert shown == events[-len(shown) :]
    assert lines[title] == f"EVENTS (last {len(shown)}; q quits)"
    assert len(shown) > 3


def test_a_small_window_gets_cut_lines_and_says_what_it_hides() -> None:
    lines = render(status(), ["12:00:00 state STOPPING"], None, (6, 30))

    assert len(lines) == 6
    assert all(len(line) <= 29 for line in lines)
    assert lines[-1].startswith("... ")
    assert render(status(), [], None, (0, 0)) == []


def test_a_lost_master_is_said_first_above_its_last_status() -> None:
    note = "LOST since 12:00:03; asking again every second (q quits)\n  no busd at ipc://x"

    lines = render(status(), [], None, (40, 120), note)

    assert lines[:2] == [
        "LOST since 12:00:03; asking again every second (q quits)",
        "  no busd at ipc://x",
    ]
    assert lines[2].startswith("busd busd  pid 3268")
    assert render(None, [], None, (40, 120))[0] == "waiting for busd's first status..."


def message(kind: Kind, *items: Any) -> Any:
    return decode(encode(kind, EPOCH, 7, *items))


def test_event_lines_show_the_fields_people_look_for() -> None:
    at = 0.0
    exited = message(
        Kind.EVENT,
        "worker_exited",
        {"worker": 0, "pid": 4293, "generation": 1, "code": -9, "status": "signal SIGKILL"}
        | {"reason": "crash", "pool": "web"},
    )
    line = event_line(exited, at)
    assert line is not None
    assert line.split(" ", 1)[1] == (
        "worker_exited pool=web worker=0 pid=4293 reason=crash status=signal SIGKILL"
    )
    reload = event_line(message(Kind.EVENT, "reload_end", {"mode": "inplace", "ok": False}), at)
    assert reload is not None
    assert reload.endswith(" reload_end mode=inplace ok=False")
    state = event_line(message(Kind.STATE, "STOPPING"), at)
    assert state is not None
    assert state.endswith(" state STOPPING")
    assert event_line(message(Kind.PUBLISH, "chan", [], {}, None), at) is None
    other = event_line(message(Kind.EVENT, "custom", [1, "two"]), at)
    assert other is not None
    assert other.endswith(' custom [1, "two"]')


def test_event_lines_escape_what_a_peer_chose() -> None:
    line = event_line(message(Kind.EVENT, "evil\x1b[2J", {"name": "a\nb", "pid": 1}), 0.0)

    assert line is not None
    assert "\x1b" not in line
    assert "\n" not in line
    assert line.endswith(" evil\\x1b[2J pid=1 name=a\\nb")


def test_json_top_is_refused_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--runtime-dir", "/nonexistent", "--json", "top"])

    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert "--json: top is a live view, it has no JSON form" in captured.err
