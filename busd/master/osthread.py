"""The OS's name of a thread of the master (what ``ps -L``, ``top -H`` and ``/proc`` show).

::

    threading.Thread(name="busd-hub") --> the thread starts: name_os_thread()
        --> /proc/self/task/<tid>/comm = b"busd-hub" (15 bytes at most)

Python names its threads for itself only; the kernel's name of each is
the process's (busd's process title) until the thread says otherwise.
Each of busd's own threads says so as its first step, so an operator (and
the idle test, which counts each thread's wake-ups) can tell them apart.
"""

from __future__ import annotations

import threading
from pathlib import Path

#: The kernel keeps 15 bytes of a thread's name (and a NUL).
COMM_BYTES = 15


def name_os_thread() -> None:
    """Give the calling thread's Python name to the OS (Linux; elsewhere nothing)."""
    name = threading.current_thread().name.encode(errors="replace")[:COMM_BYTES]
    try:
        Path(f"/proc/self/task/{threading.get_native_id()}/comm").write_bytes(name)
    except OSError:  # not Linux, or no /proc: the name is a convenience
        return


__all__ = ["name_os_thread"]
