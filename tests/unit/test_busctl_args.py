"""busctl's command line, in-process: parsing, usage errors, and no busd to talk to.

Nothing here starts a master: a runtime dir that is an empty tmp dir has no
socket, which is exit status 3 at once; a silent master (a ROUTER and a PUB
that never say anything) is exit status 3 within ``--timeout``.
"""

from __future__ import annotations

import ast
import json
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq

from busd.client.ctl.busctl import build_parser, format_status, main, parse
from busd.client.ctl.watch import Output, Watcher
from busd.commands import (
    broadcast,
    clients,
    graceful,
    lifecycle,
    ping,
    recycle,
    restart,
    scale,
    start,
    status,
    stop,
    workers,
)
from busd.commands import signal as signal_command
from busd.core.errors import BusError
from busd.core.wire import ErrorCode, Kind, Message


@pytest.fixture
def empty_runtime_dir() -> Iterator[Path]:
    """A runtime dir where no master listens (short: ipc paths must fit 107 bytes)."""
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="bc") as directory:
        yield Path(directory)


@pytest.fixture
def silent_runtime_dir(empty_runtime_dir: Path) -> Iterator[Path]:
    """A runtime dir whose sockets are bound by a master that never answers."""
    ctx: zmq.Context[Any] = zmq.Context()
    sockets = [ctx.socket(zmq.ROUTER), ctx.socket(zmq.PUB)]
    try:
        sockets[0].bind(f"ipc://{empty_runtime_dir}/ctl.sock")
        sockets[1].bind(f"ipc://{empty_runtime_dir}/pub.sock")
        yield empty_runtime_dir
    finally:
        for sock in sockets:
            sock.close(linger=0)
        ctx.term()


def usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run busctl, expect exit status 2 with one line naming the problem; return stderr."""
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (argv, out, err)
    assert err.startswith("busctl"), err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert out == ""
    return err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["--timeout", "0", "status"],
        ["--timeout", "soon", "status"],
        ["status", "--timeout", "-1"],
        ["graceful", "--wait", "--ack-timeout", "nope"],
        ["graceful", "--now"],
        ["scale"],
        ["scale", "two"],
        ["scale", "1.5"],
        ["scale", "++1"],
        ["signal"],
        ["signal", "HUP", "first"],
        ["publish"],
        ["publish", "chan", "--kw", "no-equals-sign"],
        ["publish", "chan", "--kw", "1a=2"],
        ["watch", "--count", "0"],
        ["watch", "--count", "-3"],
        ["keygen"],
    ],
)
def test_bad_usage_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    err = usage_error(capsys, argv)

    assert "--help" in err


@pytest.mark.parametrize("name", ["FOO", "SIGFOO", "999", "SIG_DFL", ""])
def test_unknown_signal_exits_2_naming_it(capsys: pytest.CaptureFixture[str], name: str) -> None:
    err = usage_error(capsys, ["signal", name, "1"])

    assert f"unknown signal {name!r}" in err


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("HUP", "HUP"),
        ("hup", "HUP"),
        ("SIGHUP", "HUP"),
        ("sigterm", "TERM"),
        ("1", "HUP"),
        ("USR2", "USR2"),
        ("9", "KILL"),
    ],
)
def test_signal_names_are_normalised_without_sig(given: str, sent: str) -> None:
    args = build_parser().parse_args(["signal", given, "3", "0"])

    assert args.signal == sent
    assert args.workers == [3, 0]


@pytest.mark.parametrize("n", ["4", "+2", "-1", "0"])
def test_scale_takes_n_plus_n_and_minus_n_as_given(n: str) -> None:
    assert build_parser().parse_args(["scale", n]).n == n


def test_publish_arguments_are_json_when_they_parse_else_strings() -> None:
    args = build_parser().parse_args(
        [
            "publish",
            "chan",
            "1",
            '"x"',
            "plain",
            "[1, 2]",
            "null",
            "{bad",
            "--kw",
            "a=2",
            "--kw",
            "b=text",
            "--kw",
            'c={"k": true}',
            "--kw",
            "d=",
        ]
    )

    assert args.channel == "chan"
    assert args.args == [1, "x", "plain", [1, 2], None, "{bad"]
    assert args.kw == [("a", 2), ("b", "text"), ("c", {"k": True}), ("d", "")]
    assert args.wait is False


def test_publish_arguments_starting_with_a_dash_follow_a_double_dash() -> None:
    args = build_parser().parse_args(
        ["publish", "--wait", "--kw", "user=ann", "--", "chan", "-1", "--not-an-option"]
    )

    assert (args.channel, args.args, args.kw, args.wait) == (
        "chan",
        [-1, "--not-an-option"],
        [("user", "ann")],
        True,
    )


def test_global_options_go_before_or_after_the_command() -> None:
    parser = build_parser()
    before = parser.parse_args(["--json", "--timeout", "2", "--name", "web", "status"])
    after = parser.parse_args(["status", "--json", "--timeout", "2", "--name", "web"])
    default = parse(parser, ["status"])

    for args in (before, after):
        assert (args.json, args.timeout, args.name) == (True, 2.0, "web")
    assert (default.json, default.timeout, default.name, default.endpoint) == (
        False,
        5.0,
        None,
        None,
    )


def test_wait_options_on_lifecycle_commands() -> None:
    parser = build_parser()
    for cmd in ("start", "stop", "exit", "graceful"):
        args = parser.parse_args([cmd, "--wait", "--ack-timeout", "7"])
        assert (args.command, args.wait, args.ack_timeout) == (cmd, True, 7.0)
    assert parser.parse_args(["graceful"]).wait is False


def test_wait_takes_a_state_and_its_own_default_timeout() -> None:
    parser = build_parser()
    assert (parse(parser, ["wait"]).state, parse(parser, ["wait"]).timeout) == ("STARTED", 30.0)
    args = parse(parser, ["wait", "--for", "stopped", "--timeout", "2"])
    assert (args.state, args.timeout) == ("STOPPED", 2.0)
    assert parse(parser, ["--timeout", "3", "wait"]).timeout == 3.0


@pytest.mark.parametrize(
    "argv",
    [
        ["wait", "--for", "RUNNING"],
        ["wait", "--for"],
        ["wait", "--timeout", "0"],
        ["wait", "STARTED"],
    ],
)
def test_wait_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1, err


@pytest.mark.parametrize("silent", [False, True])
def test_wait_gives_up_at_its_timeout_with_one_line(
    capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest, silent: bool
) -> None:
    runtime: Path = request.getfixturevalue("silent_runtime_dir" if silent else "empty_runtime_dir")
    began = time.monotonic()
    code = main(["--runtime-dir", str(runtime), "--timeout", "0.5", "wait"])
    took = time.monotonic() - began
    out, err = capsys.readouterr()

    assert code == 3
    assert 0.5 <= took < 1.0
    assert out == ""
    assert err.splitlines() == [
        f"busctl: wait: busd at ipc://{runtime}/ctl.sock was not STARTED with every worker "
        "STARTED within --timeout 0.5s: "
        + (
            "it did not answer"
            if silent
            else f"{runtime}/ctl.sock does not exist (is busd "
            "running? --name or --runtime-dir finds another)"
        )
    ]


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "exit status" in out
    for cmd in (
        "status",
        "graceful",
        "publish",
        "watch",
        "workers",
        "scale",
        "signal",
        "ping",
        "keygen",
    ):
        assert cmd in out


@pytest.mark.parametrize(
    "argv",
    [
        ["ping"],
        ["status"],
        ["--json", "status"],
        ["graceful", "--wait"],  # waits for acks up to 30 s, but finds nobody in --timeout
        ["exit", "--wait"],
        ["publish", "chan", "1", "--wait"],
        ["workers"],
        ["watch", "--count", "1"],
        ["--json", "watch"],
    ],
)
def test_no_socket_exits_3_at_once_naming_the_path_and_the_flags(
    capsys: pytest.CaptureFixture[str], empty_runtime_dir: Path, argv: list[str]
) -> None:
    began = time.monotonic()
    code = main(["--runtime-dir", str(empty_runtime_dir), *argv])  # --timeout 5
    took = time.monotonic() - began
    out, err = capsys.readouterr()

    assert code == 3, (out, err)
    assert took < 0.5
    lines = err.splitlines()
    assert len(lines) == 1, err
    path = f"{empty_runtime_dir}/ctl.sock"
    assert lines[0].startswith(f"busctl: no busd at ipc://{path}: {path} does not exist"), err
    assert "--name" in lines[0]
    assert "--runtime-dir" in lines[0]
    if "--json" in argv:
        assert json.loads(out)["error"]["code"] == "no_master"
    else:
        assert out == ""


def test_a_socket_nobody_listens_on_exits_3_at_once(
    capsys: pytest.CaptureFixture[str], empty_runtime_dir: Path
) -> None:
    import socket

    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(empty_runtime_dir / "ctl.sock"))  # bound, never listening: refused
    stale.close()
    began = time.monotonic()
    assert main(["--runtime-dir", str(empty_runtime_dir), "status"]) == 3
    assert time.monotonic() - began < 0.5
    assert "nothing listens on" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["ping"],
        ["--json", "status"],
        ["graceful", "--wait"],
        ["exit", "--wait"],
        ["publish", "chan", "1", "--wait"],
        ["restart", "--wait"],
        ["watch", "--count", "1"],
    ],
)
def test_a_silent_master_exits_3_within_the_timeout(
    capsys: pytest.CaptureFixture[str], silent_runtime_dir: Path, argv: list[str]
) -> None:
    began = time.monotonic()
    code = main(["--runtime-dir", str(silent_runtime_dir), "--timeout", "0.3", *argv])
    took = time.monotonic() - began
    out, err = capsys.readouterr()

    assert code == 3, (out, err)
    assert took < 2.0
    lines = err.splitlines()
    assert len(lines) == 1, err
    endpoint = f"ipc://{silent_runtime_dir}/"
    assert lines[0].startswith(f"busctl: no busd answered at {endpoint}"), lines[0]
    assert lines[0].endswith("within 0.3s")
    if "--json" in argv:
        assert json.loads(out)["error"]["code"] == "no_master"
    else:
        assert out == ""


def test_endpoint_option_wins_over_the_runtime_dir(
    capsys: pytest.CaptureFixture[str], empty_runtime_dir: Path
) -> None:
    other = f"ipc://{empty_runtime_dir}/other.sock"

    code = main(["--runtime-dir", "/nonexistent", "--endpoint", other, "--timeout", "0.2", "ping"])

    assert code == 3
    assert capsys.readouterr().err.startswith(f"busctl: no busd at {other}: ")


def test_environment_names_the_endpoint(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, empty_runtime_dir: Path
) -> None:
    monkeypatch.setenv("BUSD_RUNTIME_DIR", str(empty_runtime_dir))
    monkeypatch.delenv("BUSD_CTL_ENDPOINT", raising=False)

    assert main(["--timeout", "0.2", "ping"]) == 3
    assert f"at ipc://{empty_runtime_dir}/ctl.sock:" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--name", "a/b", "ping"],
        ["--runtime-dir", "/tmp/" + "x" * 120, "ping"],
        ["--endpoint", "nonsense", "ping"],
    ],
)
def test_unusable_endpoints_are_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("busctl: ")
    assert len(err.splitlines()) == 1


def test_keygen_exits_2_when_the_dir_cannot_be_created(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("")

    assert main(["keygen", str(tmp_path / "a-file" / "keys")]) == 2
    assert capsys.readouterr().err.startswith(f"busctl: cannot create {tmp_path}")


STATUS: dict[str, Any] = {
    "name": "web",
    "state": "STARTED",
    "pid": 4242,
    "host": "h1",
    "epoch": 77,
    "seq": 12,
    "uptime": 3725.5,
    "endpoints": {"ctl": ["ipc:///run/busd/web/ctl.sock"], "pub": []},
    "workers": [
        {
            "id": 0,
            "pid": 5001,
            "state": "running",
            "restarts": 2,
            "cpu_percent": 1.25,
            "rss": 25 * 1024 * 1024,
            "uptime": 59.0,
            "generation": 3,
            "fds": 9,
        }
    ],
    "master": {"pid": 4242, "cpu_percent": 0.5, "rss": 3 * 1024 * 1024, "fds": 12, "threads": 4},
    "clients": [{"id": 1, "pid": 5001, "worker": 0, "state": "STARTED", "last_heartbeat": 0.25}],
}


def test_status_for_people_has_a_header_and_two_tables() -> None:
    text = format_status(STATUS)
    lines = text.splitlines()

    assert lines[:5] == [
        "name:    web",
        "state:   STARTED",
        "pid:     4242 on h1",
        "epoch:   77 (seq 12)",
        "uptime:  1h 2m",
    ]
    assert "usage:   cpu 0.5%, rss 3.0M, fds 12, threads 4" in lines
    workers = lines.index("WORKERS")
    assert lines[workers + 1].split() == ["ID", "PID", "STATE", "RESTARTS", "CPU", "RSS", "UPTIME"]
    assert lines[workers + 2].split() == ["0", "5001", "running", "2", "1.2%", "25.0M", "59.0s"]
    clients = lines.index("CLIENTS")
    assert lines[clients + 1].split() == ["ID", "PID", "WORKER", "STATE", "LAST-HEARTBEAT"]
    assert lines[clients + 2].split() == ["1", "5001", "0", "STARTED", "0.2s", "ago"]


def test_status_for_people_shows_only_the_worker_columns_present() -> None:
    text = format_status({**STATUS, "workers": [{"id": 3, "pid": 9}], "clients": []})

    assert "ID  PID" in text
    assert "RSS" not in text
    assert "CLIENTS: none" in text


def test_watch_lines_for_people_and_for_scripts() -> None:
    args = build_parser().parse_args(["watch", "chan"])
    watcher = Watcher(args, None, "ipc://x", Output(print, print))  # type: ignore[arg-type]
    state = Message(Kind.STATE, (9, 12, "STARTED"))
    publish = Message(Kind.PUBLISH, (9, 13, "chan", [1, "x"], {"a": 2}, False))
    other = Message(Kind.PUBLISH, (9, 14, "graceful", [], {}, True))
    event = Message(Kind.EVENT, (9, 15, "client_joined", {"id": 1}))

    docs = [watcher.describe(m) for m in (state, publish, other, event)]
    for doc in docs:
        if doc is not None:
            doc["time"] = time.mktime((2026, 1, 2, 3, 4, 5, 0, 0, -1)) + 0.25

    assert docs[2] is None  # filtered: not one of the channels asked for
    assert [Watcher.line(d) for d in docs if d is not None] == [
        "03:04:05.250 seq 12 state STARTED",
        '03:04:05.250 seq 13 publish chan [1, "x"] {"a": 2}',
        '03:04:05.250 seq 15 event client_joined {"id": 1}',
    ]
    assert docs[1] == {
        "seq": 13,
        "kind": "publish",
        "epoch": 9,
        "channel": "chan",
        "args": [1, "x"],
        "kwargs": {"a": 2},
        "ack": False,
        "time": docs[1]["time"],
    }


def test_interrupted_exits_130(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, silent_runtime_dir: Path
) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr("busd.core.control.Control.call", interrupted)

    assert main(["--runtime-dir", str(silent_runtime_dir), "graceful"]) == 130
    assert capsys.readouterr().err.startswith("busctl: interrupted")


def test_publish_options_may_come_between_channel_and_args() -> None:
    from busd.client.ctl.busctl import parse

    args = parse(build_parser(), ["publish", "ch", "--json", "x", "1"])
    assert (args.channel, args.args, args.json) == ("ch", ["x", 1], True)


def test_timeout_rule_is_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--timeout S bounds every command as a whole, --wait included" in text


def _undocumented(parser: Any, name: str) -> list[str]:
    import argparse

    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                missing += _undocumented(subparser, f"{name} {sub}")
        elif not action.help:
            missing.append(f"{name} {action.option_strings or action.dest}")
    return missing


def test_every_option_of_both_commands_has_help() -> None:
    from busd.__main__ import build_parser as busd_parser

    assert _undocumented(busd_parser(), "busd") == []
    assert _undocumented(build_parser(), "busctl") == []


# -- the command modules busctl and the master are built from -------------------


@pytest.mark.parametrize(
    ("module", "body", "message"),
    [
        (graceful, {"wait": "yes"}, "'wait' must be true or false"),
        (start, {"timeout": -1}, "'timeout' must be a number of seconds"),
        (stop, {"timeout": True}, "'timeout' must be a number of seconds"),
        (broadcast, {}, "broadcast needs a 'channel' string"),
        (
            broadcast,
            {"channel": "exit"},
            "'exit' is not broadcast: use the command of that name",
        ),
        (broadcast, {"channel": "c", "args": {}}, "'args' is a list, 'kwargs' a map"),
        (broadcast, {"channel": "c", "kwargs": {1: 2}}, "'kwargs' keys are strings"),
        (
            broadcast,
            {"channel": "c", "wait": True, "timeout": "x"},
            "'timeout' must be a number of seconds",
        ),
        (scale, {"n": "two"}, "scale takes N, +N or -N, not 'two'"),
        (scale, {}, "scale takes N, +N or -N, not ''"),
        (signal_command, {"signal": "sigfoo"}, "unknown signal 'FOO'"),
        (
            signal_command,
            {"signal": "HUP", "workers": [True]},
            "signal takes a list of worker ids, not [True]",
        ),
        (recycle, {"pid": "12"}, "recycle takes a worker's pid, not '12'"),
    ],
)
def test_each_command_checks_its_body_with_one_clear_line(
    module: Any, body: dict[str, Any], message: str
) -> None:
    with pytest.raises(BusError) as caught:
        module.parse(body)

    assert getattr(caught.value, "code", None) == ErrorCode.BAD_ARGUMENTS.value
    assert str(caught.value) == message


def test_a_body_is_parsed_into_typed_arguments() -> None:
    assert graceful.parse({"wait": True, "timeout": 3}) == lifecycle.Args(True, 3.0)
    assert scale.parse({"n": "+2"}) == scale.Args(2, relative=True)
    assert scale.parse({"n": 4}) == scale.Args(4, relative=False)
    assert signal_command.parse({"signal": "sighup", "workers": [1]}) == signal_command.Args(
        signal.SIGHUP, (1,)
    )
    # Without wait, the timeout is not read (as before): a publish is never refused for it.
    assert broadcast.parse({"channel": "c", "timeout": "x"}).timeout is None
    assert recycle.parse({"pid": 7}) == recycle.Args(7, "asked")


def test_what_busctl_sends_is_what_the_master_parses() -> None:
    parser = build_parser()
    ns = parser.parse_args(["publish", "chan", "1", "x", "--kw", "a=[2]", "--wait"])
    body = broadcast.request(ns.channel, ns.args, ns.kw, ns.wait, lambda: 1.5)
    assert broadcast.parse(body) == broadcast.Args("chan", (1, "x"), {"a": [2]}, True, 1.5)
    ns = parser.parse_args(["signal", "usr1", "2"])
    sent = signal_command.request(ns.signal, ns.workers)
    assert signal_command.parse(sent) == signal_command.Args(signal.SIGUSR1, (2,))
    ns = parser.parse_args(["scale", "-1"])
    assert scale.parse(scale.request(ns.n)) == scale.Args(-1, True)
    assert lifecycle.request(False, lambda: 9.0) == {"wait": False}


class _Pool:
    """A stand-in for the pool, as the scale and signal handlers see it (their Protocols)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.calls: list[Any] = []
        self.workers = {i: _Worker(i, 100 + i) for i in range(size)}

    def scale(self, size: int) -> int:
        self.calls.append(("scale", size))
        return size

    def running(self) -> dict[int, _Worker]:
        return dict(self.workers)

    def signal(self, worker: _Worker, sig: int) -> None:
        self.calls.append(("signal", worker.slot, sig))


@dataclass(frozen=True)
class _Worker:
    slot: int
    pid: int


def test_the_pool_handlers_need_only_their_protocol() -> None:
    pool = _Pool(3)

    assert scale.handle(pool, scale.Args(2, relative=True)) == {"size": 5}
    assert scale.handle(pool, scale.Args(1)) == {"size": 1}
    with pytest.raises(BusError, match="a pool cannot have fewer than 0 workers"):
        scale.handle(pool, scale.Args(-4, relative=True))
    assert pool.calls == [("scale", 5), ("scale", 1)]

    pool.calls.clear()
    answer = signal_command.handle(pool, signal_command.Args(signal.SIGHUP, (2, 0)))
    assert answer == {"signal": "SIGHUP", "workers": [0, 2], "pids": [100, 102]}
    assert pool.calls == [("signal", 0, signal.SIGHUP), ("signal", 2, signal.SIGHUP)]
    with pytest.raises(BusError, match=r"^no running worker 7 \(running: 0, 1, 2\)$"):
        signal_command.handle(pool, signal_command.Args(signal.SIGHUP, (7,)))
    with pytest.raises(BusError, match=r"^no running worker to signal$"):
        signal_command.handle(_Pool(0), signal_command.Args(signal.SIGHUP))


def test_busctl_prints_what_each_command_renders() -> None:
    acks = {"acks": [1, 2], "failures": ["worker 1 (pid 9): ValueError: no"], "ok": False}
    respawned = {"state": "STARTED", "reload": {"started": [5], "exited": [3, 4]}, "acks": acks}

    assert graceful.render(respawned) == (
        "graceful: state STARTED; 1 new worker STARTED, 2 old workers exited; "
        "2 clients acked, 1 failed"
    )
    assert stop.render({"state": "STOPPED", "acks": None}) == "stop: state STOPPED"
    assert broadcast.render("chan", {"acks": {"acks": [1], "ok": True}}) == (
        "publish chan: relayed; 1 client acked"
    )
    assert scale.render("+2", {"size": 5}) == "scale +2: 5 workers"
    assert signal_command.render("HUP", {"workers": []}) == "signal HUP: sent to workers none"
    assert ping.render({"pid": 1, "epoch": 2}, 0.5) == "pong from busd pid 1 (epoch 2) in 0.50 ms"
    assert restart.render_restarted({"pid": 3, "epoch": 4, "workers": [{}]}) == (
        "restart: new master pid 3 (epoch 4) STARTED with 1 worker"
    )
    assert workers.render({"workers": []}) == "WORKERS: none"
    assert clients.render("not a list") == "CLIENTS: none"
    assert format_status(STATUS) == status.render(STATUS)


def _imported(path: str) -> set[str]:
    tree = ast.parse((Path(__file__).resolve().parents[2] / path).read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def test_the_command_registries_import_neither_the_pool_nor_the_master_bus() -> None:
    """pool.py and bus.py import their commands; the commands see them through Protocols."""
    assert "busd.pool.pool" not in _imported("busd/pool/commands.py")
    assert "busd.master.bus" not in _imported("busd/master/commands.py")
