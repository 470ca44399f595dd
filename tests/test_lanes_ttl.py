"""Priority lanes and time-to-live, and inbound priority types."""

from __future__ import annotations

import asyncio

import pytest

import bgws
from bgws.testing import Server

from .conftest import MS, Errors, ServiceFactory


async def test_higher_priority_goes_first_order_kept_within_lane(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """Queued offline, orders (priority 10) leave before market-data requests (0)."""
    await bgws_server.stop()
    service = make_service(bgws_server.url)
    async with service:
        for n in range(3):
            await service.send({"kind": "md", "n": n})
            await service.send({"kind": "order", "n": n}, priority=10)
        await service.send({"kind": "urgent"}, priority=99)
        await bgws_server.start()
        await bgws_server.wait_for_messages(7)
    got = [(m["kind"], m.get("n")) for m in bgws_server.received_json()]
    assert got == [
        ("urgent", None),
        ("order", 0),
        ("order", 1),
        ("order", 2),
        ("md", 0),
        ("md", 1),
        ("md", 2),
    ]


async def test_expired_messages_are_reported_not_sent(
    bgws_server: Server, make_service: ServiceFactory, errors: Errors
) -> None:
    """A message whose TTL passes while offline is reported as MessageExpired, never sent."""
    await bgws_server.stop()
    service = make_service(bgws_server.url)
    async with service:
        stale = await service.send({"type": "quote"}, ttl=50 * MS)
        fresh = await service.send({"type": "order"}, ttl=60)
        (expired,) = await errors.wait_for(bgws.MessageExpired, timeout=3)
        assert expired.entry.id == stale  # type: ignore[attr-defined]
        assert service.stats.expired == 1
        await bgws_server.start()
        await bgws_server.wait_for_messages(1)
    assert [m["id"] for m in bgws_server.received_json()] == [fresh]


async def test_priority_types_dispatched_first_under_load(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """When messages arrive together, order updates are handled before ticks, order kept."""
    done = asyncio.Event()
    handled: list[tuple[str, int]] = []
    service = make_service(bgws_server.url, priority_types=("order_update",))

    @service.on()
    def record(message: bgws.Message) -> None:
        handled.append((message.type or "", message.data["n"]))
        if len(handled) == 6:
            done.set()

    async with service:
        await service.wait_for(bgws.State.CONNECTED, timeout=5)
        bgws_server.stall()  # hold the frames back so they arrive in one read
        for n in range(3):
            bgws_server.push({"type": "tick", "n": n})
            bgws_server.push({"type": "order_update", "n": n})
        bgws_server.unstall()
        await asyncio.wait_for(done.wait(), 5)
    assert handled == [
        ("order_update", 0),
        ("order_update", 1),
        ("order_update", 2),
        ("tick", 0),
        ("tick", 1),
        ("tick", 2),
    ]


async def test_send_many_gives_lanes_and_ttl_to_the_whole_batch(
    bgws_server: Server, make_service: ServiceFactory, errors: Errors
) -> None:
    """A batch takes one priority and one TTL: an expired batch is reported message by
    message, a batch in a higher lane overtakes an older one; ttl must be positive."""
    await bgws_server.stop()
    service = make_service(bgws_server.url, max_queue_size=8, overflow="wait")
    async with service:
        with pytest.raises(ValueError, match="ttl"):
            await service.send_many([{"n": 0}], ttl=0)
        with pytest.raises(ValueError, match="ttl"):
            await service.send({"n": 0}, ttl=-1)
        assert service.stats.queued == 0  # refused messages take no room
        stale = await service.send_many([{"n": n} for n in range(3)], ttl=50 * MS)
        await errors.wait_for(bgws.MessageExpired, count=3, timeout=3)
        low = await service.send_many([{"n": n} for n in range(3, 6)])
        high = await service.send_many([{"n": n} for n in range(6, 8)], priority=5)
        assert service.stats.expired == 3
        assert len(stale) == 3
        await bgws_server.start()
        await bgws_server.wait_for_messages(5)
    assert [m["id"] for m in bgws_server.received_json()] == high + low
