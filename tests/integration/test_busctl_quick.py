"""busctl is quick: one request per command (no ping first), and only the imports it uses.

The master is a real :class:`busd.MasterBus` in the test process (its hub
counts every request it reads); busctl runs as a real process.  The
parser's fast path (only the subcommand run is added) is checked against
the whole parser on the same command lines.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from busd import MasterBus
from busd.client.ctl import commands, keygen, reads
from busd.client.ctl.busctl import main
from busd.client.ctl.parser import SUBCOMMANDS, build_parser, command_named, parse
from busd.client.ctl.quick import quick_args

#: Upper bound of every wait; the normal case takes milliseconds.
TIMEOUT = 30.0
#: What ``busctl status`` (and ``ping``) must not load: the queued commands, watch,
#: wait, top and keygen, the client bus, and the stdlib modules they pulled in.
NOT_FOR_A_READ = frozenset(
    {
        "busd.client.bus",
        "busd.client.ctl.commands",
        "busd.client.ctl.keygen",
        "busd.client.ctl.top",
        "busd.client.ctl.waitcmd",
        "busd.client.ctl.watch",
        "busd.commands.broadcast",
        "busd.commands.lifecycle",
        "busd.commands.signal",
        "busd.core.stats",
        # The plain reads are parsed without argparse (busd.client.ctl.quick), and an
        # ipc endpoint needs no CURVE.
        "argparse",
        "gettext",
        "busd.client.ctl.parser",
        "busd.core.auth",
        "concurrent.futures",
        "curses",
        "dataclasses",
        "inspect",
        "logging",
        "psutil",
        "shutil",
        "signal",
        "socket",
    }
)
#: Runs busctl's entry function on argv, then prints the modules it loaded.
LOADED = textwrap.dedent(
    """
    import sys
    from busd.client.ctl.busctl import main
    status = main(sys.argv[1:])
    print("LOADED", *sorted(sys.modules), file=sys.stderr)
    sys.exit(status)
    """
)


@pytest.fixture
def master(busd_master: Callable[..., MasterBus]) -> MasterBus:
    """A started master in the test process on a runtime dir of its own (closed by busd_master)."""
    bus = busd_master()
    bus.start()
    return bus


def requests(master: MasterBus) -> int:
    """The REQUESTs the master's hub has read so far (counted on the hub thread)."""
    return int(master.statistics()["hub"]["counters"].get("requests", 0))


def busctl(master: MasterBus, *argv: str) -> subprocess.CompletedProcess[str]:
    """``python -m busd.client.ctl.busctl`` on ``master``'s runtime dir, to its end."""
    runtime = os.path.dirname(master.hub.ctl_endpoints[0].removeprefix("ipc://"))
    return subprocess.run(
        [sys.executable, "-m", "busd.client.ctl.busctl", "--runtime-dir", runtime, *argv],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


@pytest.mark.parametrize(
    "argv",
    [["status"], ["publish", "chan", "1"], ["graceful"], ["stop"]],
    ids=["status", "publish", "graceful", "stop"],
)
def test_a_command_is_one_request_with_no_ping_before_it(
    master: MasterBus, argv: list[str]
) -> None:
    before = requests(master)

    done = busctl(master, *argv)

    assert done.returncode == 0, done.stderr
    assert requests(master) - before == 1, "busctl sent more than its command"


def test_a_busy_master_is_told_from_a_silent_one_by_a_ping_at_the_end(
    master: MasterBus,
) -> None:
    release = threading.Event()
    master.subscribe("slow", lambda: release.wait(TIMEOUT))
    before = requests(master)
    try:
        done = busctl(master, "--timeout", "1", "publish", "slow")
    finally:
        release.set()

    assert done.returncode == 3, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"busctl: busd at {master.hub.ctl_endpoints[0]} answered ping "), (
        lines[0]
    )
    assert "not 'broadcast' within --timeout 1s" in lines[0]
    assert "may still be queued or running" in lines[0]
    # The command, then the ping that told busd was there: nothing before the command.
    assert requests(master) - before == 2


@pytest.mark.parametrize("command", ["status", "ping"])
def test_a_read_loads_none_of_the_other_commands(
    master: MasterBus, tmp_path: Path, command: str
) -> None:
    script = tmp_path / "loaded.py"
    script.write_text(LOADED)
    runtime = os.path.dirname(master.hub.ctl_endpoints[0].removeprefix("ipc://"))

    done = subprocess.run(
        [sys.executable, str(script), "--runtime-dir", runtime, command],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), "busctl printed nothing"
    loaded = set(done.stderr.splitlines()[-1].split()[1:])
    assert "busd.client.ctl.reads" in loaded
    assert sorted(loaded & NOT_FOR_A_READ) == []


@pytest.mark.parametrize(
    ("argv", "found"),
    [
        (["status"], "status"),
        (["--json", "--timeout", "2", "workers", "main"], "workers"),
        (["--runtime-dir=/tmp/x", "--name", "status", "ping"], "ping"),
        (["--endpoint", "ipc:///x", "graceful", "--wait"], "graceful"),
        (["keygen", "/tmp/k"], "keygen"),
        (["status", "--help"], "status"),
        # The whole parser: help, version, abbreviations, unknown words, no command.
        (["--help"], None),
        (["-h", "status"], None),
        (["--version"], None),
        (["--time", "2", "status"], None),
        (["--bogus", "status"], None),
        (["bogus"], None),
        (["--json"], None),
        (["--", "status"], None),
        ([], None),
    ],
)
def test_the_subcommand_is_found_past_the_global_options(
    argv: list[str], found: str | None
) -> None:
    assert command_named(argv) == found


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["--json", "status", "main"],
        ["status", "--timeout", "2", "--json"],
        ["--name", "web", "workers"],
        ["--runtime-dir", "/tmp/r", "ping"],
        ["--timeout=3", "wait", "--for", "stopped"],
        ["graceful", "--wait", "--pool", "web"],
        ["stop", "--wait"],
        ["restart", "--wait"],
        ["publish", "ch", "1", "--kw", "a=2", "--json", "x"],
        ["scale", "--pool", "web", "+2"],
        ["signal", "HUP", "0", "1"],
        ["reload-config", "--wait"],
        ["reopen-logs"],
        ["metrics"],
        ["watch", "a", "b", "--count", "3"],
        ["keygen", "/tmp/k", "--force"],
    ],
)
def test_the_parser_of_one_subcommand_reads_as_the_whole_one(argv: list[str]) -> None:
    name = command_named(argv)
    assert name is not None

    one = parse(build_parser(only=name), argv)

    assert vars(one) == vars(parse(build_parser(), argv))


def test_every_subcommand_is_added_by_the_module_that_runs_it() -> None:
    added = [*reads.SUBCOMMANDS, *commands.SUBCOMMANDS, *keygen.SUBCOMMANDS]
    assert sorted(added) == sorted(SUBCOMMANDS)
    assert len(set(added)) == len(added)


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_every_subcommand_has_its_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([name, "--help"]) == 0
    assert capsys.readouterr().out.startswith(f"usage: busctl {name} ")


def test_the_whole_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    listed = [
        line.split()[0]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("    ") and not line.startswith("     ")
    ]
    assert listed == list(SUBCOMMANDS)


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["status", "web"],
        ["--json", "status", "main"],
        ["status", "--timeout", "2", "--json"],
        ["--timeout", "0.5", "--runtime-dir", "/tmp/r", "status", "--runtime-dir", "/tmp/s"],
        ["--name", "web", "workers"],
        ["workers", "web", "--json"],
        ["--runtime-dir", "/tmp/r", "ping"],
        ["--endpoint", "tcp://127.0.0.1:7000", "--server-key", "k", "--curve-secret", "s", "ping"],
        ["--name", "", "status"],
    ],
)
def test_the_quick_path_reads_a_plain_read_as_the_parser_does(argv: list[str]) -> None:
    quick = quick_args(argv)
    assert quick is not None, argv

    assert vars(quick) == vars(parse(build_parser(), argv))


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "--help"],
        ["-h", "status"],
        ["--version"],
        ["--runtime-dir=/tmp/r", "status"],
        ["--time", "2", "status"],
        ["--timeout", "0", "status"],
        ["--timeout", "inf", "status"],
        ["--timeout", "x", "status"],
        ["--timeout", "-1", "status"],
        ["--name", "--json", "status"],
        ["status", "a", "b"],
        ["ping", "main"],
        ["status", "--", "web"],
        ["graceful"],
        ["--json"],
        [],
    ],
)
def test_the_quick_path_leaves_everything_else_to_the_parser(argv: list[str]) -> None:
    assert quick_args(argv) is None
