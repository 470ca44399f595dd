"""A hostile WebSocket server: raw asyncio TCP on loopback, free to break every rule.

:class:`HostileServer` is not built on a WebSocket library. Per connection attempt it reads
the client's upgrade request (recorded in :attr:`HostileConnection.request`), then runs a
*script*: any status line and headers (a correct 101 by default, or one naming an unoffered
subprotocol or extension, a wrong accept key, a redirect, a 401...), then any bytes (see
:func:`bgws.testing.frame` and :class:`bgws.testing.Frames`). Meanwhile it parses what the
client sends back, so a test can await the client's close code::

    from bgws.testing import Frames, HostileServer, Steps

    async with HostileServer(Steps(send=[Frames.reserved_bits()])) as server:
        ...  # connect a client to server.url
        assert await server.wait_for_close_code() == 1002

Give a list of scripts to script each attempt in turn (the last one repeats), for
reconnection tests. Single event loop, not thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Final, Literal, TypeAlias

from bgws.testing._wire import FrameParser, Frames, Opcode, ReceivedFrame, accept_key

__all__ = [
    "Answer",
    "HostileConnection",
    "HostileServer",
    "Script",
    "Steps",
    "UpgradeRequest",
]

logger = logging.getLogger("bgws.testing")

_DEFAULT_TIMEOUT: Final = 5.0
_MAX_REQUEST: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    """The HTTP request a client opened a connection with.

    Attributes:
        method: ``"GET"`` for a WebSocket client.
        path: The request target, query included.
        headers: Every header line, in order, names as sent.
    """

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        """The first value of a header (names compare case-insensitively), or ``None``."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    def has_header(self, name: str) -> bool:
        """Whether the client sent this header."""
        return self.header(name) is not None


@dataclass(frozen=True, slots=True)
class Answer:
    """The HTTP response a script sends to the upgrade request.

    Attributes:
        status: The status code; 101 switches to WebSocket.
        reason: The reason phrase; ``None``: the standard one.
        headers: Extra headers, in order.
        accept: The ``Sec-WebSocket-Accept`` value of a 101; ``None``: the correct one.
        upgrade_headers: Whether a 101 carries ``Upgrade``, ``Connection`` and
            ``Sec-WebSocket-Accept`` (turn off to send only ``headers``).
        body: A body for other statuses (``Content-Length`` is added).
    """

    status: int = 101
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    accept: str | None = None
    upgrade_headers: bool = True
    body: bytes = b""

    @classmethod
    def switch(
        cls,
        *,
        subprotocol: str | None = None,
        extensions: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> Answer:
        """A 101, naming a subprotocol and/or extensions whether the client offered them or not."""
        extra = list(headers)
        if subprotocol is not None:
            extra.append(("Sec-WebSocket-Protocol", subprotocol))
        if extensions is not None:
            extra.append(("Sec-WebSocket-Extensions", extensions))
        return cls(headers=tuple(extra))

    @classmethod
    def wrong_accept(cls) -> Answer:
        """A 101 whose ``Sec-WebSocket-Accept`` does not match the client's key."""
        return cls(accept="dGhlIHNhbXBsZSBub25jZQ==")

    @classmethod
    def redirect(cls, location: str, status: int = 301) -> Answer:
        """A redirect (301, 302, 303, 307 or 308) to ``location``."""
        return cls(status=status, headers=(("Location", location),))

    @classmethod
    def refuse(cls, status: int = 500, body: bytes = b"") -> Answer:
        """Any other status: 401, 403, 500..."""
        return cls(status=status, body=body)

    def encode(self, request: UpgradeRequest) -> bytes:
        """The response bytes, computing the accept key from ``request``."""
        reason = self.reason
        if reason is None:
            try:
                reason = HTTPStatus(self.status).phrase
            except ValueError:
                reason = "Unknown"
        lines = [f"HTTP/1.1 {self.status} {reason}"]
        if self.status == 101 and self.upgrade_headers:
            key = request.header("Sec-WebSocket-Key") or ""
            lines += ["Upgrade: websocket", "Connection: Upgrade"]
            lines.append(f"Sec-WebSocket-Accept: {self.accept or accept_key(key)}")
        lines += [f"{name}: {value}" for name, value in self.headers]
        if self.status != 101:
            lines.append(f"Content-Length: {len(self.body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if self.status == 101 else head + self.body


class HostileConnection:
    """One TCP connection accepted by a :class:`HostileServer`, handed to its script.

    The client's frames are parsed in the background. By default a ping gets a pong and a
    close frame gets a close frame back followed by the end of the TCP connection, so a
    failing client is not kept waiting; set :attr:`echo_close` / :attr:`auto_pong` to
    ``False`` (in the script) to play a peer that ignores them.

    Attributes:
        attempt: 0 for the first connection to the server, 1 for the next...
        request: The client's upgrade request.
        frames: Every frame the client sent, in order.
        echo_close: Answer a close frame with a close frame and hang up.
        auto_pong: Answer a ping with a pong.
    """

    def __init__(
        self,
        attempt: int,
        request: UpgradeRequest,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.attempt = attempt
        self.request = request
        self.frames: list[ReceivedFrame] = []
        self.echo_close = True
        self.auto_pong = True
        self._reader = reader
        self._writer = writer
        self._changed = asyncio.Event()
        self._eof = False
        self._answered: Answer | None = None

    @property
    def answer_sent(self) -> Answer | None:
        """The answer the script sent, if any."""
        return self._answered

    @property
    def close_frame(self) -> ReceivedFrame | None:
        """The client's close frame, once received."""
        return next((f for f in self.frames if f.opcode == Opcode.CLOSE), None)

    @property
    def close_code(self) -> int | None:
        """The client's close code (1005 for a close frame without one), once received."""
        close = self.close_frame
        return None if close is None else close.close_code

    @property
    def data_frames(self) -> list[ReceivedFrame]:
        """The text, binary and continuation frames the client sent."""
        data = (Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY)
        return [f for f in self.frames if f.opcode in data]

    @property
    def client_gone(self) -> bool:
        """Whether the client ended the TCP connection."""
        return self._eof

    def answer(self, answer: Answer | None = None) -> None:
        """Send the HTTP response (default: a correct 101)."""
        self._answered = answer or Answer()
        self.send(self._answered.encode(self.request))

    def send(self, *chunks: bytes) -> None:
        """Write raw bytes (frames, garbage...) as they are."""
        if not self._writer.is_closing():
            self._writer.write(b"".join(chunks))

    async def drain(self) -> None:
        """Wait until the written bytes have left the buffer (no error if the peer left)."""
        with contextlib.suppress(ConnectionError):
            await self._writer.drain()

    def hang_up(self) -> None:
        """End the TCP connection (no close frame)."""
        self._writer.close()

    async def wait_for_close(self, timeout: float = _DEFAULT_TIMEOUT) -> int | None:
        """The client's close code, once its close frame (or the end of TCP) arrived.

        Returns ``None`` when the client hung up without a close frame.

        Raises:
            TimeoutError: Neither arrived within ``timeout`` seconds.
        """
        await self._wait(lambda: self.close_frame is not None or self._eof, timeout)
        return self.close_code

    async def wait_for_frames(self, count: int, timeout: float = _DEFAULT_TIMEOUT) -> None:
        """Wait until the client has sent ``count`` frames in all.

        Raises:
            TimeoutError: Fewer arrived within ``timeout`` seconds.
        """
        await self._wait(lambda: len(self.frames) >= count, timeout)

    async def wait_gone(self, timeout: float = _DEFAULT_TIMEOUT) -> None:
        """Wait until the client ended the TCP connection.

        Raises:
            TimeoutError: It did not within ``timeout`` seconds.
        """
        await self._wait(lambda: self._eof, timeout)

    async def _wait(self, done: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                self._changed.clear()
                await self._changed.wait()

    async def read_frames(self) -> None:
        """Parse the client's frames until it hangs up (run by the server)."""
        parser = FrameParser()
        try:
            while data := await self._reader.read(65536):
                for received in parser.feed(data):
                    self.frames.append(received)
                    self._react(received)
                self._changed.set()
        except (ConnectionError, ValueError):
            pass
        finally:
            self._eof = True
            self._changed.set()

    def _react(self, received: ReceivedFrame) -> None:
        if received.opcode == Opcode.PING and self.auto_pong:
            self.send(Frames.pong(received.payload))
        elif received.opcode == Opcode.CLOSE and self.echo_close:
            code = received.close_code
            self.send(Frames.close(None if code == 1005 else code))
            self._writer.close()

    def close(self) -> None:
        """Close the socket at once (run by the server at stop)."""
        self._writer.close()


Script: TypeAlias = Callable[[HostileConnection], Awaitable[None]]
"""A coroutine function run once per connection attempt, with the connection."""


@dataclass(frozen=True)
class Steps:
    """A ready-made script: send :attr:`answer`, then each of :attr:`send`, then :attr:`then`.

    Attributes:
        answer: The HTTP response (default: a correct 101).
        send: Raw chunks (frames, garbage) written after the answer, in order.
        then: ``"wait"``: leave the connection to the client (a close frame gets the
            default replies); ``"ignore_close"``: never answer pings or close frames;
            ``"hang_up"``: end the TCP connection at once.
    """

    answer: Answer = field(default_factory=Answer)
    send: Sequence[bytes] = ()
    then: Literal["wait", "ignore_close", "hang_up"] = "wait"

    async def __call__(self, connection: HostileConnection) -> None:
        """Run the steps on one connection."""
        if self.then == "ignore_close":
            connection.echo_close = connection.auto_pong = False
        connection.answer(self.answer)
        for chunk in self.send:
            connection.send(chunk)
        await connection.drain()
        if self.then == "hang_up":
            connection.hang_up()


class HostileServer:
    """A raw TCP server on loopback that answers WebSocket clients with whatever a test scripts.

    Use it as ``async with HostileServer(script) as server:`` (or :meth:`start` /
    :meth:`stop`). A script that raises is recorded in :attr:`errors` and re-raised when
    leaving ``async with``.

    Args:
        script: What to do on each connection: a :data:`Script` (e.g. a :class:`Steps`), or a
            sequence of them, one per connection attempt in turn, the last one repeating.
            Default: a correct 101, then nothing.
        host: Address to listen on (loopback).
        port: Port to listen on; 0 picks a free one.

    Attributes:
        connections: Every connection whose upgrade request was read, in order.
        errors: Exceptions raised by scripts.
    """

    def __init__(
        self,
        script: Script | Sequence[Script] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if script is None:
            self._scripts: list[Script] = [Steps()]
        elif callable(script):
            self._scripts = [script]
        else:
            self._scripts = list(script)
            if not self._scripts:
                raise ValueError("give at least one script")
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self.connections: list[HostileConnection] = []
        self.errors: list[BaseException] = []

    @property
    def port(self) -> int:
        """The port listened on (the real one once started)."""
        return self._port

    @property
    def url(self) -> str:
        """``ws://host:port/`` of the running server."""
        return f"ws://{self._host}:{self._port}/"

    @property
    def requests(self) -> list[UpgradeRequest]:
        """Every upgrade request received, in order."""
        return [connection.request for connection in self.connections]

    async def start(self) -> None:
        """Start listening."""
        self._server = await asyncio.start_server(self._accept, self._host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, close every connection and wait for their tasks."""
        if self._server is not None:
            self._server.close()
        for connection in self.connections:
            connection.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=_DEFAULT_TIMEOUT)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> HostileServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
        if exc is None and self.errors:
            raise self.errors[0]

    async def wait_for_connections(self, count: int, timeout: float = _DEFAULT_TIMEOUT) -> None:
        """Wait until ``count`` connections in all have sent their upgrade request.

        Raises:
            TimeoutError: Fewer arrived within ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            while len(self.connections) < count:
                self._changed.clear()
                await self._changed.wait()

    async def wait_for_close_code(
        self, attempt: int = 0, timeout: float = _DEFAULT_TIMEOUT
    ) -> int | None:
        """The close code the client sent on connection ``attempt`` (see
        :meth:`HostileConnection.wait_for_close`), waiting for the connection too.

        Raises:
            TimeoutError: No close frame nor hang-up within ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            await self.wait_for_connections(attempt + 1, timeout=timeout)
            return await self.connections[attempt].wait_for_close(timeout=timeout)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            request = await _read_request(reader)
            if request is None:
                return
            attempt = len(self.connections)
            connection = HostileConnection(attempt, request, reader, writer)
            self.connections.append(connection)
            self._changed.set()
            script = self._scripts[min(attempt, len(self._scripts) - 1)]
            frames = asyncio.ensure_future(connection.read_frames())
            try:
                await script(connection)
                await frames
            except Exception as exc:  # a script's failure is the test's, reported at exit
                logger.debug("hostile script failed", exc_info=True)
                self.errors.append(exc)
            finally:
                frames.cancel()
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()
            self._tasks.discard(task)


async def _read_request(reader: asyncio.StreamReader) -> UpgradeRequest | None:
    """Read and parse one HTTP request head; ``None`` if the client left or sent junk."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    if len(head) > _MAX_REQUEST:
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    headers = []
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers.append((name.strip(), value.strip()))
    return UpgradeRequest(method=parts[0], path=parts[1], headers=tuple(headers))
