"""One client connection of the test server: what it received, and its faults.

A :class:`Connection` exists from the accepted handshake until the socket is gone. Everything
it sends goes through one ordered outbox: each entry becomes due ``Server.delay`` seconds after
it was queued, entries leave in the order they were queued, and nothing leaves while the
connection is stalled. That models a slow or frozen link without reordering frames.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Protocol

from picows import WSListener, WSMsgType

from bgws.testing._records import (
    DEFAULT_OVERSIZED_SIZE,
    OPCODE_BINARY,
    OPCODE_TEXT,
    Handshake,
    MalformedKind,
    Message,
    ReceivedMessage,
    encode,
    malformed_frame,
    parse_close_payload,
    split_payload,
)

__all__ = ["Connection", "ConnectionEvents", "ServerTiming", "make_listener"]


class ServerTiming(Protocol):
    """The server options a :class:`Connection` reads each time it sends or closes."""

    @property
    def delay(self) -> float: ...

    @property
    def close_timeout(self) -> float: ...


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectionEvents:
    """What a :class:`Connection` tells its server: it opened, it closed, a message came.

    Callbacks rather than the server itself, so that this module does not import the server
    module (which imports it).
    """

    opened: Callable[[Connection], None]
    closed: Callable[[Connection], None]
    received: Callable[[Connection, ReceivedMessage], None]


_OPCODE_CONTINUATION: Final = 0x0
_OPCODE_CLOSE: Final = 0x8
_OPCODE_PING: Final = 0x9
_PROTOCOL_ERROR: Final = 1002
_INVALID_TEXT: Final = 1007
_NO_STATUS_RCVD: Final = 1005
_MAX_CLOSE_REASON: Final = 123

_MSG_TYPES: Final[dict[int, Any]] = {
    _OPCODE_CONTINUATION: WSMsgType.CONTINUATION,
    OPCODE_TEXT: WSMsgType.TEXT,
    OPCODE_BINARY: WSMsgType.BINARY,
}


class Connection:
    """One accepted WebSocket connection, as the server sees it.

    Get connections from :attr:`Server.connections`, :meth:`Server.wait_for_connections` or
    the ``connection`` argument of the ``on_message`` / ``on_connect`` hooks. The fault methods
    here act on this connection only; the methods of the same name on :class:`Server` act on
    every open connection.

    Attributes:
        id: The connection id (also :attr:`Handshake.connection_id`).
        handshake: The upgrade request that opened it.
        messages: Every data message received on it, in order.
        close_code: The code of the CLOSE frame the client sent, or ``None`` if it sent none
            (1005 when its CLOSE frame carried no code).
        close_reason: The reason of that CLOSE frame, or ``None``.
    """

    def __init__(
        self, server: ServerTiming, handshake: Handshake, events: ConnectionEvents
    ) -> None:
        self._server = server
        self._events = events
        self.id: int = handshake.connection_id
        self.handshake: Handshake = handshake
        self.messages: list[ReceivedMessage] = []
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._transport: Any = None
        self._connected = False
        self._disconnected = False
        self._dropped = False
        self._closing = False
        self._close_sent = False
        self._stalled = False
        self._outbox: deque[tuple[float, Callable[[], None]]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._abort_timer: asyncio.TimerHandle | None = None
        self._held: list[tuple[int, bytes, bool]] = []
        self._fragment_opcode: int | None = None
        self._fragments: list[bytes] = []

    def __repr__(self) -> str:
        if self._disconnected:
            state = "closed"
        elif self._closing:
            state = "closing"
        else:
            state = "stalled" if self._stalled else "open"
        return f"<Connection {self.id} {self.handshake.target!r} {state}>"

    @property
    def is_open(self) -> bool:
        """Connected, and no close handshake started: pushes still reach it."""
        return self._connected and not self._disconnected and not self._closing

    @property
    def is_closed(self) -> bool:
        """The socket is gone (closed, dropped or lost)."""
        return self._disconnected

    @property
    def is_stalled(self) -> bool:
        """Whether :meth:`stall` froze the link."""
        return self._stalled

    def send(self, message: Message, *, fragments: int = 1) -> bool:
        """Queue one message to this client (after :attr:`Server.delay`).

        Args:
            message: A mapping (JSON text frame), ``str`` (text frame) or bytes (binary frame).
            fragments: Send it as this many frames (one first frame, then CONTINUATION frames).

        Returns:
            ``True`` if queued, ``False`` if the connection is no longer open.

        Raises:
            TypeError: ``message`` is of another type.
            ValueError: ``fragments`` is below 1 or larger than the payload.
        """
        opcode, payload = encode(message)
        return self.send_frames(opcode, split_payload(payload, fragments))

    def send_frames(self, opcode: int, parts: list[bytes]) -> bool:
        """Queue one message already split into fragments (as :meth:`Server.push` does).

        Args:
            opcode: ``1`` (text) or ``2`` (binary).
            parts: the payload of each frame, in order (one part: an unfragmented message).

        Returns:
            Whether it was queued (``False`` once the connection is closing or closed).
        """
        if not self.is_open:
            return False
        self._enqueue(lambda: self._write_message(opcode, parts))
        return True

    def send_malformed(self, kind: MalformedKind, *, size: int = DEFAULT_OVERSIZED_SIZE) -> bool:
        """Queue one broken frame, written as raw bytes on the socket.

        Args:
            kind: ``"invalid_json"``, ``"invalid_utf8"``, ``"oversized"`` (a valid JSON text
                frame of ``size`` bytes) or ``"reserved_opcode"`` (opcode 0x3).
            size: Payload size of an ``"oversized"`` frame (default: 1 MiB + 1 byte).

        Returns:
            ``True`` if queued, ``False`` if the connection is no longer open.

        Raises:
            ValueError: An unknown kind, or a ``size`` too small.
        """
        raw = malformed_frame(kind, size)
        if not self.is_open:
            return False
        self._enqueue(lambda: self._write_raw(raw))
        return True

    def close(self, code: int = 1000, reason: str = "") -> bool:
        """Queue a close handshake with this code and reason.

        The server then waits for the client's CLOSE frame and closes the socket; a client that
        does not answer within :attr:`Server.close_timeout` is aborted.

        Returns:
            ``True`` if the close was queued, ``False`` if the connection is no longer open.

        Raises:
            ValueError: The reason is longer than 123 bytes in UTF-8.
        """
        if len(reason.encode()) > _MAX_CLOSE_REASON:
            raise ValueError(f"a close reason is at most {_MAX_CLOSE_REASON} bytes of UTF-8")
        if not self.is_open:
            return False
        self._closing = True
        self._enqueue(lambda: self.close_now(code, reason))
        return True

    def drop(self) -> bool:
        """Abort the socket at once: no CLOSE frame, queued frames are discarded.

        Returns:
            ``True`` if the socket was still connected, else ``False``.
        """
        if not self._connected or self._disconnected or self._dropped:
            return False
        self._dropped = True  # nothing more goes out, not even a CLOSE from a later stop()
        self._outbox.clear()
        self._transport.underlying_transport.abort()
        return True

    def stall(self) -> bool:
        """Freeze the link, as a half-open TCP connection would.

        The server stops reading the socket (so pings go unanswered and the client's frames
        pile up in the kernel) and stops sending (queued frames wait). :meth:`unstall`
        resumes both, like a link that recovers.

        Returns:
            ``True`` if it was open and not yet stalled.
        """
        if self._stalled or not self._connected or self._disconnected:
            return False
        self._stalled = True
        self._transport.underlying_transport.pause_reading()
        return True

    def unstall(self) -> bool:
        """Resume a stalled link: read again, handle held frames, deliver queued ones.

        Returns:
            ``True`` if it was stalled.
        """
        if not self._stalled:
            return False
        self._stalled = False
        if self._disconnected:
            return True
        self._transport.underlying_transport.resume_reading()
        held, self._held = self._held, []
        for frame in held:
            self._on_frame(*frame)
        self._flush()
        return True

    # -- driven by the picows listener and the server --------------------------------------

    def _on_connected(self, transport: Any) -> None:
        """The handshake completed (called by the listener)."""
        self._transport = transport
        self._connected = True
        self._events.opened(self)

    def _on_disconnected(self) -> None:
        """The socket is gone (called by the listener)."""
        self._disconnected = True
        self._outbox.clear()
        self._held.clear()
        for handle in (self._timer, self._abort_timer):
            if handle is not None:
                handle.cancel()
        self._timer = self._abort_timer = None
        if self._connected:
            self._events.closed(self)

    def _on_frame(self, opcode: int, payload: bytes, fin: bool) -> None:
        """Handle one received frame (called by the listener)."""
        if self._stalled:
            self._held.append((opcode, payload, fin))
        elif opcode == _OPCODE_PING:
            self._enqueue(lambda: self._transport.send_pong(payload))
        elif opcode == _OPCODE_CLOSE:
            self._on_close_frame(payload)
        elif opcode in (OPCODE_TEXT, OPCODE_BINARY):
            if self._fragment_opcode is not None:
                self.close_now(_PROTOCOL_ERROR, "expected a continuation frame")
            elif fin:
                self._deliver(opcode, payload)
            else:
                self._fragment_opcode, self._fragments = opcode, [payload]
        elif opcode == _OPCODE_CONTINUATION:
            if self._fragment_opcode is None:
                self.close_now(_PROTOCOL_ERROR, "unexpected continuation frame")
                return
            self._fragments.append(payload)
            if fin:
                first, self._fragment_opcode = self._fragment_opcode, None
                parts, self._fragments = self._fragments, []
                self._deliver(first, b"".join(parts))

    def close_now(self, code: int, reason: str = "") -> None:
        """Send a CLOSE frame now, ahead of the outbox; abort if the client has not closed
        within :attr:`Server.close_timeout`.

        Args:
            code: the close code.
            reason: the close reason.
        """
        if self._close_sent or self._disconnected or self._dropped:
            return
        self._closing = self._close_sent = True
        self._outbox.clear()
        self._transport.send_close(code, reason.encode())
        if self.close_code is not None:
            # The client's CLOSE came first: this frame completes the handshake.
            self._transport.disconnect()
            return
        loop = asyncio.get_running_loop()
        self._abort_timer = loop.call_later(
            self._server.close_timeout, self._transport.underlying_transport.abort
        )

    # -- internals ---------------------------------------------------------------------------

    def _on_close_frame(self, payload: bytes) -> None:
        code, reason = parse_close_payload(payload)
        self.close_code, self.close_reason = code, reason
        if self._close_sent:
            self._transport.disconnect()
            return
        self._closing = True
        reply = 1000 if code == _NO_STATUS_RCVD else code
        self._enqueue(lambda: self.close_now(reply))

    def _deliver(self, opcode: int, payload: bytes) -> None:
        data: str | bytes = payload
        if opcode == OPCODE_TEXT:
            try:
                data = payload.decode()
            except UnicodeDecodeError:
                self.close_now(_INVALID_TEXT, "invalid UTF-8 in a text message")
                return
        message = ReceivedMessage(self.id, data, time.monotonic())
        self.messages.append(message)
        self._events.received(self, message)

    def _enqueue(self, action: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        self._outbox.append((loop.time() + self._server.delay, action))
        self._flush()

    def _flush(self) -> None:
        if self._stalled or self._disconnected:
            return
        loop = asyncio.get_running_loop()
        while self._outbox and self._outbox[0][0] <= loop.time():
            _, action = self._outbox.popleft()
            action()
            if self._stalled or self._disconnected:
                return
        if self._outbox and self._timer is None:
            self._timer = loop.call_at(self._outbox[0][0], self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._flush()

    def _write_message(self, opcode: int, parts: list[bytes]) -> None:
        if self._close_sent:
            return
        last = len(parts) - 1
        for index, part in enumerate(parts):
            msg_type = _MSG_TYPES[opcode if index == 0 else _OPCODE_CONTINUATION]
            self._transport.send(msg_type, part, index == last)

    def _write_raw(self, raw: bytes) -> None:
        if not self._close_sent:
            self._transport.underlying_transport.write(raw)


class _Listener(WSListener):  # type: ignore[misc]
    """The picows listener: turns callbacks into calls on one :class:`Connection`."""

    # The listener is the connection's private half, so it calls its private methods.

    def __init__(self, connection: Connection) -> None:
        super().__init__()
        self._connection = connection

    def on_ws_connected(self, transport: Any) -> None:
        self._connection._on_connected(transport)

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        self._connection._on_frame(
            int(frame.msg_type), frame.get_payload_as_bytes(), bool(frame.fin)
        )

    def on_ws_disconnected(self, transport: Any) -> None:
        self._connection._on_disconnected()


def make_listener(connection: Connection) -> Any:
    """The picows listener for a connection."""
    return _Listener(connection)
