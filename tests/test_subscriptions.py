"""Subscriptions are kept and re-sent after every reconnect, before the outbox."""

from __future__ import annotations

from pathlib import Path

import bgws
from bgws.testing import Server

from .conftest import Changes, ServiceFactory


async def test_resubscribe_before_flushing_the_outbox(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """After a reconnect, subscriptions go out first, then what was queued offline."""
    service = make_service(bgws_server.url)
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
        key = await service.subscribe({"type": "subscribe", "channel": "ticks"})
        await bgws_server.wait_for_messages(1)
        await bgws_server.stop()
        await changes.wait(bgws.State.BACKING_OFF)
        await service.send({"type": "order", "n": 1})
        await bgws_server.start()
        await bgws_server.wait_for_messages(3)
    assert key == '{"channel":"ticks"}'
    second = [m.json() for m in bgws_server.connections[1].messages]
    assert second[0] == {"type": "subscribe", "channel": "ticks"}
    assert second[1]["type"] == "order"


async def test_unsubscribe_stops_resubscribing(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """An unsubscribe message with the same body removes the subscription and is sent."""
    service = make_service(bgws_server.url)
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
        await service.subscribe({"type": "subscribe", "channel": "a"})
        await service.subscribe({"type": "subscribe", "channel": "b"})
        assert await service.unsubscribe({"type": "unsubscribe", "channel": "a"})
        assert not await service.unsubscribe(key="nope")
        assert service.subscriptions == ['{"channel":"b"}']
        await bgws_server.wait_for_messages(3)
        bgws_server.drop()
        await changes.wait(bgws.State.CONNECTED, count=2)
        await bgws_server.wait_for_messages(4)
    types = [(m["type"], m["channel"]) for m in bgws_server.received_json()]
    assert types == [
        ("subscribe", "a"),
        ("subscribe", "b"),
        ("unsubscribe", "a"),
        ("subscribe", "b"),
    ]


async def test_subscriptions_survive_a_restart(
    tmp_path: Path, bgws_server: Server, make_service: ServiceFactory
) -> None:
    """With the SQLite store, the next run re-sends the kept subscriptions."""
    path = str(tmp_path / "subs.sqlite3")
    first = make_service(bgws_server.url, storage="sqlite", storage_path=path)
    async with first:
        await first.subscribe({"type": "subscribe", "channel": "x"}, key="x")
        await bgws_server.wait_for_messages(1)
    second = make_service(bgws_server.url, storage="sqlite", storage_path=path)
    async with second:
        await second.wait_for(bgws.State.CONNECTED, timeout=5)
        await bgws_server.wait_until(lambda: len(bgws_server.connections) == 2, timeout=5)
        await bgws_server.wait_for_messages(2)
    assert second.subscriptions == ["x"]
    assert bgws_server.connections[1].messages[0].json() == {"type": "subscribe", "channel": "x"}
