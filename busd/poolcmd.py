"""The pool's commands: ``scale``, ``signal`` and ``recycle`` (run on the command thread).

Each takes the request body as busctl or a worker sent it, checks it, and
calls the pool; bad arguments are a BAD_ARGUMENTS error with one clear line.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Any

from busd.wire import ErrorCode, wire_error

if TYPE_CHECKING:
    from busd.pool import Pool


def install_commands(pool: Pool) -> None:
    """Add the pool's commands to its master."""
    commands = pool.master.commands
    commands["scale"] = lambda body: scale_command(pool, body)
    commands["signal"] = lambda body: signal_command(pool, body)
    commands["recycle"] = lambda body: recycle_command(pool, body)


def scale_command(pool: Pool, body: dict[str, Any]) -> Any:
    """``scale N|+N|-N``."""
    text = str(body.get("n", ""))
    try:
        amount = int(text)
    except ValueError:
        raise wire_error(ErrorCode.BAD_ARGUMENTS, f"scale takes N, +N or -N, not {text!r}"
                         ) from None
    size = pool.size + amount if text[:1] in "+-" else amount
    return {"size": pool.scale(size)}


def recycle_command(pool: Pool, body: dict[str, Any]) -> Any:
    """``bus.recycle()`` from a worker: replace it, new one first."""
    pid = body.get("pid")
    if not isinstance(pid, int):
        raise wire_error(ErrorCode.BAD_ARGUMENTS, f"recycle takes a worker's pid, not {pid!r}")
    worker = pool.recycle(pid, str(body.get("reason") or "asked"))
    return {"worker": worker.slot, "pid": worker.pid, "queued": True}


def signal_command(pool: Pool, body: dict[str, Any]) -> Any:
    """``signal SIG [WORKER...]``."""
    name = str(body.get("signal", "")).upper().removeprefix("SIG")
    try:
        sig = signal.Signals[f"SIG{name}"]
    except KeyError:
        raise wire_error(ErrorCode.BAD_ARGUMENTS, f"unknown signal {name!r}") from None
    wanted = body.get("workers") or []
    if not isinstance(wanted, list) or not all(
            isinstance(w, int) and not isinstance(w, bool) for w in wanted):
        raise wire_error(ErrorCode.BAD_ARGUMENTS,
                         f"signal takes a list of worker ids, not {wanted!r}")
    running = pool.running()
    missing = [w for w in wanted if w not in running]
    if missing or not running:
        names = ", ".join(str(w) for w in missing)
        have = ", ".join(str(w) for w in sorted(running)) or "none"
        raise wire_error(ErrorCode.BAD_ARGUMENTS,
                         f"no running worker {names} (running: {have})" if missing
                         else "no running worker to signal")
    targets = [w for i, w in sorted(running.items()) if not wanted or i in wanted]
    for worker in targets:
        pool.signal(worker, sig)
    return {"signal": sig.name, "workers": [w.slot for w in targets],
            "pids": [w.pid for w in targets]}
