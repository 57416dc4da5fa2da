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
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any, NoReturn

from busd import __version__
from busd.core import endpoints as ep
from busd.core.bus import Bus
from busd.core.errors import AlreadyRunning, BusError, ChannelFailures
from busd.daemon import options
from busd.daemon.fatal import end_on_thread_death
from busd.daemon.flags import LOG_FORMATS, build_parser, parse
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
from busd.daemon.signals import SIGNAL_CHANNELS, MasterSignals, install_signals
from busd.master.bus import MasterBus, refuse_if_running
from busd.master.fdbudget import FdBudgetExceeded, raise_nofile
from busd.master.hosts import HostTable
from busd.plugins import Daemonizer, PIDFile, SdNotify
from busd.plugins.privileges import environment_for
from busd.pool.exits import EX_BOOT
from busd.pool.forkserver import ForkServer
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
from busd.pool.logdir import LogDir
from busd.pool.orphans import reap_orphans
from busd.pool.pool import Pool, PoolConfig
from busd.pool.proctitle import set_title
from busd.pool.recycle import RecycleConfig
from busd.pool.spawn import ExecSpawner, Spawner, target_argv

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
    except (ListenError, PluginError, UsageError) as exc:
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
    parts = Parts()
    try:
        parts.pidfile = write_pidfile(opts.pidfile)
    except (OSError, BusError) as exc:
        log.error("could not start: %s", exc)
        return EX_SOFTWARE
    owned: Path | None = None
    by_address = listening_sockets(opts.listen)
    listeners = list(by_address.values())
    try:
        make_log_dir(opts)
        switch_user(opts)
        owned = make_runtime_dir(runtime, switched=opts.uid is not None)
        reap_orphans(owned)
        logs = open_logs(opts)
        return run_pool(opts, command, owned, by_address, logs, systemd, parts)
    finally:
        # Every way out, a failed start included: nothing left listening, no
        # socket file left for busctl to find ("nothing listens" is not "no busd").
        parts.close()
        if owned is not None:
            remove_sockets(owned, listeners)
        else:
            close_listeners(listeners)


class Parts:
    """What run_pool made so far, closed in reverse on the way out (each once)."""

    def __init__(self) -> None:
        self.pidfile: PIDFile | None = None
        self.forkserver: ForkServer | None = None
        self.master: MasterBus | None = None
        self.pool: Pool | None = None

    def close_pool(self) -> None:
        """Close the pool (its supervisor ends: what it knows is final)."""
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.close()

    def close(self) -> None:
        """Close the master (its exit stops the workers), the pool, the fork server; the
        PID file goes last."""
        master, self.master = self.master, None
        if master is not None:
            master.close()
        self.close_pool()
        forkserver, self.forkserver = self.forkserver, None
        if forkserver is not None:
            forkserver.close()
        pidfile, self.pidfile = self.pidfile, None
        if pidfile is not None:
            remove_pidfile(pidfile)


def run_pool(
    opts: argparse.Namespace,
    command: list[str],
    runtime: Path,
    by_address: dict[str, Any],
    logs: LogDir | None,
    systemd: dict[str, str],
    parts: Parts,
) -> int:
    """Make the fork server, master and pool (into ``parts``), start, block; the status."""
    listeners = list(by_address.values())
    # Before the master has a thread or a socket (and after the listening
    # sockets, which it passes on): the fork server forks clean.
    forkserver = parts.forkserver = (
        ForkServer(opts.target, preload=opts.preload, name=opts.name or ep.DEFAULT_NAME)
        if opts.target and opts.spawn == "fork"
        else None
    )
    master = parts.master = make_master(opts, runtime, listeners)
    spawner = make_spawner(
        opts,
        master,
        forkserver,
        command or target_argv(opts.target),
        worker_env(opts, master, listeners),
    )
    pool = parts.pool = make_pool(opts, master, spawner, runtime, logs)
    end_on_thread_death(lambda: die_now(pool, runtime, listeners))
    if logs is not None:
        logs.install(master)
    signals = install_plugins(master, pool, opts, systemd)
    prepare_restart(master, by_address, forkserver)
    install_user_plugins(master, opts.plugin)
    failed = serve(opts, master, signals, listeners, command, pool)
    if failed is not None:
        return failed
    parts.close_pool()
    if pool.boot_failure is not None:
        log.critical("worker failed to boot: %s", pool.boot_failure)
        return EX_BOOT
    return EX_OK


def make_master(opts: argparse.Namespace, runtime: Path, listeners: list[Any]) -> MasterBus:
    """The master bus, on the runtime dir's endpoints and --bind's."""
    master = MasterBus(
        name=opts.name,
        runtime_dir=runtime,
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
    master.add_status_hook(lambda doc: doc.update(listen=[describe(s) for s in listeners]))
    HostTable(master).install()
    return master


def make_spawner(
    opts: argparse.Namespace,
    master: MasterBus,
    forkserver: ForkServer | None,
    argv: list[str],
    env: dict[str, str],
) -> Spawner:
    """The fork server (told where its replacements go), else an exec spawner of ``argv``."""
    if forkserver is None:
        return ExecSpawner(argv, env)
    forkserver.env = env
    forkserver.on_replaced = lambda old, new, how: master.event(
        "forkserver_replaced", {"old": old, "pid": new, "how": how}
    )
    master.add_status_hook(
        lambda status: status.update(forkserver=forkserver.statistics().as_dict())
    )
    return forkserver


def make_pool(
    opts: argparse.Namespace,
    master: MasterBus,
    spawner: Spawner,
    runtime: Path,
    logs: LogDir | None,
) -> Pool:
    """The pool, its size checked against the open-file limit, subscribed to the master."""
    pool = Pool(
        master,
        spawner,
        PoolConfig(
            size=opts.workers,
            graceful_timeout=opts.graceful_timeout,
            worker_timeout=opts.worker_timeout,
            startup_timeout=opts.startup_timeout,
            reload=opts.reload,
            backoff=opts.backoff,
            backoff_max=opts.backoff_max,
            flap_limit=opts.flap_limit,
            flap_window=opts.flap_window,
            recycle=RecycleConfig(
                max_age=opts.max_age,
                jitter=opts.recycle_jitter,
                max_rss=int(opts.max_rss * (1 << 20)) if opts.max_rss else None,
            ),
            log_dir=str(logs.directory) if logs else None,
            name=master.name,
        ),
        pids_file=runtime / "workers.pids",
    )
    try:
        pool.budget.check(opts.workers, 0, f"-w {opts.workers}")
    except FdBudgetExceeded:
        pool.close()
        raise
    pool.subscribe()
    return pool


def serve(
    opts: argparse.Namespace,
    master: MasterBus,
    signals: MasterSignals,
    listeners: list[Any],
    command: list[str],
    pool: Pool,
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
    log_summary(opts, master, listeners, command)
    signals.wait_for_exit()  # the main thread: signals reach the command queue at once
    master.block()
    if host is not None:
        host.depart("this host's busd exits")
    return None


def join(master: MasterBus, pool: Pool, opts: argparse.Namespace) -> Any:
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
    opts: argparse.Namespace, master: MasterBus, listeners: list[Any], command: list[str]
) -> None:
    """One line after start: what runs, how many, where to reach it."""
    what = " ".join(command) if command else opts.target
    pool = (
        f"{opts.workers} worker{'s' if opts.workers != 1 else ''} of {what} "
        f"(spawn {'exec' if command else opts.spawn}{', preload' if opts.preload else ''}, "
        f"reload {opts.reload})"
        if opts.workers
        else "no workers"
    )
    listen = ", ".join(describe(s) for s in listeners) or "none"
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
        pool,
        ", ".join(master.hub.ctl_endpoints),
        ", ".join(master.hub.pub_endpoints),
        listen,
    )


def prepare_restart(
    master: MasterBus, sockets: dict[str, Any], forkserver: ForkServer | None
) -> None:
    """On ``restart``: end the fork server (the new master makes its own; this one
    would linger, a zombie nobody reaps) and hand the listening sockets on."""
    if sockets:
        # Every other descriptor is close-on-exec already (PEP 446); these must live on.
        master.max_cloexec_files = None

    def before_exec() -> None:
        if not master.execv:
            return
        if forkserver is not None:
            forkserver.close()
        if sockets:
            os.environ[RESTART_ENV] = restart_env(sockets)

    master.subscribe("exit", before_exec, priority=100)


def worker_env(opts: argparse.Namespace, master: MasterBus, listeners: list[Any]) -> dict[str, str]:
    """What a worker needs to find its master and its listening sockets."""
    return {
        **os.environ,
        "BUSD_NAME": master.name,
        "BUSD_RUNTIME_DIR": str(master.runtime_dir),
        "BUSD_PUB_ENDPOINT": master.hub.pub_endpoints[0],
        "BUSD_CTL_ENDPOINT": master.hub.ctl_endpoints[0],
        **dict(item.split("=", 1) for item in opts.env),
        "BUSD_LOG_LEVEL": opts.log_level,
        "BUSD_LOG_FORMAT": opts.log_format,
        "BUSD_MASTER_TIMEOUT": str(opts.master_timeout),
        "BUSD_GRACEFUL_TIMEOUT": str(opts.graceful_timeout),
        "BUSD_LISTEN_FDS": ",".join(str(s.fileno()) for s in listeners),
    }


def take_systemd_env() -> dict[str, str]:
    """Remove systemd's notification variables from the environment and return them.

    They are busd's alone (``NotifyAccess=main``): no worker may inherit them.
    """
    return {key: os.environ.pop(key) for key in SYSTEMD_ONLY if key in os.environ}


def install_plugins(
    master: MasterBus, pool: Pool, opts: argparse.Namespace, systemd: dict[str, str] | None = None
) -> MasterSignals:
    """Signals and systemd notification (``systemd``: its variables)."""
    SdNotify(
        master,
        environ=systemd,
        wait_ready=lambda: wait_workers_started(master, pool, opts.startup_timeout),
    ).subscribe()
    return install_signals(master, pool, reopen_logs=bool(opts.log_dir))


def wait_workers_started(master: MasterBus, pool: Pool, timeout: float) -> bool:
    """Wait until every worker the pool has now is STARTED (False past ``timeout``)."""
    pids = {row["pid"] for row in pool.workers() if row["pid"] is not None}
    return master.wait_for_clients(
        lambda clients: pids <= {c.pid for c in clients if c.state == "STARTED"}, timeout
    )


def die_now(pool: Pool, runtime: Path, listeners: list[socket.socket]) -> NoReturn:
    """A thread of busd's died (busd.daemon.fatal): end every worker, remove sockets, exit 70."""
    try:
        pool.kill_all()
        remove_sockets(runtime, listeners)
    finally:
        os._exit(EX_SOFTWARE)  # a process main may end the process; the library never does


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
