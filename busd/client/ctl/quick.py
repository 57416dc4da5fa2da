"""busctl's quick path: the reads people and scripts run most, parsed without argparse.

``status [POOL]``, ``workers [POOL]`` and ``ping``, with the global options
written out in full (``--runtime-dir D``, ``--json``...), before or after
the subcommand: :func:`quick_args` makes the very Namespace the parser
(:mod:`busd.client.ctl.parser`) would, without importing ``argparse``
(with ``gettext`` and ``locale``, and the parser it builds, a tenth of
busctl's run).  Anything else, ``--opt=value``, an abbreviation, ``-h``, a
bad value, returns None, and the parser reads the command line as it
always did, with its help and its one-line errors.  A test checks that
both give the same Namespace.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

from busd.core.control import DEFAULT_TIMEOUT

if TYPE_CHECKING:
    import argparse

#: The global options with a value, and where argparse puts each.
_VALUED = {
    "--name": "name",
    "--runtime-dir": "runtime_dir",
    "--endpoint": "endpoint",
    "--server-key": "server_key",
    "--curve-secret": "curve_secret",
    "--timeout": "timeout",
}
#: The quick subcommands, and whether each takes a POOL.
_COMMANDS = {"status": True, "workers": True, "ping": False}


def quick_args(argv: Sequence[str] | None) -> argparse.Namespace | None:
    """The Namespace of a plain ``status``, ``workers`` or ``ping``, or None (see above)."""
    args = sys.argv[1:] if argv is None else list(argv)
    values: dict[str, Any] = dict.fromkeys(_VALUED.values())
    values["json"] = False
    command = pool = None
    at = 0
    while at < len(args):
        arg = args[at]
        if arg in _VALUED:
            if at + 1 == len(args) or args[at + 1].startswith("-"):
                return None
            values[_VALUED[arg]] = args[at + 1]
            at += 2
            continue
        if arg == "--json":
            values["json"] = True
        elif command is None and arg in _COMMANDS:
            command = arg
        elif command is not None and _COMMANDS[command] and pool is None and arg[:1] != "-":
            pool = arg
        else:
            return None
        at += 1
    if command is None:
        return None
    if values["timeout"] is None:
        values["timeout"] = DEFAULT_TIMEOUT
    else:
        try:
            values["timeout"] = float(values["timeout"])
        except ValueError:
            return None
        if not values["timeout"] > 0 or math.isinf(values["timeout"]):
            return None
    from busd.client.ctl import reads

    handlers = {"status": reads.status, "workers": reads.workers, "ping": reads.pong}
    if _COMMANDS[command]:
        values["pool"] = pool
    # Read as argparse's Namespace is, by attribute.
    quick = SimpleNamespace(**values, command=command, handler=handlers[command])
    return cast("argparse.Namespace", quick)


__all__ = ["quick_args"]
