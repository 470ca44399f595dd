"""The outgoing path: ids, frame types, offline queueing in order, and overflow policies."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import bgws
from bgws.testing import Server

from .conftest import Changes, Errors, ServiceFactory


async def test_messages_sent_offline_arrive_in_order(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """Messages sent while the server is down are flushed in order after reconnect."""
    service = make_service(bgws_server.url)
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
        await service.send({"type": "n", "n": 0})
        await bgws_server.wait_for_messages(1)
        await bgws_server.stop()
        await changes.wait(bgws.State.BACKING_OFF)
        for n in range(1, 201):
            await service.send({"type": "n", "n": n})
        assert service.stats.queued == 200
        await bgws_server.start()
        await bgws_server.wait_for_messages(201)
        assert service.stats.queued == 0
    assert [m["n"] for m in bgws_server.received_json()] == list(range(201))


async def test_send_before_start_is_queued(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """A program may send before the service started; it goes out once connected."""
    service = make_service(bgws_server.url)
    await service.send({"type": "early"})
    async with service:
        await bgws_server.wait_for_messages(1)
    assert bgws_server.received_json()[0]["type"] == "early"


async def test_ids_frames_and_raw_messages(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """Mappings get an id unless they have one; str and bytes go out unchanged."""
    service = make_service(bgws_server.url)
    async with service:
        first = await service.send({"type": "a"})
        kept = await service.send({"type": "b", "id": "mine"})
        assert await service.send("plain text") is None
        assert await service.send(b"\x00\x01") is None
        await bgws_server.wait_for_messages(4)
    data = [m.data for m in bgws_server.messages]
    assert isinstance(first, str)
    assert bgws_server.messages[0].json() == {"type": "a", "id": first}
    assert kept == "mine"
    assert bgws_server.messages[1].json() == {"type": "b", "id": "mine"}
    assert data[2:] == ["plain text", b"\x00\x01"]


async def test_ids_off(bgws_server: Server, make_service: ServiceFactory) -> None:
    """id_field=None sends mappings exactly as given."""
    service = make_service(bgws_server.url, id_field=None)
    async with service:
        assert await service.send({"type": "a"}) is None
        await bgws_server.wait_for_messages(1)
    assert bgws_server.received_json() == [{"type": "a"}]


async def test_custom_id_field(bgws_server: Server, make_service: ServiceFactory) -> None:
    """The id goes in the configured field."""
    service = make_service(bgws_server.url, id_field="msg_id")
    async with service:
        msg_id = await service.send({"type": "a"})
        await bgws_server.wait_for_messages(1)
    assert bgws_server.received_json() == [{"type": "a", "msg_id": msg_id}]


async def test_ids_are_unique(make_service: ServiceFactory) -> None:
    """Automatic ids do not repeat within a service or across services."""
    one, two = make_service("ws://127.0.0.1:9/"), make_service("ws://127.0.0.1:9/")
    ids = [await one.send({"n": i}) for i in range(100)] + [await two.send({"n": 0})]
    assert len(set(ids)) == 101


async def test_queue_full_raises(make_service: ServiceFactory) -> None:
    """With overflow="raise", send() past max_queue_size raises QueueFull; nothing is lost."""
    service = make_service("ws://127.0.0.1:9/", max_queue_size=3)
    for n in range(3):
        await service.send({"n": n})
    with pytest.raises(bgws.QueueFull, match="max_queue_size"):
        await service.send({"n": 3})
    assert service.stats.queued == 3


async def test_drop_oldest_reports_each_drop(
    bgws_server: Server, make_service: ServiceFactory, errors: Errors
) -> None:
    """With overflow="drop_oldest" the oldest message makes room and is reported."""
    await bgws_server.stop()
    service = make_service(bgws_server.url, max_queue_size=3, overflow="drop_oldest")
    async with service:
        for n in range(5):
            await service.send({"n": n})
        dropped = await errors.wait_for(bgws.MessageDropped, count=2)
        assert service.stats.dropped == 2
        assert [b'"n":0' in e.payload for e in dropped] == [True, False]  # type: ignore[attr-defined]
        await bgws_server.start()
        await bgws_server.wait_for_messages(3)
    assert [m["n"] for m in bgws_server.received_json()] == [2, 3, 4]


async def test_wait_policy_blocks_until_room(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """With overflow="wait" send() waits for room instead of failing."""
    await bgws_server.stop()
    service = make_service(bgws_server.url, max_queue_size=2, overflow="wait")
    async with service:
        await service.send({"n": 0})
        await service.send({"n": 1})
        blocked = asyncio.ensure_future(service.send({"n": 2}))
        await asyncio.sleep(0)  # let it reach the full queue
        assert not blocked.done()
        await bgws_server.start()
        await asyncio.wait_for(blocked, timeout=5)
        await bgws_server.wait_for_messages(3)
    assert [m["n"] for m in bgws_server.received_json()] == [0, 1, 2]


async def test_bad_messages_are_refused_at_send(make_service: ServiceFactory) -> None:
    """Unencodable, wrongly typed and oversized messages raise at send(), queue nothing."""
    service = make_service("ws://127.0.0.1:9/", max_message_size=64)
    with pytest.raises(TypeError, match="JSON"):
        await service.send({"when": object()})
    with pytest.raises(TypeError, match="mapping, str or bytes"):
        await service.send(42)  # type: ignore[arg-type]
    with pytest.raises(bgws.MessageTooBig, match="max_message_size"):
        await service.send({"blob": "x" * 100})
    assert service.stats.queued == 0


async def test_unsent_messages_at_stop_are_reported(
    bgws_server: Server, make_service: ServiceFactory, errors: Errors
) -> None:
    """Stopping while offline reports every message the memory outbox still held."""
    await bgws_server.stop()
    service = make_service(bgws_server.url, close_timeout=0.05)
    async with service:
        for n in range(3):
            await service.send({"n": n})
    assert len(errors.of(bgws.MessageDropped)) == 3
    assert service.stats.dropped == 3


async def test_stop_flushes_the_outbox_first(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """A graceful stop while connected sends what is queued before closing."""
    service = make_service(bgws_server.url)
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
        for n in range(500):
            await service.send({"n": n})
    await bgws_server.wait_for_messages(500)
    assert service.stats.sent == 500


async def test_send_many_keeps_order_and_returns_ids(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """send_many accepts a batch in order, offline or online, and returns the ids."""
    await bgws_server.stop()
    service = make_service(bgws_server.url)
    async with service:
        first = await service.send_many([{"n": n} for n in range(5)])
        assert service.stats.queued == 5
        await bgws_server.start()
        await bgws_server.wait_for_messages(5)
        second = await service.send_many([{"n": n} for n in range(5, 8)] + ["raw"])
        await bgws_server.wait_for_messages(9)
    got = [m.json() for m in bgws_server.messages[:8]]
    assert bgws_server.messages[8].data == "raw"
    assert [m["n"] for m in got] == list(range(8))
    assert [m["id"] for m in got] == first + second[:3]
    assert second[3] is None


async def test_send_many_refuses_the_whole_batch_on_a_bad_message(
    make_service: ServiceFactory,
) -> None:
    """One unencodable message refuses the batch before anything is queued."""
    service = make_service("ws://127.0.0.1:9/")
    with pytest.raises(TypeError):
        await service.send_many([{"n": 1}, {"bad": object()}])
    assert service.stats.queued == 0


async def test_send_many_durable(tmp_path: Any, make_service: ServiceFactory) -> None:
    """With the SQLite store, a batch survives a restart."""
    path = str(tmp_path / "many.sqlite3")
    first = make_service("ws://127.0.0.1:9/", storage="sqlite", storage_path=path)
    await first.start()
    await first.send_many([{"n": n} for n in range(100)])
    await first.stop(timeout=0.01)
    second = make_service("ws://127.0.0.1:9/", storage="sqlite", storage_path=path)
    await second.start()
    assert second.stats.queued == 100
    await second.stop(timeout=0.01)


class _HalfWritingLink:
    """A real picows link whose first multi-message burst stops half way, as a breaking
    socket would."""

    def __init__(self, link: Any) -> None:
        self._link = link
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._link, name)

    def send_many(self, messages: list[tuple[bytes | str, bool]]) -> int:
        if not self.failed and len(messages) > 1:
            self.failed = True
            return self._link.send_many(messages[: len(messages) // 2])  # type: ignore[no-any-return]
        return self._link.send_many(messages)  # type: ignore[no-any-return]


class _HalfWritingTransport:
    def __init__(self) -> None:
        from bgws.transport._picows import PicowsTransport

        self._real = PicowsTransport()
        self.links: list[_HalfWritingLink] = []

    async def connect(self, request: Any, sink: Any) -> Any:
        link = _HalfWritingLink(await self._real.connect(request, sink))
        self.links.append(link)
        return link

    async def aclose(self, timeout: float = 5.0) -> None:
        await self._real.aclose(timeout)


async def test_a_burst_cut_short_is_resent_after_reconnect(
    bgws_server: Server, make_service: ServiceFactory, errors: Errors
) -> None:
    """When the link takes only part of a burst, the rest is kept, the failure is reported,
    and everything arrives in order after the reconnect."""
    transport = _HalfWritingTransport()
    service = make_service(bgws_server.url, transport=transport)
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
        await service.send_many([{"n": n} for n in range(10)])
        await errors.wait_for(bgws.LinkError)
        await changes.wait(bgws.State.CONNECTED, count=2)
        await bgws_server.wait_for_messages(10)
    assert transport.links[0].failed
    assert [m["n"] for m in bgws_server.received_json()] == list(range(10))
