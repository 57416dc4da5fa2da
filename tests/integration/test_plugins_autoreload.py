"""Autoreloader for real: touching a watched file re-executes the child in place."""

from __future__ import annotations

import os
from pathlib import Path

from tests.integration.test_plugins_support import child_process

APP = """
    import logging, os, sys
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    from busd import Bus
    from busd.plugins import Autoreloader

    runs, watched = sys.argv[1], sys.argv[2]

    def note(line):
        with open(runs, "a") as f:
            f.write(line + "\\n")

    with open(runs, "a+") as f:
        f.seek(0)
        run = sum(1 for line in f if line.startswith("run ")) + 1
    note(f"run {run} pid {os.getpid()}")
    if run > 1:
        raise SystemExit(0)  # the re-executed process ends the test on its own

    class Reloader(Autoreloader):
        def run(self):
            super().run()
            if self.mtimes and not getattr(self, "watching", False):
                self.watching = True
                report("watching")

    bus = Bus()
    reloader = Reloader(bus, frequency=0.02)
    reloader.files.add(watched)
    reloader.subscribe()
    bus.subscribe("exit", lambda: note(f"exit {run}"))
    bus.start()
    bus.block(interval=0.01)
"""


def test_touching_a_watched_file_re_executes_the_process(tmp_path: Path) -> None:
    runs, watched = tmp_path / "runs.log", tmp_path / "settings.conf"
    watched.write_text("x = 1\n")
    with child_process(tmp_path, APP, args=[str(runs), str(watched)]) as child:
        child.expect("watching")
        st = watched.stat()
        os.utime(watched, (st.st_atime, st.st_mtime + 10))
        assert child.wait_exit() == 0, child.diagnostics()
        log = child.stderr()
    pid = child.pid
    # The exit listeners finished before the re-exec, which kept the pid.
    assert runs.read_text().splitlines() == [f"run 1 pid {pid}", "exit 1", f"run 2 pid {pid}"]
    assert f"Restarting because {watched} changed." in log
    assert "Re-spawning" in log
