"""Send rates: limits that pace the writer, per service and per lane.

Servers of the exchange kind count the messages a client sends (Binance: 5 per second) and
drop the link of a client that sends faster. :class:`Pacer` keeps the writer under such limits:
``Config.send_rate = (count, per)`` for everything the service writes, with a burst of
``send_burst`` messages after a quiet spell, and ``Config.lane_send_rates`` for the messages of
one priority lane. Messages that may not go yet wait in the outbox (never dropped). Control
frames (the resume request, subscriptions) count too, and wait their turn ahead of the outbox
(the writer holds them); an application heartbeat counts but is never held back, so the
keepalive's timing stays true. Protocol pings are not counted.

Each limit is two rules at once, so that it holds whichever way the server counts: a
:class:`SlidingWindow` (never more than ``count`` messages in any ``per`` seconds, the way a
server that counts per window sees it) and a :class:`TokenBucket` (at most ``burst`` at once,
then one every ``per / count`` seconds). A plain token bucket alone would let ``burst + count``
messages through in the first ``per`` seconds, which a server counting per window refuses.
Both read one clock (``time.monotonic`` by default).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping

from ..config import Config
from .outbox import Entry

__all__ = ["Pacer", "RateLimit", "SlidingWindow", "TokenBucket"]

_MIN_WAIT = 0.001
"""The shortest wait for a token (seconds), so rounding never turns the wait into a spin."""


class TokenBucket:
    """At most ``count`` messages per ``per`` seconds, ``burst`` of them at once.

    Args:
        count: messages allowed per period.
        per: the period in seconds.
        burst: the most tokens the bucket holds (it starts full).
        clock: the time in seconds.
    """

    __slots__ = ("_at", "_burst", "_clock", "_rate", "_tokens")

    def __init__(self, count: float, per: float, burst: float, clock: Callable[[], float]) -> None:
        self._rate = count / per
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._at = clock()

    def _refill(self) -> float:
        now = self._clock()
        tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._tokens, self._at = tokens, now
        return tokens

    def available(self) -> int:
        """How many whole messages may go now."""
        return max(int(self._refill()), 0)

    def spend(self, n: int) -> None:
        """``n`` messages went out (a control frame may leave the bucket in debt)."""
        self._refill()
        self._tokens -= n

    def wait(self) -> float:
        """Seconds until one message may go (0 if one may go now)."""
        tokens = self._refill()
        return 0.0 if tokens >= 1 else max((1 - tokens) / self._rate, _MIN_WAIT)


class SlidingWindow:
    """At most ``count`` messages in any ``per`` seconds.

    Args:
        count: messages allowed per window.
        per: the window in seconds.
        clock: the time in seconds.
    """

    __slots__ = ("_clock", "_count", "_per", "_sent")

    def __init__(self, count: int, per: float, clock: Callable[[], float]) -> None:
        self._count = count
        self._per = per
        self._clock = clock
        self._sent: deque[float] = deque()  # send times within the last window, oldest first

    def _trim(self) -> float:
        now = self._clock()
        sent, start = self._sent, now - self._per
        while sent and sent[0] <= start:
            sent.popleft()
        return now

    def available(self) -> int:
        """How many whole messages may go now."""
        self._trim()
        return max(self._count - len(self._sent), 0)

    def spend(self, n: int) -> None:
        """``n`` messages went out now (a control frame may take the window past ``count``)."""
        now = self._trim()
        self._sent.extend([now] * n)

    def wait(self) -> float:
        """Seconds until one message may go (0 if one may go now)."""
        now = self._trim()
        over = len(self._sent) - self._count
        if over < 0:
            return 0.0
        return max(self._sent[over] + self._per - now, _MIN_WAIT)


class RateLimit:
    """``count`` messages per ``per`` seconds, ``burst`` of them at once: both rules.

    Args:
        count: messages allowed per period.
        per: the period in seconds.
        burst: the most messages sent back to back (at most ``count`` count anyway).
        clock: the time in seconds.
    """

    __slots__ = ("_bucket", "_window")

    def __init__(self, count: int, per: float, burst: int, clock: Callable[[], float]) -> None:
        self._window = SlidingWindow(count, per, clock)
        self._bucket = TokenBucket(count, per, burst, clock)

    def available(self) -> int:
        """How many whole messages may go now."""
        return min(self._window.available(), self._bucket.available())

    def spend(self, n: int) -> None:
        """``n`` messages went out now."""
        self._window.spend(n)
        self._bucket.spend(n)

    def wait(self) -> float:
        """Seconds until one message may go (0 if one may go now)."""
        return max(self._window.wait(), self._bucket.wait())


class Pacer:
    """The send-rate limits of one service's writer.

    Args:
        service: the limit every written message counts against, or ``None``.
        lanes: a limit per priority lane.
        sleep: waits so many seconds on the limits' clock.
    """

    __slots__ = ("_lanes", "_service", "_sleep")

    def __init__(
        self,
        service: RateLimit | None,
        lanes: Mapping[int, RateLimit],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._service = service
        self._lanes = dict(lanes)
        self._sleep = sleep

    @classmethod
    def from_config(
        cls,
        config: Config,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> Pacer | None:
        """The pacer ``config`` asks for, or ``None`` when it sets no send rate.

        Args:
            config: the service's config.
            clock: the monotonic time the limits read (default: ``time.monotonic``).
            sleep: waits on that same clock (default: ``asyncio.sleep``).
        """
        if config.send_rate is None and not config.lane_send_rates:
            return None
        read = clock if clock is not None else time.monotonic
        service = None
        if config.send_rate is not None:
            count, per = config.send_rate
            burst = config.send_burst if config.send_burst is not None else count
            service = RateLimit(int(count), per, int(burst), read)
        lanes = {
            int(p): RateLimit(int(count), per, int(count), read)
            for p, (count, per) in config.lane_send_rates.items()
        }
        return cls(service, lanes, sleep)

    def room(self, limit: int) -> tuple[int, dict[int, int] | None]:
        """How many messages may go now in all, and per rate-limited lane.

        Args:
            limit: the most the writer takes at once anyway.
        """
        if self._service is not None:
            limit = min(limit, self._service.available())
        if not self._lanes:
            return limit, None
        return limit, {p: lane.available() for p, lane in self._lanes.items()}

    def wait(self) -> float:
        """Seconds until some message may go: the soonest a blocked limit lets one go."""
        if self._service is not None:
            first = self._service.wait()
            if first > 0:
                return first
        waits = [w for lane in self._lanes.values() if (w := lane.wait()) > 0]
        return min(waits, default=_MIN_WAIT)

    async def hold(self) -> None:
        """Wait until some message may go (the writer found nothing it may send now)."""
        await self._sleep(self.wait())

    def spent(self, batch: Iterable[Entry]) -> None:
        """These messages went out."""
        entries = list(batch)
        if self._service is not None:
            self._service.spend(len(entries))
        if self._lanes:
            for entry in entries:
                lane = self._lanes.get(entry.priority)
                if lane is not None:
                    lane.spend(1)

    def control_room(self) -> bool:
        """Whether a control frame may go now (lane rates do not apply to control frames)."""
        return self._service is None or self._service.available() >= 1

    def control(self) -> None:
        """A control frame went out: it counts against the service's rate."""
        if self._service is not None:
            self._service.spend(1)
