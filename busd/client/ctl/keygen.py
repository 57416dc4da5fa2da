"""``busctl keygen DIR``: CURVE key pairs for tcp endpoints, never a half-written one."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import zmq

from busd.client.ctl.console import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from busd.client.ctl.console import emit as _emit
from busd.client.ctl.console import error as _error

if TYPE_CHECKING:
    from busd.client.ctl.transport import Add

KEY_NAMES = ("server", "client")


def keygen(args: argparse.Namespace) -> int:
    """Create server and client CURVE key pairs in ``args.dir``; never a half-written one."""
    directory = Path(args.dir)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        _error(f"cannot create {directory}: {exc.strerror or exc}")
        return EXIT_USAGE
    existing = [str(p) for p in _key_files(directory).values() if p.exists()]
    if existing and not args.force:
        _error(f"{', '.join(existing)} already exist(s); use --force to replace")
        return EXIT_USAGE
    try:
        made = _write_keys(directory)
    except OSError as exc:
        _error(f"cannot write keys in {directory}: {exc.strerror or exc}")
        return EXIT_USAGE
    except zmq.ZMQError as exc:
        _error(f"cannot create CURVE keys: {exc}")
        return EXIT_FAILED
    _emit(
        args,
        made,
        "\n".join(
            f"{name} {kind}: {path}" for name, pair in made.items() for kind, path in pair.items()
        ),
    )
    return EXIT_OK


def _key_files(directory: Path) -> dict[str, Path]:
    return {
        f"{name}.{kind}": directory / f"{name}.{suffix}"
        for name in KEY_NAMES
        for kind, suffix in (("public", "key"), ("secret", "key_secret"))
    }


def write_key_pair(directory: Path, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` (0644) and ``NAME.key_secret`` (0600) in ``directory``.

    pyzmq writes with the umask's mode, so the pair is made in a private
    (0700) scratch dir, the secret made 0600, then both moved into place:
    never a secret readable by others, never a half-written pair.
    """
    import tempfile  # here: only keygen needs it, and busctl's start-up time counts

    from zmq.auth.certs import create_certificates

    with tempfile.TemporaryDirectory(dir=directory, prefix=".keygen-") as scratch:
        public, secret = create_certificates(scratch, name)
        os.chmod(secret, 0o600)
        os.chmod(public, 0o644)
        pair = directory / Path(public).name, directory / Path(secret).name
        os.replace(public, pair[0])
        os.replace(secret, pair[1])
    return pair


def _write_keys(directory: Path) -> dict[str, dict[str, str]]:
    made: dict[str, dict[str, str]] = {}
    for name in KEY_NAMES:
        public, secret = write_key_pair(directory, name)
        made[name] = {"public": str(public), "secret": str(secret)}
    return made


def _add_keygen(add: Add) -> None:
    # No handler: keygen talks to no master (busctl's main runs it itself).
    sub = add("keygen", None, "create CURVE key pairs (server and client) in DIR")
    sub.add_argument("dir", metavar="DIR", help="where the key files go (made 0700)")
    sub.add_argument("--force", action="store_true", help="replace existing key files")


#: How ``keygen`` is added to busctl's parser.
SUBCOMMANDS: dict[str, Callable[[Add], object]] = {"keygen": _add_keygen}

__all__ = ["KEY_NAMES", "SUBCOMMANDS", "keygen", "write_key_pair"]
