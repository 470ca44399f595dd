"""Keepalive: half-open links are detected in time; slow handlers are not mistaken for them."""

from __future__ import annotations

import asyncio
import time

import pytest

import bgws
from bgws.testing import Connection, ReceivedMessage, Server

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
        assert service._dispatcher.pauses >= 1
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
