"""Reconnecting: after drops, closes and refusals, with bounded backoff and a final FAILED."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

import bgws
from bgws.backoff import Backoff
from bgws.testing import Server

from .conftest import MS, Changes, Errors, ServiceFactory


class RecordingBackoff(Backoff):
    """A real backoff that remembers which attempt numbers it was asked for."""

    def __init__(self, initial: float, maximum: float) -> None:
        super().__init__(initial, maximum, random.Random(1))
        self.attempts: list[int] = []
        self.given: list[float] = []

    def delay(self, attempt: int) -> float:
        self.attempts.append(attempt)
        value = super().delay(attempt)
        self.given.append(value)
        return value


async def test_reconnects_after_abrupt_drop(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """A link dropped without a close frame comes back by itself."""
    service = make_service(bgws_server.url)
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
        bgws_server.drop()
        lost = await changes.wait(bgws.State.BACKING_OFF)
        assert isinstance(lost.reason, bgws.ConnectionClosed)
        assert lost.reason.code == 1006
        await changes.wait(bgws.State.CONNECTED, count=2)
        assert bgws_server.connections_accepted == 2
        assert service.stats.reconnects == 1


async def test_backoff_delays_within_bounds_and_reset_after_min_uptime(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """Quick drops grow the attempt count; a link up for min_uptime resets it to 1."""
    backoff = RecordingBackoff(20 * MS, 80 * MS)
    service = make_service(bgws_server.url, backoff=backoff, min_uptime=300 * MS)
    changes = Changes(service)
    async with service:
        for n in range(1, 4):  # three quick drops: attempts 1, 2, 3
            await changes.wait(bgws.State.CONNECTED, count=n)
            bgws_server.drop()
            await changes.wait(bgws.State.BACKING_OFF, count=n)
        up = await changes.wait(bgws.State.CONNECTED, count=4)
        # The scenario itself: the link stays up past min_uptime before the next drop.
        await asyncio.sleep(400 * MS - (time.time() - up.at))
        bgws_server.drop()
        await changes.wait(bgws.State.BACKING_OFF, count=4)
    assert backoff.attempts == [1, 2, 3, 1]
    for attempt, delay in zip(backoff.attempts, backoff.given, strict=True):
        assert 0 <= delay <= backoff.ceiling(attempt) <= 80 * MS
    # The time spent backing off matches the drawn delays (plus scheduling slack).
    for i, delay in enumerate(backoff.given[:3]):  # the 4th was cut short by the stop
        left = changes.into(bgws.State.BACKING_OFF)[i].at
        back = changes.into(bgws.State.CONNECTING)[i + 1].at
        assert delay - 5 * MS <= back - left <= delay + 250 * MS


async def test_max_reconnect_attempts_ends_in_failed(
    bgws_server: Server, make_service: ServiceFactory, errors: Errors
) -> None:
    """With the server gone, the service gives up after max_reconnect_attempts."""
    service = make_service(bgws_server.url, max_reconnect_attempts=2)
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
        await bgws_server.stop()
        failed = await changes.wait(bgws.State.FAILED)
        assert isinstance(failed.reason, bgws.LinkError)
        assert len(changes.into(bgws.State.BACKING_OFF)) == 2
        assert service.state is bgws.State.FAILED
        assert errors.of(bgws.LinkError), "the final failure is reported"
        with pytest.raises(bgws.ServiceClosed, match="FAILED"):
            await service.send({"type": "x"})


async def test_wait_for_raises_when_the_service_fails(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """Waiting for CONNECTED on a service that fails raises instead of hanging."""
    bgws_server.refuse_next(1, status=404)
    service = make_service(bgws_server.url)
    async with service:
        with pytest.raises(bgws.ServiceClosed, match="HandshakeRejected"):
            await service.wait_for(bgws.State.CONNECTED, timeout=5)
    assert service.stats.last_error is not None
    assert "404" in service.stats.last_error


async def test_refused_handshakes_are_retried(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """503 answers are retried until the server accepts."""
    bgws_server.refuse_next(3, status=503)
    service = make_service(bgws_server.url)
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
    assert [h.status for h in bgws_server.handshakes] == [503, 503, 503, 101]
    assert all(
        isinstance(c.reason, bgws.HandshakeRejected) for c in changes.into(bgws.State.BACKING_OFF)
    )


async def test_clean_close_by_server_reconnects(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """A server's clean close (1001 going away) is followed by a reconnect."""
    service = make_service(bgws_server.url)
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
        bgws_server.close(1001, "restarting")
        lost = await changes.wait(bgws.State.BACKING_OFF)
        assert isinstance(lost.reason, bgws.ConnectionClosed)
        assert (lost.reason.code, lost.reason.reason) == (1001, "restarting")
        await changes.wait(bgws.State.CONNECTED, count=2)


async def test_clean_close_without_reconnect_on_close(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """With reconnect_on_close=False a clean close by the server is final."""
    service = make_service(bgws_server.url, reconnect_on_close=False)
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
        bgws_server.close(1000)
        failed = await changes.wait(bgws.State.FAILED)
        assert isinstance(failed.reason, bgws.ConnectionClosed)
    assert bgws_server.connections_accepted == 1


async def test_connect_timeout_bounds_a_silent_server(make_service: ServiceFactory) -> None:
    """A server that accepts TCP but never answers the handshake costs connect_timeout."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    silent = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        service = make_service(f"ws://127.0.0.1:{port}/", connect_timeout=150 * MS)
        changes = Changes(service)
        async with service:
            lost = await changes.wait(bgws.State.BACKING_OFF, timeout=2)
            assert isinstance(lost.reason, bgws.ConnectTimeout)
            took = lost.at - changes.into(bgws.State.CONNECTING)[0].at
            assert 150 * MS - 10 * MS <= took < 150 * MS + 0.5
    finally:
        for writer in held:
            writer.close()
        silent.close()
        await silent.wait_closed()


async def test_restarted_server_is_found_again(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """After the server restarts on the same port, the service reconnects."""
    service = make_service(bgws_server.url)
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
        await bgws_server.restart()
        await changes.wait(bgws.State.CONNECTED, count=2)


async def test_state_change_carries_the_backoff_delay(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """A move into BACKING_OFF says how long the service waits before the next attempt."""
    service = make_service(bgws_server.url)
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
        await bgws_server.stop()
        backing = await changes.wait(bgws.State.BACKING_OFF)
        failed = await changes.wait(bgws.State.BACKING_OFF, count=2)
    assert backing.delay is not None
    assert 0 <= backing.delay <= 20 * MS
    assert isinstance(failed.reason, bgws.LinkError)
    assert "refused" in str(failed.reason).lower()
    assert changes.into(bgws.State.CONNECTED)[0].delay is None


async def test_drop_then_stop_is_an_abrupt_loss(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """A server stopped right after a drop sends no close frame on the dropped link."""
    service = make_service(bgws_server.url)
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
        bgws_server.drop()
        await bgws_server.stop()
        lost = await changes.wait(bgws.State.BACKING_OFF)
    assert isinstance(lost.reason, bgws.ConnectionClosed)
    assert lost.reason.code == 1006
