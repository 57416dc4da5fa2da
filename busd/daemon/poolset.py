"""Pools made from their specs: the fork server, the spawner, the sockets, the Pool.

::

    main thread, before the master has a thread:   prepare(spec) per pool: its listening
                                                     sockets, its fork server (forked clean)
    main thread, once the master exists:            build(spec) -> Pool, added to Pools
    [busd-commands], reload-config:                  prepare + build of a new or changed
                                                     pool (a fork server then starts as a
                                                     fresh interpreter); dispose(old pool)

A pool's listening sockets are the master's (``listen``): made once, kept
while a pool names them, inherited by its workers (``BUSD_LISTEN_FDS``) and
handed to the next master on ``restart``.  systemd's sockets (``LISTEN_FDS``)
go to the first pool.  Each pool that forks a TARGET has its own fork server
(its own preload).
"""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from busd.core import endpoints as ep
from busd.daemon.config import PoolSpec
from busd.master.bus import MasterBus
from busd.pool.forkserver import ForkServer
from busd.pool.listen import make_listener
from busd.pool.logdir import LogDir
from busd.pool.pool import Pool, PoolConfig
from busd.pool.recycle import RecycleConfig
from busd.pool.spawn import ExecSpawner, Spawner, target_argv


@dataclass
class Parts:
    """What one pool has beside its Pool: a fork server, its listening sockets."""

    forkserver: ForkServer | None = None
    sockets: list[socket.socket] = field(default_factory=list)


class PoolSet:
    """Makes and disposes of the pools of one master (main thread, then command thread)."""

    def __init__(
        self,
        opts: argparse.Namespace,
        runtime: Path,
        sockets: dict[str, socket.socket],
        logs: LogDir | None,
        from_file: bool,
    ) -> None:
        self.opts = opts
        self.runtime = runtime
        #: Every listening socket by address (systemd's as ``systemd:NAME``); shared with
        #: the restart hand-over, so a socket made later is handed over too.
        self.sockets = sockets
        self.logs = logs
        self.from_file = from_file
        self.master: MasterBus | None = None
        self.parts: dict[Pool, Parts] = {}
        self._first = True

    # -- making ------------------------------------------------------------------------

    def prepare(self, spec: PoolSpec, parts: Parts | None = None) -> Parts:
        """Its sockets and fork server (before the master's threads, when it can)."""
        parts = Parts() if parts is None else parts
        for address in spec.listen:
            if address not in self.sockets:
                self.sockets[address] = make_listener(address)
            parts.sockets.append(self.sockets[address])
        if self._first:  # systemd's sockets: the first pool's
            self._first = False
            parts.sockets[:0] = [s for a, s in self.sockets.items() if a.startswith("systemd:")]
        if spec.target and spec.spawn == "fork":
            parts.forkserver = ForkServer(
                spec.target,
                preload=spec.preload,
                name=self.opts.name or ep.DEFAULT_NAME,
                start=False,
            )
        return parts

    def build(self, spec: PoolSpec, parts: Parts) -> Pool:
        """The Pool of ``spec`` (its fork server started), for ``self.master``."""
        master = self.master
        assert master is not None, "build() needs the master"
        env = {
            **self.base_env(master, dict(spec.env)),
            "BUSD_LISTEN_FDS": ",".join(str(s.fileno()) for s in parts.sockets),
        }
        spawner: Spawner
        if parts.forkserver is not None:
            parts.forkserver.env = env
            named = {"pool": spec.name} if self.from_file else {}
            parts.forkserver.on_replaced = lambda old, new, how: master.event(
                "forkserver_replaced", {"old": old, "pid": new, "how": how, **named}
            )
            parts.forkserver.start()
            spawner = parts.forkserver
        else:
            argv = list(spec.command) if spec.command else target_argv(spec.target or "")
            spawner = ExecSpawner(argv, env, session=not spec.bus)
        pool = Pool(
            master,
            spawner,
            pool_config(spec, self.logs, master.name, self.from_file),
            pids_file=self.runtime / pids_file(spec.name, self.from_file),
        )
        try:
            pool.budget.check(
                spec.workers,
                0,
                f"pool {spec.name}: {spec.workers} workers"
                if self.from_file
                else f"-w {spec.workers}",
            )
        except Exception:
            pool.close()
            raise
        self.parts[pool] = parts
        return pool

    def make(self, spec: PoolSpec) -> Pool:
        """prepare + build, at once (the master runs: a fork server execs a fresh one)."""
        parts = self.prepare(spec)
        try:
            return self.build(spec, parts)
        except BaseException:
            self.close_parts(parts)
            raise

    def base_env(self, master: MasterBus, own: dict[str, str]) -> dict[str, str]:
        """What every worker needs to find its master; ``--env``, then the pool's ``own``."""
        opts = self.opts
        return {
            **os.environ,
            "BUSD_NAME": master.name,
            "BUSD_RUNTIME_DIR": str(master.runtime_dir),
            "BUSD_PUB_ENDPOINT": master.hub.pub_endpoints[0],
            "BUSD_CTL_ENDPOINT": master.hub.ctl_endpoints[0],
            **dict(item.split("=", 1) for item in opts.env),
            **own,
            "BUSD_LOG_LEVEL": opts.log_level,
            "BUSD_LOG_FORMAT": opts.log_format,
            "BUSD_MASTER_TIMEOUT": str(opts.master_timeout),
            "BUSD_GRACEFUL_TIMEOUT": str(opts.graceful_timeout),
        }

    # -- disposing ----------------------------------------------------------------------

    def dispose(self, pool: Pool, keep: set[str] | None = None) -> None:
        """Close a pool taken out (its supervisor, fork server, and the sockets no pool
        left names, unless in ``keep``)."""
        pool.close()
        parts = self.parts.pop(pool, None)
        if parts is not None:
            self.close_parts(parts, keep)

    def close_parts(self, parts: Parts, keep: set[str] | None = None) -> None:
        """Close a fork server, and the sockets no pool names any more."""
        if parts.forkserver is not None:
            parts.forkserver.close()
        used = {id(s) for other in self.parts.values() for s in other.sockets}
        for address, sock in list(self.sockets.items()):
            if sock in parts.sockets and id(sock) not in used and address not in (keep or ()):
                del self.sockets[address]
                sock.close()

    def forkservers(self) -> list[ForkServer]:
        """Every pool's fork server."""
        return [p.forkserver for p in self.parts.values() if p.forkserver is not None]

    def listeners(self) -> list[socket.socket]:
        """Every listening socket."""
        return list(self.sockets.values())


def pool_config(spec: PoolSpec, logs: LogDir | None, name: str, from_file: bool) -> PoolConfig:
    """A spec as the pool takes it."""
    return PoolConfig(
        size=spec.workers,
        graceful_timeout=spec.graceful_timeout,
        worker_timeout=spec.worker_timeout,
        startup_timeout=spec.startup_timeout,
        reload=spec.reload,
        backoff=spec.backoff,
        backoff_max=spec.backoff_max,
        flap_limit=spec.flap_limit,
        flap_window=spec.flap_window,
        recycle=RecycleConfig(
            max_age=spec.max_age,
            jitter=spec.recycle_jitter,
            max_rss=int(spec.max_rss * (1 << 20)) if spec.max_rss else None,
        ),
        log_dir=str(logs.directory) if logs else None,
        name=name,
        pool=spec.name,
        target=spec.target,
        command=spec.command,
        bus=spec.bus,
        ready=spec.ready,
        reload_signal=spec.reload_signal,
        stop_signal=spec.stop_signal,
        after=spec.after,
        from_file=from_file,
    )


def pids_file(pool: str, from_file: bool) -> str:
    """``workers.pids`` (the command line's pool), ``workers-POOL.pids`` (a file's)."""
    return f"workers-{pool}.pids" if from_file else "workers.pids"


__all__ = ["Parts", "PoolSet", "pids_file", "pool_config"]
