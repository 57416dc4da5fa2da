"""The control client, re-exported: it lives in the core, :mod:`busd.core.control`.

Kept so that ``busd.client.control.Control`` (and ``client.Control``) stay
importable; new code imports :mod:`busd.core.control`.
"""

from __future__ import annotations

from busd.core.control import DEFAULT_TIMEOUT, Control, reply_result, request_frame

__all__ = ["DEFAULT_TIMEOUT", "Control", "reply_result", "request_frame"]
