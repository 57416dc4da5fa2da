"""``busctl top`` in a real terminal: tmux runs it against a real pool of workers.

Each test has its own tmux server (its own ``-L`` socket name), killed in a
``finally``.  The pane's output is piped into a FIFO, so a wait for the
screen wakes when the pane prints something (and looks again at least every
``LOOK`` seconds), never sleeps.  The shell in the pane records busctl's
exit status and ``stty -a`` before and after, in files the test reads.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import select
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from busd.testing import BusdPool, PoolFactory

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (busctl top's tests)")

TARGET = "busd.examples.hello:main"
PROMPT = "top$ "
#: The longest a wait goes without looking at the screen again.
LOOK = 0.5
BUSCTL = [sys.executable, "-m", "busd.client.ctl.busctl"]
#: A worker row of the view: slot, pid, state.
ROW = re.compile(r"^\s+(\d+)\s+(\d+)\s+([A-Z]+)\s")
_SERVERS = itertools.count()


class Pane:
    """One tmux server with one 120x40 window running ``sh``; its screen as text."""

    def __init__(self, directory: Path) -> None:
        assert TMUX is not None
        self.tmux_path = TMUX
        self.directory = directory
        self.socket = f"busdtop-{os.getpid()}-{next(_SERVERS)}"
        fifo = directory / "pane.fifo"
        os.mkfifo(fifo)
        # The reader does not block; the second end keeps it from reading EOF
        # while no writer (the pane's pipe) is there yet.
        self.reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        self.keeper = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        self.fifo = fifo
        self.socket_path: Path | None = None

    def tmux(self, *args: str) -> str:
        result = subprocess.run(
            [self.tmux_path, "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        assert result.returncode == 0, f"tmux {' '.join(args)}: {result.stderr}"
        return result.stdout

    def start(self) -> None:
        self.tmux(
            "new-session",
            "-d",
            "-x",
            "120",
            "-y",
            "40",
            "-s",
            "top",
            f"PS1={shlex.quote(PROMPT)} exec sh",
        )
        self.socket_path = Path(self.tmux("display-message", "-p", "#{socket_path}").strip())
        self.tmux("pipe-pane", "-t", "top", "-o", f"cat >> {shlex.quote(str(self.fifo))}")
        self.wait_for(lambda screen: PROMPT.rstrip() in screen, 10, "shell prompt")

    def type(self, line: str) -> None:
        """Type ``line`` and Enter in the pane."""
        self.tmux("send-keys", "-t", "top", "-l", line)
        self.tmux("send-keys", "-t", "top", "Enter")

    def keys(self, *keys: str) -> None:
        """Press keys (tmux names: ``q``, ``C-c``)."""
        self.tmux("send-keys", "-t", "top", *keys)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "top")

    def wait_for(self, check: Callable[[str], bool], timeout: float, what: str) -> str:
        """The screen once ``check`` holds for it; fail past ``timeout`` showing it."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if check(screen):
                return screen
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no {what} within {timeout}s; the pane shows:\n{screen}")
            ready, _, _ = select.select([self.reader], [], [], min(remaining, LOOK))
            if ready:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self.reader, 65536):
                        pass

    def close(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired, AssertionError):
            self.tmux("kill-server")
        if self.socket_path is not None:  # tmux leaves its socket file behind
            self.socket_path.unlink(missing_ok=True)
        os.close(self.reader)
        os.close(self.keeper)


@pytest.fixture
def pane(tmp_path: Path) -> Iterator[Pane]:
    made = Pane(tmp_path)
    try:
        made.start()
        yield made
    finally:
        made.close()


class Session:
    """busctl top typed into the pane, with its exit status and ``stty -a`` around it."""

    def __init__(self, pane: Pane, pool: BusdPool) -> None:
        self.pane = pane
        self.rc = pane.directory / "rc"
        self.before = pane.directory / "stty.before"
        self.after = pane.directory / "stty.after"
        self.done = pane.directory / "done"
        command = shlex.join([*BUSCTL, "--runtime-dir", str(pool.runtime_dir), "top"])
        pane.type(
            f"stty -a > {self.before}; {command}; echo $? > {self.rc}; "
            f"stty -a > {self.after}; echo ok > {self.done}"
        )

    def ended(self) -> int:
        """busctl's exit status, once the shell after it ran; the terminal as before."""
        screen = self.pane.wait_for(
            lambda _: self.done.exists() and self.done.read_text() == "ok\n",
            10,
            "end of busctl top",
        )
        assert self.after.read_text() == self.before.read_text()
        # The view is gone (its alternate screen left): the shell and its prompt are back.
        assert "EVENTS (" not in screen
        assert "SLOT  PID" not in screen
        assert screen.rstrip().splitlines()[-1] == PROMPT.rstrip()
        return int(self.rc.read_text())


def rows(screen: str) -> dict[int, tuple[int, str]]:
    """The worker rows on the screen: pid -> (slot, state)."""
    found = {}
    for line in screen.splitlines():
        match = ROW.match(line)
        if match:
            found[int(match.group(2))] = (int(match.group(1)), match.group(3))
    return found


def showing(pids: list[int], state: str = "STARTED") -> Callable[[str], bool]:
    def check(screen: str) -> bool:
        shown = rows(screen)
        return all(shown.get(pid, (0, ""))[1] == state for pid in pids)

    return check


def test_top_shows_every_worker_follows_a_scale_and_events_and_q_quits(
    busd_pool: PoolFactory, pane: Pane
) -> None:
    pool = busd_pool(TARGET, workers=3)
    pids = pool.pids
    assert len(pids) == 3

    session = Session(pane, pool)
    screen = pane.wait_for(showing(pids), 10, f"3 STARTED workers {pids}")
    assert sorted(slot for pid, (slot, _) in rows(screen).items() if pid in pids) == [0, 1, 2]
    assert "POOL main  3/3 STARTED  busd.examples.hello:main" in screen
    assert re.search(r"^busd busd  pid \d+ on \S+  STARTED  up ", screen, re.M)

    began = time.monotonic()
    pool.scale("+1", wait=False)
    screen = pane.wait_for(lambda s: len(rows(s)) == 4, 2.0 - (time.monotonic() - began), "4th")
    pool.wait_for("STARTED")
    new = [pid for pid in pool.pids if pid not in pids]
    assert len(new) == 1
    pane.wait_for(showing([*pids, *new]), 10, f"4 STARTED workers {[*pids, *new]}")

    killed = pool.kill_worker(1)
    pane.wait_for(
        lambda s: f"worker_exited worker=1 pid={killed} reason=crash" in s,
        10,
        "the exit of the killed worker among the events",
    )
    pool.wait_for("STARTED")
    pane.wait_for(showing(pool.pids), 10, "its replacement STARTED")

    pane.keys("q")
    assert session.ended() == 0


def test_ctrl_c_ends_top_with_130_and_the_terminal_as_it_was(
    busd_pool: PoolFactory, pane: Pane
) -> None:
    pool = busd_pool(TARGET, workers=1)
    session = Session(pane, pool)
    pane.wait_for(showing(pool.pids), 10, "the worker")

    pane.keys("C-c")

    assert session.ended() == 130


def test_top_says_when_the_master_goes_away_and_q_still_quits(
    busd_pool: PoolFactory, pane: Pane
) -> None:
    pool = busd_pool(TARGET, workers=1)
    session = Session(pane, pool)
    pane.wait_for(showing(pool.pids), 10, "the worker")

    assert pool.exit() == 0

    screen = pane.wait_for(lambda s: "LOST since " in s, 5, "the master's loss")
    assert "state EXITING" in screen
    assert re.search(r"worker_exited worker=0 pid=\d+ reason=stop", screen)
    pane.keys("q")
    assert session.ended() == 0


def test_busctl_status_loads_neither_curses_nor_top(busd_pool: PoolFactory) -> None:
    pool = busd_pool(TARGET, workers=1)
    code = (
        "import sys\n"
        "from busd.client.ctl.busctl import main\n"
        f"rc = main(['--runtime-dir', {str(pool.runtime_dir)!r}, 'status'])\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('curses', '_curses'))\n"
        "    or m == 'busd.client.ctl.top')\n"
        "print('LOADED', rc, loaded)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )

    assert result.returncode == 0, result.stderr
    assert re.search(rf"^pid:\s+{pool.proc.pid} ", result.stdout, re.M), result.stdout
    assert result.stdout.splitlines()[-1] == "LOADED 0 []"


def test_top_without_a_terminal_says_so_in_one_line(busd_pool: PoolFactory) -> None:
    pool = busd_pool(TARGET, workers=1)

    result = subprocess.run(
        [*BUSCTL, "--runtime-dir", str(pool.runtime_dir), "top"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "busctl: top: a live view needs a terminal (stdin and stdout); try busctl status\n"
    )
