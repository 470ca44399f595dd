"""bgws.testing.VirtualClock: timers fire in order as a test advances time, and nap() sees
a suspend."""

from __future__ import annotations

import asyncio

import pytest

import bgws
from bgws._engine.clock import SYSTEM_CLOCK, WAKE_CHECK, nap, suspended_for
from bgws.testing import VirtualClock


async def test_sleepers_wake_in_order_at_their_virtual_time() -> None:
    """Sleeps end in deadline order, each at its own virtual time, in little real time."""
    clock = VirtualClock()
    start = clock.monotonic()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, delay: float) -> None:
        await clock.sleep(delay)
        woke.append((name, clock.monotonic() - start))

    tasks = [asyncio.create_task(sleeper(n, d)) for n, d in (("b", 3600.0), ("a", 60.0))]
    loop = asyncio.get_running_loop()
    began = loop.time()
    await clock.advance(86400.0)
    await asyncio.gather(*tasks)
    assert woke == [("a", 60.0), ("b", 3600.0)]
    assert clock.monotonic() - start == 86400.0
    assert loop.time() - began < 5.0


async def test_nothing_fires_before_its_time() -> None:
    """advance() stops at its target: a later timer stays pending."""
    clock = VirtualClock()
    task = asyncio.create_task(clock.sleep(10.0))
    await clock.advance(9.0)
    assert not task.done()
    assert clock.pending == 1
    await clock.advance(1.0)
    await asyncio.wait_for(task, 1.0)
    assert clock.pending == 0


async def test_timeout_raises_after_virtual_delay() -> None:
    """clock.timeout() cancels its body and raises TimeoutError at the virtual deadline."""
    clock = VirtualClock()
    never = asyncio.Event()

    async def wait() -> float:
        with pytest.raises(TimeoutError):
            async with clock.timeout(5.0):
                await never.wait()
        return clock.monotonic()

    task = asyncio.create_task(wait())
    start = clock.monotonic()
    await clock.advance(4.0)
    assert not task.done()
    await clock.advance(2.0)
    assert await asyncio.wait_for(task, 1.0) == start + 5.0


async def test_timeout_that_is_not_reached_leaves_no_timer() -> None:
    """A body that ends in time cancels its virtual timer."""
    clock = VirtualClock()
    async with clock.timeout(5.0):
        await asyncio.sleep(0)
    async with clock.timeout(None):
        await asyncio.sleep(0)
    assert clock.pending == 0


async def test_cancelled_sleep_leaves_no_timer() -> None:
    """Cancelling a sleeping task removes its timer."""
    clock = VirtualClock()
    task = asyncio.create_task(clock.sleep(10.0))
    await asyncio.sleep(0)
    assert clock.pending == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert clock.pending == 0


async def test_suspend_moves_the_wall_clock_only() -> None:
    """suspend() is a Linux sleep: wall time jumps, monotonic time and timers stay."""
    clock = VirtualClock()
    mono, wall = clock.monotonic(), clock.wall()
    clock.suspend(3600.0)
    assert clock.monotonic() == mono
    assert clock.wall() == wall + 3600.0


async def test_advance_refuses_to_go_back() -> None:
    """A negative advance is a ValueError."""
    with pytest.raises(ValueError, match="back"):
        await VirtualClock().advance(-1.0)


def test_both_clocks_are_clocks() -> None:
    """The system clock and the virtual clock both satisfy the bgws.Clock protocol."""
    assert isinstance(SYSTEM_CLOCK, bgws.Clock)
    assert isinstance(VirtualClock(), bgws.Clock)


def test_suspended_for_needs_more_than_slack() -> None:
    """Small drifts are not a suspend; a wall jump or an overslept timer is."""
    assert suspended_for(2.0, 2.0, 2.5) == 0.0
    assert suspended_for(2.0, 2.0, 3602.0) == 3600.0
    assert suspended_for(600.0, 2.0, 600.0) == 598.0


async def test_nap_returns_early_after_a_suspend() -> None:
    """nap() wakes within one WAKE_CHECK step of a suspend, not at the end of its interval."""
    clock = VirtualClock()
    start = clock.monotonic()
    task = asyncio.create_task(nap(clock, 60.0))
    await clock.advance(10.0)
    clock.suspend(3600.0)
    await clock.advance(WAKE_CHECK)
    assert task.done()
    assert await task >= 3600.0
    assert clock.monotonic() - start == 10.0 + WAKE_CHECK


async def test_nap_sleeps_the_whole_interval_without_a_suspend() -> None:
    """Without a suspend nap() returns 0 after exactly its interval."""
    clock = VirtualClock()
    task = asyncio.create_task(nap(clock, 7.0))
    await clock.advance(6.9)
    assert not task.done()
    await clock.advance(0.1)
    assert await asyncio.wait_for(task, 1.0) == 0.0
