"""The transport seam's types: what a transport is given, calls back, and returns.

Defined here, below the :mod:`bgws.transport` package that re-exports them, so that the bundled
transports (``_picows``, ``_websockets``) import them without importing the package that
loads them (no import cycle). Users import them from :mod:`bgws.transport`.
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import BgwsError, LinkError

__all__ = ["ConnectRequest", "Link", "Sink", "Transport", "send_queue_size"]


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """What a transport needs to open one link.

    Attributes:
        url: the ``ws://`` or ``wss://`` URL, query parameters included.
        headers: extra handshake headers (auth headers included; never log them).
        subprotocols: subprotocols to offer.
        ssl_context: the TLS context for ``wss://`` (``None`` for ``ws://``).
        max_message_size: the largest message accepted, in bytes.
        timeout: the bound on TCP connect, TLS and handshake together, in seconds.
        read_buffer_size: the initial read buffer (picows grows it for larger frames). 4 KiB
            keeps an idle connection small (40.5 KiB per bgws service against 52.4 with
            16 KiB) and measured no slower on the 100-byte firehose.
    """

    url: str
    headers: Sequence[tuple[str, str]] = ()
    subprotocols: Sequence[str] = ()
    ssl_context: ssl.SSLContext | None = None
    max_message_size: int = 1 << 20
    timeout: float = 10.0
    read_buffer_size: int = field(default=4 * 1024)

    def __repr__(self) -> str:
        names = ", ".join(name for name, _ in self.headers)
        return f"ConnectRequest(headers=[{names}], subprotocols={list(self.subprotocols)})"


class Sink(Protocol):
    """What a transport calls as frames arrive. Called on the event loop, never concurrently."""

    def on_data(self, payload: bytes, binary: bool, last: bool) -> None:
        """One complete (reassembled) data message.

        ``last`` is true when it is the last message of the current network read: a message
        that is both the first and the last of its read arrived alone (a reply, a trickle),
        while a burst arrives as many messages in one read.
        """

    def on_read_done(self) -> None:
        """A read ended with a frame that was not a data message (a pong, a fragment)."""

    def on_pong(self) -> None:
        """A pong frame arrived."""

    def on_problem(self, error: BgwsError) -> None:
        """Something worth reporting that the transport handled itself (e.g. too big)."""

    def on_closed(self, error: LinkError) -> None:
        """The link is gone; called exactly once per link, with why."""


class Link(Protocol):
    """One open WebSocket connection."""

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server chose, if any."""

    @property
    def write_paused(self) -> bool:
        """Whether the OS send buffer is above its high-water mark."""

    @property
    def closed(self) -> bool:
        """Whether the connection is gone (``Sink.on_closed`` was called)."""

    def send(self, payload: bytes | str, binary: bool) -> None:
        """Queue one message for the socket (never blocks)."""

    def send_many(self, messages: list[tuple[bytes | str, bool]]) -> int:
        """Send several messages as one burst; returns how many were written.

        A transport may coalesce them into fewer TCP segments. It never raises: it stops at
        the first failure, and a count below ``len(messages)`` means the link is broken.
        """

    def ping(self) -> None:
        """Send a protocol ping."""

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake; ``Sink.on_closed`` follows."""

    def abort(self) -> None:
        """Drop the connection at once, without a closing handshake."""

    def pause_reading(self) -> None:
        """Stop reading from the socket (backpressure)."""

    def resume_reading(self) -> None:
        """Read again after :meth:`pause_reading`."""

    async def wait_writable(self) -> None:
        """Return once the OS send buffer is below its low-water mark."""

    async def wait_closed(self) -> None:
        """Return once the connection is fully closed."""

    @property
    def write_backlog(self) -> int:
        """Bytes written to the link that the peer's TCP has not yet taken: the transport's
        write buffer plus, on Linux, the socket's send queue (the keepalive watches it drain)."""


class Transport(Protocol):
    """Opens links, and lets the connects it started finish when the service stops.

    :class:`bgws.testing.MemoryTransport` is an in-memory twin, for tests without a socket.
    """

    async def connect(self, request: ConnectRequest, sink: Sink) -> Link:
        """Open one link; the sink hears its frames until ``on_closed``.

        A transport never follows a redirect: it raises :class:`bgws.HandshakeRejected` with
        the ``location``, and the engine decides (``Config.follow_redirects``).

        Raises:
            LinkError: the connection could not be opened (with the OS error as the cause),
                or the server's answer named a subprotocol or extension never offered;
                :class:`bgws.HandshakeRejected` / :class:`bgws.AuthRejected` for HTTP
                statuses other than 101, redirects included;
                :class:`bgws.ConnectTimeout` when ``request.timeout`` passed.
        """
        ...

    async def aclose(self, timeout: float = 5.0) -> None:
        """The service is stopping: let connect attempts it cut short finish and close.

        Called once, at the end of ``Service.stop()``; waits at most ``timeout`` seconds. A
        transport that leaves nothing behind (websockets, memory) does nothing.
        """
        ...


def send_queue_size(sock: Any) -> int:
    """Bytes in a TCP socket's send queue that the peer has not acknowledged.

    Linux only (the ``SIOCOUTQ`` ioctl); 0 elsewhere, for a closed socket, or for ``None``.
    """
    if sock is None:
        return 0
    try:
        import fcntl
        import termios

        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")  # = SIOCOUTQ
    except (ImportError, AttributeError, OSError, ValueError):
        return 0
    return max(0, int.from_bytes(raw, sys.byteorder, signed=True))
