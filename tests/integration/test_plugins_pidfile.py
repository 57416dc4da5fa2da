"""PIDFile across real processes: one instance at a time, stale files, removal on exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from busd import Bus, ChannelFailures
from busd.plugins import PIDFile, PIDFileInUse
from busd.plugins.pidfile import read_pid
from tests.integration.test_plugins_support import TIMEOUT, child_process

SERVICE = """
    import logging, sys
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    from busd import Bus
    from busd.plugins import PIDFile, SignalHandler

    bus = Bus()
    PIDFile(bus, sys.argv[1]).subscribe()
    SignalHandler(bus).subscribe()
    reported = []

    def in_block():
        if not reported:
            reported.append(True)
            report("blocking")

    bus.subscribe("main", in_block)
    try:
        bus.start()
    except Exception as exc:
        report(f"refused {type(exc).__name__}")
        raise SystemExit(3)
    bus.block(interval=0.01)
"""

SLEEPER = """
    import signal
    report("ready")
    signal.pause()
"""


def test_a_second_instance_is_refused_and_the_first_cleans_up(tmp_path: Path) -> None:
    pidfile = tmp_path / "service.pid"
    with child_process(tmp_path, SERVICE, args=[str(pidfile)], name="first") as first:
        first.expect("blocking")
        assert read_pid(pidfile) == first.pid
        with child_process(tmp_path, SERVICE, args=[str(pidfile)], name="second") as second:
            assert second.expect("refused") == "refused ChannelFailures"
            assert second.wait_exit() == 3
            assert f"names process {first.pid}, which is running" in second.stderr()
        assert read_pid(pidfile) == first.pid, "the refused instance touched the file"
        os.kill(first.pid, signal.SIGTERM)
        assert first.wait_exit() == 0
        assert f"PID file removed: {str(pidfile)!r}." in first.stderr()
    assert not pidfile.exists()


def test_refused_in_process_when_the_file_names_a_live_child(tmp_path: Path) -> None:
    pidfile = tmp_path / "service.pid"
    with child_process(tmp_path, SLEEPER) as child:
        child.expect("ready")
        pidfile.write_text(f"{child.pid}\n")
        bus = Bus()
        PIDFile(bus, pidfile).subscribe()
        with pytest.raises(ChannelFailures) as info:
            bus.start()
        assert bus.state is bus.states.EXITING
        (error,) = info.value.get_instances()
        assert isinstance(error, PIDFileInUse)
        assert str(child.pid) in str(error)
        assert pidfile.read_text() == f"{child.pid}\n", "exit removed another's file"


def test_a_stale_file_naming_a_dead_process_is_replaced(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        assert dead.wait(TIMEOUT) == 0
    finally:
        if dead.poll() is None:
            dead.kill()
            dead.wait(TIMEOUT)
    pidfile = tmp_path / "service.pid"
    pidfile.write_text(f"{dead.pid}\n")
    logs: list[str] = []
    bus = Bus()
    bus.subscribe("log", lambda msg, level=20: logs.append(msg))
    PIDFile(bus, pidfile).subscribe()
    bus.start()
    try:
        assert read_pid(pidfile) == os.getpid()
        assert (
            f"Replacing stale PID file {str(pidfile)!r}: process {dead.pid} is not running."
        ) in logs
    finally:
        bus.exit()
    assert not pidfile.exists()
