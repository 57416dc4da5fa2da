"""The ``busd`` command: a master with a pool of workers (wiring only).

    busd [--name N] [--runtime-dir D] [--bind EP]... [-w N] [TARGET | -- CMD ARGS...]

Every flag can also come from a ``BUSD_*`` environment variable named after
it (``--worker-timeout`` from ``BUSD_WORKER_TIMEOUT``); the command line wins.
Exit status: 0 after a clean exit, 1 when another busd of that name is
running, 2 for bad usage, 3 when the workers failed to boot (no worker ever
started and one failed twice in a row), 70 after an unrecoverable error.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

from busd import __version__
from busd.core import endpoints as ep
from busd.core.bus import Bus
from busd.core.errors import AlreadyRunning, BusError, ChannelFailures
from busd.core.wire import ErrorCode, wire_error
from busd.daemon import options
from busd.daemon.config import PoolSpec, command_line_spec
from busd.daemon.fatal import end_on_thread_death
from busd.daemon.flags import LOG_FORMATS, build_parser, parse
from busd.daemon.poolset import PoolSet
from busd.daemon.privileged import (
    UsageError,
    close_listeners,
    make_log_dir,
    make_runtime_dir,
    open_logs,
    remove_pidfile,
    switch_user,
    write_pidfile,
)
from busd.daemon.reconfig import install_reload_config
from busd.daemon.signals import SIGNAL_CHANNELS, MasterSignals, install_signals
from busd.master.bus import MasterBus, refuse_if_running
from busd.master.clients import ClientInfo
from busd.master.fdbudget import raise_nofile
from busd.master.hosts import HostTable
from busd.metrics.install import Metrics, MetricsError
from busd.plugins import Daemonizer, PIDFile, SdNotify
from busd.plugins.privileges import environment_for
from busd.pool.exits import EX_BOOT
from busd.pool.hooks import PluginError
from busd.pool.hooks import install_plugins as install_user_plugins
from busd.pool.listen import (
    RESTART_ENV,
    ListenError,
    describe,
    listening_sockets,
    remove_sockets,
    restart_env,
)
from busd.pool.orphans import reap_orphans
from busd.pool.pools import Pools
from busd.pool.proctitle import set_title

log = logging.getLogger("busd.main")

EX_OK, EX_RUNNING, EX_USAGE, EX_SOFTWARE = 0, 1, 2, 70
#: What systemd tells busd, never a worker.
SYSTEMD_ONLY = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
__all__ = ["build_parser", "main", "parse"]


def main(argv: list[str] | None = None) -> int:
    """Run a master until it exits; returns the exit status."""
    try:
        opts, command = parse(sys.argv[1:] if argv is None else argv)
        enter_directory(opts)
    except SystemExit as exc:
        return int(exc.code or 0)
    set_title("master", opts.name or ep.DEFAULT_NAME)
    logging.basicConfig(
        level=opts.log_level, format=LOG_FORMATS[opts.log_format], datefmt=DATE_FORMAT
    )
    try:
        return run(opts, command)
    except (ListenError, MetricsError, PluginError, UsageError) as exc:
        print(f"busd: {exc}", file=sys.stderr)
        return EX_USAGE
    except BusError as exc:
        print(f"busd: {exc}", file=sys.stderr)
        return EX_RUNNING if isinstance(exc, AlreadyRunning) else EX_SOFTWARE
    except OSError as exc:
        print(f"busd: {exc}", file=sys.stderr)
        return EX_SOFTWARE


def enter_directory(opts: argparse.Namespace) -> None:
    """``--chdir``, then the import path: ``--pythonpath``'s dirs, then the working dir.

    As gunicorn does, TARGET and ``--plugin`` beside the working directory
    import, however busd was started (its console script puts its own bin
    dir first, not the working dir); ``PYTHONPATH`` carries the same to
    every fork server and worker busd starts.
    """
    if opts.chdir:
        try:
            os.chdir(opts.chdir)
        except OSError as exc:
            options.die(f"--chdir {opts.chdir}: {exc.strerror}")
    first = [*opts.pythonpath, os.getcwd()]
    for path in reversed(first):
        while path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*first, *inherited]))


def run(opts: argparse.Namespace, command: list[str]) -> int:
    """Daemonize if asked, check for a live master, do what needs root, switch user
    (``--user``), then make the runtime dir, master and pool, and block.

    As root with ``--user``: the PID file and the ``--listen`` sockets (low
    ports) are made as root; everything after (the runtime dir, the log
    files, the fork server, the master, every worker) as the new user, in
    the dir that user has by default (``/tmp/busd-UID/NAME``) unless
    ``--runtime-dir`` names one.
    """
    if opts.daemon:
        out = os.path.abspath(opts.log_file) if opts.log_file else "/dev/null"
        Daemonizer(Bus(), stdout=out, stderr=out).start()
        if opts.chdir:
            os.chdir(opts.chdir)  # the daemon's chdir / undone: the workers run there
    raise_nofile()  # a pool needs descriptors; the hard limit is the operator's word
    systemd = take_systemd_env()  # before any worker or fork server can inherit it
    if opts.uid is not None:
        environment_for(opts.uid, os.environ)  # the new user's HOME, not root's XDG dir
    runtime = (
        Path(opts.runtime_dir) if opts.runtime_dir else ep.runtime_dir(opts.name, uid=opts.uid)
    )
    refuse_if_running(ep.default_endpoints(runtime).ctl)
    if not opts.target and not command:
        opts.workers = 0  # a master alone: clients attach by themselves
    specs = opts.pool_specs or [command_line_spec(opts, command)]
    parts = Parts()
    try:
        parts.pidfile = write_pidfile(opts.pidfile)
    except (OSError, BusError) as exc:
        log.error("could not start: %s", exc)
        return EX_SOFTWARE
    owned: Path | None = None
    by_address = listening_sockets(list(dict.fromkeys(a for s in specs for a in s.listen)))
    try:
        make_log_dir(opts)
        switch_user(opts)
        owned = make_runtime_dir(runtime, switched=opts.uid is not None)
        reap_orphans(owned)
        logs = open_logs(opts)
        poolset = PoolSet(opts, owned, by_address, logs, from_file=bool(opts.pool_specs))
        return run_pools(opts, command, specs, poolset, systemd, parts)
    finally:
        # Every way out, a failed start included: nothing left listening, no
        # socket file left for busctl to find ("nothing listens" is not "no busd").
        parts.close()
        listeners = list(by_address.values())  # those made since by a reload-config too
        if owned is not None:
            remove_sockets(owned, listeners)
        else:
            close_listeners(listeners)


class Parts:
    """What run_pools made so far, closed in reverse on the way out (each once)."""

    def __init__(self) -> None:
        self.pidfile: PIDFile | None = None
        self.poolset: PoolSet | None = None
        self.master: MasterBus | None = None
        self.metrics: Metrics | None = None
        self.pools: Pools | None = None

    def close_pools(self) -> None:
        """Close the pools (their supervisors end: what they know is final)."""
        pools, self.pools = self.pools, None
        if pools is not None:
            pools.close()

    def close(self) -> None:
        """Close the master (its exit stops the workers), the pools, the fork servers;
        the PID file goes last."""
        master, self.master = self.master, None
        if master is not None:
            master.close()
        metrics, self.metrics = self.metrics, None
        if metrics is not None:
            metrics.close()
        self.close_pools()
        poolset, self.poolset = self.poolset, None
        if poolset is not None:
            for forkserver in poolset.forkservers():
                forkserver.close()
        pidfile, self.pidfile = self.pidfile, None
        if pidfile is not None:
            remove_pidfile(pidfile)


def run_pools(
    opts: argparse.Namespace,
    command: list[str],
    specs: list[PoolSpec],
    poolset: PoolSet,
    systemd: dict[str, str],
    parts: Parts,
) -> int:
    """Make the fork servers, master and pools (into ``parts``), start, block; the status."""
    parts.poolset = poolset
    # Before the master has a thread or a socket (and after the listening
    # sockets, which they pass on): the fork servers fork clean.
    prepared = [(spec, poolset.prepare(spec)) for spec in specs]
    master = parts.master = make_master(opts, poolset)
    parts.metrics = Metrics(master, opts.metrics)
    poolset.master = master
    pools = parts.pools = Pools(master)
    for spec, made in prepared:
        pools.add(poolset.build(spec, made))
    pools.subscribe()
    forkservers = poolset.forkservers()
    if forkservers:
        master.add_status_hook(
            lambda status: status.update(forkserver=forkservers[0].statistics().as_dict())
        )
    if opts.config and opts.pool_specs:
        install_reload_config(master, pools, poolset, opts)
    else:
        master.add_command("reload-config", no_config_file)
    end_on_thread_death(lambda: die_now(pools, poolset))
    if poolset.logs is not None:
        poolset.logs.install(master)
    signals = install_plugins(master, pools, opts, systemd)
    prepare_restart(master, poolset)
    install_user_plugins(master, opts.plugin)
    failed = serve(opts, master, signals, poolset, command, pools)
    if failed is not None:
        return failed
    boot_failure = pools.boot_failure
    parts.close_pools()
    if boot_failure is not None:
        log.critical("worker failed to boot: %s", boot_failure)
        return EX_BOOT
    return EX_OK


def no_config_file(body: dict[str, Any]) -> Any:
    """``reload-config`` of a busd started from its command line alone."""
    raise wire_error(
        ErrorCode.BAD_ARGUMENTS,
        "this busd was started without --config (or its file has no pools): "
        "there is no file to read again",
    )


def make_master(opts: argparse.Namespace, poolset: PoolSet) -> MasterBus:
    """The master bus, on the runtime dir's endpoints and --bind's."""
    master = MasterBus(
        name=opts.name,
        runtime_dir=poolset.runtime,
        bind=opts.bind,
        heartbeat=opts.heartbeat,
        insecure=opts.insecure,
        # Joined, the secret is this host's client key (and, with
        # --authorized-keys, also that of its own tcp endpoints).
        curve_secret=opts.curve_secret if opts.authorized_keys or not opts.join else None,
        authorized_keys=opts.authorized_keys,
        readonly_keys=opts.readonly_keys,
        # An exit serves clients behind for as long as workers get to stop.
        drain_timeout=opts.graceful_timeout,
        # Often enough that a hung worker is seen within its timeout.
        pong_interval=min(5 * opts.heartbeat, opts.worker_timeout / 3),
        no_relay=("log", "main", *SIGNAL_CHANNELS),
        check_running=False,
    )
    master.add_status_hook(
        lambda doc: doc.update(listen=[describe(s) for s in poolset.listeners()])
    )
    HostTable(master).install()
    return master


def serve(
    opts: argparse.Namespace,
    master: MasterBus,
    signals: MasterSignals,
    poolset: PoolSet,
    command: list[str],
    pool: Pools,
) -> int | None:
    """Start (or join), say so, block until the exit; EX_SOFTWARE if it could not start."""
    host = None
    try:
        if opts.join:
            host = join(master, pool, opts)
        else:
            master.start()
    except ChannelFailures as exc:
        log.error("could not start: %s", exc)
        return EX_SOFTWARE
    log_summary(opts, master, poolset, command, pool)
    # What the master made to start (modules, classes, its threads' state) lives as long
    # as it does: out of the collector's sight, a collection (a scrape's acks, a burst's
    # messages) looks only at what came since.  The workers do the same.
    gc.freeze()
    signals.wait_for_exit()  # the main thread: signals reach the command queue at once
    master.block()
    if host is not None:
        host.depart("this host's busd exits")
    return None


def join(master: MasterBus, pool: Pools, opts: argparse.Namespace) -> Any:
    """``--join``: follow the remote master (busd.hosts.join loads the client side)."""
    from busd.core.auth import client_keys
    from busd.hosts.join import join_master

    return join_master(
        master,
        pool,
        opts.join,
        curve=client_keys(opts.server_key, opts.curve_secret),
        wait_for_master=opts.wait_for_master,
        timeout=opts.startup_timeout,
        ack_timeout=opts.graceful_timeout + opts.startup_timeout,
    )


def log_summary(
    opts: argparse.Namespace,
    master: MasterBus,
    poolset: PoolSet,
    command: list[str],
    pools: Pools,
) -> None:
    """One line after start: what runs, how many, where to reach it."""
    if opts.pool_specs:
        what = "; ".join(
            f"pool {p.name}: {describe_pool(p.config.size, p.config.target, p.config.command)}"
            for p in pools.pools.values()
        )
    else:
        what = describe_pool(opts.workers, opts.target, command, opts)
    listen = ", ".join(describe(s) for s in poolset.listeners()) or "none"
    who = (
        f", uid {os.getuid()} gid {os.getgid()}"
        if opts.uid is not None or opts.gid is not None
        else ""
    )
    log.info(
        "busd %s (pid %d%s) %s: %s; control %s; pub %s; listen %s",
        __version__,
        os.getpid(),
        who,
        master.state.name,
        what,
        ", ".join(master.hub.ctl_endpoints),
        ", ".join(master.hub.pub_endpoints),
        listen,
    )


def describe_pool(
    workers: int,
    target: str | None,
    command: Sequence[str],
    opts: argparse.Namespace | None = None,
) -> str:
    """``N workers of WHAT (spawn ..., reload ...)``, or ``no workers``."""
    if not workers:
        return "no workers"
    what = " ".join(command) if command else target
    how = (
        f" (spawn {'exec' if command else opts.spawn}{', preload' if opts.preload else ''}, "
        f"reload {opts.reload})"
        if opts is not None
        else ""
    )
    return f"{workers} worker{'s' if workers != 1 else ''} of {what}{how}"


def prepare_restart(master: MasterBus, poolset: PoolSet) -> None:
    """On ``restart``: end the fork servers (the new master makes its own; these would
    linger, zombies nobody reaps) and hand the listening sockets on."""
    if poolset.sockets:
        # Every other descriptor is close-on-exec already (PEP 446); these must live on.
        master.max_cloexec_files = None

    def before_exec() -> None:
        if not master.execv:
            return
        for forkserver in poolset.forkservers():
            forkserver.close()
        if poolset.sockets:
            os.environ[RESTART_ENV] = restart_env(poolset.sockets)

    master.subscribe("exit", before_exec, priority=100)


def take_systemd_env() -> dict[str, str]:
    """Remove systemd's notification variables from the environment and return them.

    They are busd's alone (``NotifyAccess=main``): no worker may inherit them.
    """
    return {key: os.environ.pop(key) for key in SYSTEMD_ONLY if key in os.environ}


def install_plugins(
    master: MasterBus, pools: Pools, opts: argparse.Namespace, systemd: dict[str, str] | None = None
) -> MasterSignals:
    """Signals and systemd notification (``systemd``: its variables)."""
    SdNotify(
        master,
        environ=systemd,
        wait_ready=lambda: wait_workers_started(master, pools, opts.startup_timeout),
    ).subscribe()
    return install_signals(master, pools, reopen_logs=bool(opts.log_dir))


def wait_workers_started(master: MasterBus, pools: Pools, timeout: float) -> bool:
    """Wait until every worker of every pool is STARTED, the pools that start later
    included (False past ``timeout``)."""
    deadline = time.monotonic() + timeout
    wanted = sum(p.config.size for p in pools.pools.values())
    while time.monotonic() < deadline:
        rows = pools.workers()
        if len(rows) >= wanted and all(r.get("state") == "STARTED" for r in rows):
            return True
        waiting = {r["pid"] for r in rows if r.get("pid") and r.get("state") != "STARTED"}
        # Woken by a worker that starts; a program's readiness is looked at each 0.1 s.
        master.wait_for_clients(
            partial(_one_started, waiting), min(0.1, max(0.0, deadline - time.monotonic()))
        )
    return False


def _one_started(pids: set[int], clients: list[ClientInfo]) -> bool:
    return any(c.pid in pids and c.state == "STARTED" for c in clients)


def die_now(pools: Pools, poolset: PoolSet) -> NoReturn:
    """A thread of busd's died (busd.daemon.fatal): end every worker, remove sockets, exit 70."""
    try:
        pools.kill_all()
        remove_sockets(poolset.runtime, poolset.listeners())
    finally:
        os._exit(EX_SOFTWARE)  # a process main may end the process; the library never does


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
