"""Helpers for the bridge tests: read back what a real JetStream stream holds."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

__all__ = ["AckWatch", "StallProxy", "StreamReader", "ensure_stream", "publish_commands"]


class StreamReader:
    """Every message of a stream's subjects, read with an ordered consumer from the start."""

    def __init__(self, url: str, stream: str = "BGWS", subject: str = "bgws.*.in.*") -> None:
        self.url = url
        self.stream = stream
        self.subject = subject
        self.messages: list[Any] = []
        self.ids: list[str | None] = []
        self._changed = asyncio.Event()
        self._nc: Any = None

    async def __aenter__(self) -> StreamReader:
        import nats

        self._nc = await nats.connect(self.url, max_reconnect_attempts=3)
        js = self._nc.jetstream()
        await _ensure(js, self.stream)

        async def seen(msg: Any) -> None:
            self.messages.append(msgspec.json.decode(msg.data))
            self.ids.append((msg.headers or {}).get("Nats-Msg-Id"))
            self._changed.set()

        await js.subscribe(self.subject, stream=self.stream, ordered_consumer=True, cb=seen)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._nc.close()

    async def wait(self, count: int, timeout: float = 10.0) -> list[Any]:
        """Wait until ``count`` messages were read; return them."""
        async with asyncio.timeout(timeout):
            while len(self.messages) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.messages

    async def stored(self) -> int:
        """How many messages the stream holds now."""
        info = await self._nc.jetstream().stream_info(self.stream)
        return int(info.state.messages)

    def seqs(self) -> list[int]:
        return [m["seq"] for m in self.messages]


async def publish_commands(
    url: str, subject: str, commands: list[Any], stream: str = "BGWS"
) -> None:
    """Publish commands to JetStream (the stream must exist), each acked by the broker."""
    import nats

    nc = await nats.connect(url, max_reconnect_attempts=3)
    try:
        js = nc.jetstream()
        for command in commands:
            await js.publish(subject, msgspec.json.encode(command), stream=stream)
    finally:
        await nc.close()


async def ensure_stream(url: str, stream: str = "BGWS") -> None:
    """Create the stream the bridge would create (for tests that publish before it starts)."""
    import nats

    nc = await nats.connect(url, max_reconnect_attempts=3)
    try:
        await _ensure(nc.jetstream(), stream)
    finally:
        await nc.close()


async def _ensure(js: Any, stream: str) -> None:
    from nats.js.errors import BadRequestError, NotFoundError

    try:
        await js.stream_info(stream)
    except NotFoundError:
        try:
            await js.add_stream(
                name=stream, subjects=["bgws.*.in.*", "bgws.*.out"], duplicate_window=120.0
            )
        except BadRequestError:  # the bridge made it first
            await js.stream_info(stream)


class AckWatch:
    """Counts the acks a durable consumer's client sends to JetStream (they are NATS messages)."""

    def __init__(self, url: str, durable: str, stream: str = "BGWS") -> None:
        self.url = url
        self.subject = f"$JS.ACK.{stream}.{durable}.>"
        self.acks = 0
        self._changed = asyncio.Event()
        self._nc: Any = None

    async def __aenter__(self) -> AckWatch:
        import nats

        self._nc = await nats.connect(self.url, max_reconnect_attempts=3)

        async def seen(msg: Any) -> None:
            if msg.data in (b"", b"+ACK"):
                self.acks += 1
                self._changed.set()

        await self._nc.subscribe(self.subject, cb=seen)
        await self._nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._nc.close()

    async def wait(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` acks were seen."""
        async with asyncio.timeout(timeout):
            while self.acks < count:
                self._changed.clear()
                await self._changed.wait()


class StallProxy:
    """A TCP proxy on 127.0.0.1 in front of a broker; :meth:`stall` holds what the broker says.

    While stalled, bytes from the client still reach the broker (publishes are stored), but
    nothing comes back (no acks), until :meth:`unstall`.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._open = asyncio.Event()
        self._open.set()
        self._server: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._serving: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def stall(self) -> None:
        self._open.clear()

    def unstall(self) -> None:
        self._open.set()

    async def __aenter__(self) -> StallProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._serving, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        serving = asyncio.current_task()
        assert serving is not None
        self._serving.add(serving)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        both = [
            asyncio.create_task(self._pipe(reader, up_writer, None)),
            asyncio.create_task(self._pipe(up_reader, writer, self._open)),
        ]
        self._tasks.update(both)
        try:
            await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in both:
                task.cancel()
            await asyncio.gather(*both, return_exceptions=True)
            self._tasks.difference_update(both)
            writer.close()
            up_writer.close()

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gate: asyncio.Event | None
    ) -> None:
        while data := await reader.read(65536):
            if gate is not None:
                await gate.wait()
            writer.write(data)
            await writer.drain()
