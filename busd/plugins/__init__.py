"""Plugins for a bus: signals, PID file, daemon, privileges, monitors, reload, threads, systemd.

Each is CherryPy-compatible: make it with the bus, then ``subscribe()``.
"""

from __future__ import annotations

from busd.plugins.autoreload import Autoreloader
from busd.plugins.base import SimplePlugin
from busd.plugins.daemonize import Daemonizer
from busd.plugins.monitor import BackgroundTask, Monitor
from busd.plugins.pidfile import PIDFile, PIDFileInUse
from busd.plugins.privileges import DropPrivileges, UnknownAccount
from busd.plugins.sdnotify import SdNotify
from busd.plugins.signals import SignalHandler
from busd.plugins.threads import ThreadManager

__all__ = [
    "Autoreloader",
    "BackgroundTask",
    "Daemonizer",
    "DropPrivileges",
    "Monitor",
    "PIDFile",
    "PIDFileInUse",
    "SdNotify",
    "SignalHandler",
    "SimplePlugin",
    "ThreadManager",
    "UnknownAccount",
]
