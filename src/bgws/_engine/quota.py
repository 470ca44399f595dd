"""The connect quota: never more than ``count`` connect attempts in any ``window`` seconds.

Exchanges cap connects per client (Binance: 300 per 5 minutes per IP) and ban a client that
goes over, so the quota binds whatever the backoff says: a retry that would break it waits.

:class:`ConnectQuota` is the pure rule (a sliding window of attempt times, on the monotonic
clock). :class:`QuotaGate` carries it out before each attempt of the connect loop: it waits
when it must (visible as ``quota_wait_until`` in the service's stats, and reported as a
:class:`~bgws.errors.ConnectQuotaWait` event), then records the attempt, and keeps the recent
attempt times in the service's store (as wall-clock times, the only ones a next process can
read) *before* the attempt goes out, so a process that crashes and restarts in a loop cannot
exceed the quota either.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Final

import msgspec

from ..errors import ConnectQuotaWait
from .clock import Clock
from .hooks import Hooks
from .store import Store

__all__ = ["STORE_KEY", "ConnectQuota", "QuotaGate"]

STORE_KEY: Final = "bgws.connect_times"
"""The connection-info key under which the recent attempt times are kept (a JSON list)."""


class ConnectQuota:
    """At most ``limit`` attempts in any ``window`` seconds (a sliding window).

    Args:
        limit: the attempts allowed per window (>= 1).
        window: the window's length, in seconds.
    """

    __slots__ = ("_times", "limit", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._times: deque[float] = deque()

    def wait(self, now: float) -> float:
        """Seconds to wait from ``now`` until an attempt is allowed (0: go now)."""
        times = self._times
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) < self.limit:
            return 0.0
        return times[-self.limit] + self.window - now

    def record(self, now: float) -> None:
        """An attempt starts at ``now``."""
        self._times.append(now)
        while len(self._times) > self.limit:
            self._times.popleft()

    def restore(self, walls: Iterable[float], now: float, wall_now: float) -> None:
        """Take back the attempts a previous run made (wall-clock times), as of ``now``."""
        for wall in sorted(walls):
            if wall_now - self.window < wall <= wall_now:
                self.record(now - (wall_now - wall))

    def saved(self, now: float, wall_now: float) -> list[float]:
        """The attempts still inside the window, as wall-clock times (what is persisted)."""
        return [round(wall_now - (now - t), 3) for t in self._times if t > now - self.window]


class QuotaGate:
    """Holds each connect attempt back until the quota allows it, then records it.

    Args:
        quota: the rule.
        clock: the service's clock.
        store: where the attempt times are kept across restarts.
        hooks: reports the :class:`ConnectQuotaWait` event, logs, and shows the wait in the
            counters (``quota_wait_until``).
    """

    __slots__ = ("_clock", "_hooks", "_loaded", "_quota", "_store")

    def __init__(
        self,
        quota: ConnectQuota,
        clock: Clock,
        store: Store,
        hooks: Hooks,
    ) -> None:
        self._quota = quota
        self._clock = clock
        self._store = store
        self._hooks = hooks
        self._loaded = False

    async def admit(self) -> None:
        """Wait until the quota allows an attempt, then record it (on disk, before it goes)."""
        clock, quota = self._clock, self._quota
        if not self._loaded:
            self._loaded = True
            await self._load()
        hooks = self._hooks
        delay = quota.wait(clock.monotonic())
        if delay > 0:
            until = clock.wall() + delay
            hooks.counters.quota_wait_until = until
            hooks.log.warning(
                "connect quota (%d per %gs) reached: next attempt in %.1fs",
                quota.limit,
                quota.window,
                delay,
            )
            await hooks.report(ConnectQuotaWait(delay, until, quota.limit, quota.window))
            try:
                while delay > 0:  # twice at most: once more if float rounding left a hair
                    await clock.sleep(delay)
                    delay = quota.wait(clock.monotonic())
            finally:
                hooks.counters.quota_wait_until = None
        now, wall = clock.monotonic(), clock.wall()
        quota.record(now)
        saved = msgspec.json.encode(quota.saved(now, wall)).decode()
        try:
            await self._store.store_connection_info(STORE_KEY, saved)
        except Exception as exc:  # a store that cannot write must not stop reconnecting
            hooks.log.warning("cannot keep the connect times: %s", exc)

    async def _load(self) -> None:
        try:
            raw = await self._store.get_connection_info(STORE_KEY)
            walls = msgspec.json.decode(raw, type=list[float]) if raw else []
        except Exception as exc:  # unreadable: start with an empty window, and say so
            self._hooks.log.warning("cannot read the connect times kept: %s", exc)
            return
        self._quota.restore(walls, self._clock.monotonic(), self._clock.wall())
