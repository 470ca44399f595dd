"""Send rates: the writer keeps a service (and a lane) under the server's inbound limit."""

from __future__ import annotations

import asyncio

import pytest

import bgws
from bgws.testing import Reply, Server, VirtualClock
from bgws.transport import Transport

from .conftest import Changes, ServiceFactory

TOLERANCE = 0.05
"""Seconds of timer slack allowed per check (server timestamps, a loaded machine)."""


def within_rate(times: list[float], count: int, per: float) -> bool:
    """Whether no window shorter than ``per`` (less the tolerance) holds more than ``count``."""
    return all(times[i + count] - times[i] >= per - TOLERANCE for i in range(len(times) - count))


async def test_send_rate_paces_messages_none_lost(
    make_service: ServiceFactory, transport: Transport
) -> None:
    """20 messages with send_rate [5, "1s"] and a burst of 5 reach the server at that rate."""
    async with Server() as server:
        service = make_service(server.url, transport=transport, send_rate=[5, "1s"], send_burst=5)
        changes = Changes(service)
        async with service:
            await changes.wait(bgws.State.CONNECTED)
            for n in range(20):
                await service.send({"type": "order", "n": n})
            received = await server.wait_for_messages(20, timeout=10)
        assert [m.json()["n"] for m in received] == list(range(20))
        times = [m.timestamp for m in received]
        assert within_rate(times, 5, 1.0)
        assert times[-1] - times[0] >= 3.0 - TOLERANCE  # 15 after the burst, at 5 a second
        assert service.stats.queued == 0


async def test_lane_send_rate_paces_only_its_lane(
    make_service: ServiceFactory, transport: Transport
) -> None:
    """A lane's rate holds back that lane's messages; other lanes go past them at once."""
    async with Server() as server:
        service = make_service(server.url, transport=transport, lane_send_rates={"1": [2, "0.2s"]})
        changes = Changes(service)
        async with service:
            await changes.wait(bgws.State.CONNECTED)
            for n in range(6):
                await service.send({"type": "slow", "n": n}, priority=1)
            for n in range(3):
                await service.send({"type": "fast", "n": n})
            received = await server.wait_for_messages(9, timeout=5)
        slow = [m for m in received if m.json()["type"] == "slow"]
        assert [m.json()["n"] for m in slow] == list(range(6))
        assert within_rate([m.timestamp for m in slow], 2, 0.2)
        assert slow[-1].timestamp - slow[0].timestamp >= 0.4 - TOLERANCE
        fast_at = [m.timestamp for m in received if m.json()["type"] == "fast"]
        assert max(fast_at) < slow[-1].timestamp  # not stuck behind the slow lane


async def test_request_held_back_by_rate_times_out_and_is_withdrawn(
    make_service: ServiceFactory, transport: Transport
) -> None:
    """A request that would wait past its timeout for the rate fails; it is never sent."""
    async with Server(reply=Reply()) as server:
        service = make_service(server.url, transport=transport, send_rate=[1, "0.5s"], send_burst=1)
        changes = Changes(service)
        async with service:
            await changes.wait(bgws.State.CONNECTED)
            await service.send({"type": "first"})
            with pytest.raises(bgws.RequestTimeout):
                await service.request({"type": "quote"}, timeout=0.1)
            await service.send({"type": "after"})
            received = await server.wait_for_messages(2, timeout=5)
        assert [m.json()["type"] for m in received] == ["first", "after"]
        assert service.stats.queued == 0


async def test_request_timed_out_offline_is_never_sent_later(
    make_service: ServiceFactory, transport: Transport
) -> None:
    """A request that timed out while offline is withdrawn: the next link never carries it."""
    async with Server(reply=Reply()) as server:
        service = make_service(server.url, transport=transport)
        changes = Changes(service)
        async with service:
            await changes.wait(bgws.State.CONNECTED)
            await server.stop()
            await changes.wait(bgws.State.BACKING_OFF)
            with pytest.raises(bgws.RequestTimeout):
                await service.request({"type": "quote"}, timeout=0.1)
            await server.start()
            await changes.wait(bgws.State.CONNECTED, count=2)
            await service.send({"type": "after"})
            received = await server.wait_for_messages(1, timeout=5)
        assert [m.json()["type"] for m in received] == ["after"]


async def test_send_rate_waits_on_the_service_clock(transport: Transport) -> None:
    """With a virtual clock the rate's waits are virtual: only the burst goes while the clock
    stands still, and 3 virtual seconds (no real ones) let the other 15 through, in order."""
    clock = VirtualClock()
    async with Server() as server:
        config = bgws.Config(
            app_name="rate",
            url=server.url,
            storage="memory",
            heartbeat_interval=None,
            send_rate=[5, "1s"],
            send_burst=5,
        )
        service = bgws.Service(config, transport=transport, clock=clock)
        async with service:
            await service.wait_for(bgws.State.CONNECTED, timeout=5)
            for n in range(20):
                await service.send({"type": "order", "n": n})
            await server.wait_for_messages(5, timeout=5)
            await clock.advance(0.9)  # the window of the burst is not over yet
            assert len(server.received_json()) == 5
            await clock.advance(3.2)
            received = await server.wait_for_messages(20, timeout=1)  # real time: no pacing
        assert [m.json()["n"] for m in received] == list(range(20))


async def test_request_deadlines_run_on_the_service_clock(transport: Transport) -> None:
    """With a virtual clock a request's deadline is virtual too: a request held back by the
    rate for an hour of virtual time fails at its 30 s timeout when the clock gets there, not
    after 30 real seconds, and is never sent; an answered request still gets its reply."""
    clock = VirtualClock()
    async with Server(reply=Reply()) as server:
        config = bgws.Config(
            app_name="rate",
            url=server.url,
            storage="memory",
            heartbeat_interval=None,
            id_field="id",
            send_rate=[1, "1h"],
            send_burst=1,
        )
        service = bgws.Service(config, transport=transport, clock=clock)
        async with service:
            await service.wait_for(bgws.State.CONNECTED, timeout=5)
            reply = await service.request({"type": "quote", "n": 1}, timeout=30)  # the burst
            assert isinstance(reply, bgws.Message)
            held = asyncio.create_task(service.request({"type": "quote", "n": 2}, timeout=30))
            await clock.advance(29)
            assert not held.done()
            async with asyncio.timeout(5):  # real seconds: far less than the 30 s timeout
                await clock.advance(2)
                with pytest.raises(bgws.RequestTimeout):
                    await held
            assert service.stats.queued == 0
        assert [m["n"] for m in server.received_json()] == [1]


async def test_subscriptions_at_connect_wait_their_turn_under_the_rate(
    make_service: ServiceFactory, transport: Transport
) -> None:
    """Twelve kept subscriptions and four queued messages, send_rate [4, "0.4s"]: at connect
    the subscriptions go first, then the messages, and no 0.4 s window holds more than four
    frames (they all went at once before, and an exchange that counts subscriptions, as
    Binance does, drops such a link, again after every reconnect)."""
    async with Server() as server:
        service = make_service(server.url, transport=transport, send_rate=[4, "0.4s"])
        await service.start()
        for n in range(12):
            await service.subscribe({"type": "subscribe", "n": n})
        for n in range(4):
            await service.send({"type": "order", "n": n})
        await service.connect()
        received = await server.wait_for_messages(16, timeout=10)
        kinds = [m.json()["type"] for m in received]
        assert kinds == ["subscribe"] * 12 + ["order"] * 4
        assert [m.json()["n"] for m in received[:12]] == list(range(12))
        assert within_rate([m.timestamp for m in received], 4, 0.4)
        await service.stop()


async def test_subscriptions_made_while_connected_are_paced_too(
    make_service: ServiceFactory, transport: Transport
) -> None:
    """Six subscriptions made at once on a live link, then two messages: the rate holds the
    subscriptions back in order, and the messages wait behind them."""
    async with Server() as server:
        service = make_service(server.url, transport=transport, send_rate=[2, "0.2s"])
        changes = Changes(service)
        async with service:
            await changes.wait(bgws.State.CONNECTED)
            for n in range(6):
                await service.subscribe({"type": "subscribe", "n": n})
            for n in range(2):
                await service.send({"type": "order", "n": n})
            received = await server.wait_for_messages(8, timeout=10)
        assert [m.json()["type"] for m in received] == ["subscribe"] * 6 + ["order"] * 2
        assert within_rate([m.timestamp for m in received], 2, 0.2)


async def test_each_rotated_link_gets_every_subscription_within_the_rate(
    make_service: ServiceFactory, transport: Transport
) -> None:
    """With rotation and a rate below the number of subscriptions, each new link still gets
    all five, in order, and no link sees more than the rate allows."""
    async with Server() as server:
        service = make_service(
            server.url,
            transport=transport,
            send_rate=[3, "0.3s"],
            max_connection_age=0.6,
            close_timeout=0.5,
        )
        await service.start()
        for n in range(5):
            await service.subscribe({"type": "subscribe", "n": n})
        await service.connect()
        await server.wait_for_connections(3, timeout=10)
        per_link: dict[int, list[tuple[int, float]]] = {}
        async with asyncio.timeout(10):
            while len([c for c, got in per_link.items() if len(got) == 5]) < 2:
                await server.wait_for_messages(len(server.messages) + 1, timeout=5)
                per_link = {}
                for m in server.messages:
                    per_link.setdefault(m.connection_id, []).append((m.json()["n"], m.timestamp))
        await service.stop()
        for got in per_link.values():
            assert [n for n, _ in got] == list(range(len(got)))
            assert within_rate([t for _, t in got], 3, 0.3)
