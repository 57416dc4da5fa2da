"""busctl's escaping of what other processes said, before it reaches a terminal."""

from __future__ import annotations

import time

import pytest

from busd.client.ctl.sanitize import printable
from busd.client.ctl.tables import cell, format_clients, format_status, format_workers
from busd.client.ctl.watch import Watcher

EVIL = "evil\x1b[2J\n12:00:00.000 seq 99 state EXITING"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text", "plain text"),
        ("naïve ünïcode 日本", "naïve ünïcode 日本"),
        ("a\nb", "a\\nb"),
        ("tab\there\r", "tab\\there\\r"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("nul\x00del\x7f", "nul\\x00del\\x7f"),
        ("c1\x9bcsi", "c1\\x9bcsi"),
        ("bidi\u202eoverride\u2066isolate\u2069", "bidi\\u202eoverride\\u2066isolate\\u2069"),
        ("line\u2028sep", "line\\u2028sep"),
    ],
)
def test_control_and_bidi_characters_are_escaped(raw: str, shown: str) -> None:
    assert printable(raw) == shown


def test_anything_becomes_text() -> None:
    assert printable(42) == "42"
    assert printable(None) == "None"


def _no_controls(text: str) -> None:
    assert not any(ord(c) < 0x20 and c != "\n" for c in text), repr(text)
    assert "\x1b" not in text


def test_a_watch_line_cannot_be_forged_by_a_channel_name() -> None:
    now = time.time()
    docs = [
        {
            "time": now,
            "kind": "publish",
            "seq": 5,
            "channel": EVIL,
            "args": [EVIL],
            "kwargs": {EVIL: EVIL},
        },
        {"time": now, "kind": "state", "seq": 6, "state": EVIL},
        {"time": now, "kind": "event", "seq": 7, "event": EVIL, "data": {"x": EVIL}},
        {"time": now, "kind": "epoch", "epoch": 2, "pid": EVIL, "state": EVIL},
    ]
    for doc in docs:
        line = Watcher.line(doc)
        assert "\n" not in line, line
        _no_controls(line)
        assert "\\x1b[2J" in line or "\\u001b[2J" in line


def test_tables_escape_every_cell() -> None:
    assert cell(EVIL) == "evil\\x1b[2J\\n12:00:00.000 seq 99 state EXITING"
    status = {
        "name": EVIL,
        "state": EVIL,
        "pid": 1,
        "host": EVIL,
        "endpoints": {"ctl": [EVIL]},
        "workers": [{"id": 0, "pid": 2, "state": EVIL, "reason": EVIL}],
        "clients": [{"id": 1, "pid": 3, "worker": EVIL, "state": EVIL}],
        "hosts": [{"host": EVIL, "state": EVIL, "workers": [{"id": 0, "state": EVIL}]}],
    }
    for text in (
        format_status(status),
        format_workers(status["workers"]),
        format_clients(status["clients"]),
    ):
        _no_controls(text)
        assert not any(line.startswith("12:00") for line in text.splitlines()), text


def test_an_error_line_is_one_escaped_line(capsys: pytest.CaptureFixture[str]) -> None:
    from busd.client.ctl.console import error

    error(f"client 3 (pid 4): RuntimeError: {EVIL}")
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    _no_controls(err.rstrip("\n"))


def test_text_for_people_keeps_its_lines_and_loses_its_escapes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import argparse

    from busd.client.ctl.console import emit

    emit(argparse.Namespace(json=False), {}, "publish evil\x1b[2J: relayed\nsecond line")
    assert capsys.readouterr().out == "publish evil\\x1b[2J: relayed\nsecond line\n"
    emit(argparse.Namespace(json=True), {"channel": EVIL}, "ignored")
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert out.count("\n") == 1
