"""The checks across ``busd``'s flags, after parsing: each refusal is one line, exit 2."""

from __future__ import annotations

import argparse
import os

from busd.core import endpoints as ep
from busd.daemon import options
from busd.daemon.options import env_default
from busd.plugins import privileges


def check_binds(parser: argparse.ArgumentParser, opts: argparse.Namespace) -> None:
    """Plain TCP off loopback without --insecure is bad usage, refused before any bind."""
    # Joined with no --authorized-keys, --curve-secret is this host's client key only.
    curve = bool(opts.curve_secret) and bool(opts.authorized_keys or not opts.join)
    for endpoint in opts.bind:
        try:
            ep.check_bind(endpoint, opts.insecure, curve=curve)
        except ep.EndpointError as exc:
            parser.error(f"--bind {exc}")


def where(argv: list[str], dest: str) -> str:
    """How to name where a value came from: ``--flag``, or ``BUSD_FLAG='value'``."""
    flag = "--" + dest.replace("_", "-")
    if any(a == flag or a.startswith(flag + "=") for a in argv):
        return flag
    return f"{options.env_name(dest)}={env_default(dest)!r}"


def check_join(parser: argparse.ArgumentParser, opts: argparse.Namespace) -> None:
    """Joining over plain TCP (no keys) needs --insecure, as the master's plain TCP does."""
    if opts.join and not (opts.server_key or opts.curve_secret) and not opts.insecure:
        parser.error(
            f"--join {opts.join}: plain TCP (no keys) lets anyone who can reach "
            "that port pose as the master or read what it sends; give --server-key "
            "and --curve-secret (CURVE), or --insecure"
        )


def check_account(
    parser: argparse.ArgumentParser, opts: argparse.Namespace, argv: list[str]
) -> None:
    """--user and --group: known, and only root may switch; ``opts.uid``/``opts.gid`` set.

    Both are None when there is nothing to switch (no flag, or busd runs as
    that user already: a ``restart`` re-executes busd after the switch).
    """
    opts.uid = opts.gid = None
    try:
        uid = privileges.resolve_uid(opts.user or None)
    except privileges.UnknownAccount:
        parser.error(f"{where(argv, 'user')}: no user {opts.user!r} on this system")
    try:
        gid = privileges.target_gid(uid, privileges.resolve_gid(opts.group or None))
    except privileges.UnknownAccount:
        parser.error(f"{where(argv, 'group')}: no group {opts.group!r} on this system")
    if (uid is None or uid == os.getuid()) and (gid is None or gid == os.getgid()):
        return
    if os.geteuid() != 0:
        parser.error(
            f"{where(argv, 'user' if opts.user else 'group')}: only root may switch "
            f"to another user or group (busd runs as uid {os.getuid()}, "
            f"gid {os.getgid()})"
        )
    opts.uid, opts.gid = uid, gid


def import_dirs(
    parser: argparse.ArgumentParser, opts: argparse.Namespace, from_flag: bool
) -> list[str]:
    """--pythonpath's directories, absolute (relative ones from --chdir), each checked."""
    base = opts.chdir or os.getcwd()
    found: list[str] = []
    for value in opts.pythonpath:
        for part in (p.strip() for p in str(value).split(",")):
            if not part:
                continue
            path = os.path.normpath(os.path.join(base, os.path.expanduser(part)))
            if not os.path.isdir(path):
                where = (
                    "--pythonpath"
                    if from_flag
                    else f"{options.env_name('pythonpath')}={env_default('pythonpath')!r}"
                )
                parser.error(f"{where}: expected an existing directory, not {part!r}")
            if path not in found:
                found.append(path)
    return found
