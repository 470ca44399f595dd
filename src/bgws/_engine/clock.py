"""The clock seam: every timer and timestamp of the engine reads time through a :class:`Clock`.

Two kinds of time, never mixed:

* **monotonic** (:meth:`Clock.monotonic`): deadlines, delays, uptime, windows. It never goes
  back, and on Linux it does not count the time the machine spent asleep;
* **wall** (:meth:`Clock.wall`): what is shown to people and what is persisted, because a
  monotonic reading means nothing to the next process.

:data:`SYSTEM_CLOCK` is the real one (``time.monotonic``, ``time.time``, ``asyncio.sleep``,
``asyncio.timeout``, used as they are, so the default path costs nothing extra);
:class:`bgws.testing.VirtualClock` is its twin for tests that need a day to pass in seconds.
Pass one to :class:`bgws.Service` as ``clock=``.

:func:`nap` is the sleep of a periodic timer that notices when the process was suspended
(a laptop's lid closed): the wall clock moved far more than the monotonic one, or the monotonic
one overslept. It returns early then, so the caller checks its link at once instead of waiting
for the next period.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import AbstractAsyncContextManager
from typing import Final, Protocol, runtime_checkable

__all__ = [
    "SUSPEND_SLACK",
    "SYSTEM_CLOCK",
    "WAKE_CHECK",
    "Clock",
    "SystemClock",
    "nap",
    "suspended_for",
]

WAKE_CHECK: Final = 2.0
"""Longest single sleep of :func:`nap` (seconds): a wake is noticed within this long.

One timer per link every 2 s: for a thousand links about 500 timer wake-ups a second, well
under 1% of a core (an asyncio timer wake-up costs 10-20 us).
"""
SUSPEND_SLACK: Final = 2.0
"""Seconds the two clocks (or a sleep and its target) may drift apart before it counts as a
suspend: NTP slews and a busy loop stay well under it."""

_log = logging.getLogger("bgws.clock")


@runtime_checkable
class Clock(Protocol):
    """Where the engine reads the time and waits.

    Implement it to drive a service on simulated time; :class:`bgws.testing.VirtualClock` is one.
    """

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (deadlines, delays, windows)."""
        ...

    def wall(self) -> float:
        """Seconds since the epoch (``time.time()``): for people and for what is persisted."""
        ...

    async def sleep(self, delay: float) -> None:
        """Wait ``delay`` seconds of :meth:`monotonic` time."""
        ...

    def timeout(self, delay: float | None) -> AbstractAsyncContextManager[object]:
        """A context that cancels its body after ``delay`` seconds and raises ``TimeoutError``
        (``None``: never)."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic``, ``time.time``, ``asyncio.sleep``, ``asyncio.timeout``."""

    __slots__ = ()

    # asyncio's own functions, not wrappers: a waiting keepalive holds one coroutine frame
    # less (about 200 bytes an idle service).
    monotonic = staticmethod(time.monotonic)
    wall = staticmethod(time.time)
    sleep = staticmethod(asyncio.sleep)
    timeout = staticmethod(asyncio.timeout)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK: Final[Clock] = SystemClock()
"""The real clock, shared: it holds no state."""


def suspended_for(slept: float, asked: float, wall_moved: float) -> float:
    """How long the process seems to have been suspended during one sleep, or 0.

    Args:
        slept: monotonic seconds the sleep really took.
        asked: the seconds it was asked to take.
        wall_moved: wall-clock seconds that passed meanwhile.

    Returns:
        The seconds unaccounted for: the wall clock ran ahead of the monotonic one (Linux,
        whose monotonic clock stops while the machine sleeps), or the sleep overran its target
        (clocks that keep counting while asleep); 0 when neither is beyond
        :data:`SUSPEND_SLACK`.
    """
    gap = max(wall_moved - slept, slept - asked)
    return gap if gap > SUSPEND_SLACK else 0.0


async def nap(clock: Clock, interval: float) -> float:
    """Sleep ``interval`` monotonic seconds, in steps of at most :data:`WAKE_CHECK`; stop early
    when the process was suspended meanwhile.

    Args:
        clock: the clock to sleep on.
        interval: the seconds to sleep.

    Returns:
        0 when the whole interval passed; else the seconds the process was suspended (the
        caller should check its link now).
    """
    end = clock.monotonic() + interval
    while True:
        left = end - clock.monotonic()
        if left <= 0:
            return 0.0
        step = min(left, WAKE_CHECK)
        mono, wall = clock.monotonic(), clock.wall()
        await clock.sleep(step)
        gap = suspended_for(clock.monotonic() - mono, step, clock.wall() - wall)
        if gap:
            _log.info("the process was suspended for about %.0fs: checking the link now", gap)
            return gap
