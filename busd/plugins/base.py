"""The plugin base class: methods named after channels become listeners."""

from __future__ import annotations

from busd.core.bus import Bus


class SimplePlugin:
    """A plugin whose methods named after a bus channel listen on that channel.

    ``subscribe()`` registers every method whose name is a channel the bus
    knows (``start``, ``stop``, ``exit``, ``graceful``, ``main`` or any channel
    declared in ``bus.listeners``); ``unsubscribe()`` removes them again.
    """

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def subscribe(self) -> None:
        """Register this plugin's channel methods with the bus."""
        for channel in list(self.bus.listeners):
            method = getattr(self, channel, None)
            if method is not None and callable(method):
                self.bus.subscribe(channel, method)

    def unsubscribe(self) -> None:
        """Unregister this plugin's channel methods from the bus."""
        for channel in list(self.bus.listeners):
            method = getattr(self, channel, None)
            if method is not None and callable(method):
                self.bus.unsubscribe(channel, method)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} on {self.bus!r}>"
