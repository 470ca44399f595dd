"""Request/response over the socket: replies matched by id, timeouts, bounds."""

from __future__ import annotations

import asyncio
import gc

import pytest

import bgws
from bgws.testing import Connection, ReceivedMessage, Server

from .conftest import MS, ServiceFactory


def answer(connection: Connection, message: ReceivedMessage) -> None:
    """Reply to every request with its id and the doubled value."""
    data = message.json()
    if data.get("type") == "double":
        connection.send({"type": "result", "id": data["id"], "value": data["x"] * 2})


async def test_request_returns_the_matching_reply(make_service: ServiceFactory) -> None:
    """Concurrent requests each get the reply carrying their own id."""
    seen: list[str | None] = []
    async with Server(on_message=answer) as server:
        service = make_service(server.url)
        service.on()(lambda m: seen.append(m.type))
        async with service:
            await service.wait_for(bgws.State.CONNECTED, timeout=5)
            replies = await asyncio.gather(
                *(service.request({"type": "double", "x": x}, timeout=5) for x in range(20))
            )
    assert [r.data["value"] for r in replies] == [x * 2 for x in range(20)]
    assert len({r.id for r in replies}) == 20
    assert seen == []  # replies do not reach the ordinary handlers


async def test_request_uses_a_fresh_id(make_service: ServiceFactory) -> None:
    """An id already in the message is replaced by a fresh one."""
    async with Server(on_message=answer) as server:
        service = make_service(server.url)
        async with service:
            reply = await service.request({"type": "double", "x": 1, "id": "mine"}, timeout=5)
    assert reply.id != "mine"
    assert server.received_json()[0]["id"] == reply.id


async def test_reply_can_also_be_dispatched(make_service: ServiceFactory) -> None:
    """dispatch_reply=True lets handlers see the reply too."""
    seen: list[str | None] = []
    async with Server(on_message=answer) as server:
        service = make_service(server.url)
        service.on("result")(lambda m: seen.append(m.type))
        async with service:
            await service.request({"type": "double", "x": 1}, timeout=5, dispatch_reply=True)
            await service.stop()
    assert seen == ["result"]


async def test_request_timeout(make_service: ServiceFactory) -> None:
    """No reply within the timeout raises RequestTimeout (a TimeoutError)."""
    async with Server() as server:
        service = make_service(server.url)
        async with service:
            with pytest.raises(bgws.RequestTimeout, match="no reply"):
                await service.request({"type": "double", "x": 1}, timeout=50 * MS)
            with pytest.raises(TimeoutError):
                await service.request({"type": "double", "x": 1}, timeout=10 * MS)


async def test_request_sent_while_offline_waits_for_the_link(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """A request made offline goes out after the reconnect and still gets its reply."""
    bgws_server.on_message = answer
    await bgws_server.stop()
    service = make_service(bgws_server.url)
    async with service:
        pending = asyncio.ensure_future(service.request({"type": "double", "x": 21}, timeout=5))
        await bgws_server.start()
        reply = await pending
    assert reply.data["value"] == 42


async def test_pending_requests_are_bounded(make_service: ServiceFactory) -> None:
    """More than max_pending_requests waiting requests raise QueueFull."""
    async with Server() as server:
        service = make_service(server.url, max_pending_requests=2)
        async with service:
            waiting = [
                asyncio.ensure_future(service.request({"type": "q"}, timeout=5)) for _ in range(2)
            ]
            await server.wait_for_messages(2)
            with pytest.raises(bgws.QueueFull, match="max_pending_requests"):
                await service.request({"type": "q"}, timeout=5)
            for task in waiting:
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)


async def test_custom_reply_id_field(make_service: ServiceFactory) -> None:
    """reply_id_field names where the reply carries the request's id."""

    def reply(connection: Connection, message: ReceivedMessage) -> None:
        data = message.json()
        connection.send({"type": "r", "in_reply_to": data["id"]})

    async with Server(on_message=reply) as server:
        service = make_service(server.url, reply_id_field="in_reply_to")
        async with service:
            got = await service.request({"type": "q"}, timeout=5)
    assert got.data["in_reply_to"] == server.received_json()[0]["id"]


async def test_each_request_keeps_its_own_deadline(make_service: ServiceFactory) -> None:
    """One timer serves every deadline: a short request made after a long one still times
    out on time, and the long one still gets its late reply."""
    held: list[tuple[Connection, str]] = []
    arrived = asyncio.Event()

    def hold(connection: Connection, message: ReceivedMessage) -> None:
        held.append((connection, message.json()["id"]))
        arrived.set()

    async with Server(on_message=hold) as server:
        service = make_service(server.url)
        async with service:
            await service.wait_for(bgws.State.CONNECTED, timeout=5)
            long = asyncio.ensure_future(service.request({"type": "slow"}, timeout=5))
            await asyncio.wait_for(arrived.wait(), 5)
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(bgws.RequestTimeout):
                await service.request({"type": "quick"}, timeout=50 * MS)
            assert loop.time() - started < 2.5  # not held until the long deadline
            connection, long_id = held[0]
            connection.send({"type": "answer", "id": long_id})
            reply = await asyncio.wait_for(long, 5)
    assert reply.type == "answer"


async def test_request_on_a_stopped_service_is_refused(make_service: ServiceFactory) -> None:
    """request() on a stopped service raises ServiceClosed (at the call)."""
    async with Server() as server:
        service = make_service(server.url)
        async with service:
            await service.wait_for(bgws.State.CONNECTED, timeout=5)
        with pytest.raises(bgws.ServiceClosed, match="cannot request"):
            await service.request({"type": "q"}, timeout=1)


async def test_a_request_that_times_out_before_it_is_queued_leaves_no_noise(
    bgws_server: Server, make_service: ServiceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Timed out while waiting for room in a full outbox: RequestTimeout, and no
    "exception was never retrieved" from the reply future afterwards."""
    await bgws_server.stop()
    service = make_service(bgws_server.url, max_queue_size=1, overflow="wait")
    async with service:
        await service.send({"type": "fills the outbox"})
        with pytest.raises(bgws.RequestTimeout):
            await service.request({"type": "q"}, timeout=50 * MS)
        gc.collect()
    assert "never retrieved" not in caplog.text
