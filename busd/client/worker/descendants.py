"""A worker's own children: none outlives the worker.

A worker that started processes (a subprocess, a helper pool) and then
ends, whether asked to (exit, scale down) or because its master died
(``PR_SET_PDEATHSIG``), would leave them running, reparented to init: the
orphans supervisord and PM2 users meet.  At its end the worker sends each
descendant still running SIGTERM, then SIGKILL after a short grace.  A
process that daemonized itself (double fork) has left the tree and is not
followed here; with the fork server it was reparented to the server, which
ends it when this worker has ended (``busd.pool.strays``).  A worker the pool
SIGKILLs never gets here: the pool ends its tree itself (``busd.pool.killtree``).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

#: How long descendants get between SIGTERM and SIGKILL.
GRACE = 1.0


def end_descendants(grace: float = GRACE) -> list[int]:
    """Terminate, then kill, every process below this one; return their pids."""
    import psutil  # only when a worker ends: keeps its start light

    try:
        procs = psutil.Process().children(recursive=True)
    except psutil.Error:
        return []
    if not procs:
        return []
    log.warning(
        "ending %d process(es) this worker left running: %s",
        len(procs),
        ", ".join(str(p.pid) for p in procs),
    )
    for proc in procs:
        try:
            proc.terminate()
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(alive, timeout=grace)
    return [p.pid for p in procs]


__all__ = ["end_descendants"]
