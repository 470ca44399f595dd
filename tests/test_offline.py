"""Long outages on a virtual clock against a real loopback server: the connect quota, the
suspended tier, and the link check after the machine slept (both transports)."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import bgws
from bgws._engine.clock import WAKE_CHECK
from bgws.testing import Server, VirtualClock
from bgws.transport import Transport

from .conftest import Errors

DAY = 24 * 3600.0
QUICK = 0.002
"""Real seconds of quiet before a jump, when the service is the only sleeper: a refused
loopback connect leaves no timer pending, so the clock cannot jump over it."""


class Refusing:
    """An on_handshake hook: refuses every upgrade (503) while on, and notes virtual times."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.refuse = True
        self.times: list[float] = []

    def __call__(self, handshake: Any) -> int | None:
        self.times.append(self.clock.monotonic())
        return 503 if self.refuse else None


class Moves:
    """Every state the service enters, with the virtual monotonic time it entered it."""

    def __init__(self, service: bgws.Service, clock: VirtualClock) -> None:
        self.items: list[tuple[bgws.State, float]] = []
        service.on_state_change(lambda change: self.items.append((change.new, clock.monotonic())))

    def times(self, state: bgws.State) -> list[float]:
        return [t for s, t in self.items if s is state]


@pytest.fixture
async def refusing_server() -> AsyncIterator[tuple[Server, VirtualClock, Refusing]]:
    clock = VirtualClock()
    hook = Refusing(clock)
    async with Server(on_handshake=hook) as server:
        yield server, clock, hook


Make = Callable[..., bgws.Service]


@pytest.fixture
async def make(transport: Transport, errors: Errors) -> AsyncIterator[Make]:
    """Services on the given clock and transport; every one is stopped at teardown."""
    made: list[bgws.Service] = []

    def build(url: str, clock: bgws.Clock | None, **options: Any) -> bgws.Service:
        values: dict[str, Any] = {
            "app_name": "offline",
            "url": url,
            "heartbeat_interval": None,
            "initial_reconnect_delay": 1.0,
            "max_reconnect_delay": 10.0,
            "storage": "memory",
            "close_timeout": 1.0,
            **options,
        }
        service = bgws.Service(
            bgws.Config(**values), transport=transport, error_handler=errors, clock=clock
        )
        made.append(service)
        return service

    yield build
    for service in made:
        await service.stop()


def most_in_any_window(times: list[float], window: float) -> int:
    return max(sum(1 for t in times if start <= t < start + window) for start in times)


async def test_a_day_of_refusals_never_exceeds_the_connect_quota(
    refusing_server: tuple[Server, VirtualClock, Refusing], make: Make, errors: Errors
) -> None:
    """Backoff alone would connect every few seconds; the quota holds it to 5 per hour all day."""
    server, clock, hook = refusing_server
    service = make(server.url, clock, connect_quota=[5, "1h"])
    async with service:
        await clock.advance(600.0, idle=QUICK)  # 5 attempts in the first seconds, then a wait
        assert len(hook.times) == 5
        stats = service.stats
        assert stats.quota_wait_until == pytest.approx(clock.wall() - 600.0 + 3600.0, abs=1.0)
        assert stats.to_dict()["quota_wait_until"] == stats.quota_wait_until
        await clock.advance(DAY - 600.0, idle=QUICK)
    assert most_in_any_window(hook.times, 3600.0) == 5
    assert len(hook.times) >= 5 * 24  # the quota, not a stall, is what held it back
    waits = errors.of(bgws.ConnectQuotaWait)
    assert len(waits) >= 23
    first = waits[0]
    assert isinstance(first, bgws.ConnectQuotaWait)
    assert (first.limit, first.window) == (5, 3600.0)
    assert 0 < first.delay <= 3600.0


async def test_the_quota_window_survives_a_restart(
    refusing_server: tuple[Server, VirtualClock, Refusing], make: Make, tmp_path: Path
) -> None:
    """A restarted process reads the recent attempts from the store and waits out the window."""
    server, clock, hook = refusing_server
    options = {
        "connect_quota": [3, "1h"],
        "storage": "sqlite",
        "storage_path": str(tmp_path / "q.db"),
    }
    first = make(server.url, clock, **options)
    async with first:
        await clock.advance(60.0, idle=QUICK)
    assert len(hook.times) == 3
    # The next process: a new monotonic origin, the wall clock 10 minutes on.
    later = VirtualClock(start=5.0, wall=clock.wall() + 600.0)
    hook.clock = later
    second = make(server.url, later, **options)
    async with second:
        await later.advance(60.0, idle=QUICK)
        assert len(hook.times) == 3  # no attempt: the window is still full
        assert second.stats.quota_wait_until is not None
        await later.advance(3600.0, idle=QUICK)
    assert len(hook.times) > 3
    assert hook.times[3] >= 5.0 + 3600.0 - 600.0 - 60.0  # the first attempt's hour was kept


async def test_the_quota_holds_on_the_real_clock(make: Make) -> None:
    """On the system clock too: with a fast backoff, 2 attempts per 300 ms at most."""
    loop = asyncio.get_running_loop()
    times: list[float] = []
    enough = asyncio.Event()

    def refuse(handshake: Any) -> int:
        times.append(loop.time())
        if len(times) >= 7:
            enough.set()
        return 503

    async with Server(on_handshake=refuse) as server:
        service = make(
            server.url,
            None,
            connect_quota=[2, "300ms"],
            initial_reconnect_delay="10ms",
            max_reconnect_delay="20ms",
        )
        async with service:
            await asyncio.wait_for(enough.wait(), 5.0)
    # Server-side arrival times, so some loopback jitter against the client's window; the
    # first attempt is left out: it arrives late (the transport's first connect warms up).
    gaps = [later - first for first, later in zip(times[1:], times[3:], strict=False)]
    assert min(gaps) >= 0.3 - 0.03, gaps


@pytest.mark.parametrize("suspended_send", ["queue", "fail"])
async def test_suspended_after_two_minutes_then_retries_every_30s(
    refusing_server: tuple[Server, VirtualClock, Refusing], make: Make, suspended_send: str
) -> None:
    """Offline for suspend_after: SUSPENDED, an attempt every 30 s, send() queues or fails."""
    server, clock, hook = refusing_server
    service = make(
        server.url,
        clock,
        suspend_after="2m",
        suspended_retry="30s",
        suspended_send=suspended_send,
    )
    moves = Moves(service, clock)
    async with service:
        start = clock.monotonic()
        await clock.advance(60.0, idle=QUICK)
        assert service.state is bgws.State.BACKING_OFF
        await service.send({"type": "early"})  # accepted while backing off, either way
        await clock.advance(260.0, idle=QUICK)
        assert service.state is bgws.State.SUSPENDED
        suspended = moves.times(bgws.State.SUSPENDED)
        assert suspended[0] - start == pytest.approx(120.0, abs=0.5)
        attempts = [t for t in hook.times if t > suspended[0]]
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        assert len(attempts) >= 6
        assert all(gap == pytest.approx(30.0) for gap in gaps)
        if suspended_send == "fail":
            with pytest.raises(bgws.ServiceSuspended):
                await service.send({"type": "late"})
            expected = ["early"]
        else:
            await service.send({"type": "late"})
            expected = ["early", "late"]
        hook.refuse = False
        await clock.advance(30.0, idle=QUICK)
        await service.wait_for(bgws.State.CONNECTED, timeout=5.0)
        await server.wait_for_messages(len(expected))
        assert [m.json()["type"] for m in server.messages] == expected


async def test_a_wake_from_sleep_checks_the_link_at_once(make: Make, errors: Errors) -> None:
    """After a suspend the link is pinged at once; a dead one is found within ping_timeout,
    long before the next heartbeat would have come."""
    clock = VirtualClock()
    async with Server() as server:
        service = make(server.url, clock, heartbeat_interval="60s", ping_timeout="5s")
        moves = Moves(service, clock)
        async with service:
            await service.wait_for(bgws.State.CONNECTED, timeout=5.0)
            await clock.advance(10.0)
            assert service.stats.uptime == pytest.approx(10.0)  # on the virtual clock
            server.stall()  # the link died while the lid was closed
            clock.suspend(3600.0)
            woke = clock.monotonic()
            await clock.advance(WAKE_CHECK + 5.0)  # the next step, then ping_timeout
            await service.wait_for(bgws.State.BACKING_OFF, timeout=5.0)
            assert moves.times(bgws.State.BACKING_OFF)[0] - woke <= WAKE_CHECK + 5.0
            assert isinstance(service.stats.last_error, str)
            assert "DeadLink" in service.stats.last_error
            assert service.stats.dead_links == 1


async def test_a_wake_with_a_live_link_keeps_it(make: Make) -> None:
    """A link that answers the check after a suspend stays up."""
    clock = VirtualClock()
    async with Server() as server:
        service = make(server.url, clock, heartbeat_interval="60s", ping_timeout="5s")
        async with service:
            await service.wait_for(bgws.State.CONNECTED, timeout=5.0)
            clock.suspend(3600.0)
            await clock.advance(WAKE_CHECK + 5.0 + 1.0, idle=0.25)  # room for the real pong
            assert service.state is bgws.State.CONNECTED
            assert service.stats.dead_links == 0


async def test_unreadable_kept_times_start_an_empty_window(
    refusing_server: tuple[Server, VirtualClock, Refusing],
    transport: Transport,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Kept attempt times that cannot be read are logged and ignored; the quota still holds."""
    server, clock, hook = refusing_server
    store = bgws.VolatileStore()
    await store.store_connection_info("bgws.connect_times", "not json")
    config = bgws.Config(
        app_name="offline", url=server.url, heartbeat_interval=None, connect_quota=[2, "1h"]
    )
    service = bgws.Service(config, store=store, transport=transport, clock=clock)
    async with service:
        await clock.advance(600.0, idle=QUICK)
    assert len(hook.times) == 2
    assert "cannot read the connect times kept" in caplog.text
    kept = await store.get_connection_info("bgws.connect_times")
    assert kept is not None
    assert len(json.loads(kept)) == 2
