"""Send rates: token buckets that pace the writer, per service and per lane.

Servers of the exchange kind count the messages a client sends (Binance: 5 per second) and
drop the link of a client that sends faster. :class:`Pacer` keeps the writer under such limits:
``Config.send_rate = (count, per)`` for everything the service writes, with a burst of
``send_burst`` messages after a quiet spell, and ``Config.lane_send_rates`` for the messages of
one priority lane. Messages that may not go yet wait in the outbox (never dropped); control
frames (the resume request, subscriptions, an application heartbeat) are never held back, but
they spend tokens too, so the messages after them wait longer and the total stays within the
rate. Protocol pings are not counted: servers count data messages.

The buckets read one clock (``time.monotonic`` by default), refill continuously at
``count / per`` tokens a second and hold at most the burst.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from ..config import Config
from .outbox import Entry

__all__ = ["Pacer", "TokenBucket"]

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


class Pacer:
    """The send-rate limits of one service's writer.

    Args:
        service: the bucket every written message spends from, or ``None``.
        lanes: a bucket per priority lane.
    """

    __slots__ = ("_lanes", "_service")

    def __init__(self, service: TokenBucket | None, lanes: Mapping[int, TokenBucket]) -> None:
        self._service = service
        self._lanes = dict(lanes)

    @classmethod
    def from_config(cls, config: Config, clock: Callable[[], float] | None = None) -> Pacer | None:
        """The pacer ``config`` asks for, or ``None`` when it sets no send rate."""
        if config.send_rate is None and not config.lane_send_rates:
            return None
        read = clock if clock is not None else time.monotonic
        service = None
        if config.send_rate is not None:
            count, per = config.send_rate
            burst = config.send_burst if config.send_burst is not None else count
            service = TokenBucket(count, per, burst, read)
        lanes = {
            int(p): TokenBucket(count, per, count, read)
            for p, (count, per) in config.lane_send_rates.items()
        }
        return cls(service, lanes)

    def room(self, limit: int) -> tuple[int, dict[int, int] | None]:
        """How many messages may go now in all, and per rate-limited lane.

        Args:
            limit: the most the writer takes at once anyway.
        """
        if self._service is not None:
            limit = min(limit, self._service.available())
        if not self._lanes:
            return limit, None
        return limit, {p: bucket.available() for p, bucket in self._lanes.items()}

    def wait(self) -> float:
        """Seconds until some message may go: the soonest token of a blocked bucket."""
        if self._service is not None:
            first = self._service.wait()
            if first > 0:
                return first
        waits = [w for bucket in self._lanes.values() if (w := bucket.wait()) > 0]
        return min(waits, default=_MIN_WAIT)

    def spent(self, batch: Iterable[Entry]) -> None:
        """These messages went out."""
        entries = list(batch)
        if self._service is not None:
            self._service.spend(len(entries))
        if self._lanes:
            for entry in entries:
                bucket = self._lanes.get(entry.priority)
                if bucket is not None:
                    bucket.spend(1)

    def control(self) -> None:
        """A control frame went out (it is never held back, but it counts)."""
        if self._service is not None:
            self._service.spend(1)
