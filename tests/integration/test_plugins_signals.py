"""SignalHandler in a child process running ``bus.block()``, driven by real signals."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.integration.test_plugins_support import child_process

APP = """
    import logging, os, signal, sys, threading
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(message)s")
    from busd import Bus
    from busd.plugins import SignalHandler

    def where():
        current = threading.current_thread()
        return "main" if current is threading.main_thread() else current.name

    bus = Bus()
    bus.subscribe("graceful", lambda: report("graceful " + where()))
    bus.subscribe("stop", lambda: report("stop " + where()))
    bus.subscribe("exit", lambda: report("exit " + where()))
    blocking = threading.Event()

    def in_block():
        # Published from inside bus.block(): from now on actions run in main.
        if not blocking.is_set():
            blocking.set()
            report("blocking")
            if "--kill-myself" in sys.argv:
                os.kill(os.getpid(), signal.SIGTERM)

    bus.subscribe("main", in_block)
    SignalHandler(bus).subscribe()
    bus.start()
    bus.block(interval=0.01)
    report("block returned")
"""


def test_sigterm_to_itself_exits_the_bus_and_the_process(tmp_path: Path) -> None:
    with child_process(tmp_path, APP, args=["--kill-myself"]) as child:
        child.expect("blocking")
        assert child.expect("stop") == "stop main"
        assert child.expect("exit") == "exit main"
        child.expect("block returned")
        assert child.wait_exit() == 0
        assert "Caught signal SIGTERM." in child.stderr()


def test_hup_usr1_then_term_from_outside(tmp_path: Path) -> None:
    with child_process(tmp_path, APP) as child:
        child.expect("blocking")
        os.kill(child.pid, signal.SIGHUP)
        assert child.expect("graceful") == "graceful main"
        os.kill(child.pid, signal.SIGUSR1)
        assert child.expect("graceful") == "graceful main"
        os.kill(child.pid, signal.SIGTERM)
        assert child.expect("stop") == "stop main"
        assert child.expect("exit") == "exit main"
        assert child.wait_exit() == 0
        log = child.stderr()
    for name in ("SIGHUP", "SIGUSR1", "SIGTERM"):
        assert f"Caught signal {name}." in log
    assert "SIGHUP caught but not daemonized. Reloading." in log
