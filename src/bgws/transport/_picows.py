"""The picows transport: the default, and the fastest measured here.

One object per connection is both the picows listener (frames in) and the :class:`Link`
(frames out). Frames go straight to the engine's sink: no queue, no task, no future per frame.

picows 2.3 enforces part of RFC 6455 itself (unknown opcodes, fragmented or long control
frames, masked frames, close codes and reasons, the size limit); the link enforces the rest
(reserved bits, UTF-8 in text messages, continuation order) and, once a close frame has been
sent for any reason, hands nothing more to the engine.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from typing import Any

import picows

from .._engine.flag import Flag
from ..errors import ConnectionClosed, LinkError, MessageTooBig
from ._policy import (
    LibraryLog,
    check_negotiation,
    connect_failed,
    connect_timed_out,
    handshake_rejected,
)
from ._seam import ConnectRequest, Sink, send_queue_size

__all__ = ["PicowsTransport"]

_TEXT = picows.WSMsgType.TEXT
_BINARY = picows.WSMsgType.BINARY
_CONTINUATION = picows.WSMsgType.CONTINUATION
_PING = picows.WSMsgType.PING
_PONG = picows.WSMsgType.PONG
_CLOSE = picows.WSMsgType.CLOSE
_ABNORMAL = 1006
_PROTOCOL_ERROR = 1002
_INVALID_TEXT = 1007
_LOG = LibraryLog("bgws.transport.picows")
_TOO_BIG = 1009


class _PicowsLink(picows.WSListener):  # type: ignore[misc]
    """A picows listener that is also a bgws :class:`~bgws.transport.Link`."""

    def __init__(self, sink: Sink, max_message_size: int, offered: Sequence[str] = ()) -> None:
        self._sink = sink
        self._max = max_message_size
        self._offered = offered
        self._refused: LinkError | None = None
        self._ws: Any = None
        self._fragments: bytearray | None = None
        self._fragments_binary = False
        self._writable = Flag()
        self._writable.set()
        self._subprotocol: str | None = None
        # Plain attributes, not properties: the send path reads both for every message.
        self.closed = False
        self.write_paused = False
        self._too_big_reported = False
        self._disconnected: asyncio.Future[None] | None = None

    # -- picows callbacks -------------------------------------------------------------------

    def on_ws_connected(self, transport: Any) -> None:
        self._ws = transport
        # picows keeps the reason for a protocol-error disconnect in a future that must be
        # retrieved; one watcher per link does that (and backs wait_closed).
        self._disconnected = asyncio.ensure_future(transport.wait_disconnected())
        self._disconnected.add_done_callback(_retrieve)
        headers = transport.response.headers
        chosen = headers.get("Sec-WebSocket-Protocol")
        self._subprotocol = chosen.strip() if chosen else None
        try:  # picows negotiates no extension, so any named is one the client never offered
            check_negotiation(self._offered, chosen, headers.get("Sec-WebSocket-Extensions"))
        except LinkError as exc:
            self._refused = exc
            self.close(_PROTOCOL_ERROR, "unoffered subprotocol or extension")

    def check_open(self) -> None:
        """Raise unless the handshake ended with an open link.

        Raises:
            LinkError: the answer named what was not offered, or the server hung up
                mid-handshake (picows's ``ws_connect`` then returns normally).
        """
        if self._refused is not None:
            raise self._refused
        if self._ws is None:
            raise LinkError("the server closed the connection during the WebSocket handshake")

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        # The common case (a whole text frame, no reserved bit, no close sent) costs five
        # attribute reads and an ASCII scan more than before these checks. Measured on this
        # callback alone (picows 2.3, CPython 3.11): a 96-byte JSON frame 254 -> 382 ns, a
        # 98-byte accented one 256 -> 567 ns, a 16 KiB ASCII one 688 -> 1492 ns. For UTF-8:
        # bytes.isascii() scans 100 bytes in ~15 ns, bytes.decode() validates them in ~35 ns
        # (ASCII) to ~120 ns (accented), get_payload_as_utf8_text() in ~40-135 ns plus a
        # second copy; so ASCII is checked first and only other text is decoded.
        msg_type = frame.msg_type
        if (
            msg_type is _TEXT
            and frame.fin
            and self._fragments is None
            and not (transport.is_close_frame_sent or frame.rsv1 or frame.rsv2 or frame.rsv3)
        ):
            payload = frame.get_payload_as_bytes()
            if payload.isascii() or _is_utf8(payload):
                self._sink.on_data(payload, False, frame.last_in_buffer)
                return
        if self._other_frame(transport, frame, msg_type):
            return
        if frame.last_in_buffer:
            self._sink.on_read_done()

    def _other_frame(self, transport: Any, frame: Any, msg_type: Any) -> bool:
        """Every frame but a plain text one; returns whether it delivered a message."""
        if transport.is_close_frame_sent:  # failing or closing: nothing more reaches the engine
            if msg_type is _CLOSE:  # the peer's answer to our close: the handshake is done
                transport.disconnect()
            return True
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            return self._fail(_PROTOCOL_ERROR, "reserved bits set with no extension negotiated")
        if msg_type is _TEXT or msg_type is _BINARY:
            if self._fragments is not None:
                return self._fail(_PROTOCOL_ERROR, "a new message inside a fragmented one")
            if frame.fin:
                return self._deliver(frame.get_payload_as_bytes(), msg_type is _BINARY, frame)
            self._fragments = bytearray(frame.get_payload_as_memoryview())
            self._fragments_binary = msg_type is _BINARY
        elif msg_type is _CONTINUATION:
            return self._continue(frame)
        elif msg_type is _PING:  # answered here, after the reserved-bit check above
            transport.send_pong(frame.get_payload_as_bytes())
        elif msg_type is _PONG:
            self._sink.on_pong()
        elif msg_type is _CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        return False

    def _deliver(self, payload: bytes, binary: bool, frame: Any) -> bool:
        """Hand one whole message to the engine, if a text one is UTF-8 (else fail, 1007)."""
        if not binary and not (payload.isascii() or _is_utf8(payload)):
            return self._fail(_INVALID_TEXT, "invalid UTF-8 in a text message")
        self._sink.on_data(payload, binary, frame.last_in_buffer)
        return True

    def _fail(self, code: int, reason: str) -> bool:
        """Fail the link for a peer's protocol violation; the close code tells the peer why."""
        self.close(code, reason)
        return True

    def _continue(self, frame: Any) -> bool:
        """Add a continuation frame; returns whether it completed (and delivered) a message."""
        parts = self._fragments
        if parts is None:  # a continuation with nothing to continue: a protocol error
            return self._fail(_PROTOCOL_ERROR, "unexpected continuation frame")
        parts += frame.get_payload_as_memoryview()
        if len(parts) > self._max:
            self._fragments = None
            self._too_big_reported = True
            self._sink.on_problem(
                MessageTooBig(f"fragmented message larger than max_message_size ({self._max})")
            )
            self.close(_TOO_BIG, "message too big")
            return True
        if frame.fin:
            self._fragments = None
            return self._deliver(bytes(parts), self._fragments_binary, frame)
        return False

    def on_ws_disconnected(self, transport: Any) -> None:
        self.closed = True
        self.write_paused = False
        self._writable.set()
        handshake = transport.close_handshake
        code, reason = _ABNORMAL, ""
        if handshake is not None:
            sent, recv = handshake.sent, handshake.recv
            first = recv if handshake.recv_then_sent or sent is None else sent
            if first is not None:
                code, reason = _code(first.code), first.reason
            if sent is not None and _code(sent.code) == _TOO_BIG and not self._too_big_reported:
                self._sink.on_problem(
                    MessageTooBig(f"a frame was larger than max_message_size ({self._max})")
                )
        self._sink.on_closed(ConnectionClosed(code, reason))

    def pause_writing(self) -> None:
        self.write_paused = True
        self._writable.clear()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._writable.set()

    # -- Link -------------------------------------------------------------------------------

    @property
    def subprotocol(self) -> str | None:
        return self._subprotocol

    def send(self, payload: bytes | str, binary: bool) -> None:
        self._ws.send(_BINARY if binary else _TEXT, payload)

    def send_many(self, messages: list[tuple[bytes | str, bool]]) -> int:
        # TCP_CORK (Linux) holds the frames until the burst is complete, so a burst of small
        # messages leaves in full segments instead of one send per message.
        ws = self._ws
        corked = len(messages) > 1 and _cork(ws, True)
        done = 0
        try:
            for payload, binary in messages:
                ws.send(_BINARY if binary else _TEXT, payload)
                done += 1
        except Exception as exc:  # the caller sees done < len(messages)
            _LOG.warning("send failed after %d of %d messages: %s", done, len(messages), exc)
        finally:
            if corked:
                _cork(ws, False)
        return done

    def ping(self) -> None:
        self._ws.send_ping()

    def close(self, code: int = 1000, reason: str = "") -> None:
        ws = self._ws
        if self.closed or ws is None:
            return
        if not ws.is_close_frame_sent:
            ws.send_close(picows.WSCloseCode(code), reason.encode())
        ws.disconnect()

    def abort(self) -> None:
        if self._ws is not None and not self.closed:
            self._ws.disconnect(graceful=False)

    def pause_reading(self) -> None:
        self._ws.underlying_transport.pause_reading()

    def resume_reading(self) -> None:
        self._ws.underlying_transport.resume_reading()

    async def wait_writable(self) -> None:
        await self._writable.wait()

    async def wait_closed(self) -> None:
        if self._disconnected is not None:
            await asyncio.wait([self._disconnected])

    @property
    def write_backlog(self) -> int:
        if self._ws is None or self.closed:
            return 0
        underlying = self._ws.underlying_transport
        queued: int = underlying.get_write_buffer_size()
        return queued + send_queue_size(underlying.get_extra_info("socket"))


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


_TCP_CORK = getattr(socket, "TCP_CORK", None)


def _cork(ws: Any, on: bool) -> bool:
    """Set TCP_CORK on the link's socket; False where the platform has no such option."""
    if _TCP_CORK is None:
        return False
    sock = ws.underlying_transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 1 if on else 0)
    except OSError:
        return False
    return True


def _code(code: Any) -> int:
    return int(getattr(code, "value", code))


def _is_utf8(payload: bytes) -> bool:
    try:
        payload.decode()
    except UnicodeDecodeError:
        return False
    return True


def _translate(exc: BaseException, url: str) -> LinkError:
    """Map a picows or OS error to a bgws :class:`LinkError` (no URL or header in the text)."""
    if isinstance(exc, picows.WSHandshakeError):
        response = exc.response
        if response is not None and int(response.status) >= 300:
            return handshake_rejected(int(response.status), response.headers.get("Location"))
        return LinkError(f"WebSocket handshake failed: {exc}")
    if isinstance(exc, OSError):
        return connect_failed(exc, url)
    return LinkError(f"cannot connect: {type(exc).__name__}: {exc}")


class PicowsTransport:
    """Opens links with picows.

    A connect attempt that is cancelled (the service stopped) or times out while the server is
    still answering the handshake is not simply abandoned: it finishes in the background,
    bounded by the handshake timeout, and its connection is then dropped, so no socket leaks.
    :meth:`aclose` waits for such attempts.
    """

    def __init__(self) -> None:
        self._abandoned: set[asyncio.Future[Any]] = set()

    async def connect(self, request: ConnectRequest, sink: Sink) -> _PicowsLink:
        link = _PicowsLink(sink, request.max_message_size, request.subprotocols)
        headers = list(request.headers)
        if request.subprotocols:
            headers.append(("Sec-WebSocket-Protocol", ", ".join(request.subprotocols)))
        attempt = asyncio.ensure_future(
            picows.ws_connect(
                lambda: link,
                request.url,
                ssl_context=request.ssl_context,
                websocket_handshake_timeout=request.timeout,
                max_frame_size=request.max_message_size,
                extra_headers=headers,
                max_redirects=0,
                # picows would answer pings before the link sees them, reserved bits and all;
                # the link answers them itself once the frame has passed its checks.
                enable_auto_pong=False,
                read_buffer_init_size=request.read_buffer_size,
                logger_name=_LOG,
                # aiofastnet 1.2 (picows's TLS layer when installed) reports a server that
                # does not speak TLS by handing the loop's exception handler an exception
                # class, which logging cannot format ("--- Logging error ---" on every
                # attempt), and raises an SSLError without a message; asyncio's TLS does
                # neither, so wss:// links use it.
                use_aiofastnet=False if request.url.startswith("wss:") else None,
                # Bounds the TLS handshake of an abandoned attempt too (asyncio's default is
                # 60 s), so a wss:// attempt at a server that never answers TLS ends in time.
                ssl_handshake_timeout=request.timeout if request.url.startswith("wss:") else None,
            )
        )
        try:
            async with asyncio.timeout(request.timeout):
                await asyncio.shield(attempt)
        except TimeoutError as exc:
            self._abandon(attempt)
            raise connect_timed_out(request.timeout, request.url) from exc
        except (picows.WSError, OSError) as exc:
            raise _translate(exc, request.url) from exc
        except BaseException:
            self._abandon(attempt)
            raise
        link.check_open()
        return link

    def _abandon(self, attempt: asyncio.Future[Any]) -> None:
        if attempt.done():
            _drop_result(attempt)
            return
        self._abandoned.add(attempt)
        attempt.add_done_callback(self._abandoned.discard)
        attempt.add_done_callback(_drop_result)

    async def aclose(self, timeout: float = 5.0) -> None:
        """Wait (at most ``timeout``) for abandoned attempts; cancel what is left."""
        pending = list(self._abandoned)
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=timeout)
        for attempt in late:
            attempt.cancel()
        if late:
            await asyncio.wait(late)


def _drop_result(attempt: asyncio.Future[Any]) -> None:
    """An abandoned attempt finished: drop its connection, if it made one."""
    if attempt.cancelled():
        return
    if attempt.exception() is None:
        transport, _ = attempt.result()
        transport.disconnect(graceful=False)
