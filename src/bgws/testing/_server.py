"""A real WebSocket server on loopback that records everything and injects faults on demand.

:class:`Server` listens on ``127.0.0.1`` (a random port by default), records every handshake
and message, lets a test wait for events without sleeping, pushes messages, and breaks the
link in the ways a real network does: abrupt drops, close handshakes, refused upgrades, stalls,
latency, malformed frames and restarts. It can also play the server side of delivery
protocols: acknowledge ids, count duplicates, answer requests, publish a sequence-numbered feed
and replay it on resume requests. Built on picows; single event loop, not thread-safe.
"""

from __future__ import annotations

import dataclasses
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Final, TypeAlias

from picows import WSUpgradeResponse, WSUpgradeResponseWithListener

from bgws.testing._connection import Connection, ConnectionEvents, make_listener
from bgws.testing._delivery import AckFunction, AckReply, Feed, Reply
from bgws.testing._hooks import HookRunner
from bgws.testing._records import (
    DEFAULT_OVERSIZED_SIZE,
    Handshake,
    MalformedKind,
    Message,
    ReceivedMessage,
    encode,
    malformed_frame,
    split_payload,
)
from bgws.testing._responder import Responder
from bgws.testing._serverstate import DEFAULT_TIMEOUT, ServerState
from bgws.testing._serverviews import ServerViews

__all__ = [
    "DEFAULT_TIMEOUT",
    "ConnectHook",
    "HandshakeHook",
    "MessageHook",
    "Server",
]

logger = logging.getLogger("bgws.testing")

MessageHook: TypeAlias = Callable[[Connection, ReceivedMessage], object]
"""``on_message(connection, message)``: a plain function, or one returning an awaitable
(a coroutine function), which is then awaited. Other return values are ignored."""

ConnectHook: TypeAlias = Callable[[Connection], object]
"""``on_connect(connection)``: like :data:`MessageHook`."""

HandshakeHook: TypeAlias = Callable[[Handshake], int | None]
"""``on_handshake(handshake)``: return an HTTP status (400-599) to refuse, ``None`` to accept."""

_GOING_AWAY: Final = 1001
_SWITCHING_PROTOCOLS: Final = 101


class Server(ServerViews):
    """A WebSocket server on loopback for testing clients, with fault injection.

    Use it as ``async with Server() as server:`` (or :meth:`start` / :meth:`stop`). It can be
    stopped and started again: the port, the records and the counters are kept.

    The read-only views and the ``wait_*`` methods come from :class:`ServerViews`; the private
    bookkeeping (listener, counters, refusals, stall flag) is one :class:`ServerState`.

    Hooks run on the event loop. One that raises is recorded in :attr:`errors` (the
    connection stays up), and leaving ``async with`` re-raises it, so an assertion inside a
    hook fails the test. Coroutine hooks of one connection run one after another, in order.

    Args:
        host: Address to listen on.
        port: Port to listen on; 0 picks a free one.
        echo: Send every received data message back, as one frame of the same type.
        on_message: Called with each received data message.
        on_connect: Called when a handshake has been accepted.
        on_handshake: Decides each upgrade request not refused by :meth:`refuse_next`.
        delay: Seconds every outgoing frame waits before it is sent (see :attr:`delay`).
        close_timeout: Seconds to wait for the client's CLOSE frame after sending ours,
            before aborting the socket.
        id_field: The field of received JSON messages that holds their id, for duplicate
            counting, acks and replies; ``None``: ids are not read.
        ack: Acknowledge received messages: an :class:`AckReply`, or a function that returns
            the ack of a decoded message (see :data:`AckFunction`). ``None``: no acks.
        reply: Answer requests (see :class:`Reply`); ``None``: no replies.
        feed: How :meth:`publish` numbers messages and which resume requests replay them
            (default: ``Feed()``, matching ``bgws.ResumePolicy()``).
        ssl_context: A server TLS context: the server speaks ``wss://`` (and :attr:`url`
            says so). ``None``: plain ``ws://``.

    Attributes:
        echo: As the argument; may be changed at any time.
        on_message: As the argument; may be changed at any time.
        on_connect: As the argument; may be changed at any time.
        on_handshake: As the argument; may be changed at any time.
        close_timeout: As the argument; may be changed at any time.
        id_field: As the argument; may be changed at any time.
        ack: As the argument; may be changed at any time.
        reply: As the argument; may be changed at any time.
        feed: As the argument; may be changed at any time (the kept history is cut to the
            new size; numbering goes on).
        handshakes: Every upgrade request received, accepted or refused, in order.
        connections: Every accepted connection, open or not, in order.
        messages: Every data message received on any connection, in order.
        errors: Exceptions raised by hooks.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        echo: bool = False,
        on_message: MessageHook | None = None,
        on_connect: ConnectHook | None = None,
        on_handshake: HandshakeHook | None = None,
        delay: float = 0.0,
        close_timeout: float = 1.0,
        id_field: str | None = "id",
        ack: AckReply | AckFunction | None = None,
        reply: Reply | None = None,
        feed: Feed | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self._state = ServerState(port, ssl_context)
        self.echo = echo
        self.on_message = on_message
        self.on_connect = on_connect
        self.on_handshake = on_handshake
        self.delay = delay
        self.close_timeout = close_timeout
        self.id_field = id_field
        self.ack = ack
        self.reply = reply
        self.feed = feed if feed is not None else Feed()
        self.handshakes: list[Handshake] = []
        self.connections: list[Connection] = []
        self.messages: list[ReceivedMessage] = []
        self.errors: list[Exception] = []
        self._hooks = HookRunner(self._record_error)
        self._responder = Responder(self, self._record_error)

    def __repr__(self) -> str:
        state = "serving" if self.is_serving else "stopped"
        return f"<Server {self.host}:{self._state.port} {state}, {self.connections_open} open>"

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()
        if exc is None:
            self.raise_errors()

    async def start(self) -> None:
        """Listen; after a :meth:`stop`, on the same port as before.

        Raises:
            RuntimeError: It is already listening.
            OSError: The port cannot be bound.
        """
        await self._state.listen(self._accept, self.host)
        logger.debug("listening on %s", self.url)

    async def stop(self, *, graceful: bool = True) -> None:
        """Stop listening, close every connection, and wait until every socket is gone.

        Args:
            graceful: Send each open connection a CLOSE frame (1001, going away) and wait up to
                :attr:`close_timeout` for the client to answer; stalled or unanswered
                connections are then aborted. With ``False``, abort them all at once.

        Hook coroutines still running are cancelled. Does nothing if not listening.
        """
        state = self._state
        listener = state.listener
        if listener is None:
            return
        state.stopping = True
        try:
            listener.close()
            for connection in self._live_connections():
                if graceful and not connection.is_stalled:
                    connection.close_now(_GOING_AWAY, "server stopping")
                else:
                    connection.drop()
            try:
                await self.wait_until(
                    lambda: state.open_count == 0, timeout=self.close_timeout, what="closes"
                )
            except TimeoutError:
                for connection in self._live_connections():
                    connection.drop()
                await self.wait_until(lambda: state.open_count == 0, what="aborts")
            await self._hooks.cancel()
            await state.wait_listener_closed(DEFAULT_TIMEOUT)
        finally:
            state.forget_listener()
        logger.debug("stopped listening on port %d", state.port)

    async def restart(self) -> None:
        """Abort every connection, stop listening, and listen again on the same port."""
        await self.stop(graceful=False)
        await self.start()

    def raise_errors(self) -> None:
        """Raise what the hooks raised: the exception itself, or a group if several.

        Raises:
            Exception: The one exception in :attr:`errors`.
            ExceptionGroup: All of them, when there are several.
        """
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise ExceptionGroup("bgws.testing.Server hooks raised", list(self.errors))

    # -- state -------------------------------------------------------------------------------

    @property
    def is_serving(self) -> bool:
        """Whether it is listening."""
        return self._state.listener is not None

    @property
    def port(self) -> int:
        """The port (kept across :meth:`stop` / :meth:`start`).

        Raises:
            RuntimeError: Port 0 was asked for and the server was never started.
        """
        port = self._state.port
        if port == 0:
            raise RuntimeError("the server has no port yet: start it first")
        return port

    @property
    def url(self) -> str:
        """``ws://HOST:PORT/`` (``wss://`` with TLS), valid while stopped too, once started."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "ws" if self._state.ssl_context is None else "wss"
        return f"{scheme}://{host}:{self.port}/"

    @property
    def delay(self) -> float:
        """Seconds each outgoing frame (echo, reply, push, pong, close) waits before it is sent.

        Frames keep their order: one queued after a delayed frame leaves after it, even if
        the delay was lowered in between. :meth:`drop` is never delayed.
        """
        return self._delay

    @delay.setter
    def delay(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"delay must be >= 0, got {seconds}")
        self._delay = float(seconds)

    # -- sending -----------------------------------------------------------------------------

    def push(self, message: Message, *, fragments: int = 1) -> int:
        """Send a message to every open connection (after :attr:`delay`).

        Args:
            message: A mapping (JSON text frame, encoded with ``msgspec.json``), ``str`` (text
                frame) or bytes (binary frame).
            fragments: Send it as this many frames: a first frame without FIN, then
                CONTINUATION frames, to test the client's reassembly.

        Returns:
            How many connections it was queued to.

        Raises:
            TypeError: ``message`` is of another type.
            ValueError: ``fragments`` is below 1 or larger than the payload.
        """
        opcode, payload = encode(message)
        parts = split_payload(payload, fragments)
        return sum(c.send_frames(opcode, parts) for c in self.open_connections)

    def publish(self, message: Mapping[str, Any], *, fragments: int = 1) -> int:
        """Number a message, keep it for replay, and send it to every open connection.

        A copy of the message gets the next sequence number in ``feed.seq_field`` (1, 2, ...)
        and is kept in the history (the newest ``feed.history`` messages), also when no client
        is connected, so a client that comes back and asks to resume gets it.

        Args:
            message: A mapping, sent as a JSON text frame.
            fragments: Send it as this many frames, as :meth:`push` does.

        Returns:
            The sequence number it got.

        Raises:
            TypeError: ``message`` is not a mapping, or cannot be encoded as JSON.
            ValueError: ``fragments`` is below 1 or larger than the payload.
        """
        return self._responder.publish(message, self.open_connections, fragments)

    def send_malformed(self, kind: MalformedKind, *, size: int = DEFAULT_OVERSIZED_SIZE) -> int:
        """Send a broken frame, as raw bytes, to every open connection.

        Args:
            kind: ``"invalid_json"`` (a text frame that is not JSON), ``"invalid_utf8"`` (a
                text frame that is not UTF-8), ``"oversized"`` (a valid JSON text frame of
                ``size`` bytes) or ``"reserved_opcode"`` (a frame with opcode 0x3).
            size: Payload size of an ``"oversized"`` frame (default: 1 MiB + 1 byte).

        Returns:
            How many connections it was queued to.

        Raises:
            ValueError: An unknown kind, or a ``size`` too small.
        """
        malformed_frame(kind, size)  # validate even when nobody is connected
        return sum(c.send_malformed(kind, size=size) for c in self.open_connections)

    # -- faults ------------------------------------------------------------------------------

    def drop(self) -> int:
        """Abort every connection at once: no CLOSE frame, as if the network died.

        Returns:
            How many sockets were aborted.
        """
        return sum(c.drop() for c in self._live_connections())

    def close(self, code: int = 1000, reason: str = "") -> int:
        """Start a close handshake with this code and reason on every open connection.

        Returns:
            How many connections it was queued to.

        Raises:
            ValueError: The reason is longer than 123 bytes in UTF-8.
        """
        if len(reason.encode()) > 123:
            raise ValueError("a close reason is at most 123 bytes of UTF-8")
        return sum(c.close(code, reason) for c in self.open_connections)

    def refuse_next(self, n: int = 1, status: int = 503) -> None:
        """Answer the next ``n`` upgrade requests with this HTTP status instead of 101.

        Calls add up: ``refuse_next(1, 401)`` then ``refuse_next(1, 503)`` refuses the next
        request with 401 and the one after with 503.

        Raises:
            ValueError: ``n`` is negative or ``status`` is not in 400-599.
        """
        self._state.refuse(n, status)

    def stall(self, *, new_connections: bool = False) -> int:
        """Freeze every open link, as a half-open TCP connection would.

        The server stops reading (pings go unanswered) and stops sending (frames wait in the
        queue) until :meth:`unstall`.

        Args:
            new_connections: Stall connections accepted later too, right after their
                handshake (so a reconnecting client finds a dead link again).

        Returns:
            How many connections were stalled now.
        """
        self._state.stall_new = new_connections
        return sum(c.stall() for c in self._live_connections())

    def unstall(self) -> int:
        """Resume every stalled link, and stop stalling new connections.

        Returns:
            How many connections were resumed.
        """
        self._state.stall_new = False
        return sum(c.unstall() for c in self._live_connections())

    # -- acks ----------------------------------------------------------------------------------

    def skip_acks(self, n: int = 1) -> None:
        """Send no ack for the next ``n`` messages that would get one (calls add up).

        Raises:
            ValueError: ``n`` is negative.
        """
        self._responder.gate.skip(n)

    def pause_acks(self, *, hold: bool = False) -> None:
        """Stop acknowledging until :meth:`resume_acks`.

        Args:
            hold: Keep the acks not sent, to send them on :meth:`resume_acks`; without it they
                are never sent (the client has to resend).
        """
        self._responder.gate.pause(hold=hold)

    def resume_acks(self) -> int:
        """Acknowledge again, and send the held acks whose connection is still open.

        Returns:
            How many held acks were released.
        """
        return self._responder.resume_acks()

    def flush_acks(self) -> int:
        """Send every partial batch of acks (``AckReply(batch=...)``) now.

        Returns:
            How many ack messages were queued.
        """
        return self._responder.flush_acks()

    # -- called by picows and by connections -------------------------------------------------

    def _live_connections(self) -> list[Connection]:
        return [c for c in self.connections if not c.is_closed]

    def _accept(self, request: Any) -> Any:
        state = self._state
        target = bytes(request.path).decode("latin-1")
        handshake = Handshake.from_request(
            state.next_handshake_id(), target, request.headers, time.monotonic()
        )
        status = state.next_refusal()
        if status is None and self.on_handshake is not None:
            try:
                status = self.on_handshake(handshake)
                if status is not None and not 400 <= status <= 599:
                    raise ValueError(f"on_handshake returned {status}: expected 400-599 or None")
            except Exception as exc:
                self._record_error(exc)
                status = 500
        if status is None or state.stopping:
            status = 503 if state.stopping else _SWITCHING_PROTOCOLS
        handshake = dataclasses.replace(handshake, status=status)
        self.handshakes.append(handshake)
        self._state.notify()
        if status != _SWITCHING_PROTOCOLS:
            body = f"{status} refused by bgws.testing".encode()
            response = WSUpgradeResponse.create_error_response(status, body)
            return WSUpgradeResponseWithListener(response, None)
        events = ConnectionEvents(
            self._connection_opened, self._connection_closed, self._message_received
        )
        return make_listener(Connection(self, handshake, events))

    def _connection_opened(self, connection: Connection) -> None:
        self.connections.append(connection)
        self._state.opened()
        self._state.notify()
        if self._state.stopping:
            connection.drop()
            return
        if self._state.stall_new:
            connection.stall()
        if self.on_connect is not None:
            self._hooks.run(connection, self.on_connect, connection)

    def _connection_closed(self, connection: Connection) -> None:
        self._state.closed(connection)
        self._responder.connection_closed(connection)
        self._state.notify()

    def _message_received(self, connection: Connection, message: ReceivedMessage) -> None:
        self.messages.append(message)
        self._responder.received(connection, message)
        self._state.notify()
        if self.echo:
            opcode, payload = encode(message.data)
            connection.send_frames(opcode, [payload])
        if self.on_message is not None:
            self._hooks.run(connection, self.on_message, connection, message)

    def _record_error(self, exc: Exception) -> None:
        logger.error("a bgws.testing.Server hook raised", exc_info=exc)
        self.errors.append(exc)
        self._state.notify()
