"""``busd --config FILE``: the master's options and several named pools, in TOML.

::

    [busd]                        # the long flags, by name (dashes or underscores)
    name = "shop"
    graceful_timeout = 5
    bind = ["tcp://127.0.0.1:7000"]
    insecure = true

    [pools.web]
    target = "asgi:shop.web:app"  # or command = ["prog", "arg", ...]
    workers = 4
    listen = ["tcp:127.0.0.1:8000"]
    env = { SHOP_MODE = "web" }

    [pools.cache]
    command = ["redis-server", "--port", "6380"]
    bus = false
    ready = "tcp:127.0.0.1:6380"
    reload_signal = "HUP"

    [pools.jobs]
    target = "shop.jobs:main"
    after = ["web", "cache"]

This module only reads: :func:`load` checks the file and turns ``[busd]``
into flags (:attr:`ConfigFile.busd_argv`, put before the command line's own,
which therefore wins); :func:`specs` gives each pool as a :class:`PoolSpec`,
what a pool table leaves out taken from busd's options; :func:`order` and
:func:`levels` say which pools start first.  The differences between two
readings are ``busd.daemon.configdiff``'s.

Every mistake is a :class:`ConfigError` of one line naming the file, and the
table and the key (or the line) it is about::

    busd.toml: [pools.web] workers: expected a whole number of 0 or more, not 'x'
    busd.toml: line 3: TOML syntax error: Expected '=' after a key in a key/value pair
"""

from __future__ import annotations

import argparse
import difflib
import re
import signal
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

from busd.daemon.configvalues import (
    POOL_KEYS,
    Refused,
    flag_argv,
    pool_name,
    show,
)
from busd.pool.ready import Ready

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, before the standard library took it in
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

#: A pool's table, checked: keys with underscores, values converted (see POOL_KEYS).
PoolTable = Mapping[str, Any]


class ConfigError(Exception):
    """A config file that cannot be used; its text is one line naming the file and where."""

    def __init__(
        self,
        path: str | Path,
        reason: str,
        *,
        table: str | None = None,
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        self.path, self.reason, self.table, self.key, self.line = path, reason, table, key, line
        where = "".join(
            [
                f"[{table}] " if table is not None else "",
                f"line {line}: " if line is not None else "",
                f"{key}: " if key is not None else "",
            ]
        )
        super().__init__(f"{path}: {where}{reason}")


@dataclass(frozen=True)
class PoolSpec:
    """One pool, whole: what the file says and, for what it leaves out, busd's options."""

    name: str
    target: str | None
    command: tuple[str, ...]
    workers: int
    reload: str
    spawn: str
    preload: bool
    listen: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    max_age: float | None
    max_rss: float | None
    recycle_jitter: float
    graceful_timeout: float
    worker_timeout: float
    startup_timeout: float
    backoff: float
    backoff_max: float
    flap_limit: int
    flap_window: float
    after: tuple[str, ...]
    bus: bool
    ready: Ready | None
    reload_signal: int | None
    stop_signal: int


@dataclass(frozen=True)
class ConfigFile:
    """A config file, checked: ``[busd]`` as flags, and each pool's table in file order."""

    path: Path
    busd_argv: list[str]
    pools: dict[str, PoolTable]


#: The keys whose unset value is busd's option of the same name.
INHERITED = (
    "reload",
    "max_age",
    "max_rss",
    "recycle_jitter",
    "graceful_timeout",
    "worker_timeout",
    "startup_timeout",
    "backoff",
    "backoff_max",
    "flap_limit",
    "flap_window",
)
NOT_IN_BUSD = ("config", "help", "version")


# -- reading ------------------------------------------------------------------------------


def load(path: str | Path, parser: argparse.ArgumentParser) -> ConfigFile:
    """Read and check ``path``; ``parser`` is busd's (its flags are what ``[busd]`` takes)."""
    data = read(path)
    for key in data:
        if key not in ("busd", "pools"):
            raise ConfigError(
                path, f"unknown table or key {key!r} (a file has [busd] and [pools.NAME])"
            )
    busd = data.get("busd", {})
    if not isinstance(busd, dict):
        raise ConfigError(path, f"expected a table ([busd]), not {show(busd)}", key="busd")
    pools = data.get("pools", {})
    if not isinstance(pools, dict):
        raise ConfigError(path, f"expected tables ([pools.NAME]), not {show(pools)}", key="pools")
    tables: dict[str, PoolTable] = {}
    for name, table in pools.items():
        tables[name] = pool_table(path, name, table)
    check_after(path, tables)
    return ConfigFile(Path(path), busd_argv(path, busd, parser), tables)


def read(path: str | Path) -> dict[str, Any]:
    """The file's TOML document; its syntax errors name the line."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(path, f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, f"cannot read: not UTF-8 text ({exc.reason})") from None
    try:
        document: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.fullmatch(r"(.*) \(at line (\d+), column \d+\)", message, re.DOTALL)
        if found is not None:
            reason, line = found.group(1), int(found.group(2))
        else:  # "(at end of document)": the last line
            reason, line = message.removesuffix(" (at end of document)"), len(text.splitlines())
        raise ConfigError(path, f"TOML syntax error: {reason}", line=max(1, line)) from None
    return document


def normalised(
    path: str | Path, table: Mapping[str, Any], where: str | None
) -> dict[str, tuple[str, Any]]:
    """``{key_with_underscores: (key as written, value)}``; one key written two ways is refused."""
    keys: dict[str, tuple[str, Any]] = {}
    for written, value in table.items():
        key = written.replace("-", "_")
        if key in keys:
            reason = f"{keys[key][0]!r} and {written!r} are the same key"
            raise ConfigError(path, reason, table=where)
        keys[key] = (written, value)
    return keys


def unknown(kind: str, written: str, known: Iterable[str]) -> str:
    """``unknown key 'wokers' (did you mean 'workers'?)``, in the spelling of the key given."""
    spelled = [k.replace("_", "-") if "-" in written else k for k in known]
    close = difflib.get_close_matches(written, spelled, n=1, cutoff=0.75)
    return f"unknown {kind} {written!r}" + (f" (did you mean {close[0]!r}?)" if close else "")


def pool_table(path: str | Path, name: str, table: Any) -> PoolTable:
    """One ``[pools.NAME]`` table, every key checked and converted, then the rules across keys."""
    try:
        pool_name(name)
    except Refused as exc:
        raise ConfigError(path, str(exc), table="pools") from None
    where = f"pools.{name}"
    if not isinstance(table, dict):
        reason = f"expected a table ([pools.{name}]), not {show(table)}"
        raise ConfigError(path, reason, table="pools", key=name)
    checked: dict[str, Any] = {}
    written: dict[str, str] = {}
    for key, (as_written, value) in normalised(path, table, where).items():
        if key not in POOL_KEYS:
            raise ConfigError(path, unknown("key", as_written, POOL_KEYS), table=where)
        try:
            checked[key] = POOL_KEYS[key](value)
        except Refused as exc:
            raise ConfigError(path, str(exc), table=where, key=exc.part or as_written) from None
        written[key] = as_written
    pool_rules(path, name, checked, written)
    return MappingProxyType(checked)


def pool_rules(path: str | Path, name: str, table: dict[str, Any], written: dict[str, str]) -> None:
    """The rules across a pool's keys (those of busd's flags, and those of pools that run
    programs that do not speak the bus)."""
    where = f"pools.{name}"

    def refuse(key: str | None, reason: str) -> NoReturn:
        raise ConfigError(path, reason, table=where, key=written.get(key or "", key))

    if "target" in table and "command" in table:
        refuse(None, "give target or command, not both")
    if "target" not in table and "command" not in table:
        refuse(None, 'give target ("pkg.module:function") or command (["prog", "arg", ...])')
    if not table.get("bus", True) and "command" not in table:
        refuse("bus", "false needs a command (a target always speaks the bus)")
    if "ready" in table and table.get("bus", True):
        refuse("ready", "only for a pool with bus = false (a bus worker is ready when STARTED)")
    if "command" in table and table.get("spawn") == "fork":
        refuse("spawn", "a command is always exec")
    if table.get("preload") and "command" in table:
        refuse("preload", "needs a target (a command cannot be preloaded)")
    if table.get("preload") and table.get("spawn") == "exec":
        refuse("preload", 'needs spawn = "fork"')
    if name in table.get("after", ()):
        refuse("after", f"a pool cannot come after itself ({name!r})")


def check_after(path: str | Path, tables: Mapping[str, PoolTable]) -> None:
    """Every ``after`` names another pool, and no pool comes, through others, after itself."""
    for name, table in tables.items():
        for other in table.get("after", ()):
            if other not in tables:
                hint = difflib.get_close_matches(other, list(tables), n=1, cutoff=0.6)
                more = f" (did you mean {hint[0]!r}?)" if hint else ""
                reason = f"no pool named {other!r}{more}"
                raise ConfigError(path, reason, table=f"pools.{name}", key="after")
    try:
        pool_levels({name: tuple(t.get("after", ())) for name, t in tables.items()})
    except CycleError as exc:
        raise ConfigError(path, str(exc), key="after") from None


def busd_argv(
    path: str | Path, table: Mapping[str, Any], parser: argparse.ArgumentParser
) -> list[str]:
    """``[busd]`` as busd's flags, each value checked as its flag checks it."""
    argv: list[str] = []
    flags = {
        o[2:].replace("-", "_"): a
        for o, a in parser._option_string_actions.items()
        if o.startswith("--") and o[2:] not in NOT_IN_BUSD
    }
    for key, (written, value) in normalised(path, table, "busd").items():
        if key == "config":
            reason = "a config file cannot name another (give --config on the command line)"
            raise ConfigError(path, reason, table="busd", key=written)
        if key not in flags:
            hint = " (pools take target and command)" if key in ("target", "command") else ""
            raise ConfigError(path, unknown("option", written, flags) + hint, table="busd")
        try:
            argv += flag_argv(flags[key], value)
        except Refused as exc:
            raise ConfigError(path, str(exc), table="busd", key=written) from None
    return argv


# -- pools --------------------------------------------------------------------------------


def specs(config: ConfigFile, opts: argparse.Namespace) -> list[PoolSpec]:
    """Every pool of ``config``, in start order; what a table leaves out is from ``opts``.

    A pool's ``workers`` default to 1 (never ``-w``'s), its ``listen`` and ``env`` to
    none; ``preload`` is inherited only where it can apply (a target, forked).
    """
    built = []
    for name, table in config.pools.items():
        command = tuple(table.get("command", ()))
        target = table.get("target")
        spawn = "exec" if command else table.get("spawn", opts.spawn)
        preload = table.get("preload", bool(opts.preload) and target is not None)
        if preload and spawn != "fork" and "preload" in table:
            reason = 'needs spawn = "fork" (busd\'s --spawn is exec)'
            raise ConfigError(config.path, reason, table=f"pools.{name}", key="preload")
        bus = table.get("bus", True)
        inherited = {key: table.get(key, getattr(opts, key)) for key in INHERITED}
        built.append(
            PoolSpec(
                name=name,
                target=target,
                command=command,
                workers=table.get("workers", 1),
                spawn=spawn,
                preload=preload and spawn == "fork",
                listen=tuple(table.get("listen", ())),
                env=tuple(table.get("env", ())),
                after=tuple(dict.fromkeys(table.get("after", ()))),
                bus=bus,
                ready=table.get("ready", None if bus else Ready(seconds=1.0)),
                reload_signal=table.get("reload_signal"),
                stop_signal=table.get("stop_signal", int(signal.SIGTERM)),
                **inherited,
            )
        )
    return order(built)


def command_line_spec(opts: argparse.Namespace, command: Sequence[str]) -> PoolSpec:
    """The pool the command line alone describes, named ``main``.

    With neither TARGET nor ``-- CMD`` (a master alone) its target is None and
    its command empty.
    """
    bus = not getattr(opts, "no_bus", False)
    return PoolSpec(
        name="main",
        target=opts.target,
        command=tuple(command),
        workers=opts.workers,
        spawn="exec" if command else opts.spawn,
        preload=bool(opts.preload),
        listen=tuple(opts.listen),
        env=tuple((k, v) for k, _, v in (item.partition("=") for item in opts.env)),
        after=(),
        bus=bus,
        ready=None if bus else Ready(seconds=1.0),
        reload_signal=None,
        stop_signal=int(signal.SIGTERM),
        **{key: getattr(opts, key) for key in INHERITED},
    )


class CycleError(ValueError):
    """Pools that come, through each other, after themselves: ``a cycle: a -> b -> a``."""


def pool_levels(after: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Each pool's level: 0 with no ``after``, else 1 + the highest of its afters'.

    ``after`` maps every pool to the pools it comes after (each one of them).
    """
    found: dict[str, int] = {}
    for start in after:
        path = [start]
        pending = [iter(after[start])]
        while pending:
            other = next(pending[-1], None)
            if other is None:
                pending.pop()
                name = path.pop()
                found[name] = 1 + max((found[o] for o in after[name]), default=-1)
            elif other not in after:
                raise ValueError(f"after: no pool named {other!r}")
            elif other in path:
                cycle = [*path[path.index(other) :], other]
                raise CycleError(f"a cycle: {' -> '.join(cycle)}")
            elif other not in found:
                path.append(other)
                pending.append(iter(after[other]))
    return found


def levels(pools: Sequence[PoolSpec]) -> dict[str, int]:
    """Each pool's start level (0: no ``after``; else 1 + the highest of its afters')."""
    return pool_levels({p.name: p.after for p in pools})


def order(pools: Sequence[PoolSpec]) -> list[PoolSpec]:
    """The pools in start order: by level, and in the given order within a level."""
    level = levels(pools)
    return sorted(pools, key=lambda p: level[p.name])


__all__ = [
    "ConfigError",
    "ConfigFile",
    "CycleError",
    "PoolSpec",
    "PoolTable",
    "command_line_spec",
    "levels",
    "load",
    "order",
    "specs",
]
