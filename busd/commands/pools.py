"""Several pools: ``--pool P``, ``status|workers [POOL]``, and ``reload-config [--wait]``.

``--pool`` goes in the body of ``graceful``, ``scale`` and ``signal`` (``"pool"``);
with one pool it may be left out.  ``status POOL`` and ``workers POOL`` are
the same answers, cut to that pool by busctl.  ``reload-config`` answers what
became of each pool (``added``, ``changed``, ``resized``, ``updated``,
``removed``, ``unchanged``, and ``lines`` for people).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from busd.commands import acks
from busd.commands.checks import bad
from busd.commands.text import cell, table

if TYPE_CHECKING:
    import argparse

RELOAD_CONFIG = "reload-config"
RELOAD_CONFIG_HELP = (
    "read busd's --config file again and apply only what changed "
    "(--wait: until the pools added or changed are STARTED)"
)


def add_pool_option(parser: argparse.ArgumentParser) -> None:
    """``--pool P``."""
    parser.add_argument(
        "--pool",
        metavar="P",
        help="only this pool (needed when busd runs several)",
    )


def add_pool_argument(parser: argparse.ArgumentParser) -> None:
    """``[POOL]``."""
    parser.add_argument("pool", nargs="?", metavar="POOL", help="only this pool's workers")


def with_pool(body: dict[str, Any], pool: str | None) -> dict[str, Any]:
    """``body`` naming ``pool`` (as given; none: unchanged)."""
    return body if pool is None else {**body, "pool": pool}


def only_pool(status: dict[str, Any], pool: str) -> dict[str, Any]:
    """``status`` cut to ``pool``: its entry in ``pools``, its workers; a BusError naming
    the pools there are when there is none of that name."""
    pools = [p for p in status.get("pools") or [] if isinstance(p, dict)]
    names = [str(p.get("name")) for p in pools]
    if pool not in names:
        raise bad(f"no pool named {pool!r} (pools: {', '.join(names) or 'none'})")
    rows = [w for w in status.get("workers") or [] if isinstance(w, dict)]
    return {
        **status,
        "pools": [p for p in pools if p.get("name") == pool],
        "workers": [w for w in rows if w.get("pool") == pool],
    }


def pools_table(pools: list[Any]) -> str:
    """One row per pool: name, workers running and STARTED of those wanted, what it runs."""
    body = []
    for pool in (p for p in pools if isinstance(p, dict)):
        command = pool.get("command")
        what = " ".join(map(str, command)) if isinstance(command, list) else pool.get("target")
        body.append(
            [
                cell(pool.get("name")),
                f"{cell(pool.get('started'))}/{cell(pool.get('workers'))}",
                ", ".join(map(str, pool.get("after") or [])) or "-",
                cell(what),
            ]
        )
    return "POOLS\n" + table(["POOL", "STARTED", "AFTER", "RUNS"], body)


def reload_config_request(wait: bool, timeout: float | None) -> dict[str, Any]:
    """The body busctl sends."""
    body: dict[str, Any] = {"wait": wait}
    if wait and timeout is not None:
        body["timeout"] = timeout
    return body


def render_reload_config(result: Any) -> str:
    """What became of each pool, one line per kind; then whether they started."""
    lines = result.get("lines") if isinstance(result, dict) else None
    text = "\n".join(str(line) for line in lines or []) or "reload-config: no pools"
    started = result.get("started") if isinstance(result, dict) else None
    if started is not None:
        text += "\nstarted: " + ("yes" if started else "NO (not within the startup timeout)")
    return acks.counted(result, text) if isinstance(result, dict) and "acks" in result else text


__all__ = [
    "RELOAD_CONFIG",
    "RELOAD_CONFIG_HELP",
    "add_pool_argument",
    "add_pool_option",
    "only_pool",
    "pools_table",
    "reload_config_request",
    "render_reload_config",
    "with_pool",
]
