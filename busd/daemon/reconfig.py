"""``busctl reload-config [--wait]``: read the config file again, apply only the difference.

::

    busctl reload-config --> [busd-commands] read + check the file (a bad one: nothing changes,
                             one line naming the file and where, busctl exits 1)
                             diff(running specs, new specs) (busd.daemon.configdiff)
                               removed  -> stopped, the pools that come after others first
                               changed  -> new workers started, STARTED, then the old stop
                               resized / updated -> in place (scale; the new settings)
                               added    -> started once the pools it comes after are STARTED
                               unchanged -> not touched (same pids, no listener runs)
                             --wait: until every pool added or changed is STARTED

It runs on the command thread, as every command does, so nothing else
changes the pools meanwhile.  The ``[busd]`` table is read and checked but
the master's own options keep their values until busd restarts.  No signal
reloads the file: SIGHUP stays graceful.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from busd.core.wire import ErrorCode, wire_error
from busd.daemon.config import ConfigError, PoolSpec, levels, load, specs
from busd.daemon.configdiff import ConfigDiff, diff
from busd.daemon.poolset import PoolSet, pool_config
from busd.master.bus import MasterBus
from busd.pool.pools import Pools


class ConfigReloader:
    """The running specs, and how a new reading of the file replaces them."""

    def __init__(
        self, master: MasterBus, pools: Pools, poolset: PoolSet, opts: argparse.Namespace
    ) -> None:
        self.master = master
        self.pools = pools
        self.poolset = poolset
        self.opts = opts
        self.specs: list[PoolSpec] = list(opts.pool_specs)

    def command(self, body: dict[str, Any]) -> dict[str, Any]:
        """The ``reload-config`` command: what changed, by kind (and ``lines`` for people)."""
        wait, timeout = body.get("wait", False), body.get("timeout")
        if not isinstance(wait, bool):
            raise wire_error(ErrorCode.BAD_ARGUMENTS, "'wait' must be true or false")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0
        ):
            raise wire_error(ErrorCode.BAD_ARGUMENTS, "'timeout' must be a number of seconds")
        new = self.read()
        change = diff(self.specs, new)
        self.master.log("reload-config: " + ("; ".join(change.lines()) or "no pools"), level=20)
        self.apply(change, new)
        result = {**change.as_dict(), "lines": change.lines()}
        if wait:
            result["started"] = self.wait_started(change, timeout)
        return result

    def read(self) -> list[PoolSpec]:
        """The file again, checked whole (a bad one changes nothing: BAD_ARGUMENTS)."""
        from busd.daemon.flags import build_parser

        try:
            config = load(self.opts.config, build_parser())
            found = specs(config, self.opts)
        except ConfigError as exc:
            raise wire_error(ErrorCode.BAD_ARGUMENTS, str(exc)) from None
        if not found:
            raise wire_error(
                ErrorCode.BAD_ARGUMENTS,
                f"{self.opts.config}: no [pools.NAME] any more; the running pools are kept",
            )
        return found

    def apply(self, change: ConfigDiff, new: list[PoolSpec]) -> None:
        """Removed, then changed, then in place, then added (each in its order)."""
        by_name = {spec.name: spec for spec in new}
        old_levels = levels(self.specs)
        for name in sorted(change.removed, key=lambda n: -old_levels[n]):
            self.poolset.dispose(self.pools.remove(name))
        for name in change.changed:
            pool = self.poolset.make(by_name[name])
            pool.gives_up_at_boot = False  # busd runs: a pool that cannot boot never ends it
            self.poolset.dispose(self.pools.replace(pool))
        for name in {*change.resized, *change.updated}:
            spec = by_name[name]
            pool = self.pools.pools[name]
            pool.reconfigure(pool_config(spec, self.poolset.logs, self.master.name, True))
            if name in change.resized:
                pool.scale(spec.workers)
        self.pools.reorder([spec.name for spec in new if spec.name not in change.added])
        for name in change.added:
            pool = self.poolset.make(by_name[name])
            pool.gives_up_at_boot = False
            self.pools.add(pool)
        self.pools.reorder([spec.name for spec in new])
        self.pools.refresh()
        self.specs = new

    def wait_started(self, change: ConfigDiff, timeout: float | None) -> bool:
        """Until every pool added or changed is STARTED (reaping and starting meanwhile)."""
        names = [*change.added, *change.changed, *change.resized]
        wanted = [self.pools.pools[n] for n in names if n in self.pools.pools]
        limit = (
            timeout
            if timeout is not None
            else max([p.config.startup_timeout for p in wanted], default=0.0)
        )
        deadline = time.monotonic() + limit
        while not all(p.all_started() for p in wanted):
            if time.monotonic() >= deadline:
                return False
            # A pause that reaps, probes and marks the workers started (the upkeep).
            self.master.wait_for_clients(lambda clients: False, 0.05)
            for pool in wanted:
                pool.drain()
            self.pools.advance()
        return True


def install_reload_config(
    master: MasterBus, pools: Pools, poolset: PoolSet, opts: argparse.Namespace
) -> ConfigReloader:
    """Add ``reload-config`` to the master."""
    reloader = ConfigReloader(master, pools, poolset, opts)
    master.add_command("reload-config", reloader.command)
    return reloader


__all__ = ["ConfigReloader", "install_reload_config"]
