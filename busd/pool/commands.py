"""The pool's commands: ``scale``, ``signal`` and ``recycle`` (run on the command thread).

Each takes the request body as busctl or a worker sent it, checks it, and
calls the pool; bad arguments are a BAD_ARGUMENTS error with one clear line.
With ``--reload respawn``, ``graceful`` with ``wait`` also waits until every
worker the reload retired has exited: its reply means the old code is gone.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from busd.core.wire import ErrorCode, wire_error

if TYPE_CHECKING:
    from busd.pool.pool import Pool
    from busd.pool.slots import Worker


@dataclass(frozen=True)
class Reload:
    """A respawn reload: the workers it started, and the ones it retired."""

    started: tuple[Worker, ...]
    retired: tuple[Worker, ...]


def install_commands(pool: Pool) -> None:
    """Add the pool's commands to its master."""
    master = pool.master
    master.add_command("scale", lambda body: scale_command(pool, body))
    master.add_command("signal", lambda body: signal_command(pool, body))
    master.add_command("recycle", lambda body: recycle_command(pool, body))
    if pool.config.reload == "respawn":
        master.wrap_command(
            "graceful", lambda graceful, body: respawn_command(pool, graceful, body)
        )


def respawn_command(
    pool: Pool, graceful: Callable[[dict[str, Any]], Any], body: dict[str, Any]
) -> Any:
    """``graceful [--wait]`` of a respawn pool: with wait, until the old workers exited.

    The wait is bounded by the body's ``timeout`` (the master's ack timeout
    without one), counted from when the command began.
    """
    began = time.monotonic()
    result = graceful(body)  # checks the body; runs the respawn (its listener)
    reload, pool.last_reload = pool.last_reload, Reload((), ())
    if body.get("wait") is not True:
        return result
    limit = body.get("timeout")
    limit = float(limit) if isinstance(limit, int | float) else pool.master.ack_timeout
    if not pool.wait_exited(reload.retired, began + limit - time.monotonic()):
        running = [w.pid for w in reload.retired if not w.reaped]
        raise wire_error(
            ErrorCode.TIMEOUT,
            f"respawn: old workers (pids "
            f"{', '.join(map(str, running))}) still running {limit:g}s after "
            f"the reload began (they get SIGKILL --graceful-timeout "
            f"{pool.config.graceful_timeout:g}s after SIGTERM)",
            {"running": running},
        )
    if isinstance(result, dict):
        result["reload"] = {
            "mode": "respawn",
            "started": [w.pid for w in reload.started],
            "exited": [w.pid for w in reload.retired],
        }
    return result


def scale_command(pool: Pool, body: dict[str, Any]) -> Any:
    """``scale N|+N|-N``."""
    text = str(body.get("n", ""))
    try:
        amount = int(text)
    except ValueError:
        raise wire_error(
            ErrorCode.BAD_ARGUMENTS, f"scale takes N, +N or -N, not {text!r}"
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
        isinstance(w, int) and not isinstance(w, bool) for w in wanted
    ):
        raise wire_error(
            ErrorCode.BAD_ARGUMENTS, f"signal takes a list of worker ids, not {wanted!r}"
        )
    running = pool.running()
    missing = [w for w in wanted if w not in running]
    if missing or not running:
        names = ", ".join(str(w) for w in missing)
        have = ", ".join(str(w) for w in sorted(running)) or "none"
        raise wire_error(
            ErrorCode.BAD_ARGUMENTS,
            f"no running worker {names} (running: {have})"
            if missing
            else "no running worker to signal",
        )
    targets = [w for i, w in sorted(running.items()) if not wanted or i in wanted]
    for worker in targets:
        pool.signal(worker, sig)
    return {
        "signal": sig.name,
        "workers": [w.slot for w in targets],
        "pids": [w.pid for w in targets],
    }
