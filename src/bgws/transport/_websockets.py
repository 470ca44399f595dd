"""The websockets transport: for permessage-deflate compression and HTTP/SOCKS proxies.

picows is faster and stays the default; choose this one with ``Config.transport =
"websockets"`` when a server wants compressed frames, or the network only lets traffic out
through a proxy (websockets reads the usual ``HTTPS_PROXY`` / ``ALL_PROXY`` variables). It
needs the ``websockets`` package (the ``bgws[websockets]`` extra).

websockets delivers messages through ``recv()``, so each link has one reader task that hands
them to the sink; sending uses the library's sans-I/O protocol object directly, so
:meth:`Link.send` stays synchronous and never creates a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Any

from ..errors import ConnectionClosed, LinkError, MessageTooBig
from ._policy import LibraryLog, connect_failed, connect_timed_out, handshake_rejected
from ._seam import ConnectRequest, Sink, send_queue_size

__all__ = ["WebsocketsTransport"]

_ABNORMAL = 1006
_TOO_BIG = 1009
_LOG = LibraryLog("bgws.transport.websockets")


@functools.cache
def _connector() -> Any:
    """websockets' ``connect``, made never to follow a redirect (bgws decides that)."""
    try:
        import websockets.asyncio.client as client
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise LinkError(
            'the websockets transport needs the websockets package: pip install "bgws[websockets]"'
        ) from exc

    class Connect(client.connect):
        def process_redirect(self, exc: Exception) -> Exception:
            return exc  # raised as is: an InvalidStatus that _translate turns into an error

    return Connect


class _WebsocketsLink:
    """One websockets connection as a bgws :class:`~bgws.transport.Link`."""

    def __init__(self, ws: Any, sink: Sink) -> None:
        from websockets.protocol import State

        self._ws = ws
        self._sink = sink
        self._open = State.OPEN
        self._closed = False
        self._closing = False  # set by close()/abort(): the engine wants nothing more
        self._reading = asyncio.Event()
        self._reading.set()
        self._pings: set[asyncio.Future[Any]] = set()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed as Closed

        ws, sink = self._ws, self._sink
        protocol = ws.protocol
        try:
            while True:
                if not self._reading.is_set():
                    await self._reading.wait()
                message = await ws.recv()
                # Once this side has started to close (bgws closing, or websockets failing
                # the link for a protocol violation), nothing more reaches the engine.
                if self._closing or (
                    protocol.close_sent is not None and protocol.close_rcvd_then_sent is not True
                ):
                    break
                if isinstance(message, str):
                    sink.on_data(message.encode(), False, True)
                else:
                    sink.on_data(bytes(message), True, True)
        except Closed:
            pass
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in a callback must not leave the link half-alive
            _LOG.warning("reader stopped: %s", exc)
            ws.transport.abort()
        finally:
            self._finish()

    def _finish(self) -> None:
        if self._closed:
            return
        self._closed = True
        ws = self._ws
        code, reason = _ABNORMAL, ""
        rcvd, sent = ws.protocol.close_rcvd, ws.protocol.close_sent
        first = rcvd if ws.protocol.close_rcvd_then_sent or sent is None else sent
        if first is not None:
            code, reason = int(first.code), first.reason
        if sent is not None and first is sent and int(sent.code) == _TOO_BIG:
            self._sink.on_problem(MessageTooBig("a message was larger than max_message_size"))
        self._sink.on_closed(ConnectionClosed(code, reason))

    # -- Link -------------------------------------------------------------------------------

    @property
    def subprotocol(self) -> str | None:
        chosen = self._ws.subprotocol
        return None if chosen is None else str(chosen)

    @property
    def write_paused(self) -> bool:
        return bool(self._ws.paused)

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, payload: bytes | str, binary: bool) -> None:
        ws = self._ws
        protocol = ws.protocol
        if protocol.state is not self._open:
            return
        data = payload.encode() if isinstance(payload, str) else payload
        if binary:
            protocol.send_binary(data)
        else:
            protocol.send_text(data)
        ws.send_data()

    def send_many(self, messages: list[tuple[bytes | str, bool]]) -> int:
        done = 0
        try:
            for payload, binary in messages:
                self.send(payload, binary)
                done += 1
        except Exception as exc:  # the caller sees done < len(messages)
            _LOG.warning("send failed after %d of %d messages: %s", done, len(messages), exc)
        return done

    def ping(self) -> None:
        waiter = asyncio.ensure_future(self._ping())
        self._pings.add(waiter)
        waiter.add_done_callback(self._pings.discard)

    async def _ping(self) -> None:
        with contextlib.suppress(Exception):
            pong = await self._ws.ping()
            await pong
            self._sink.on_pong()

    def close(self, code: int = 1000, reason: str = "") -> None:
        self._closing = True
        if self._closed:
            return
        closing = asyncio.ensure_future(self._ws.close(code, reason))
        self._pings.add(closing)
        closing.add_done_callback(self._pings.discard)

    def abort(self) -> None:
        self._closing = True
        if not self._closed:
            self._ws.transport.abort()

    def pause_reading(self) -> None:
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    async def wait_writable(self) -> None:
        with contextlib.suppress(Exception):
            await self._ws.drain()

    async def wait_closed(self) -> None:
        await asyncio.wait([self._reader])
        for task in list(self._pings):
            task.cancel()

    @property
    def write_backlog(self) -> int:
        if self._closed:
            return 0
        underlying = self._ws.transport
        queued: int = underlying.get_write_buffer_size()
        return queued + send_queue_size(underlying.get_extra_info("socket"))


def _translate(exc: BaseException, url: str) -> LinkError:
    from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

    if isinstance(exc, InvalidStatus):
        response = exc.response
        return handshake_rejected(int(response.status_code), response.headers.get("Location"))
    if isinstance(exc, InvalidURI):
        return LinkError("the URL is not a valid WebSocket URL")
    if isinstance(exc, InvalidHandshake):
        return LinkError(f"WebSocket handshake failed: {exc}")
    if isinstance(exc, OSError):
        return connect_failed(exc, url)
    return LinkError(f"cannot connect: {type(exc).__name__}: {exc}")


class WebsocketsTransport:
    """Opens links with the websockets library (compression on, proxies from the environment).

    Args:
        compression: ``"deflate"`` (permessage-deflate, the default) or ``None``.
        proxy: ``True`` to use the proxy the environment names, ``None`` for none, or a URL.
    """

    def __init__(self, *, compression: str | None = "deflate", proxy: str | bool | None = True):
        self._compression = compression
        self._proxy = proxy

    async def aclose(self, timeout: float = 5.0) -> None:
        """Nothing to wait for: this transport leaves no connect attempt behind."""

    async def connect(self, request: ConnectRequest, sink: Sink) -> _WebsocketsLink:
        connect = _connector()
        from websockets.exceptions import WebSocketException

        options: dict[str, Any] = {
            "additional_headers": list(request.headers),
            "subprotocols": list(request.subprotocols) or None,
            "open_timeout": request.timeout,
            "ping_interval": None,  # bgws runs its own keepalive
            "max_size": request.max_message_size,
            "compression": self._compression,
            "logger": _LOG,
            "proxy": self._proxy,
        }
        if request.url.startswith("wss:") and request.ssl_context is not None:
            options["ssl"] = request.ssl_context
        try:
            ws = await connect(request.url, **options)
        except TimeoutError as exc:
            raise connect_timed_out(request.timeout, request.url) from exc
        except (WebSocketException, OSError) as exc:
            raise _translate(exc, request.url) from exc
        return _WebsocketsLink(ws, sink)
