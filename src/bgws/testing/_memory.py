"""An in-memory twin of a transport: a connected pair where the test plays the server.

:class:`MemoryTransport` implements :class:`bgws.transport.Transport` without a socket. Each
connect makes a link for the client (the service) and a :class:`MemoryPeer` for the test,
which plays the server: it sees what the client sent, pushes messages, closes with a code or
drops the link. ``refuse()`` makes the next connect fail, as a server's refusal would::

    transport = MemoryTransport()
    service = bgws.Service(config, transport=transport)
    async with service:
        peer = await transport.wait_for_peer()
        await service.send({"type": "hello"})
        await peer.wait_for_messages(1)
        peer.push({"type": "welcome"})
        peer.close(4000, "bye")                  # the service reconnects: a second peer

It keeps the rules of a real link that do not depend on the wire: frames arrive on the event
loop (never inside the call that caused them), in order, nothing is delivered once the link has
started to close, ``pause_reading`` holds frames until ``resume_reading``, a ping is answered
by a pong, and ``Sink.on_closed`` is called exactly once. :func:`check_transport` runs its
``echo`` and ``ping`` rules on it (the others need bytes on a wire).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from bgws.errors import ConnectionClosed, LinkError
from bgws.transport import ConnectRequest, Link, Sink

__all__ = ["MemoryPeer", "MemoryTransport"]

_ABNORMAL = 1006


class _Changes:
    """Wake waiters whenever something changed; each wait is bounded by a timeout."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not done():
                    await self._event.wait()
        except TimeoutError:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}") from None


class MemoryPeer:
    """The server's end of one in-memory link; the test drives it.

    Attributes:
        request: what the client connected with (URL, headers, subprotocols offered).
        received: every message the client sent, in order, as ``(payload, binary)``.
        pings: how many pings the client sent.
        close_code: the code of the client's close, or ``None`` while it has not closed.
        close_reason: the reason of the client's close, or ``None``.
        auto_pong: answer each ping with a pong (as every server must); may be changed.
        echo: send every message the client sends back to it; may be changed.
    """

    def __init__(self, request: ConnectRequest, link: _MemoryLink, changes: _Changes) -> None:
        self.request = request
        self.received: list[tuple[bytes | str, bool]] = []
        self.pings = 0
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.auto_pong = True
        self.echo = False
        self._link = link
        self._changes = changes

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"<MemoryPeer {state} received={len(self.received)}>"

    @property
    def is_open(self) -> bool:
        """Whether the link is up and neither side has started to close it."""
        return not self._link.closing

    def push(self, message: Mapping[str, Any] | str | bytes) -> bool:
        """Send one message to the client: a mapping as JSON text, ``str`` as text, bytes as
        binary. It reaches the sink on a later turn of the loop.

        Returns:
            Whether it was sent (``False`` once the link is closing or closed).

        Raises:
            TypeError: ``message`` is of another type.
        """
        if isinstance(message, str):
            payload, binary = message.encode(), False
        elif isinstance(message, bytes | bytearray | memoryview):
            payload, binary = bytes(message), True
        elif isinstance(message, Mapping):
            payload, binary = msgspec.json.encode(message), False
        else:
            raise TypeError(
                f"cannot push {type(message).__name__}: expected a mapping, str or bytes"
            )
        return self._link.deliver(payload, binary)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the link from the server's side; the client hears ``ConnectionClosed(code)``."""
        self._link.end(ConnectionClosed(code, reason))

    def drop(self) -> None:
        """Cut the link without a close (the client hears code 1006)."""
        self._link.end(ConnectionClosed(_ABNORMAL))

    async def wait_for_messages(self, count: int, *, timeout: float = 5.0) -> None:
        """Wait until the client has sent at least ``count`` messages.

        Raises:
            TimeoutError: fewer came within ``timeout`` seconds.
        """
        await self._changes.until(lambda: len(self.received) >= count, timeout, f"{count} messages")

    async def wait_closed(self, *, timeout: float = 5.0) -> None:
        """Wait until the link is closed, by either side.

        Raises:
            TimeoutError: it is still open after ``timeout`` seconds.
        """
        await self._changes.until(lambda: self._link.closed, timeout, "the link to close")


class _MemoryLink:
    """The client's end: implements :class:`bgws.transport.Link` over the loop's queue."""

    def __init__(
        self, sink: Sink, request: ConnectRequest, subprotocol: str | None, changes: _Changes
    ) -> None:
        self._sink = sink
        self._subprotocol = subprotocol
        self._changes = changes
        self._loop = asyncio.get_running_loop()
        self._held: deque[tuple[bytes, bool]] = deque()
        self._paused = False
        self.closing = False  # a close has started: nothing more is delivered
        self.closed = False  # Sink.on_closed was called
        self._gone = asyncio.Event()
        self.peer = MemoryPeer(request, self, changes)

    # -- the peer's side --------------------------------------------------------------------

    def deliver(self, payload: bytes, binary: bool) -> bool:
        if self.closing:
            return False
        self._held.append((payload, binary))
        if not self._paused:
            self._loop.call_soon(self._flush)
        return True

    def end(self, error: LinkError) -> None:
        if self.closing:
            return
        self.closing = True
        self._held.clear()
        self._loop.call_soon(self._finish, error)

    def _flush(self) -> None:
        held = self._held
        while held and not self._paused and not self.closing:
            payload, binary = held.popleft()
            self._sink.on_data(payload, binary, not held)

    def _finish(self, error: LinkError) -> None:
        self.closed = True
        self._gone.set()
        self._sink.on_closed(error)
        self._changes.notify()

    # -- Link -------------------------------------------------------------------------------

    @property
    def subprotocol(self) -> str | None:
        return self._subprotocol

    @property
    def write_paused(self) -> bool:
        return False

    @property
    def write_backlog(self) -> int:
        return 0

    def send(self, payload: bytes | str, binary: bool) -> None:
        if self.closing:
            return  # like a socket that is gone: the write goes nowhere
        peer = self.peer
        peer.received.append((payload, binary))
        if peer.echo:
            self.deliver(payload.encode() if isinstance(payload, str) else bytes(payload), binary)
        self._changes.notify()

    def send_many(self, messages: list[tuple[bytes | str, bool]]) -> int:
        if self.closing:
            return 0
        for payload, binary in messages:
            self.send(payload, binary)
        return len(messages)

    def ping(self) -> None:
        if self.closing:
            return
        self.peer.pings += 1
        if self.peer.auto_pong:
            self._loop.call_soon(self._pong)
        self._changes.notify()

    def _pong(self) -> None:
        if not self.closing:
            self._sink.on_pong()

    def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closing:
            return
        self.peer.close_code, self.peer.close_reason = code, reason
        self.end(ConnectionClosed(code, reason))

    def abort(self) -> None:
        self.end(ConnectionClosed(_ABNORMAL))

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        self._paused = False
        if self._held:
            self._loop.call_soon(self._flush)

    async def wait_writable(self) -> None:
        return

    async def wait_closed(self) -> None:
        await self._gone.wait()


class MemoryTransport:
    """A :class:`bgws.transport.Transport` whose links end in memory, at a :class:`MemoryPeer`.

    Args:
        subprotocol: the subprotocol the "server" chooses when the client offers it (else none).
        echo: the initial :attr:`MemoryPeer.echo` of every peer.

    Attributes:
        peers: one per successful connect, in order.
        requests: every connect request, refused ones included, in order.
    """

    def __init__(self, *, subprotocol: str | None = None, echo: bool = False) -> None:
        self._subprotocol = subprotocol
        self._echo = echo
        self._refusals: deque[LinkError] = deque()
        self._changes: _Changes | None = None
        self.peers: list[MemoryPeer] = []
        self.requests: list[ConnectRequest] = []

    def __repr__(self) -> str:
        return f"<MemoryTransport peers={len(self.peers)}>"

    def refuse(self, error: LinkError) -> None:
        """Make the next connect raise ``error`` (e.g. ``bgws.AuthRejected(401)``); each call
        refuses one more connect."""
        self._refusals.append(error)

    async def connect(self, request: ConnectRequest, sink: Sink) -> Link:
        """Open an in-memory link; its peer is appended to :attr:`peers`.

        Raises:
            LinkError: the error given to :meth:`refuse`, once per call to it.
        """
        changes = self._changes_now()
        self.requests.append(request)
        changes.notify()
        if self._refusals:
            raise self._refusals.popleft()
        chosen = self._subprotocol if self._subprotocol in request.subprotocols else None
        link = _MemoryLink(sink, request, chosen, changes)
        link.peer.echo = self._echo
        self.peers.append(link.peer)
        return link

    async def aclose(self, timeout: float = 5.0) -> None:
        """Nothing to wait for: an in-memory connect is never left half-done."""

    async def wait_for_peer(self, count: int = 1, *, timeout: float = 5.0) -> MemoryPeer:
        """Wait until ``count`` links were opened, and return the ``count``-th peer.

        Raises:
            TimeoutError: fewer were opened within ``timeout`` seconds.
        """
        await self._changes_now().until(
            lambda: len(self.peers) >= count, timeout, f"connect number {count}"
        )
        return self.peers[count - 1]

    def _changes_now(self) -> _Changes:
        if self._changes is None:
            self._changes = _Changes()
        return self._changes
