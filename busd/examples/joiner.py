"""A process that joins a running master: subscribe first, then block().

    busd -w 2 busd.examples.hello:main &     # any running master
    python -m busd.examples.joiner           # joins it, runs its start listeners
    busd -w 2 -- python -m busd.examples.joiner   # or as the pool's command

Ctrl-C (SIGINT) or SIGTERM makes this process alone leave: its stop and
exit listeners run, it says BYE, ``block()`` returns and it exits 0; the
master and its other processes carry on.  ``busctl exit`` ends everyone.
"""

from __future__ import annotations

import os
import signal
import sys

from busd import client


def main() -> int:
    """Join, subscribe, block until this process leaves or the master exits."""
    bus = client.connect()
    # Nothing has run here yet: the master's state is known, not mirrored.
    say(f"joined; the master is {bus.master_state}")
    bus.subscribe("start", lambda: say("started"))
    bus.subscribe("stop", lambda: say("stopped"))
    bus.subscribe("exit", lambda: say("exiting"))
    bus.block()  # mirrors: the start listeners run now if the master is STARTED
    if bus.signalled is not None:
        say(f"left on {signal.Signals(bus.signalled).name}")
    return 0


def say(what: str) -> None:
    """One line per step, naming this process (one write: pool workers share a log)."""
    sys.stdout.write(f"joiner (pid {os.getpid()}): {what}\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
