"""The bgws testing kit: a real WebSocket server on loopback that injects faults.

Test reconnection, keepalive, auth and queueing logic against a server that really drops,
closes, refuses, stalls, delays and garbles the link::

    from bgws.testing import Server

    async def test_reconnects() -> None:
        async with Server() as server:
            ...  # connect a client to server.url
            await server.wait_for_connections(1)
            server.drop()
            await server.wait_for_connections(2)

It also plays the server side of delivery protocols, so a test can check that nothing was
lost, nothing duplicated beyond the in-flight window and the order kept: ``ack=AckReply()``
acknowledges ids, :attr:`Server.duplicates` counts repeats, :meth:`Server.publish` numbers a
feed that resume requests replay, ``reply=Reply(...)`` answers requests and
:meth:`Server.report` sums it all up per connection. ``python -m bgws.testing.serve`` runs the
server in a process of its own.

:class:`MemoryTransport` is the in-memory twin of a transport: no socket, the test plays the
server through a :class:`MemoryPeer` (push, close with a code, refuse a connect).

:class:`HostileServer` is the opposite of :class:`Server`: a raw TCP server that answers
with any status line, headers and bytes a test scripts (see :func:`frame` and
:class:`Frames`), to break every rule of RFC 6455; :func:`check_transport` runs the transport
conformance suite against it.

With pytest and pytest-asyncio, the ``bgws_server`` fixture (registered by the bgws pytest
plugin) yields a started :class:`Server`. See ``docs/testing-kit.md``.

The names are imported lazily, on first use, so that loading the pytest plugin (which lives in
this package and is loaded in every pytest run) does not import the server and picows.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bgws.testing._clock import VirtualClock
    from bgws.testing._conformance import (
        RULES,
        ConformanceReport,
        Rule,
        TransportFactory,
        check_transport,
    )
    from bgws.testing._connection import Connection
    from bgws.testing._delivery import AckFunction, AckReply, Feed, Reply
    from bgws.testing._hostile import (
        Answer,
        HostileConnection,
        HostileServer,
        Script,
        Steps,
        UpgradeRequest,
    )
    from bgws.testing._memory import MemoryPeer, MemoryTransport
    from bgws.testing._records import (
        DEFAULT_OVERSIZED_SIZE,
        ConnectionReport,
        Handshake,
        MalformedKind,
        Message,
        ReceivedMessage,
    )
    from bgws.testing._server import (
        DEFAULT_TIMEOUT,
        ConnectHook,
        HandshakeHook,
        MessageHook,
        Server,
    )
    from bgws.testing._wire import Frames, Opcode, ReceivedFrame, accept_key, frame

__all__ = [
    "DEFAULT_OVERSIZED_SIZE",
    "DEFAULT_TIMEOUT",
    "RULES",
    "AckFunction",
    "AckReply",
    "Answer",
    "ConformanceReport",
    "ConnectHook",
    "Connection",
    "ConnectionReport",
    "Feed",
    "Frames",
    "HandshakeHook",
    "Handshake",
    "HostileConnection",
    "HostileServer",
    "MalformedKind",
    "MemoryPeer",
    "MemoryTransport",
    "Message",
    "MessageHook",
    "Opcode",
    "ReceivedFrame",
    "ReceivedMessage",
    "Reply",
    "Rule",
    "Script",
    "Server",
    "Steps",
    "TransportFactory",
    "UpgradeRequest",
    "VirtualClock",
    "accept_key",
    "check_transport",
    "frame",
]

_HOMES: dict[str, str] = {
    "RULES": "bgws.testing._conformance",
    "ConformanceReport": "bgws.testing._conformance",
    "Rule": "bgws.testing._conformance",
    "TransportFactory": "bgws.testing._conformance",
    "check_transport": "bgws.testing._conformance",
    "Connection": "bgws.testing._connection",
    "VirtualClock": "bgws.testing._clock",
    "AckFunction": "bgws.testing._delivery",
    "AckReply": "bgws.testing._delivery",
    "Feed": "bgws.testing._delivery",
    "Reply": "bgws.testing._delivery",
    "MemoryPeer": "bgws.testing._memory",
    "MemoryTransport": "bgws.testing._memory",
    "Answer": "bgws.testing._hostile",
    "HostileConnection": "bgws.testing._hostile",
    "HostileServer": "bgws.testing._hostile",
    "Script": "bgws.testing._hostile",
    "Steps": "bgws.testing._hostile",
    "UpgradeRequest": "bgws.testing._hostile",
    "Frames": "bgws.testing._wire",
    "Opcode": "bgws.testing._wire",
    "ReceivedFrame": "bgws.testing._wire",
    "accept_key": "bgws.testing._wire",
    "frame": "bgws.testing._wire",
    "ConnectionReport": "bgws.testing._records",
    "DEFAULT_OVERSIZED_SIZE": "bgws.testing._records",
    "Handshake": "bgws.testing._records",
    "MalformedKind": "bgws.testing._records",
    "Message": "bgws.testing._records",
    "ReceivedMessage": "bgws.testing._records",
    "DEFAULT_TIMEOUT": "bgws.testing._server",
    "ConnectHook": "bgws.testing._server",
    "HandshakeHook": "bgws.testing._server",
    "MessageHook": "bgws.testing._server",
    "Server": "bgws.testing._server",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
