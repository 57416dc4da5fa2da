"""Checks a master makes before it binds: no other master there; CURVE keys that work."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from busd.core.auth import KeyFileError
from busd.core.control import Control
from busd.core.errors import AlreadyRunning, NoMaster

if TYPE_CHECKING:
    from busd.security.zap import CurveServer


def refuse_if_running(ctl: str, timeout: float = 0.5) -> None:
    """Raise AlreadyRunning if a master answers at the ipc endpoint ``ctl``.

    Binding an ipc path takes it over from a live master; ask first.
    """
    path = ctl.removeprefix("ipc://")
    if not ctl.startswith("ipc://") or not os.path.exists(path):
        return

    with Control(ctl, timeout=timeout) as control:
        try:
            info = control.request("ping")
        except NoMaster:
            return
    raise AlreadyRunning(f"a busd master (pid {info.get('pid')}) already serves {ctl}")


def curve_server(
    secret: str | Path | None, authorized: str | Path | None, readonly: str | Path | None
) -> CurveServer | None:
    """The CURVE side of the tcp endpoints, keys checked; None without a secret key."""
    if secret is None:
        if authorized or readonly:
            raise KeyFileError("--authorized-keys and --readonly-keys need --curve-secret")
        return None
    if authorized is None:
        raise KeyFileError(
            "--curve-secret needs --authorized-keys DIR (the public keys allowed in)"
        )
    from busd.security.zap import CurveServer  # loads zmq.auth (and asyncio): only when needed

    return CurveServer(secret, authorized, readonly)
