"""The OS's name of a thread of the master (what ``ps -L``, ``top -H`` and ``/proc`` show).

::

    threading.Thread(name="busd-hub", target=run) --> run() begins: name_os_thread("busd-hub")
        --> prctl(PR_SET_NAME): /proc/self/task/<tid>/comm = b"busd-hub" (15 bytes at most)

Python names its threads for itself only; the kernel's name of each is
the process's (busd's process title) until the thread says otherwise.
Each of busd's own threads says so as its first step, with the name it was
made with, so an operator (and the idle test, which counts each thread's
wake-ups) can tell them apart.  ``prctl`` names the calling thread, so no
thread has to ask which one it is.
"""

from __future__ import annotations

import ctypes

#: The kernel keeps 15 bytes of a thread's name (and a NUL).
COMM_BYTES = 15
#: prctl(2)'s option that names the calling thread.
PR_SET_NAME = 15


def name_os_thread(name: str) -> None:
    """Give the calling thread ``name`` in the OS (Linux; elsewhere nothing)."""
    try:
        # The process's own symbols (libc's among them): no library search, no subprocess.
        ctypes.CDLL(None).prctl(PR_SET_NAME, name.encode(errors="replace")[:COMM_BYTES], 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: the name is a convenience
        return


__all__ = ["name_os_thread"]
