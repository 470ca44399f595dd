"""The limits behind send rates (window and bucket), on a clock the test moves."""

from __future__ import annotations

import bgws
from bgws._engine.outbox import Entry
from bgws._engine.pacing import Pacer, RateLimit, TokenBucket


class Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_the_rate() -> None:
    """A full bucket lets the burst go at once, then one message per 1/rate seconds."""
    clock = Clock()
    bucket = TokenBucket(5, 1.0, 5, clock)
    assert bucket.available() == 5
    bucket.spend(5)
    assert bucket.available() == 0
    assert abs(bucket.wait() - 0.2) < 1e-9
    clock.now += 0.2
    assert bucket.available() == 1
    clock.now += 10
    assert bucket.available() == 5  # never more than the burst


def test_limit_never_lets_more_than_count_into_one_window() -> None:
    """After a full burst the window holds the next message until the first one left it."""
    clock = Clock()
    limit = RateLimit(5, 1.0, 5, clock)
    limit.spend(5)
    clock.now += 0.2  # the bucket alone would let one more go now
    assert limit.available() == 0
    assert abs(limit.wait() - 0.8) < 1e-9
    clock.now += 0.8
    assert limit.available() == 5


def test_a_small_burst_spaces_the_messages() -> None:
    """With a burst of 1 the messages go one per period/count, not in clumps."""
    clock = Clock()
    limit = RateLimit(5, 1.0, 1, clock)
    limit.spend(1)
    assert limit.available() == 0
    assert abs(limit.wait() - 0.2) < 1e-9
    clock.now += 0.2
    assert limit.available() == 1


def test_control_frames_put_the_bucket_in_debt() -> None:
    """A control frame is never held back, but the messages after it wait longer."""
    clock = Clock()
    config = bgws.Config(app_name="t", url="ws://127.0.0.1:1/", send_rate=[2, "1s"], send_burst=1)
    pacer = Pacer.from_config(config, clock)
    assert pacer is not None
    pacer.control()
    pacer.control()  # one token in debt
    assert pacer.room(256) == (0, None)
    assert abs(pacer.wait() - 1.0) < 1e-9
    clock.now += 1.0
    assert pacer.room(256) == (1, None)


def test_lane_rates_bound_only_their_lane() -> None:
    """A lane's bucket limits that lane; the service limit, if any, bounds the batch."""
    clock = Clock()
    config = bgws.Config(app_name="t", url="ws://127.0.0.1:1/", lane_send_rates={"3": [1, "1s"]})
    pacer = Pacer.from_config(config, clock)
    assert pacer is not None
    assert pacer.room(256) == (256, {3: 1})
    pacer.spent([Entry(b"x", priority=3), Entry(b"y", priority=0)])
    assert pacer.room(256) == (256, {3: 0})
    assert abs(pacer.wait() - 1.0) < 1e-9


def test_no_rate_means_no_pacer() -> None:
    """Without send rates the writer is not paced at all."""
    assert Pacer.from_config(bgws.Config(app_name="t", url="ws://127.0.0.1:1/")) is None


async def test_hold_waits_on_the_given_clock() -> None:
    """The writer's wait for a slot goes through the injected sleep, for the limits' clock."""
    clock = Clock()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    config = bgws.Config(app_name="t", url="ws://127.0.0.1:1/", send_rate=[1, "2s"])
    pacer = Pacer.from_config(config, clock, sleep)
    assert pacer is not None
    pacer.spent([Entry(b"x")])
    await pacer.hold()
    assert slept == [2.0]
    assert pacer.room(256) == (1, None)
