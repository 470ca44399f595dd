"""The transport seam: the only place bgws touches a WebSocket library.

The engine speaks to a :class:`Transport` (which opens links) and a :class:`Link` (one open
connection); the transport calls back into a :class:`Sink` for every frame. Callbacks, not an
async iterator: a queue between the library and the engine measured here halved throughput, so
frames go straight into the engine's bounded inbox, and flow control is explicit
(``pause_reading`` / ``resume_reading``).

The default transport is picows. Another library plugs in by implementing these Protocols;
:func:`bgws.testing.check_transport` checks that it keeps the same rules as the bundled ones
(RFC 6455 enforced with the right close codes, nothing delivered once the link has started to
close, no redirect followed, errors translated by :mod:`bgws.transport._policy`).
"""

from __future__ import annotations

from ._seam import ConnectRequest, Link, Sink, Transport, send_queue_size

__all__ = ["ConnectRequest", "Link", "Sink", "Transport", "get_transport", "send_queue_size"]


def get_transport(name: str) -> Transport:
    """The transport registered under ``name``: ``"picows"`` or ``"websockets"``."""
    if name == "picows":
        from ._picows import PicowsTransport

        return PicowsTransport()
    if name == "websockets":
        from ._websockets import WebsocketsTransport

        return WebsocketsTransport()
    raise ValueError(f"unknown transport {name!r}")
