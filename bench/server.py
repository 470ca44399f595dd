"""The one benchmark server: a picows server that does near-zero work per message.

Every client, of every library, talks to this same process, so what differs between rows is the
client. The server never decodes what it echoes and never encodes what it pushes: outgoing
frames are framed by hand (server frames are unmasked) and written once per network read.

The URL path picks the behaviour of a connection:

* ``/firehose?n=N``: on the first data frame, push ``N`` pre-framed JSON messages of about
  100 bytes (``{"type":"tick","seq":1,...}``, ``seq`` counting from 1) as fast as the socket
  takes them.
* ``/echo``: send every data frame back unchanged (batched per read).
* ``/ack``: answer every data frame with ``{"type":"ack","id":<its id>}`` (the id is sliced
  out as raw JSON, not re-encoded).
* ``/stall``: on the first data frame, answer ``{"type":"stalled"}`` and stop reading, so pings
  go unanswered while TCP stays up (a dead link as the client sees it).
* ``/restart``: on the first data frame, abort every connection, stop listening and listen
  again on the same port (a server restart).
* anything else: idle; pings are answered (picows' auto-pong).

Run as ``python -m bench.server``: it prints ``PORT <n>`` once listening and serves until its
standard input closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import resource
import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import picows

from bench.common import firehose_message, install_loop

__all__ = ["add_frame", "frame", "main", "serve"]

_TEXT = picows.WSMsgType.TEXT
_BINARY = picows.WSMsgType.BINARY
_CLOSE = picows.WSMsgType.CLOSE
_CHUNK = 256 * 1024
_STALL_LIMIT = 30.0
"""A stalled connection is dropped after this many seconds (the client has long gone)."""


class _IdOnly(msgspec.Struct):
    id: msgspec.Raw = msgspec.Raw(b"null")


_id_decoder = msgspec.json.Decoder(_IdOnly)


def add_frame(out: bytearray, payload: bytes | memoryview, binary: bool = False) -> None:
    """Append one unmasked (server to client) WebSocket frame holding ``payload`` to ``out``."""
    size = len(payload)
    out.append(0x82 if binary else 0x81)
    if size < 126:
        out.append(size)
    elif size < 65536:
        out.append(126)
        out += size.to_bytes(2, "big")
    else:
        out.append(127)
        out += size.to_bytes(8, "big")
    out += payload


def frame(payload: bytes | memoryview, binary: bool = False) -> bytes:
    """One unmasked (server to client) WebSocket frame holding ``payload``."""
    out = bytearray()
    add_frame(out, payload, binary)
    return bytes(out)


class _Firehoses:
    """Pre-framed firehose streams, built once per message count."""

    def __init__(self) -> None:
        self._streams: dict[int, bytes] = {}

    def get(self, n: int) -> bytes:
        stream = self._streams.get(n)
        if stream is None:
            stream = self._streams[n] = b"".join(
                frame(firehose_message(seq)) for seq in range(1, n + 1)
            )
        return stream


class _Server:
    """The listening socket and its live connections (so a restart can abort them all)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.firehoses = _Firehoses()
        self.listener: asyncio.Server | None = None
        self.live: set[_Conn] = set()
        self._restarting = False

    async def listen(self) -> None:
        self.listener = await picows.ws_create_server(
            self._accept,
            self.host,
            self.port,
            reuse_address=True,
            backlog=1024,
            max_frame_size=16 * 1024 * 1024,
            websocket_handshake_timeout=30,
        )
        self.port = int(self.listener.sockets[0].getsockname()[1])

    def _accept(self, request: Any) -> _Conn:
        target = urlsplit(request.path.decode("latin-1"))
        query = parse_qs(target.query)
        behaviour = _BEHAVIOURS.get(target.path, _Conn)
        return behaviour(self, int(query.get("n", ["0"])[0]))

    def restart_soon(self) -> None:
        if not self._restarting:
            self._restarting = True
            asyncio.get_running_loop().create_task(self._restart())

    async def _restart(self) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.close()
        for conn in list(self.live):
            conn.abort()
        if listener is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await listener.wait_closed()
        await self.listen()
        self._restarting = False


class _Conn(picows.WSListener):  # type: ignore[misc]
    """One server-side connection; subclasses give the behaviour of a URL path."""

    def __init__(self, server: _Server, n: int) -> None:
        self._server = server
        self._n = n
        self._ws: Any = None
        self._raw: Any = None
        self._out = bytearray()
        self._started = False

    def on_ws_connected(self, transport: Any) -> None:
        self._ws = transport
        self._raw = transport.underlying_transport
        self._server.live.add(self)

    def on_ws_disconnected(self, transport: Any) -> None:
        self._server.live.discard(self)

    def on_ws_frame(self, transport: Any, frame_: Any) -> None:
        self._control(transport, frame_)

    def abort(self) -> None:
        if self._ws is not None and not self._ws.is_disconnected:
            self._ws.disconnect(graceful=False)

    def _control(self, transport: Any, frame_: Any) -> bool:
        """Answer a close frame; ``True`` when ``frame_`` is not a data frame."""
        kind = frame_.msg_type
        if kind is _TEXT or kind is _BINARY:
            return False
        if kind is _CLOSE:
            transport.send_close(frame_.get_close_code(), frame_.get_close_message())
            transport.disconnect()
        return True

    def _flush(self) -> None:
        if self._out:
            self._raw.write(bytes(self._out))
            self._out.clear()


class _Echo(_Conn):
    """Send every data frame back unchanged, one write per network read."""

    def on_ws_frame(self, transport: Any, frame_: Any) -> None:
        if not self._control(transport, frame_):
            add_frame(self._out, frame_.get_payload_as_memoryview(), frame_.msg_type is _BINARY)
        if frame_.last_in_buffer:
            self._flush()


class _Ack(_Conn):
    """Acknowledge every data frame's ``id``, one write per network read."""

    def on_ws_frame(self, transport: Any, frame_: Any) -> None:
        if not self._control(transport, frame_):
            msg_id = _id_decoder.decode(frame_.get_payload_as_memoryview()).id
            add_frame(self._out, b'{"type":"ack","id":' + bytes(msg_id) + b"}")
        if frame_.last_in_buffer:
            self._flush()


class _Firehose(_Conn):
    """Push the pre-framed stream on the first data frame, as fast as the socket takes it."""

    def __init__(self, server: _Server, n: int) -> None:
        super().__init__(server, n)
        self._paused = False
        self._stream = memoryview(b"")
        self._offset = 0

    def on_ws_frame(self, transport: Any, frame_: Any) -> None:
        if self._control(transport, frame_) or self._started:
            return
        self._started = True
        self._stream = memoryview(self._server.firehoses.get(self._n))
        self._pump()

    def on_ws_disconnected(self, transport: Any) -> None:
        super().on_ws_disconnected(transport)
        self._stream = memoryview(b"")

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._pump()

    def _pump(self) -> None:
        stream = self._stream
        end = len(stream)
        while self._offset < end and not self._paused:
            self._raw.write(stream[self._offset : self._offset + _CHUNK])
            self._offset += _CHUNK


class _Stall(_Conn):
    """On the first data frame, say ``stalled`` and stop reading: pings go unanswered."""

    def on_ws_frame(self, transport: Any, frame_: Any) -> None:
        if self._control(transport, frame_) or self._started:
            return
        self._started = True
        self._raw.write(frame(b'{"type":"stalled"}'))
        self._raw.pause_reading()
        asyncio.get_running_loop().call_later(_STALL_LIMIT, self.abort)


class _Restart(_Conn):
    """On a data frame, restart the whole server."""

    def on_ws_frame(self, transport: Any, frame_: Any) -> None:
        if not self._control(transport, frame_):
            self._server.restart_soon()


_BEHAVIOURS: dict[str, type[_Conn]] = {
    "/echo": _Echo,
    "/ack": _Ack,
    "/firehose": _Firehose,
    "/stall": _Stall,
    "/restart": _Restart,
}


async def serve(host: str, port: int, firehose: int) -> None:
    """Listen, announce the port on stdout, and serve until stdin closes."""
    server = _Server(host, port)
    if firehose:
        server.firehoses.get(firehose)  # built before any client starts its clock
    await server.listen()
    print(f"PORT {server.port}", flush=True)
    loop = asyncio.get_running_loop()
    stdin_closed = loop.create_future()

    def watch_stdin() -> None:
        sys.stdin.buffer.read()
        loop.call_soon_threadsafe(stdin_closed.set_result, None)

    await asyncio.gather(loop.run_in_executor(None, watch_stdin), stdin_closed)
    for conn in list(server.live):
        conn.abort()


def raise_fd_limit() -> None:
    """Allow as many open sockets as the hard limit permits (thousands of connections)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    """Run the server (``python -m bench.server --port 0``)."""
    parser = argparse.ArgumentParser(prog="python -m bench.server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--firehose", type=int, default=0, help="pre-build this stream")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args(argv)
    raise_fd_limit()
    install_loop(args.loop)
    # A slow client makes picows warn about write flow control; expected here, not news.
    logging.getLogger("picows").setLevel(logging.ERROR)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, args.firehose))
    sys.stdout.flush()
    os._exit(0)  # the executor thread reading stdin is done; nothing else to wait for


if __name__ == "__main__":
    raise SystemExit(main())
