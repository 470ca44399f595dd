"""A virtual clock: a day of reconnects, quotas and heartbeats in seconds of real time.

:class:`VirtualClock` implements :class:`bgws.Clock`. Hand it to the service
(``bgws.Service(config, clock=clock)``) and move time on with :meth:`VirtualClock.advance`::

    clock = VirtualClock()
    service = bgws.Service(config, clock=clock)
    async with service:
        await clock.advance(24 * 3600)   # every timer of that day fires, in order

Only the service's own timers run on it (backoff, quota waits, keepalive, ping timeouts);
the network is real, so a connect attempt against a loopback server takes the real
milliseconds it takes, and no virtual time passes meanwhile. :meth:`VirtualClock.suspend` moves
the wall clock alone, as a laptop that slept and woke does on Linux.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Final

__all__ = ["DEFAULT_IDLE", "DEFAULT_PATIENCE", "VirtualClock"]

DEFAULT_IDLE: Final = 0.02
"""Real seconds without timer activity after which :meth:`VirtualClock.advance` jumps to the
next timer: long enough for a loopback round trip, short enough for hundreds of jumps a test."""
DEFAULT_PATIENCE: Final = 0.5
"""Real seconds :meth:`VirtualClock.advance` waits for a timer when none is pending: the
program may be in the middle of real I/O (a connect attempt) that ends in a new timer."""

_MAX_QUIET_ROUNDS: Final = 500  # a program that never settles still lets the clock move
_START_WALL: Final = 1_800_000_000.0  # 2027-01-15: any fixed, plausible epoch time


class _Timer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False


class VirtualClock:
    """A clock whose time moves only when a test says so.

    Args:
        start: its first :meth:`monotonic` reading.
        wall: its first :meth:`wall` reading (seconds since the epoch).
    """

    def __init__(self, *, start: float = 1000.0, wall: float = _START_WALL) -> None:
        self._now = float(start)
        self._wall_offset = float(wall) - self._now
        self._timers: list[tuple[float, int, _Timer]] = []
        self._order = itertools.count()
        self._activity = 0  # moves whenever a timer is set, fired or cancelled
        self._armed = asyncio.Event()  # set whenever a timer is set

    def monotonic(self) -> float:
        """The virtual monotonic time."""
        return self._now

    def wall(self) -> float:
        """The virtual wall-clock time (moves with :meth:`monotonic`, and by :meth:`suspend`)."""
        return self._now + self._wall_offset

    @property
    def pending(self) -> int:
        """How many timers are waiting (sleeps and timeouts)."""
        return sum(1 for _, _, timer in self._timers if not timer.cancelled)

    def next_deadline(self) -> float | None:
        """The monotonic time of the earliest waiting timer, or ``None``."""
        self._drop_cancelled()
        return self._timers[0][0] if self._timers else None

    def call_at(self, when: float, callback: Callable[[], None]) -> Callable[[], None]:
        """Run ``callback`` once the virtual time reaches ``when``.

        Returns:
            A function that cancels it.
        """
        timer = _Timer(when, callback)
        heapq.heappush(self._timers, (when, next(self._order), timer))
        self._activity += 1
        self._armed.set()

        def cancel() -> None:
            if not timer.cancelled:
                timer.cancelled = True
                self._activity += 1

        return cancel

    async def sleep(self, delay: float) -> None:
        """Wait until the virtual time has moved ``delay`` seconds on."""
        if delay <= 0:
            await asyncio.sleep(0)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not waiter.done():
                waiter.set_result(None)

        cancel = self.call_at(self._now + delay, wake)
        try:
            await waiter
        finally:
            cancel()

    def timeout(self, delay: float | None) -> AbstractAsyncContextManager[object]:
        """Like ``asyncio.timeout(delay)``, with ``delay`` in virtual seconds."""
        return self._timeout(delay)

    @contextlib.asynccontextmanager
    async def _timeout(self, delay: float | None) -> AsyncIterator[object]:
        async with asyncio.timeout(None) as scope:
            cancel: Callable[[], None] | None = None
            if delay is not None:
                loop = asyncio.get_running_loop()
                cancel = self.call_at(self._now + delay, lambda: scope.reschedule(loop.time()))
            try:
                yield scope
            finally:
                if cancel is not None:
                    cancel()

    def suspend(self, seconds: float) -> None:
        """The machine slept ``seconds``: the wall clock jumps on, the monotonic one does not.

        That is what Linux does (its monotonic clock stops during suspend), so no timer fires
        for the lost time; a service notices the jump at its next keepalive step.
        """
        self._wall_offset += seconds

    async def advance(
        self, seconds: float, *, idle: float = DEFAULT_IDLE, patience: float = DEFAULT_PATIENCE
    ) -> None:
        """Let ``seconds`` of virtual time pass, firing every timer due meanwhile in order.

        Before each jump to the next timer, the clock waits until the program has been idle
        (no timer set, fired or cancelled) for ``idle`` real seconds, so the tasks woken by
        the last timer get to run first. When no timer is pending at all, it waits up to
        ``patience`` real seconds for one (a task may be in the middle of real I/O, such as a
        connect attempt, that ends in a new timer) before it concludes that nothing is due.

        Args:
            seconds: how far to move on (>= 0).
            idle: real seconds of quiet that count as "everyone is waiting on a timer".
            patience: real seconds to wait for a timer when none is pending.

        Raises:
            ValueError: ``seconds`` is negative.
        """
        if seconds < 0:
            raise ValueError("a clock does not go back")
        target = self._now + seconds
        while True:
            await self._quiet(idle)
            if self.next_deadline() is None:
                await self._wait_armed(patience)
                await self._quiet(idle)
            due = self.next_deadline()
            if due is None or due > target:
                break
            self._now = max(self._now, due)
            self._fire_due()
        self._now = target
        await self._quiet(idle)

    async def _quiet(self, idle: float) -> None:
        for _ in range(3):  # let callbacks that are ready now run first
            await asyncio.sleep(0)
        for _ in range(_MAX_QUIET_ROUNDS):
            seen = self._activity
            await asyncio.sleep(idle)  # real time: how long "idle" lasts
            if self._activity == seen:
                return

    async def _wait_armed(self, patience: float) -> None:
        self._armed.clear()
        if self.next_deadline() is not None:
            return
        try:
            async with asyncio.timeout(patience):  # real time: how long to wait for I/O
                await self._armed.wait()
        except TimeoutError:
            pass

    def _fire_due(self) -> None:
        timers = self._timers
        while timers and timers[0][0] <= self._now:
            _, _, timer = heapq.heappop(timers)
            if not timer.cancelled:
                timer.cancelled = True
                self._activity += 1
                timer.callback()

    def _drop_cancelled(self) -> None:
        timers = self._timers
        while timers and timers[0][2].cancelled:
            heapq.heappop(timers)

    def __repr__(self) -> str:
        return f"<VirtualClock monotonic={self._now:.3f} pending={self.pending}>"
