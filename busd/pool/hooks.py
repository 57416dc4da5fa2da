"""The pool's hook channels: gunicorn's hooks as listeners on the master bus.

::

    pool ([busd-commands])  --emit-->  master.event(...)   -> every client
                                       call_soon(flush)    -> [busd-commands], after the
                                                              current command: the master's
                                                              listeners, in order

``worker_spawned``, ``worker_started``, ``worker_exited`` (with ``status`` or
``signal`` and the ``reason``: crash, recycle, scale, reload, timeout, stop),
``reload_begin`` and ``reload_end``; a config file's pools name themselves in
each map (``"pool"``).  Each is
published on the master bus (local, never relayed as a PUBLISH) with one map
argument, and sent to every client as an EVENT of the same name (``busctl
watch`` shows them).  Master listeners run on the command thread, as every listener does; a listener
subscribed by ``busd --plugin pkg.mod:func`` (``func(master_bus)``) sees them.

``reload_end`` comes after the reload is over: for a respawn, once the new
workers are STARTED (``ok``: False if they did not start in time, the old
ones are kept); for an in-place reload, after the ``graceful`` command
returned, so after every worker's ack when it waited for them (``"waited":
true``; ``ok``: every worker acked without error, none was lost); without
a wait, once the graceful was relayed and the master's listeners ran
(``"waited": false``, ``ok``: they did not fail).  A graceful called as a
method (``MasterBus.graceful()``, not a command: a joined host's pool, a
plugin) ends after that call returned, with ``"ok"`` and ``"waited"`` null:
its acks, if any, went to its caller.
"""

from __future__ import annotations

import collections
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from busd.core.errors import BusError
from busd.master.bus import MasterBus

HOOK_CHANNELS = ("worker_spawned", "worker_started", "worker_exited", "reload_begin", "reload_end")


@dataclass(frozen=True)
class Hook:
    """One hook to publish."""

    channel: str
    data: dict[str, Any]


class Hooks:
    """Emits the hook channels of one master (used by the command thread only)."""

    def __init__(self, master: MasterBus, pool: str | None = None) -> None:
        self.master = master
        #: Named in every map (None: the command line's one pool, whose maps are as
        #: they always were).
        self.pool = pool
        master.keep_local(*HOOK_CHANNELS)
        self._pending: collections.deque[Hook] = collections.deque()

    def emit(self, channel: str, data: dict[str, Any], event: str | None = None) -> None:
        """An EVENT now (named ``event``, default the channel); the master's listeners
        on the command thread, in order.  The map names the pool (``"pool"``)."""
        data = self.named(data)
        self.master.event(event or channel, data)
        self._pending.append(Hook(channel, data))
        self.master.call_soon(self.flush)

    def flush(self) -> None:
        """Publish what is pending (on the command thread: a listener that waits, such
        as the pool's exit, calls it so its workers' exits are not left queued)."""
        while self._pending:
            hook = self._pending.popleft()
            self.master.publish(hook.channel, hook.data)

    def emit_here(self, channel: str, data: dict[str, Any]) -> None:
        """The same, its listeners run now (the caller is the command thread)."""
        data = self.named(data)
        self.flush()
        self.master.event(channel, data)
        self.master.publish(channel, data)

    def named(self, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` naming the pool (a config file's pool), else as it is."""
        return data if self.pool is None else {**data, "pool": self.pool}


class PluginError(BusError):
    """A ``--plugin`` cannot be loaded."""


def load_plugin(spec: str) -> Callable[[MasterBus], object]:
    """Import ``pkg.mod:func`` (a ``--plugin``) and return ``func``."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise PluginError(f"--plugin is pkg.module:function, not {spec!r}")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"cannot load --plugin {spec}: {exc}") from exc
    if not callable(obj):
        raise PluginError(f"--plugin {spec} is not callable")
    return obj  # type: ignore[no-any-return]


def install_plugins(master: MasterBus, specs: list[str]) -> None:
    """Call each ``--plugin`` with the master bus, before it starts."""
    for spec in specs:
        func = load_plugin(spec)
        try:
            func(master)
        except Exception as exc:
            raise PluginError(f"--plugin {spec} failed: {exc!r}") from exc
