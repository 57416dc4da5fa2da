"""The pool's commands: ``scale``, ``signal`` and ``recycle`` (run on the command thread).

Each lives in its module of :mod:`busd.commands` (arguments, checks, handler);
here they are only added to the master.  With ``--reload respawn``,
``graceful`` with ``wait`` also waits until every worker the reload retired
has exited: its reply means the old code is gone.  The pool is seen through
a Protocol, so this module does not import ``busd.pool.pool`` (which imports it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from busd.commands import graceful, recycle, scale, signal
from busd.core.wire import ErrorCode, wire_error
from busd.pool.slots import Worker

Handler = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class Reload:
    """A respawn reload: the workers it started, and the ones it retired."""

    started: tuple[Worker, ...]
    retired: tuple[Worker, ...]


class Master(Protocol):
    """The master, as the pool's commands see it."""

    @property
    def ack_timeout(self) -> float:
        """How long a wait for acks lasts when the command names no timeout."""

    def add_command(self, name: str, handler: Handler, *, readonly: bool = False) -> None:
        """Answer command ``name`` with ``handler(body)``."""

    def wrap_command(self, name: str, wrapper: Callable[[Handler, dict[str, Any]], Any]) -> None:
        """Answer command ``name`` with ``wrapper(previous_handler, body)``."""


class Config(Protocol):
    """The pool's settings the commands read."""

    @property
    def reload(self) -> str:
        """``inplace`` or ``respawn``."""

    @property
    def graceful_timeout(self) -> float:
        """How long a worker has between SIGTERM and SIGKILL."""


class PoolHost(scale.Host, signal.Host[Worker], recycle.Host, Protocol):
    """The pool, as its commands see it."""

    last_reload: Reload

    @property
    def master(self) -> Master:
        """The master it belongs to."""

    @property
    def config(self) -> Config:
        """Its settings."""

    def wait_exited(self, workers: Sequence[Worker], timeout: float) -> bool:
        """Until every one of ``workers`` has exited, at most ``timeout`` s; True if they did."""


def install_commands(pool: PoolHost) -> None:
    """Add the pool's commands to its master."""
    master = pool.master
    master.add_command("scale", lambda body: scale.handle(pool, scale.parse(body)))
    master.add_command("signal", lambda body: signal.handle(pool, signal.parse(body)))
    master.add_command("recycle", lambda body: recycle.handle(pool, recycle.parse(body)))
    if pool.config.reload == "respawn":
        master.wrap_command(
            "graceful",
            lambda previous, body: respawn_command(
                pool, lambda: previous(body), graceful.parse(body)
            ),
        )


def respawn_command(pool: PoolHost, run: Callable[[], Any], args: graceful.Args) -> Any:
    """``graceful [--wait]`` of a respawn pool: with wait, until the old workers exited.

    ``run()`` is the master's own graceful (the respawn is its listener).
    The wait is bounded by ``args.timeout`` (the master's ack timeout without
    one), counted from when the command began.
    """
    began = time.monotonic()
    result = run()
    reload, pool.last_reload = pool.last_reload, Reload((), ())
    if not args.wait:
        return result
    limit = pool.master.ack_timeout if args.timeout is None else args.timeout
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


__all__ = ["PoolHost", "Reload", "install_commands", "respawn_command"]
