"""A pytest plugin that makes ``cherrypy.process.wspbus`` be ``busd.core.bus``.

Loaded with ``-p wspbus_shim`` by ``test_cherrypy_bus.py`` so that
CherryPy's own ``cherrypy/test/test_bus.py``, unchanged, tests busd's Bus:
its ``from cherrypy.process import wspbus`` then finds busd's module,
whose ``Bus`` and ``states`` stand where wspbus's do.
"""

from __future__ import annotations

import sys

import cherrypy.process

import busd.core.bus

sys.modules["cherrypy.process.wspbus"] = busd.core.bus
cherrypy.process.wspbus = busd.core.bus  # type: ignore[attr-defined]
