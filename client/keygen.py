"""``busctl keygen DIR``: CURVE key pairs for tcp endpoints, never a half-written one."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import zmq

from client.console import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from client.console import emit as _emit
from client.console import error as _error

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
    _emit(args, made, "\n".join(f"{name} {kind}: {path}" for name, pair in made.items()
                                for kind, path in pair.items()))
    return EXIT_OK


def _key_files(directory: Path) -> dict[str, Path]:
    return {f"{name}.{kind}": directory / f"{name}.{suffix}" for name in KEY_NAMES
            for kind, suffix in (("public", "key"), ("secret", "key_secret"))}


def _write_keys(directory: Path) -> dict[str, dict[str, str]]:
    # pyzmq writes with the umask's mode: make the files in a private (0700)
    # scratch dir, make secrets 0600, then move them into place.
    import tempfile  # here: only keygen needs it, and busctl's start-up time counts

    from zmq.auth.certs import create_certificates

    made: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(dir=directory, prefix=".keygen-") as scratch:
        for name in KEY_NAMES:
            public, secret = create_certificates(scratch, name)
            os.chmod(secret, 0o600)
            os.chmod(public, 0o644)
            pair = {"public": directory / Path(public).name,
                    "secret": directory / Path(secret).name}
            os.replace(public, pair["public"])
            os.replace(secret, pair["secret"])
            made[name] = {kind: str(path) for kind, path in pair.items()}
    return made


__all__ = ["KEY_NAMES", "keygen"]
