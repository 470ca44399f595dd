"""Reconnect delays: full-jitter exponential backoff, pure and seedable.

The ceiling for the n-th retry (n starting at 1) is
``min(max_delay, initial_delay * 2 ** (n - 1))``; the delay is drawn uniformly from
``[0, ceiling]`` ("full jitter"). Spreading retries over the whole window is what keeps a
thousand clients that lost the same server from reconnecting in lock-step, and the first retry
never waits longer than ``initial_delay``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["Backoff"]

# 2 ** 63 is far past any sensible cap; stopping the doubling there avoids float overflow.
_MAX_EXPONENT = 63

# One random source for every backoff that is given none: a Random holds ~2.5 KB of state,
# which adds up over ten thousand services in one process.
_SHARED_RNG = random.Random()


@dataclass(slots=True)
class Backoff:
    """Full-jitter exponential backoff between ``initial_delay`` and ``max_delay``.

    Args:
        initial_delay: the ceiling of the first retry's delay, in seconds (> 0).
        max_delay: the largest ceiling, in seconds (>= initial_delay).
        rng: the random source (default: one shared by all backoffs); pass
            ``random.Random(seed)`` for repeatable delays.
    """

    initial_delay: float
    max_delay: float
    rng: random.Random = field(default=_SHARED_RNG)

    def __post_init__(self) -> None:
        if not self.initial_delay > 0:
            raise ValueError("initial_delay must be > 0")
        if not self.max_delay >= self.initial_delay:
            raise ValueError("max_delay must be >= initial_delay")

    def ceiling(self, attempt: int) -> float:
        """The largest delay the ``attempt``-th retry (1-based) may wait."""
        if attempt < 1:
            raise ValueError("attempt counts from 1")
        exponent = min(attempt - 1, _MAX_EXPONENT)
        return min(self.max_delay, self.initial_delay * (2.0**exponent))

    def delay(self, attempt: int) -> float:
        """A delay for the ``attempt``-th retry (1-based): uniform in ``[0, ceiling(attempt)]``."""
        return self.rng.uniform(0.0, self.ceiling(attempt))

    def delays(self) -> Iterator[float]:
        """An endless iterator of delays for attempts 1, 2, 3, ..."""
        attempt = 1
        while True:
            yield self.delay(attempt)
            attempt += 1
