"""busd --config FILE: reading, checking, defaulting, ordering and diffing, without a process.

Each refused file gives exactly one line naming the file and the table and
key (or the line); ``[busd]`` becomes busd's own flags; a pool leaves out
what busd's options then give it; pools start by ``after``; and two
readings differ pool by pool in exactly one way each (a hypothesis property).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from busd.daemon import config, flags
from busd.daemon.config import ConfigError, ConfigFile, PoolSpec
from busd.daemon.configdiff import ConfigDiff, diff
from busd.pool.ready import Ready

FILE = "busd.toml"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in tmp_path (so errors name ``busd.toml``), with no BUSD_* variable set."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("BUSD_")]:
        monkeypatch.delenv(name)
    return tmp_path


def parser() -> argparse.ArgumentParser:
    return flags.build_parser()


def opts(*argv: str) -> argparse.Namespace:
    return parser().parse_args(list(argv))


def load(text: str) -> ConfigFile:
    Path(FILE).write_text(text, encoding="utf-8")
    return config.load(FILE, parser())


def refused(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(text)
    message = str(info.value)
    assert "\n" not in message
    return message


WEB = '[pools.web]\ntarget = "shop.web:app"\n'


# -- errors: one line, naming the file and where ------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            WEB + 'workers = "x"\n',
            "busd.toml: [pools.web] workers: expected a whole number of 0 or more, not 'x'",
        ),
        (
            WEB + "workers = 2.5\n",
            "busd.toml: [pools.web] workers: expected a whole number of 0 or more, not '2.5'",
        ),
        (
            WEB + "workers 4\n",
            "busd.toml: line 3: TOML syntax error: Expected '=' after a key in a key/value pair",
        ),
        ('[busd]\nname = "shop', "busd.toml: line 2: TOML syntax error: Unterminated string"),
        (
            WEB + "wokers = 4\n",
            "busd.toml: [pools.web] unknown key 'wokers' (did you mean 'workers'?)",
        ),
        (
            WEB + "graceful-timout = 4\n",
            "busd.toml: [pools.web] unknown key 'graceful-timout' "
            "(did you mean 'graceful-timeout'?)",
        ),
        (
            WEB + 'command = ["prog"]\n',
            "busd.toml: [pools.web] give target or command, not both",
        ),
        (
            "[pools.web]\nworkers = 2\n",
            'busd.toml: [pools.web] give target ("pkg.module:function") or command '
            '(["prog", "arg", ...])',
        ),
        (
            WEB + '[pools.jobs]\ntarget = "shop.jobs:main"\nafter = ["wbe"]\n',
            "busd.toml: [pools.jobs] after: no pool named 'wbe' (did you mean 'web'?)",
        ),
        (
            '[pools.a]\ntarget = "m:f"\nafter = "b"\n[pools.b]\ntarget = "m:f"\nafter = ["a"]\n',
            "busd.toml: after: a cycle: a -> b -> a",
        ),
        (
            '[pools.x]\ntarget = "m:f"\nafter = "a"\n'
            '[pools.a]\ntarget = "m:f"\nafter = "b"\n'
            '[pools.b]\ntarget = "m:f"\nafter = ["c"]\n'
            '[pools.c]\ntarget = "m:f"\nafter = ["a"]\n',
            "busd.toml: after: a cycle: a -> b -> c -> a",
        ),
        (
            WEB + 'after = ["web"]\n',
            "busd.toml: [pools.web] after: a pool cannot come after itself ('web')",
        ),
        (
            "[busd]\ngraceful_timout = 5\n",
            "busd.toml: [busd] unknown option 'graceful_timout' (did you mean 'graceful_timeout'?)",
        ),
        (
            '[busd]\ngraceful_timeout = "x"\n',
            "busd.toml: [busd] graceful_timeout: expected a positive number of seconds, "
            "at most 604800 (a week), not 'x'",
        ),
        (
            "[busd]\ngraceful-timeout = -1\n",
            "busd.toml: [busd] graceful-timeout: expected a positive number of seconds, "
            "at most 604800 (a week), not '-1'",
        ),
        (
            "[busd]\nworkers = true\n",
            "busd.toml: [busd] workers: expected a string or a number, not true",
        ),
        (
            '[busd]\ninsecure = "yes"\n',
            "busd.toml: [busd] insecure: expected true or false, not 'yes'",
        ),
        (
            "[busd]\nbind = 5\n",
            "busd.toml: [busd] bind: expected a string or a list of strings, not 5",
        ),
        (
            '[busd]\nlog_level = "LOUD"\n',
            "busd.toml: [busd] log_level: expected one of 'DEBUG', 'INFO', 'WARNING', 'ERROR', "
            "not 'LOUD'",
        ),
        (
            '[busd]\nconfig = "other.toml"\n',
            "busd.toml: [busd] config: a config file cannot name another "
            "(give --config on the command line)",
        ),
        (
            '[busd]\ntarget = "m:f"\n',
            "busd.toml: [busd] unknown option 'target' (pools take target and command)",
        ),
        ("[busd]\nversion = true\n", "busd.toml: [busd] unknown option 'version'"),
        (
            "[busd]\nname = 'a'\nlog-level = 'INFO'\nlog_level = 'DEBUG'\n",
            "busd.toml: [busd] 'log-level' and 'log_level' are the same key",
        ),
        (
            '[busd]\nname = "shop"\n[pool.web]\ntarget = "m:f"\n',
            "busd.toml: unknown table or key 'pool' (a file has [busd] and [pools.NAME])",
        ),
        (
            'name = "shop"\n',
            "busd.toml: unknown table or key 'name' (a file has [busd] and [pools.NAME])",
        ),
        ('busd = "shop"\n', "busd.toml: busd: expected a table ([busd]), not 'shop'"),
        ("[pools]\nweb = 4\n", "busd.toml: [pools] web: expected a table ([pools.web]), not 4"),
        (
            '[pools."my web"]\ntarget = "m:f"\n',
            "busd.toml: [pools] a pool name is 1 to 64 of A-Z a-z 0-9 _ . -, not 'my web'",
        ),
        (
            WEB + "env = { SHOP_PORT = 8000 }\n",
            "busd.toml: [pools.web] env.SHOP_PORT: expected a string, not 8000",
        ),
        (
            WEB + 'env = { SHOP_MODE = "web", DEBUG = true }\n',
            "busd.toml: [pools.web] env.DEBUG: expected a string, not true",
        ),
        (
            WEB + 'env = { "1X" = "web" }\n',
            "busd.toml: [pools.web] env.1X: expected a variable name",
        ),
        (
            WEB + 'env = ["A=b"]\n',
            'busd.toml: [pools.web] env: expected a table of strings ({ KEY = "value" }), '
            "not ['A=b']",
        ),
        (
            WEB + 'reload_signal = "HUPP"\n',
            'busd.toml: [pools.web] reload_signal: expected a signal ("HUP", "SIGTERM", 15, '
            "...), not 'HUPP'",
        ),
        (
            WEB + "stop-signal = 999\n",
            'busd.toml: [pools.web] stop-signal: expected a signal ("HUP", "SIGTERM", 15, '
            "...), not 999",
        ),
        (
            '[pools.cache]\ncommand = "redis-server --port 6380"\n',
            "busd.toml: [pools.cache] command: expected the program and its arguments, a "
            'non-empty list of strings (["prog", "arg"]), not \'redis-server --port 6380\'',
        ),
        (
            "[pools.cache]\ncommand = []\n",
            "busd.toml: [pools.cache] command: expected the program and its arguments, a "
            'non-empty list of strings (["prog", "arg"]), not []',
        ),
        (
            '[pools.cache]\ncommand = ["redis-server", 6380]\n',
            "busd.toml: [pools.cache] command: expected the program and its arguments, a "
            'non-empty list of strings (["prog", "arg"]), not [\'redis-server\', 6380]',
        ),
        (
            WEB + "bus = false\n",
            "busd.toml: [pools.web] bus: false needs a command (a target always speaks the bus)",
        ),
        (
            WEB + "ready = 2\n",
            "busd.toml: [pools.web] ready: only for a pool with bus = false "
            "(a bus worker is ready when STARTED)",
        ),
        (
            '[pools.cache]\ncommand = ["redis-server"]\nbus = false\nready = "tcp:6380"\n',
            "busd.toml: [pools.cache] ready: expected a number of seconds from 0 to 604800, "
            "tcp:HOST:PORT (HOST an IP address or localhost) or unix:PATH, not 'tcp:6380'",
        ),
        (
            '[pools.cache]\ncommand = ["redis-server"]\npreload = true\n',
            "busd.toml: [pools.cache] preload: needs a target (a command cannot be preloaded)",
        ),
        (
            WEB + 'preload = true\nspawn = "exec"\n',
            'busd.toml: [pools.web] preload: needs spawn = "fork"',
        ),
        (
            '[pools.cache]\ncommand = ["redis-server"]\nspawn = "fork"\n',
            "busd.toml: [pools.cache] spawn: a command is always exec",
        ),
        (
            WEB + 'spawn = "thread"\n',
            "busd.toml: [pools.web] spawn: expected one of 'fork', 'exec', not 'thread'",
        ),
        (
            WEB + 'listen = ["tcp:127.0.0.1"]\n',
            "busd.toml: [pools.web] listen: expected tcp:HOST:PORT (PORT 0-65535) or unix:PATH, "
            "not 'tcp:127.0.0.1'",
        ),
        (
            '[pools.web]\ntarget = "shop.web"\n',
            "busd.toml: [pools.web] target: expected pkg.module:function, not 'shop.web'",
        ),
        (
            WEB + "max_rss = 0\n",
            "busd.toml: [pools.web] max_rss: expected a positive number, at most 1048576, not '0'",
        ),
        (
            WEB + "max-age = 1e300\n",
            "busd.toml: [pools.web] max-age: expected a positive number of seconds, "
            "at most 604800 (a week), not '1e+300'",
        ),
        (
            WEB + "max-age = 5\nmax_age = 6\n",
            "busd.toml: [pools.web] 'max-age' and 'max_age' are the same key",
        ),
    ],
)
def test_a_refused_file_is_one_line_naming_file_and_place(text: str, expected: str) -> None:
    assert refused(text) == expected


def test_the_error_keeps_its_parts(in_tmp: Path) -> None:
    Path(FILE).write_text(WEB + 'workers = "x"\n', encoding="utf-8")

    with pytest.raises(ConfigError) as info:
        config.load(in_tmp / FILE, parser())

    error = info.value
    assert (error.table, error.key, error.line) == ("pools.web", "workers", None)
    assert str(error).startswith(f"{in_tmp / FILE}: [pools.web] workers: expected")


def test_a_file_that_cannot_be_read() -> None:
    with pytest.raises(ConfigError) as missing:
        config.load(FILE, parser())
    Path("dir.toml").mkdir()
    with pytest.raises(ConfigError) as directory:
        config.load("dir.toml", parser())
    Path("latin1.toml").write_bytes(b'[busd]\nname = "caf\xe9"\n')
    with pytest.raises(ConfigError) as latin1:
        config.load("latin1.toml", parser())

    assert str(missing.value) == "busd.toml: cannot read: No such file or directory"
    assert str(directory.value) == "dir.toml: cannot read: Is a directory"
    assert (
        str(latin1.value) == "latin1.toml: cannot read: not UTF-8 text (invalid continuation byte)"
    )


# -- [busd]: busd's own flags ---------------------------------------------------------------


def test_busd_table_becomes_the_flags_in_file_order() -> None:
    loaded = load(
        "[busd]\n"
        'name = "shop"\n'
        "graceful_timeout = 5\n"
        "worker-timeout = 2.5\n"
        'log-level = "info"\n'
        'bind = ["tcp://127.0.0.1:7000", "tcp://127.0.0.1:7001"]\n'
        'listen = "tcp:127.0.0.1:8000"\n'
        "insecure = true\n"
        "daemon = false\n"
        "workers = 3\n"
    )

    assert loaded.busd_argv == [
        "--name",
        "shop",
        "--graceful-timeout",
        "5",
        "--worker-timeout",
        "2.5",
        "--log-level",
        "info",
        "--bind",
        "tcp://127.0.0.1:7000",
        "--bind",
        "tcp://127.0.0.1:7001",
        "--listen",
        "tcp:127.0.0.1:8000",
        "--insecure",
        "--workers",
        "3",
    ]
    parsed = parser().parse_args(loaded.busd_argv)
    assert (parsed.name, parsed.graceful_timeout, parsed.worker_timeout) == ("shop", 5.0, 2.5)
    assert (parsed.log_level, parsed.insecure, parsed.daemon, parsed.workers) == (
        "INFO",
        True,
        False,
        3,
    )
    assert parsed.bind == ["tcp://127.0.0.1:7000", "tcp://127.0.0.1:7001"]


def test_busd_argv_goes_before_the_command_line_which_wins() -> None:
    loaded = load("[busd]\ngraceful_timeout = 5\nname = 'shop'\n")

    parsed = parser().parse_args([*loaded.busd_argv, "--graceful-timeout", "7"])

    assert (parsed.graceful_timeout, parsed.name) == (7.0, "shop")


def test_the_metrics_endpoint_from_the_busd_table() -> None:
    loaded = load('[busd]\nmetrics = "127.0.0.1:9100"\n')

    assert parser().parse_args(loaded.busd_argv).metrics == "127.0.0.1:9100"


def test_a_value_that_looks_like_a_flag_stays_its_value() -> None:
    loaded = load('[busd]\nname = "-x"\n')

    assert loaded.busd_argv == ["--name=-x"]
    assert parser().parse_args(loaded.busd_argv).name == "-x"


def test_a_file_with_no_busd_and_no_pools_is_empty() -> None:
    loaded = load("# nothing yet\n")

    assert (loaded.busd_argv, loaded.pools, loaded.path) == ([], {}, Path(FILE))


# -- pools: checked tables, defaults, inheritance -------------------------------------------


def test_pool_keys_take_dashes_or_underscores_and_are_converted() -> None:
    loaded = load(
        WEB + "graceful-timeout = 2\n"
        "flap_limit = 3\n"
        'reload-signal = "hup"\n'
        'stop_signal = "SIGINT"\n'
        'after = "cache"\n'
        '[pools.cache]\ncommand = ["redis-server"]\nbus = false\nready = 0.5\n'
    )

    web = loaded.pools["web"]
    assert dict(web) == {
        "target": "shop.web:app",
        "graceful_timeout": 2.0,
        "flap_limit": 3,
        "reload_signal": int(signal.SIGHUP),
        "stop_signal": int(signal.SIGINT),
        "after": ("cache",),
    }
    assert isinstance(web["graceful_timeout"], float)
    assert loaded.pools["cache"]["ready"] == Ready(seconds=0.5)


@pytest.mark.parametrize("written", ['"HUP"', '"SIGHUP"', '"hup"', "1", '"1"'])
def test_signals_by_name_or_number(written: str) -> None:
    loaded = load(WEB + f"reload_signal = {written}\n")

    assert loaded.pools["web"]["reload_signal"] == signal.SIGHUP


def test_a_pool_takes_what_it_leaves_out_from_busds_options() -> None:
    loaded = load(WEB + "graceful_timeout = 2\n")
    busd = opts(
        "-w", "8", "--graceful-timeout", "3", "--worker-timeout", "4", "--backoff", "0.5",
        "--max-age", "60", "--max-rss", "100", "--recycle-jitter", "5", "--reload", "respawn",
        "--flap-limit", "9", "--flap-window", "11", "--backoff-max", "12",
        "--startup-timeout", "13", "--spawn", "exec",
        "--listen", "tcp:127.0.0.1:9000", "--env", "A=b",
    )  # fmt: skip

    (web,) = config.specs(loaded, busd)

    assert web == PoolSpec(
        name="web",
        target="shop.web:app",
        command=(),
        workers=1,  # never -w's
        reload="respawn",
        spawn="exec",
        preload=False,
        listen=(),  # never --listen's
        env=(),  # never --env's
        max_age=60.0,
        max_rss=100.0,
        recycle_jitter=5.0,
        graceful_timeout=2.0,  # the pool's own
        worker_timeout=4.0,
        startup_timeout=13.0,
        backoff=0.5,
        backoff_max=12.0,
        flap_limit=9,
        flap_window=11.0,
        after=(),
        bus=True,
        ready=None,
        reload_signal=None,
        stop_signal=int(signal.SIGTERM),
    )


def test_a_pool_that_runs_any_program() -> None:
    loaded = load(
        "[pools.cache]\n"
        'command = ["redis-server", "--port", "6380"]\n'
        "workers = 2\n"
        'env = { Z = "1", A = "2" }\n'
        "bus = false\n"
        'reload_signal = "HUP"\n'
        "[pools.sidecar]\n"
        'command = ["sleep", "1000"]\n'
        "bus = false\n"
    )

    cache, sidecar = config.specs(loaded, opts("--spawn", "fork"))

    assert (cache.command, cache.target, cache.workers) == (
        ("redis-server", "--port", "6380"),
        None,
        2,
    )
    assert (cache.spawn, cache.bus, cache.env) == ("exec", False, (("Z", "1"), ("A", "2")))
    assert (cache.reload_signal, cache.stop_signal) == (signal.SIGHUP, signal.SIGTERM)
    assert cache.ready == sidecar.ready == Ready(seconds=1.0)


def test_preload_is_inherited_only_where_it_applies() -> None:
    loaded = load(WEB + '[pools.cache]\ncommand = ["redis-server"]\n')
    busd = opts("--preload", "shop.web:app")

    web, cache = config.specs(loaded, busd)

    assert web.preload
    assert not cache.preload
    assert not config.specs(load(WEB + 'spawn = "exec"\n'), busd)[0].preload


def test_an_explicit_preload_with_busds_exec_spawn_is_refused() -> None:
    loaded = load(WEB + "preload = true\n")

    with pytest.raises(ConfigError) as info:
        config.specs(loaded, opts("--spawn", "exec"))

    assert str(info.value) == (
        'busd.toml: [pools.web] preload: needs spawn = "fork" (busd\'s --spawn is exec)'
    )
    assert config.specs(loaded, opts())[0].preload


def test_the_command_lines_pool_is_main() -> None:
    busd = opts("-w", "3", "--listen", "tcp:127.0.0.1:8000", "--env", "A=b=c", "shop.web:app")

    main = config.command_line_spec(busd, [])
    cmd = config.command_line_spec(opts(), ["prog"])

    assert (main.name, main.target, main.command, main.workers) == ("main", "shop.web:app", (), 3)
    assert (main.listen, main.env, main.bus, main.ready) == (
        ("tcp:127.0.0.1:8000",),
        (("A", "b=c"),),
        True,
        None,
    )
    assert (main.graceful_timeout, main.spawn, main.after) == (10.0, "fork", ())
    assert (cmd.target, cmd.command, cmd.spawn) == (None, ("prog",), "exec")


def test_the_command_lines_pool_without_the_bus() -> None:
    busd = opts()
    busd.no_bus = True

    main = config.command_line_spec(busd, ["redis-server"])

    assert (main.bus, main.ready, main.stop_signal) == (False, Ready(seconds=1.0), signal.SIGTERM)


# -- start order ----------------------------------------------------------------------------


def spec(name: str, *after: str, **changes: object) -> PoolSpec:
    base = config.command_line_spec(opts("m:f"), [])
    return dataclasses.replace(base, name=name, after=after, **changes)  # type: ignore[arg-type]


def test_order_and_levels_follow_after_then_file_order() -> None:
    pools = [spec("a", "c"), spec("b"), spec("c"), spec("d", "a", "b"), spec("e")]

    assert config.levels(pools) == {"a": 1, "b": 0, "c": 0, "d": 2, "e": 0}
    assert [p.name for p in config.order(pools)] == ["b", "c", "e", "a", "d"]


def test_specs_come_in_start_order() -> None:
    loaded = load(
        '[pools.jobs]\ntarget = "m:f"\nafter = ["web", "cache"]\n'
        '[pools.web]\ntarget = "m:f"\nafter = "cache"\n'
        '[pools.cache]\ncommand = ["redis-server"]\nbus = false\n'
        '[pools.sched]\ntarget = "m:f"\n'
    )

    built = config.specs(loaded, opts())

    assert [p.name for p in built] == ["cache", "sched", "web", "jobs"]
    assert config.levels(built) == {"cache": 0, "sched": 0, "web": 1, "jobs": 2}


def test_order_refuses_a_cycle_of_specs() -> None:
    with pytest.raises(config.CycleError, match=r"^a cycle: b -> c -> b$"):
        config.order([spec("a", "b"), spec("b", "c"), spec("c", "b")])


def test_levels_refuse_an_after_naming_no_pool_given() -> None:
    with pytest.raises(ValueError, match=r"^after: no pool named 'web'$"):
        config.levels([spec("jobs", "web")])


# -- the diff -------------------------------------------------------------------------------


def test_diff_sorts_every_pool_into_one_category() -> None:
    old = [
        spec("web"),
        spec("jobs", workers=2),
        spec("sched"),
        spec("old"),
        spec("api", target="m:g", workers=1),
    ]
    new = [
        spec("web", target="m:other", env=(("A", "b"),)),
        spec("jobs", workers=4, flap_limit=9, backoff=2.0),
        spec("sched"),
        spec("cache", command=("redis-server",), target=None, bus=False),
        spec("api", target="m:h", workers=5, flap_limit=1),
    ]

    found = diff(old, new)

    assert found == ConfigDiff(
        added=("cache",),
        changed=("web", "api"),
        resized=("jobs",),
        updated=("jobs",),
        removed=("old",),
        unchanged=("sched",),
        replaced_fields={"web": ("target", "env"), "api": ("target",)},
        sizes={"jobs": (2, 4)},
        updated_fields={"jobs": ("backoff", "flap_limit")},
    )
    assert found.lines() == [
        "added: cache",
        "changed: web (replaced: target, env), api (replaced: target)",
        "resized: jobs 2 -> 4",
        "updated: jobs (backoff, flap_limit)",
        "removed: old",
        "unchanged: sched",
    ]
    assert found.as_dict() == {
        "added": ["cache"],
        "changed": ["web", "api"],
        "resized": ["jobs"],
        "updated": ["jobs"],
        "removed": ["old"],
        "unchanged": ["sched"],
        "details": {
            "web": {"replaced": ["target", "env"]},
            "api": {"replaced": ["target"]},
            "jobs": {"workers": [2, 4], "updated": ["backoff", "flap_limit"]},
        },
    }


def test_several_changes_in_place_to_one_pool() -> None:
    old = [spec("db", "web", command=("pg",), target=None, bus=False, ready=Ready(seconds=1.0))]
    new = [
        spec(
            "db",
            command=("pg",),
            target=None,
            bus=False,
            ready=Ready(tcp=("127.0.0.1", 5432)),
            reload_signal=int(signal.SIGHUP),
            stop_signal=int(signal.SIGINT),
            reload="respawn",
            graceful_timeout=1.0,
        )
    ]

    found = diff(old, new)

    assert (found.updated, found.resized, found.changed, found.unchanged) == (("db",), (), (), ())
    assert found.lines() == [
        "updated: db (reload, graceful_timeout, after, ready, reload_signal, stop_signal)"
    ]


def test_every_replacing_field_replaces() -> None:
    base = spec("p")
    for name, value in [
        ("target", "m:g"),
        ("command", ("x",)),
        ("env", (("A", "1"),)),
        ("spawn", "exec"),
        ("preload", True),
        ("listen", ("tcp:127.0.0.1:1",)),
        ("bus", False),
    ]:
        found = diff([base], [dataclasses.replace(base, **{name: value})])  # type: ignore[arg-type]

        assert found.changed == ("p",), name
        assert found.replaced_fields == {"p": (name,)}


def test_no_difference_prints_unchanged_only() -> None:
    pools = [spec("a"), spec("b")]

    assert diff(pools, pools).lines() == ["unchanged: a, b"]
    assert diff([], []).lines() == []


NAMES = ("a", "b", "c", "d", "e")


@st.composite
def readings(draw: st.DrawFn) -> list[PoolSpec]:
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=len(NAMES)))
    return [
        spec(
            name,
            *draw(st.sampled_from([(), ("a",), ("b", "c")])),
            workers=draw(st.integers(0, 3)),
            target=draw(st.sampled_from(["m:f", "m:g"])),
            env=draw(st.sampled_from([(), (("A", "1"),)])),
            flap_limit=draw(st.sampled_from([1, 5])),
            backoff=draw(st.sampled_from([0.1, 2.0])),
            reload_signal=draw(st.sampled_from([None, int(signal.SIGHUP)])),
        )
        for name in names
    ]


@settings(max_examples=200, deadline=None)
@given(readings())
def test_a_reading_against_itself_is_all_unchanged(pools: list[PoolSpec]) -> None:
    found = diff(pools, pools)

    assert found.unchanged == tuple(p.name for p in pools)
    assert found.added == found.changed == found.resized == found.updated == found.removed == ()


@settings(max_examples=300, deadline=None)
@given(readings(), readings())
def test_every_pool_lands_in_exactly_one_category(old: list[PoolSpec], new: list[PoolSpec]) -> None:
    found = diff(old, new)
    before, after = {p.name: p for p in old}, {p.name: p for p in new}

    in_place = set(found.resized) | set(found.updated)
    groups = [set(found.added), set(found.removed), set(found.changed), set(found.unchanged)]
    for name in before.keys() | after.keys():
        assert sum(name in g for g in [*groups, in_place]) == 1, (name, found)
    assert set(found.added) == after.keys() - before.keys()
    assert set(found.removed) == before.keys() - after.keys()
    for name in found.unchanged:
        assert before[name] == after[name]
    for name in found.changed:
        assert found.replaced_fields[name]
    for name in in_place:
        assert before[name] != after[name]
        assert (name in found.resized) == (before[name].workers != after[name].workers)
    assert len(found.lines()) == sum(
        bool(c) for c in (found.added, found.changed, found.resized, found.updated, found.removed)
    ) + bool(found.unchanged)
