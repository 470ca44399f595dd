"""The connect quota's rule: a sliding window of attempt times, kept across restarts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bgws._engine.quota import ConnectQuota


def test_waits_for_the_oldest_attempt_to_leave_the_window() -> None:
    """The (limit+1)-th attempt waits until the first is a window old."""
    quota = ConnectQuota(3, 60.0)
    for now in (0.0, 1.0, 2.0):
        assert quota.wait(now) == 0.0
        quota.record(now)
    assert quota.wait(5.0) == 55.0
    assert quota.wait(60.0) == 0.0


@given(st.lists(st.floats(0.0, 50.0), min_size=1, max_size=60), st.integers(1, 5))
def test_never_more_than_limit_in_any_window(delays: list[float], limit: int) -> None:
    """Whatever the backoff asks for, attempts made after wait() never exceed the quota."""
    window = 100.0
    quota = ConnectQuota(limit, window)
    now, made = 0.0, []
    for delay in delays:
        now += delay
        for _ in range(3):  # as the gate does: wait again if rounding left a hair
            now += quota.wait(now)
        assert quota.wait(now) == 0.0
        quota.record(now)
        made.append(now)
    for start in made:
        assert sum(1 for t in made if start <= t < start + window) <= limit


def test_restore_from_wall_times_keeps_the_window() -> None:
    """A new process (new monotonic origin) reads the wall times back and keeps the quota."""
    first = ConnectQuota(2, 300.0)
    first.record(1000.0)
    first.record(1100.0)
    saved = first.saved(1100.0, 5_000_000.0)  # wall = mono + 4_998_900
    again = ConnectQuota(2, 300.0)
    again.restore([*saved, 1.0, 9e12], 7.0, 5_000_010.0)  # 10 s later; junk times dropped
    assert again.wait(7.0) == 190.0  # the first (100 s before the second) leaves at +300 s
