"""Flag: asyncio.Event's behaviour at a fraction of its memory."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from bgws._engine.flag import Flag


async def test_set_wakes_every_waiter() -> None:
    """Every coroutine waiting on the flag wakes when it is set; wait() returns True."""
    flag = Flag()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)  # let them start waiting
    assert not any(w.done() for w in waiters)
    flag.set()
    async with asyncio.timeout(5):
        assert await asyncio.gather(*waiters) == [True, True, True]
    assert flag.is_set()


async def test_clear_lowers_the_flag_for_later_waiters() -> None:
    """After clear(), a new wait() waits for the next set()."""
    flag = Flag()
    flag.set()
    assert await flag.wait() is True  # already set: no waiting
    flag.clear()
    assert not flag.is_set()
    waiter = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    flag.set()
    flag.clear()  # the woken waiter stays woken, as with asyncio.Event
    async with asyncio.timeout(5):
        assert await waiter is True


async def test_a_cancelled_waiter_is_forgotten() -> None:
    """A wait() cancelled or timed out leaves no waiter behind."""
    flag = Flag()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await flag.wait()
    assert flag._waiters is None
    assert "unset" in repr(flag)


def _bytes_each(make: Callable[[], Any], n: int = 1000) -> float:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        held = [make() for _ in range(n)]
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(held) == n
    return grown / n


def test_a_flag_costs_a_fraction_of_an_event() -> None:
    """An idle Flag takes under a quarter of an idle asyncio.Event's memory."""
    assert _bytes_each(Flag) < _bytes_each(asyncio.Event) / 4
