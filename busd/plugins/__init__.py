"""Plugins for a bus: signals, pidfile, daemonize, privileges, monitors, reload, threads, systemd."""

from __future__ import annotations

from busd.plugins.base import SimplePlugin

__all__ = ["SimplePlugin"]
