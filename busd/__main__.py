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
import re
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from busd import __version__, options
from busd import endpoints as ep
from busd.bus import Bus
from busd.errors import AlreadyRunning, BusError, ChannelFailures
from busd.exits import EX_BOOT
from busd.fatal import end_on_thread_death
from busd.fdbudget import FdBudgetExceeded, raise_nofile
from busd.forkserver import ForkServer
from busd.hooks import PluginError
from busd.hooks import install_plugins as install_user_plugins
from busd.hosts import HostTable
from busd.listen import (
    RESTART_ENV,
    ListenError,
    describe,
    listening_sockets,
    remove_sockets,
    restart_env,
)
from busd.logdir import LogDir
from busd.master import MasterBus, refuse_if_running
from busd.options import OneLineParser, env_default
from busd.orphans import reap_orphans
from busd.plugins import Daemonizer, DropPrivileges, PIDFile, SdNotify, SignalHandler
from busd.pool import Pool, PoolConfig
from busd.recycle import RecycleConfig
from busd.spawn import ExecSpawner, Spawner, target_argv

log = logging.getLogger("busd.main")

EX_OK, EX_RUNNING, EX_USAGE, EX_SOFTWARE = 0, 1, 2, 70
#: What systemd tells busd, never a worker.
SYSTEMD_ONLY = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
#: The SignalHandler publishes each signal on a channel of its name: keep those local.
SIGNAL_CHANNELS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1", "SIGTTIN", "SIGTTOU")


def _env(name: str, default: Any = None) -> Any:
    return env_default(name.replace("-", "_"), default)


LOG_FORMATS = {
    # A timestamp on every line; "plain" for journald, which adds its own.
    "time": "%(asctime)s.%(msecs)03d busd [%(process)d] %(levelname)s %(name)s: %(message)s",
    "plain": "busd [%(process)d] %(levelname)s %(name)s: %(message)s",
}
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; defaults come from BUSD_* variables."""
    p = OneLineParser(
        prog="busd", description="Run a busd master with a pool of workers.",
        formatter_class=options.HelpFormatter,
        epilog="TARGET is pkg.module:function, called in each worker with its ClientBus; "
               "'-- CMD ARGS' runs a command in each worker instead (it calls "
               "busd.client.connect()). Every option also reads BUSD_<OPTION> "
               "(--worker-timeout: BUSD_WORKER_TIMEOUT); the command line wins. "
               f"Exit status: 0 clean exit; 1 another busd runs; 2 usage; {EX_BOOT} workers "
               "failed to boot; 70 an unrecoverable error.")
    add = p.add_argument
    add("--version", action="version", version=f"busd {__version__}")
    for group in (_where_options, _pool_options, _process_options, _security_options,
                  _recycle_options):
        group(add)
    add("target", nargs="?", type=options.target, default=_env("target"), metavar="TARGET",
        help="pkg.module:function (or asgi:/wsgi:pkg.module:app)")
    return p


Add = Callable[..., Any]


def _where_options(add: Add) -> None:
    """Where the master is found."""
    add("--name", default=_env("name"), help="master name (its runtime dir) [busd]")
    add("--runtime-dir", default=_env("runtime_dir"),
        help="where the ipc sockets live [$XDG_RUNTIME_DIR/busd/NAME or /tmp/busd-UID/NAME]")
    add("--bind", action="append", default=_split(_env("bind")), metavar="EP",
        help="also serve on this control endpoint, e.g. tcp://127.0.0.1:7000 (repeatable)")
    add("-w", "--workers", type=options.count, default=_env("workers", "1"), metavar="N",
        help="pool size")
    _timeouts(add)


def _timeouts(add: Add) -> None:
    """How long each thing may take."""
    add("--graceful-timeout", type=options.seconds, default=_env("graceful_timeout", "10"),
        metavar="S", help="how long a worker may take to stop before it is SIGKILLed")
    add("--heartbeat", type=options.seconds, default=_env("heartbeat", "1"), metavar="S",
        help="seconds between the master's heartbeats")
    add("--worker-timeout", type=options.seconds, default=_env("worker_timeout", "30"),
        metavar="S", help="a worker silent this long is killed and replaced")
    add("--master-timeout", type=options.seconds, default=_env("master_timeout", "30"),
        metavar="S", help="a worker whose master is silent this long exits (a local "
        "master's death is seen at once)")
    add("--startup-timeout", type=options.seconds, default=_env("startup_timeout", "30"),
        metavar="S", help="how long a new worker may take to join")


def _pool_options(add: Add) -> None:
    """How workers are made, reloaded and restarted."""
    add("--reload", choices=("inplace", "respawn"), default=_env("reload", "inplace"),
        help="graceful: workers reload in place, or new workers replace the old ones")
    add("--spawn", choices=("fork", "exec"), default=_env("spawn", "fork"),
        help="fork TARGET workers from a clean fork server, or exec a fresh interpreter "
             "for each")
    add("--preload", action="store_true", default=_flag(_env("preload")),
        help="import TARGET once in the fork server, not in each worker")
    add("--listen", action="append", type=options.listen_address, metavar="ADDRESS",
        default=_split(_env("listen")),
        help="a socket the master makes for the workers: tcp:HOST:PORT or unix:PATH "
             "(repeatable)")
    add("--backoff", type=options.non_negative_seconds, default=_env("backoff", "0.1"),
        metavar="S", help="first restart delay of a crashed worker, doubled each time")
    add("--backoff-max", type=options.seconds, default=_env("backoff_max", "10"),
        metavar="S", help="the longest restart delay")
    add("--flap-limit", type=options.count, default=_env("flap_limit", "5"), metavar="N",
        help="crashes within --flap-window after which a slot stops restarting")
    add("--flap-window", type=options.seconds, default=_env("flap_window", "60"),
        metavar="S", help="the window --flap-limit counts crashes in")


def _process_options(add: Add) -> None:
    """busd's own process: pid file, daemon, privileges, logs."""
    add("--pidfile", default=_env("pidfile"), metavar="FILE", help="write busd's pid here")
    add("--daemon", action="store_true", default=_flag(_env("daemon")),
        help="detach from the terminal (double fork)")
    add("--user", default=_env("user"), help="drop privileges to this user after binding")
    add("--group", default=_env("group"), help="drop privileges to this group after binding")
    add("--log-level", default=_env("log_level", "INFO"),
        choices=("DEBUG", "INFO", "WARNING", "ERROR"), type=str.upper,
        help="for busd and its workers")
    add("--log-format", default=_env("log_format", "time"), choices=tuple(LOG_FORMATS),
        help="time: a timestamp on every line; plain: none (journald adds its own)")
    add("--log-file", default=_env("log_file"), metavar="FILE",
        help="with --daemon: where output goes [/dev/null]")
    add("--log-dir", metavar="DIR", default=_env("log_dir"),
        help="each worker's output to DIR/<name>-worker-<id>.log, busd's to DIR/<name>.log; "
             "SIGUSR1 or busctl reopen-logs reopens them")


def _security_options(add: Add) -> None:
    """CURVE, keys, and a pool joined to a master elsewhere."""
    add("--insecure", action="store_true", default=_flag(_env("insecure")),
        help="allow plain TCP off loopback")
    add("--curve-secret", metavar="FILE", default=_env("curve_secret"),
        help="make every tcp --bind endpoint CURVE with this secret certificate (mode 0600)")
    add("--authorized-keys", metavar="DIR", default=_env("authorized_keys"),
        help="with --curve-secret: the public certificates (*.key) allowed in")
    add("--readonly-keys", metavar="DIR", default=_env("readonly_keys"),
        help="with --curve-secret: public certificates allowed to read only "
             "(status, workers, clients, ping, watch)")
    add("--join", metavar="tcp://HOST:PORT", default=_env("join"),
        help="run this pool on behalf of the master at HOST:PORT (its lifecycle follows it)")
    add("--server-key", metavar="FILE", default=_env("server_key"),
        help="with --join: the master's public certificate (CURVE)")
    add("--wait-for-master", action="store_true", default=_flag(_env("wait_for_master")),
        help="with --join: when the master is lost, stop the workers and wait for it "
             "(default: exit)")


def _recycle_options(add: Add) -> None:
    """Recycling, the workers' environment, master-side plugins."""
    add("--max-age", type=options.seconds, metavar="SECONDS", default=_env("max_age"),
        help="recycle a worker this long after it started (a new one first)")
    add("--max-rss", type=options.positive_number, metavar="MIB", default=_env("max_rss"),
        help="recycle a worker whose resident memory passes this (measured by busd)")
    add("--recycle-jitter", type=options.non_negative_seconds, metavar="SECONDS",
        default=_env("recycle_jitter", "0"),
        help="add up to this much, at random, to each worker's --max-age")
    add("--env", action="append", type=options.key_value, metavar="KEY=VALUE",
        default=(_env("env") or "").split(),
        help="set this in every worker's environment (repeatable; BUSD_ENV: space separated)")
    add("--plugin", action="append", type=options.target, metavar="pkg.mod:func",
        default=_split(_env("plugin")),
        help="call func(master_bus) before the master starts (repeatable)")


def _split(value: str | None) -> list[str]:
    return value.replace(",", " ").split() if value else []


def _flag(value: str | None) -> bool:
    return bool(value) and str(value).lower() not in ("0", "false", "no", "")


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Split off ``-- CMD ARGS`` and parse the rest."""
    command: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1:]
    parser = build_parser()
    options.check_env(parser)
    opts = parser.parse_args(argv)
    if command and opts.target:
        parser.error("give either TARGET or -- CMD, not both")
    if opts.preload and not opts.target:
        parser.error("--preload needs a TARGET (a command cannot be preloaded)")
    if opts.preload and opts.spawn == "exec":
        parser.error("--preload needs --spawn fork")
    if opts.join and not re.fullmatch(r"tcp://[^/]+:[0-9]+", opts.join):
        parser.error(f"--join is tcp://HOST:PORT (the master's control endpoint), "
                     f"not {opts.join!r}")
    if opts.wait_for_master and not opts.join:
        parser.error("--wait-for-master goes with --join")
    check_pool_flags(parser, opts)
    return opts, command


def check_pool_flags(parser: argparse.ArgumentParser, opts: argparse.Namespace) -> None:
    """Recycling limits and --env items (a usage error each)."""


def main(argv: list[str] | None = None) -> int:
    """Run a master until it exits; returns the exit status."""
    try:
        opts, command = parse(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    logging.basicConfig(level=opts.log_level, format=LOG_FORMATS[opts.log_format],
                        datefmt=DATE_FORMAT)
    try:
        return run(opts, command)
    except (ListenError, PluginError) as exc:
        print(f"busd: {exc}", file=sys.stderr)
        return EX_USAGE
    except BusError as exc:
        print(f"busd: {exc}", file=sys.stderr)
        return EX_RUNNING if isinstance(exc, AlreadyRunning) else EX_SOFTWARE
    except OSError as exc:
        print(f"busd: {exc}", file=sys.stderr)
        return EX_SOFTWARE


def run(opts: argparse.Namespace, command: list[str]) -> int:
    """Daemonize if asked, check for a live master, start master and pool, block."""
    if opts.daemon:
        out = os.path.abspath(opts.log_file) if opts.log_file else "/dev/null"
        Daemonizer(Bus(), stdout=out, stderr=out).start()
    logs = LogDir(opts.log_dir, opts.name or os.environ.get("BUSD_NAME") or ep.DEFAULT_NAME
                  ) if opts.log_dir else None
    if logs is not None:
        logs.redirect_master()
    raise_nofile()  # a pool needs descriptors; the hard limit is the operator's word
    systemd = take_systemd_env()  # before any worker or fork server can inherit it
    runtime = ep.ensure_runtime_dir(Path(opts.runtime_dir) if opts.runtime_dir
                                    else ep.runtime_dir(opts.name))
    refuse_if_running(ep.default_endpoints(runtime).ctl)
    reap_orphans(runtime)
    if not opts.target and not command:
        opts.workers = 0  # a master alone: clients attach by themselves
    by_address = listening_sockets(opts.listen)
    listeners = list(by_address.values())
    # Before the master has a thread or a socket (and after the listening
    # sockets, which it passes on): the fork server forks clean.
    forkserver = (ForkServer(opts.target, preload=opts.preload)
                  if opts.target and opts.spawn == "fork" else None)
    master = make_master(opts, runtime, listeners)
    spawner = make_spawner(opts, master, forkserver, command or target_argv(opts.target),
                           worker_env(opts, master, listeners))
    pool = make_pool(opts, master, spawner, runtime, logs)
    end_on_thread_death(lambda: die_now(pool, runtime, listeners))
    if logs is not None:
        logs.install(master)
    install_plugins(master, pool, opts, systemd)
    prepare_restart(master, by_address, forkserver)
    try:
        install_user_plugins(master, opts.plugin)
    except PluginError:
        master.close()
        pool.close()
        if forkserver is not None:
            forkserver.close()
        raise
    status = serve(opts, master, pool, listeners, command)
    if forkserver is not None:
        forkserver.close()
    remove_sockets(runtime, listeners)
    return status


def make_master(opts: argparse.Namespace, runtime: Path, listeners: list[Any]) -> MasterBus:
    """The master bus, on the runtime dir's endpoints and --bind's."""
    master = MasterBus(name=opts.name, runtime_dir=runtime, bind=opts.bind,
                       heartbeat=opts.heartbeat, insecure=opts.insecure,
                       # Joined, the secret is this host's client key (and, with
                       # --authorized-keys, also that of its own tcp endpoints).
                       curve_secret=opts.curve_secret
                       if opts.authorized_keys or not opts.join else None,
                       authorized_keys=opts.authorized_keys,
                       readonly_keys=opts.readonly_keys,
                       # Often enough that a hung worker is seen within its timeout.
                       pong_interval=min(5 * opts.heartbeat, opts.worker_timeout / 3),
                       no_relay=("log", "main", *SIGNAL_CHANNELS), check_running=False)
    master.status_hooks.append(lambda doc: doc.update(
        listen=[describe(s) for s in listeners]))
    HostTable(master).install()
    return master


def make_spawner(opts: argparse.Namespace, master: MasterBus, forkserver: ForkServer | None,
                 argv: list[str], env: dict[str, str]) -> Spawner:
    """The fork server (told where its replacements go), else an exec spawner of ``argv``."""
    if forkserver is None:
        return ExecSpawner(argv, env)
    forkserver.env = env
    forkserver.on_replaced = lambda old, new, how: master.event(
        "forkserver_replaced", {"old": old, "pid": new, "how": how})
    master.status_hooks.append(lambda status: status.update(
        forkserver=forkserver.statistics()))
    return forkserver


def make_pool(opts: argparse.Namespace, master: MasterBus, spawner: Spawner, runtime: Path,
              logs: LogDir | None) -> Pool:
    """The pool, its size checked against the open-file limit, subscribed to the master."""
    pool = Pool(master, spawner, PoolConfig(
        size=opts.workers, graceful_timeout=opts.graceful_timeout,
        worker_timeout=opts.worker_timeout, startup_timeout=opts.startup_timeout,
        reload=opts.reload, backoff=opts.backoff, backoff_max=opts.backoff_max,
        flap_limit=opts.flap_limit, flap_window=opts.flap_window,
        recycle=RecycleConfig(max_age=opts.max_age, jitter=opts.recycle_jitter,
                              max_rss=int(opts.max_rss * (1 << 20)) if opts.max_rss else None),
        log_dir=str(logs.directory) if logs else None, name=master.name),
        pids_file=runtime / "workers.pids")
    try:
        pool.budget.check(opts.workers, 0, f"-w {opts.workers}")
    except FdBudgetExceeded:
        master.close()
        pool.close()
        raise
    pool.subscribe()
    return pool


def serve(opts: argparse.Namespace, master: MasterBus, pool: Pool, listeners: list[Any],
          command: list[str]) -> int:
    """Start (or join), say so, block until the exit; the exit status."""
    host = None
    try:
        if opts.join:
            host = join(master, pool, opts)
        else:
            master.start()
    except ChannelFailures as exc:
        log.error("could not start: %s", exc)
        master.close()
        return EX_SOFTWARE
    except BusError:
        master.close()
        pool.close()
        raise
    log_summary(opts, master, listeners, command)
    master.block()
    if host is not None:
        host.depart("this host's busd exits")
    pool.close()
    if pool.boot_failure is not None:
        log.critical("worker failed to boot: %s", pool.boot_failure)
        return EX_BOOT
    return EX_OK



def join(master: MasterBus, pool: Pool, opts: argparse.Namespace) -> Any:
    """``--join``: follow the remote master (busd.join loads the client side)."""
    from busd.auth import client_keys
    from busd.join import join_master

    return join_master(master, pool, opts.join,
                       curve=client_keys(opts.server_key, opts.curve_secret),
                       wait_for_master=opts.wait_for_master, timeout=opts.startup_timeout,
                       ack_timeout=opts.graceful_timeout + opts.startup_timeout)



def log_summary(opts: argparse.Namespace, master: MasterBus, listeners: list[Any],
                command: list[str]) -> None:
    """One line after start: what runs, how many, where to reach it."""
    what = " ".join(command) if command else opts.target
    pool = (f"{opts.workers} worker{'s' if opts.workers != 1 else ''} of {what} "
            f"(spawn {'exec' if command else opts.spawn}{', preload' if opts.preload else ''}, "
            f"reload {opts.reload})" if opts.workers else "no workers")
    listen = ", ".join(describe(s) for s in listeners) or "none"
    log.info("busd %s (pid %d) %s: %s; control %s; pub %s; listen %s", __version__, os.getpid(),
             master.state.name, pool, ", ".join(master.hub.ctl_endpoints),
             ", ".join(master.hub.pub_endpoints), listen)



def prepare_restart(master: MasterBus, sockets: dict[str, Any],
                    forkserver: ForkServer | None) -> None:
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


def worker_env(opts: argparse.Namespace, master: MasterBus,
               listeners: list[Any]) -> dict[str, str]:
    """What a worker needs to find its master and its listening sockets."""
    return {**os.environ, "BUSD_NAME": master.name, "BUSD_RUNTIME_DIR": str(master.runtime_dir),
            "BUSD_PUB_ENDPOINT": master.hub.pub_endpoints[0],
            "BUSD_CTL_ENDPOINT": master.hub.ctl_endpoints[0],
            **dict(item.split("=", 1) for item in opts.env),
            "BUSD_LOG_LEVEL": opts.log_level, "BUSD_LOG_FORMAT": opts.log_format,
            "BUSD_MASTER_TIMEOUT": str(opts.master_timeout),
            "BUSD_GRACEFUL_TIMEOUT": str(opts.graceful_timeout),
            "BUSD_LISTEN_FDS": ",".join(str(s.fileno()) for s in listeners)}


def take_systemd_env() -> dict[str, str]:
    """Remove systemd's notification variables from the environment and return them.

    They are busd's alone (``NotifyAccess=main``): no worker may inherit them.
    """
    return {key: os.environ.pop(key) for key in SYSTEMD_ONLY if key in os.environ}


def install_plugins(master: MasterBus, pool: Pool, opts: argparse.Namespace,
                    systemd: dict[str, str] | None = None) -> None:
    """Signals, PID file, systemd notification (``systemd``: its variables), privileges."""
    if opts.pidfile:
        PIDFile(master, opts.pidfile).subscribe()
    SdNotify(master, environ=systemd, wait_ready=lambda: wait_workers_started(
        master, pool, opts.startup_timeout)).subscribe()
    if opts.user or opts.group:
        DropPrivileges(master, uid=opts.user, gid=opts.group).subscribe()
    actions = signal_actions(master, pool, reopen_logs=bool(opts.log_dir))
    handler = SignalHandler(master, handlers=actions)
    handler.subscribe()
    master.status_hooks.append(lambda status: status.update(signals=handler.statistics()))


def wait_workers_started(master: MasterBus, pool: Pool, timeout: float) -> bool:
    """Wait until every worker the pool has now is STARTED (False past ``timeout``)."""
    pids = {row["pid"] for row in pool.workers() if row["pid"] is not None}
    return master.hub.registry.wait_for(
        lambda clients: pids <= {c.pid for c in clients if c.state == "STARTED"}, timeout)


def die_now(pool: Pool, runtime: Path, listeners: list[socket.socket]) -> NoReturn:
    """A thread of busd's died (busd.fatal): end every worker, remove the sockets, exit 70."""
    try:
        pool.kill_all()
        remove_sockets(runtime, listeners)
    finally:
        os._exit(EX_SOFTWARE)  # a process main may end the process; the library never does


def signal_actions(master: MasterBus, pool: Pool, reopen_logs: bool = False
                   ) -> dict[str | int, Callable[[], object] | None]:
    """Each signal becomes a command in the master's queue, like busctl's.

    SIGUSR1 reopens the log files with ``--log-dir`` (gunicorn's USR1), else
    it is a graceful, as SIGHUP.
    """
    interrupts = [0]

    def on_interrupt() -> None:
        interrupts[0] += 1
        if interrupts[0] == 1:
            log.info("interrupted: exiting (interrupt again to force)")
            master.submit("exit")
            return
        log.warning("interrupted twice: killing every worker now")
        pool.kill_all()
        os._exit(EX_SOFTWARE)  # a process main may end the process; the library never does

    return {
        "SIGTERM": lambda: master.submit("exit"),
        "SIGINT": on_interrupt,
        "SIGHUP": lambda: master.submit("graceful"),
        "SIGUSR1": lambda: master.submit("reopen-logs" if reopen_logs else "graceful"),
        "SIGTTIN": lambda: master.submit("scale", n="+1"),
        "SIGTTOU": lambda: master.submit("scale", n="-1"),
    }


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
