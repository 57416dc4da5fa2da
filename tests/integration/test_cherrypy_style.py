"""A CherryPy-style application on a busd Bus, driven by real signals.

The child script is written as one would against ``cherrypy.engine``: only
the two import lines would differ.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.integration.test_plugins_support import child_process

APP = """
    import sys
    from busd import Bus as Engine                            # cherrypy.process.wspbus.Bus
    from busd.plugins import Monitor, SignalHandler           # cherrypy.process.plugins

    events = sys.argv[1]

    def record(event):
        with open(events, "a") as f:
            f.write(event + "\\n")
        report(event)

    engine = Engine()
    engine.subscribe("start", lambda: record("start"))
    engine.subscribe("stop", lambda: record("stop"))
    engine.subscribe("graceful", lambda: record("graceful"))
    engine.subscribe("exit", lambda: record("exit"))

    ticks = []

    def tick():
        ticks.append(1)
        if len(ticks) == 1:
            record("tick")

    SignalHandler(engine).subscribe()
    Monitor(engine, tick, frequency=0.05).subscribe()
    engine.start()
    engine.block()
"""


def test_signals_drive_the_lifecycle_of_a_cherrypy_style_app(tmp_path: Path) -> None:
    events = tmp_path / "events.log"
    with child_process(tmp_path, APP, args=[str(events)]) as child:
        child.expect("start")
        child.expect("tick")  # the monitor ran, so the app is up and blocking
        os.kill(child.pid, signal.SIGHUP)
        child.expect("graceful")
        os.kill(child.pid, signal.SIGUSR1)
        child.expect("graceful")
        os.kill(child.pid, signal.SIGTERM)
        child.expect("stop")
        child.expect("exit")
        assert child.wait_exit() == 0, child.diagnostics()
    assert events.read_text().splitlines() == [
        "start",
        "tick",
        "graceful",
        "graceful",
        "stop",
        "exit",
    ]
