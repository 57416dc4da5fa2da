"""Daemonizer for real: a child script double-forks and the daemon reports back."""

from __future__ import annotations

import os
import signal
from contextlib import suppress
from pathlib import Path

import psutil

from tests.integration.test_plugins_support import (
    child_process,
    subreaper,
    wait_gone,
)

DAEMON = """
    import logging, os, sys, threading
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    from busd import Bus
    from busd.plugins import Daemonizer, SignalHandler

    out, err = sys.argv[1], sys.argv[2]
    bus = Bus()
    SignalHandler(bus).subscribe()
    Daemonizer(bus, stdout=out, stderr=err).subscribe()
    # A thread that will not survive the fork: the plugin must warn about it.
    threading.Thread(target=threading.Event().wait, name="doomed", daemon=True).start()

    def report_daemon():
        umask = os.umask(0)
        report(f"daemon {os.getpid()} {os.getsid(0)} {umask:o} {os.getcwd()}")
        print("stdout of the daemon", flush=True)

    bus.subscribe("start", report_daemon, priority=80)
    bus.subscribe("exit", lambda: report("exit"))
    blocking = []

    def in_block():
        if not blocking:
            blocking.append(True)
            report("blocking")

    bus.subscribe("main", in_block)
    bus.start()
    bus.block(interval=0.01)
"""


def test_double_fork_new_session_and_signals_still_handled(tmp_path: Path) -> None:
    out, err = tmp_path / "daemon.out", tmp_path / "daemon.err"
    daemon_pids: list[int] = []
    with subreaper():
        try:
            with child_process(tmp_path, DAEMON, args=[str(out), str(err)]) as child:
                # The original process leaves as soon as it has forked once.
                assert child.wait_exit() == 0
                fields = child.expect("daemon").split()
                pid, sid, umask, cwd = int(fields[1]), int(fields[2]), fields[3], fields[4]
                daemon_pids += [pid, sid]  # sid: the session leader, the middle process
                assert pid != child.pid
                # The child led its own session (start_new_session); the daemon
                # is in a newer one, which it does not lead (no terminal can
                # ever become its controlling one).
                assert sid not in (child.pid, os.getsid(0)), "no new session"
                assert sid != pid, "the daemon leads its session"
                assert (umask, cwd) == ("0", "/")
                assert psutil.Process(pid).ppid() != child.pid
                child.expect("blocking")
                # A signal still reaches the bus: the dispatcher thread was
                # restarted in the daemon after the fork.
                os.kill(pid, signal.SIGTERM)
                child.expect("exit")
                wait_gone([pid])
                assert "stdout of the daemon" in out.read_text()
                assert "Caught signal SIGTERM." in err.read_text()
                log = child.stderr()
                assert "There are 1 other threads running (doomed)." in log
                assert "Forking once." in log
        finally:
            # Adopted by us (subreaper): only our own children are killed, so
            # a pid reused since cannot be hit.
            for pid in daemon_pids:
                with suppress(psutil.NoSuchProcess):
                    if psutil.Process(pid).ppid() == os.getpid():
                        os.kill(pid, signal.SIGKILL)
            wait_gone(daemon_pids)
