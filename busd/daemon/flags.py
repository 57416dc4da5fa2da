"""The ``busd`` command line: its flags in groups, their ``BUSD_*`` defaults, and
the checks across flags (a usage error each: one line, exit status 2).

``busd --help`` shows the flags by what they are about::

    where busd is found   --name --runtime-dir --bind
    pool                  -w --spawn --preload --listen --env --backoff ...
    timeouts              --graceful-timeout --heartbeat --worker-timeout ...
    reload and recycle    --reload --max-age --max-rss --recycle-jitter
    logging               --log-level --log-format --log-file --log-dir
    security              --insecure --curve-secret --authorized-keys --readonly-keys
    hosts                 --join --server-key --wait-for-master
    process               --chdir --pythonpath --pidfile --daemon --user --group --plugin

Everything here is checked before busd makes a file, a socket or a process.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any

from busd import __version__
from busd.core import endpoints as ep
from busd.daemon import crosscheck, options
from busd.daemon.config import ConfigError, ConfigFile, load, specs
from busd.daemon.options import OneLineParser, env_default
from busd.metrics.install import NEEDS
from busd.metrics.install import available as metrics_available
from busd.pool.exits import EX_BOOT

LOG_FORMATS = {
    # A timestamp on every line; "plain" for journald, which adds its own.
    "time": "%(asctime)s.%(msecs)03d busd [%(process)d] %(levelname)s %(name)s: %(message)s",
    "plain": "busd [%(process)d] %(levelname)s %(name)s: %(message)s",
}

Add = Callable[..., Any]


def _env(name: str, default: Any = None) -> Any:
    return env_default(name.replace("-", "_"), default)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; defaults come from BUSD_* variables."""
    p = OneLineParser(
        prog="busd",
        description="Run a busd master with a pool of workers.",
        formatter_class=options.HelpFormatter,
        epilog="TARGET is pkg.module:function, called in each worker with its ClientBus; "
        "'-- CMD ARGS' runs a command in each worker instead (it calls "
        "busd.client.connect()). Every option also reads BUSD_<OPTION> "
        "(--worker-timeout: BUSD_WORKER_TIMEOUT); the command line wins. "
        f"Exit status: 0 clean exit; 1 another busd runs; 2 usage; {EX_BOOT} workers "
        "failed to boot; 70 an unrecoverable error.",
    )
    p.add_argument("--version", action="version", version=f"busd {__version__}")
    groups: list[tuple[str, str, Callable[[Add], None]]] = [
        ("where busd is found", "the runtime dir and the control endpoints", _where_options),
        ("pool", "how many workers, how they are made and restarted", _pool_options),
        ("timeouts", "how long each thing may take", _timeouts),
        (
            "reload and recycle",
            "graceful reloads, and workers replaced by age or memory",
            _recycle_options,
        ),
        ("logging", "what busd and its workers log, and where", _logging_options),
        ("security", "tcp endpoints: CURVE keys, or plain TCP", _security_options),
        ("hosts", "a pool on this host following a master on another", _host_options),
        (
            "process",
            "busd's own process: where it runs, what it imports, its duties",
            _process_options,
        ),
    ]
    for title, description, fill in groups:
        fill(p.add_argument_group(title, description).add_argument)
    p.add_argument(
        "target",
        nargs="?",
        type=options.target,
        default=_env("target"),
        metavar="TARGET",
        help="pkg.module:function (or asgi:/wsgi:pkg.module:app)",
    )
    return p


def _where_options(add: Add) -> None:
    add("--name", default=_env("name"), help="master name (its runtime dir) [busd]")
    add(
        "--runtime-dir",
        default=_env("runtime_dir"),
        help="where the ipc sockets live [$XDG_RUNTIME_DIR/busd/NAME or /tmp/busd-UID/NAME]",
    )
    add(
        "--bind",
        action="append",
        default=_split(_env("bind")),
        metavar="EP",
        help="also serve on this control endpoint (repeatable); tcp needs CURVE keys or --insecure",
    )


def _timeouts(add: Add) -> None:
    add(
        "--graceful-timeout",
        type=options.seconds,
        default=_env("graceful_timeout", "10"),
        metavar="S",
        help="how long a worker may take to stop before it is SIGKILLed",
    )
    add(
        "--heartbeat",
        type=options.seconds,
        default=_env("heartbeat", "1"),
        metavar="S",
        help="seconds between the master's heartbeats",
    )
    add(
        "--worker-timeout",
        type=options.seconds,
        default=_env("worker_timeout", "30"),
        metavar="S",
        help="a worker silent this long is killed and replaced",
    )
    add(
        "--master-timeout",
        type=options.seconds,
        default=_env("master_timeout", "30"),
        metavar="S",
        help="a worker whose master is silent this long exits (a local "
        "master's death is seen at once)",
    )
    add(
        "--startup-timeout",
        type=options.seconds,
        default=_env("startup_timeout", "30"),
        metavar="S",
        help="how long a new worker may take to join",
    )


def _pool_options(add: Add) -> None:
    add(
        "--config",
        default=_env("config"),
        metavar="FILE",
        help="a TOML file: [busd] takes these options (the command line wins), "
        "[pools.NAME] one pool each (see docs/GUIDE.md, Several pools)",
    )
    add(
        "--no-bus",
        action="store_true",
        default=_flag(_env("no_bus")),
        help="-- CMD is any program, not one that joins the bus (supervised, stopped "
        "with its process group)",
    )
    add(
        "-w",
        "--workers",
        type=options.count,
        default=_env("workers", "1"),
        metavar="N",
        help="pool size",
    )
    add(
        "--spawn",
        choices=("fork", "exec"),
        default=_env("spawn", "fork"),
        help="fork TARGET workers from a clean fork server, or exec a fresh interpreter for each",
    )
    add(
        "--preload",
        action="store_true",
        default=_flag(_env("preload")),
        help="import TARGET once in the fork server, not in each worker",
    )
    add(
        "--listen",
        action="append",
        type=options.listen_address,
        metavar="ADDRESS",
        default=_split(_env("listen")),
        help="a socket the master makes for the workers: tcp:HOST:PORT or unix:PATH (repeatable)",
    )
    add(
        "--env",
        action="append",
        type=options.key_value,
        metavar="KEY=VALUE",
        default=(_env("env") or "").split(),
        help="set this in every worker's environment (repeatable; BUSD_ENV: space separated)",
    )
    add(
        "--backoff",
        type=options.non_negative_seconds,
        default=_env("backoff", "0.1"),
        metavar="S",
        help="first restart delay of a crashed worker, doubled each time",
    )
    add(
        "--backoff-max",
        type=options.seconds,
        default=_env("backoff_max", "10"),
        metavar="S",
        help="the longest restart delay",
    )
    add(
        "--flap-limit",
        type=options.count,
        default=_env("flap_limit", "5"),
        metavar="N",
        help="crashes within --flap-window after which a slot stops restarting",
    )
    add(
        "--flap-window",
        type=options.seconds,
        default=_env("flap_window", "60"),
        metavar="S",
        help="the window --flap-limit counts crashes in",
    )


def _recycle_options(add: Add) -> None:
    add(
        "--reload",
        choices=("inplace", "respawn"),
        default=_env("reload", "inplace"),
        help="graceful: workers reload in place, or new workers replace the old ones",
    )
    add(
        "--max-age",
        type=options.seconds,
        metavar="SECONDS",
        default=_env("max_age"),
        help="recycle a worker this long after it started (a new one first)",
    )
    add(
        "--max-rss",
        type=options.positive_number,
        metavar="MIB",
        default=_env("max_rss"),
        help="recycle a worker whose resident memory passes this (measured by busd)",
    )
    add(
        "--recycle-jitter",
        type=options.non_negative_seconds,
        metavar="SECONDS",
        default=_env("recycle_jitter", "0"),
        help="add up to this much, at random, to each worker's --max-age",
    )


def _logging_options(add: Add) -> None:
    add(
        "--log-level",
        default=_env("log_level", "INFO"),
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        type=str.upper,
        help="for busd and its workers",
    )
    add(
        "--log-format",
        default=_env("log_format", "time"),
        choices=tuple(LOG_FORMATS),
        help="time: a timestamp on every line; plain: none (journald adds its own)",
    )
    add(
        "--log-file",
        default=_env("log_file"),
        metavar="FILE",
        help="with --daemon: where output goes [/dev/null]",
    )
    add(
        "--log-dir",
        metavar="DIR",
        default=_env("log_dir"),
        help="each worker's output to DIR/<name>-worker-<id>.log, busd's to DIR/<name>.log; "
        "SIGUSR1 or busctl reopen-logs reopens them",
    )
    add(
        "--metrics",
        metavar="HOST:PORT",
        type=options.metrics_address,
        default=_env("metrics"),
        help="serve GET /metrics (Prometheus) here, the workers' own metrics merged in "
        "(needs busd[metrics])",
    )


def _security_options(add: Add) -> None:
    add(
        "--insecure",
        action="store_true",
        default=_flag(_env("insecure")),
        help="allow plain TCP (--bind, --join) without CURVE keys: anyone who can reach the "
        "port (every local user, on loopback too) may command busd",
    )
    add(
        "--curve-secret",
        metavar="FILE",
        default=_env("curve_secret"),
        help="make every tcp --bind endpoint CURVE with this secret certificate (mode 0600)",
    )
    add(
        "--authorized-keys",
        metavar="DIR",
        default=_env("authorized_keys"),
        help="with --curve-secret: the public certificates (*.key) allowed in",
    )
    add(
        "--readonly-keys",
        metavar="DIR",
        default=_env("readonly_keys"),
        help="with --curve-secret: public certificates allowed to read only "
        "(status, workers, clients, ping, watch)",
    )


def _host_options(add: Add) -> None:
    add(
        "--join",
        metavar="tcp://HOST:PORT",
        default=_env("join"),
        help="run this pool on behalf of the master at HOST:PORT (its lifecycle follows it)",
    )
    add(
        "--server-key",
        metavar="FILE",
        default=_env("server_key"),
        help="with --join: the master's public certificate (CURVE)",
    )
    add(
        "--wait-for-master",
        action="store_true",
        default=_flag(_env("wait_for_master")),
        help="with --join: when the master is lost, stop the workers and wait for it "
        "(default: exit)",
    )


def _process_options(add: Add) -> None:
    add(
        "--chdir",
        type=options.directory,
        metavar="DIR",
        default=_env("chdir"),
        help="change to DIR before anything else; the workers run there too",
    )
    add(
        "--pythonpath",
        action="append",
        metavar="DIR",
        default=_dirs(_env("pythonpath")),
        help="put DIR first on the import path of busd and its workers (repeatable or "
        "comma separated; relative to --chdir); the working directory comes next",
    )
    add("--pidfile", default=_env("pidfile"), metavar="FILE", help="write busd's pid here")
    add(
        "--daemon",
        action="store_true",
        default=_flag(_env("daemon")),
        help="detach from the terminal (double fork)",
    )
    add(
        "--user",
        default=_env("user"),
        help="as root: bind --listen, write --pidfile, then become this user before "
        "anything else (runtime dir, logs, fork server, workers)",
    )
    add(
        "--group",
        default=_env("group"),
        help="as root: become this group too [--user's primary group]",
    )
    add(
        "--plugin",
        action="append",
        type=options.target,
        metavar="pkg.mod:func",
        default=_split(_env("plugin")),
        help="call func(master_bus) before the master starts (repeatable)",
    )


def _split(value: str | None) -> list[str]:
    return value.replace(",", " ").split() if value else []


def _dirs(value: str | None) -> list[str]:
    return [value] if value else []


def _flag(value: str | None) -> bool:
    return bool(value) and str(value).lower() not in ("0", "false", "no", "")


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Split off ``-- CMD ARGS`` and parse the rest."""
    command: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1 :]
    parser = build_parser()
    options.check_env(parser)
    config = read_config(argv, parser)
    opts, extra = parser.parse_known_args([*config.busd_argv, *argv] if config else argv)
    if extra:
        _refuse_extra(parser, opts, extra)
    if command and opts.target:
        parser.error("give either TARGET or -- CMD, not both")
    opts.pool_specs = None
    if config is not None and config.pools:
        if command or opts.target:
            parser.error(f"{config.path} has pools: give no TARGET or -- CMD besides")
        try:
            opts.pool_specs = specs(config, opts)
        except ConfigError as exc:
            options.die(str(exc))
    if opts.metrics and not metrics_available():
        parser.error(f"--metrics {opts.metrics}: {NEEDS}")
    if opts.no_bus and not command:
        parser.error("--no-bus goes with -- CMD (a TARGET always speaks the bus)")
    if opts.preload and not opts.target:
        parser.error("--preload needs a TARGET (a command cannot be preloaded)")
    if opts.preload and opts.spawn == "exec":
        parser.error("--preload needs --spawn fork")
    if opts.join and not re.fullmatch(r"tcp://[^/]+:[0-9]+", opts.join):
        parser.error(
            f"--join is tcp://HOST:PORT (the master's control endpoint), not {opts.join!r}"
        )
    if opts.wait_for_master and not opts.join:
        parser.error("--wait-for-master goes with --join")
    if opts.name:
        try:
            ep.check_name(opts.name)
        except ep.EndpointError as exc:
            parser.error(f"{crosscheck.where(argv, 'name')}: {exc}")
    crosscheck.check_binds(parser, opts)
    crosscheck.check_join(parser, opts)
    crosscheck.check_account(parser, opts, argv)
    opts.pythonpath = crosscheck.import_dirs(
        parser, opts, "--pythonpath" in argv or any(a.startswith("--pythonpath=") for a in argv)
    )
    return opts, command


def _refuse_extra(
    parser: argparse.ArgumentParser, opts: argparse.Namespace, extra: list[str]
) -> None:
    """argparse's "unrecognized arguments", except for a second TARGET: that names the fix."""
    if opts.target and any(_is_target(arg) for arg in extra):
        parser.error(
            f"one TARGET per command line (got {opts.target} and {' '.join(extra)}): "
            "run several pools from a config file, busd --config FILE (GUIDE: Several pools)"
        )
    parser.error(f"unrecognized arguments: {' '.join(extra)}")


def _is_target(arg: str) -> bool:
    try:
        options.target(arg)
    except argparse.ArgumentTypeError:
        return False
    return True


def read_config(argv: list[str], parser: argparse.ArgumentParser) -> ConfigFile | None:
    """The file of ``--config FILE`` (else ``BUSD_CONFIG``), checked; None without one.

    A bad file is one line naming it and where (exit status 2).
    """
    path = env_default("config")
    for at, arg in enumerate(argv):
        if arg == "--config" and at + 1 < len(argv):
            path = argv[at + 1]
        elif arg.startswith("--config="):
            path = arg.partition("=")[2]
    if not path:
        return None
    try:
        return load(path, parser)
    except ConfigError as exc:
        options.die(str(exc))
