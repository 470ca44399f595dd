"""Keepalive: half-open links are detected in time; slow handlers are not mistaken for them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time

import pytest

import bgws
from bgws.testing import Connection, ReceivedMessage, Server
from bgws.transport import Transport

from .conftest import MS, Changes, ServiceFactory

TOLERANCE = 150 * MS


@pytest.mark.parametrize(("interval", "timeout"), [(100 * MS, 100 * MS), (200 * MS, 50 * MS)])
async def test_stalled_link_detected_within_interval_plus_timeout(
    bgws_server: Server, make_service: ServiceFactory, interval: float, timeout: float
) -> None:
    """A server that stops reading and answering pings is declared dead in time."""
    service = make_service(bgws_server.url, heartbeat_interval=interval, ping_timeout=timeout)
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
        stalled_at = time.time()
        bgws_server.stall()
        lost = await changes.wait(bgws.State.BACKING_OFF, timeout=5)
        assert isinstance(lost.reason, bgws.DeadLink)
        assert lost.at - stalled_at <= interval + timeout + TOLERANCE
        assert service.stats.dead_links == 1
        bgws_server.unstall()
        await changes.wait(bgws.State.CONNECTED, count=2)


async def test_healthy_link_survives_many_pings(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """Pings answered by the server keep the link up."""
    service = make_service(bgws_server.url, heartbeat_interval=20 * MS, ping_timeout=50 * MS)
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
        with pytest.raises(TimeoutError):  # ~15 ping rounds go by without a loss
            await changes.wait(bgws.State.BACKING_OFF, timeout=300 * MS)
    assert service.stats.dead_links == 0


async def test_no_heartbeat_means_no_pings(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """heartbeat_interval=None turns keepalive off: a stall goes unnoticed."""
    service = make_service(bgws_server.url, heartbeat_interval=None)
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
        bgws_server.stall()
        with pytest.raises(TimeoutError):
            await changes.wait(bgws.State.BACKING_OFF, timeout=300 * MS)


async def test_slow_handler_is_not_a_dead_link(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """A handler that blocks until the inbox is full pauses reading, not the keepalive."""
    release, done = asyncio.Event(), asyncio.Event()
    handled: list[int] = []
    service = make_service(
        bgws_server.url, inbox_size=4, heartbeat_interval=30 * MS, ping_timeout=30 * MS
    )

    @service.on("tick")
    async def slow(message: bgws.Message) -> None:
        if not release.is_set():
            await release.wait()
        handled.append(message.data["n"])
        if len(handled) == 2000:
            done.set()

    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
        for n in range(2000):
            bgws_server.push({"type": "tick", "n": n})
        # Many ping rounds pass while the handler is stuck and reading is paused.
        with pytest.raises(TimeoutError):
            await changes.wait(bgws.State.BACKING_OFF, timeout=400 * MS)
        assert service._inbox.load.pauses >= 1
        release.set()
        await asyncio.wait_for(done.wait(), timeout=10)
    assert handled == list(range(2000))
    assert service.stats.dead_links == 0


async def test_application_heartbeat_keeps_link_and_is_consumed(
    make_service: ServiceFactory,
) -> None:
    """With app_heartbeat the service sends the template; replies do not reach handlers."""

    def reply(connection: Connection, message: ReceivedMessage) -> None:
        if message.json().get("op") == "hb":
            connection.send({"type": "hb_ack"})

    seen: list[str | None] = []
    async with Server(on_message=reply) as server:
        service = make_service(
            server.url,
            app_heartbeat={"op": "hb"},
            app_heartbeat_reply_type="hb_ack",
            heartbeat_interval=30 * MS,
            ping_timeout=60 * MS,
        )
        service.on()(lambda m: seen.append(m.type))
        changes = Changes(service)
        async with service:
            await changes.wait(bgws.State.CONNECTED)
            await server.wait_for_messages(5, timeout=3)
        heartbeats = server.received_json()
        assert heartbeats[:5] == [{"op": "hb"}] * 5  # the template, without an added id
        assert not changes.into(bgws.State.BACKING_OFF)
        assert seen == []


async def test_application_heartbeat_without_reply_fails_the_link(
    make_service: ServiceFactory,
) -> None:
    """A server that never answers the app heartbeat is declared dead."""
    async with Server() as server:  # answers protocol pings, but not the app heartbeat
        service = make_service(
            server.url,
            app_heartbeat={"op": "hb"},
            app_heartbeat_reply_type="hb_ack",
            heartbeat_interval=50 * MS,
            ping_timeout=50 * MS,
        )
        changes = Changes(service)
        async with service:
            lost = await changes.wait(bgws.State.BACKING_OFF, timeout=3)
        assert isinstance(lost.reason, bgws.DeadLink)
        assert "heartbeat reply" in str(lost.reason)


async def test_app_heartbeat_without_reply_type_silence_found_within_bound(
    make_service: ServiceFactory, transport: Transport
) -> None:
    """Without a reply type any frame is life; a server that goes silent right after one is
    declared dead within heartbeat_interval + ping_timeout of that frame."""
    interval, timeout = 100 * MS, 200 * MS
    answered: list[float] = []

    def answer_first_three(connection: Connection, message: ReceivedMessage) -> None:
        if message.json().get("op") == "hb" and len(answered) < 3:
            connection.send({"type": "news"})  # not a reply: the config names no reply type
            answered.append(time.time())

    async with Server(on_message=answer_first_three) as server:
        service = make_service(
            server.url,
            transport=transport,
            app_heartbeat={"op": "hb"},
            heartbeat_interval=interval,
            ping_timeout=timeout,
        )
        changes = Changes(service)
        async with service:
            lost = await changes.wait(bgws.State.BACKING_OFF, timeout=5)
        assert isinstance(lost.reason, bgws.DeadLink)
        assert len(answered) == 3
        assert lost.at - answered[-1] <= interval + timeout + TOLERANCE


async def test_app_heartbeat_without_reply_type_other_frames_keep_link(
    make_service: ServiceFactory, transport: Transport
) -> None:
    """Without a reply type, a server that answers heartbeats with other messages keeps the
    link up, and those messages still reach the handlers."""
    seen: list[str | None] = []

    def answer(connection: Connection, message: ReceivedMessage) -> None:
        if message.json().get("op") == "hb":
            connection.send({"type": "news"})

    async with Server(on_message=answer) as server:
        service = make_service(
            server.url,
            transport=transport,
            app_heartbeat={"op": "hb"},
            heartbeat_interval=20 * MS,
            ping_timeout=50 * MS,
        )
        service.on("news")(lambda m: seen.append(m.type))
        changes = Changes(service)
        async with service:
            await changes.wait(bgws.State.CONNECTED)
            with pytest.raises(TimeoutError):  # ~10 rounds go by without a loss
                await changes.wait(bgws.State.BACKING_OFF, timeout=300 * MS)
        assert service.stats.dead_links == 0
        assert len(seen) >= 5


class ThrottlingProxy:
    """A TCP proxy on 127.0.0.1 that forwards each way at about ``rate`` bytes per second,
    holding little itself (small socket buffers, small chunks), as a slow uplink would.

    :meth:`black_hole` stops it forwarding (and reading) without closing anything.

    Args:
        target: the port to forward to.
        rate: bytes per second, each way.
        chunk: the most bytes read and forwarded at once.
    """

    def __init__(self, target: int, rate: float, chunk: int = 4096) -> None:
        self.target = target
        self.rate = rate
        self.chunk = chunk
        self.forwarded = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._watch: tuple[int, asyncio.Event] | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    def url(self) -> str:
        assert self._server is not None
        return f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/"

    def black_hole(self) -> None:
        self._flowing.clear()

    def after(self, count: int) -> asyncio.Event:
        """An event set once ``count`` bytes have been forwarded (both ways together)."""
        event = asyncio.Event()
        self._watch = (count, event)
        return event

    async def __aenter__(self) -> ThrottlingProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.chunk)
        listener.bind(("127.0.0.1", 0))
        self._server = await asyncio.start_server(self._accept, sock=listener, limit=self.chunk)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.transport.abort()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(
            "127.0.0.1", self.target, limit=self.chunk
        )
        self._writers += [writer, up_writer]
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pump(source, sink))
            self._tasks.add(task)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            for _ in range(100_000):  # bounded: far more chunks than any test sends
                data = await source.read(self.chunk)
                if not data:
                    return
                await self._flowing.wait()
                sink.write(data)
                await sink.drain()
                self.forwarded += len(data)
                if self._watch is not None and self.forwarded >= self._watch[0]:
                    self._watch[1].set()
                await asyncio.sleep(len(data) / self.rate)  # the link's speed, not a wait


BLOB = 400 * 1024
"""One large message: at 400 KB/s it takes a second to leave."""


async def test_slow_uplink_is_not_a_dead_link(
    bgws_server: Server, make_service: ServiceFactory, transport: Transport
) -> None:
    """A ping queued behind a large message on a slow uplink is not a missing pong: the link
    stays up while the message drains, and it arrives whole."""
    async with ThrottlingProxy(bgws_server.port, rate=BLOB) as proxy:
        service = make_service(
            proxy.url(), transport=transport, heartbeat_interval=200 * MS, ping_timeout=200 * MS
        )
        changes = Changes(service)
        async with service:
            await changes.wait(bgws.State.CONNECTED)
            blob = os.urandom(BLOB)
            await service.send(blob)
            await bgws_server.wait_for_messages(1, timeout=5)
            assert bgws_server.messages[0].data == blob
            assert not changes.into(bgws.State.BACKING_OFF)
            assert service.stats.dead_links == 0


async def test_black_hole_while_draining_is_found_in_time(
    bgws_server: Server, make_service: ServiceFactory, transport: Transport
) -> None:
    """When a slow uplink stops taking bytes altogether, the link is declared dead within
    2 * ping_timeout (here also interval + timeout) of the writes stopping."""
    interval, timeout = 200 * MS, 200 * MS
    async with ThrottlingProxy(bgws_server.port, rate=BLOB) as proxy:
        service = make_service(
            proxy.url(), transport=transport, heartbeat_interval=interval, ping_timeout=timeout
        )
        changes = Changes(service)
        async with service:
            await changes.wait(bgws.State.CONNECTED)
            halfway = proxy.after(BLOB // 2)
            await service.send(os.urandom(BLOB))
            await asyncio.wait_for(halfway.wait(), timeout=5)
            assert not changes.into(bgws.State.BACKING_OFF)
            proxy.black_hole()
            stopped_at = time.time()
            lost = await changes.wait(bgws.State.BACKING_OFF, timeout=5)
        assert isinstance(lost.reason, bgws.DeadLink)
        assert lost.at - stopped_at <= max(interval + timeout, 2 * timeout) + TOLERANCE


async def test_closing_handshake_is_not_a_dead_link(
    bgws_server: Server, make_service: ServiceFactory, transport: Transport
) -> None:
    """A graceful stop on a link that does not answer its close is not counted as a dead link."""
    service = make_service(
        bgws_server.url, transport=transport, heartbeat_interval=20 * MS, ping_timeout=20 * MS
    )
    changes = Changes(service)
    await service.start()
    await service.connect()
    await changes.wait(bgws.State.CONNECTED)
    bgws_server.stall()  # the close frame is never answered, nor are pings
    await service.stop(timeout=300 * MS)
    assert service.state is bgws.State.CLOSED
    assert service.stats.dead_links == 0
