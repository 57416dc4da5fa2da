"""The pools' commands: ``scale``, ``signal`` and ``recycle`` (run on the command thread).

Each lives in its module of :mod:`busd.commands` (arguments, checks, handler);
here they are only added to the master, each on the pool its body names
(``"pool"``; with one pool, that one).  ``recycle`` finds the pool by the
worker's pid.  The pools are seen through a Protocol, so this module does not
import ``busd.pool.pool`` (which imports it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from busd.commands import recycle, scale, signal
from busd.pool.slots import Worker

Handler = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class Reload:
    """A respawn reload: the workers it started, and the ones it retired."""

    started: tuple[Worker, ...]
    retired: tuple[Worker, ...]


class Master(Protocol):
    """The master, as the pools' commands see it."""

    def add_command(self, name: str, handler: Handler, *, readonly: bool = False) -> None:
        """Answer command ``name`` with ``handler(body)``."""


class PoolHost(scale.Host, signal.Host[Worker], recycle.Host, Protocol):
    """One pool, as its commands see it."""


class PoolsHost(Protocol):
    """The pools of a master, as the commands see them."""

    @property
    def master(self) -> Master:
        """The master they belong to."""

    def pick(self, body: Mapping[str, Any]) -> PoolHost:
        """The pool ``body`` names (``"pool"``), or the only one."""

    def owner_of(self, pid: int) -> PoolHost:
        """The pool running the worker ``pid``."""


def install_commands(pools: PoolsHost) -> None:
    """Add the pools' commands to their master."""
    master = pools.master
    master.add_command("scale", lambda body: _scale(pools, body))
    master.add_command("signal", lambda body: _signal(pools, body))
    master.add_command("recycle", lambda body: _recycle(pools, body))


def _scale(pools: PoolsHost, body: dict[str, Any]) -> Any:
    args = scale.parse(body)
    return scale.handle(pools.pick(body), args)


def _signal(pools: PoolsHost, body: dict[str, Any]) -> Any:
    args = signal.parse(body)
    return signal.handle(pools.pick(body), args)


def _recycle(pools: PoolsHost, body: dict[str, Any]) -> Any:
    args = recycle.parse(body)
    return recycle.handle(pools.owner_of(args.pid), args)


__all__ = ["PoolHost", "PoolsHost", "Reload", "install_commands"]
