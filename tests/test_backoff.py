"""Full-jitter backoff: delays stay within their ceilings, which double up to the cap."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bgws.backoff import Backoff

delays = st.floats(min_value=0.001, max_value=3600, allow_nan=False, allow_infinity=False)


@given(
    initial=delays, factor=st.floats(1, 1000), attempt=st.integers(1, 10_000), seed=st.integers()
)
def test_delay_within_ceiling(initial: float, factor: float, attempt: int, seed: int) -> None:
    """Every delay lies in [0, min(max, initial * 2**(n-1))]."""
    backoff = Backoff(initial, initial * factor, random.Random(seed))
    ceiling = backoff.ceiling(attempt)
    assert ceiling <= backoff.max_delay
    assert ceiling == min(backoff.max_delay, initial * 2.0 ** min(attempt - 1, 63))
    assert 0.0 <= backoff.delay(attempt) <= ceiling


@given(initial=delays, factor=st.floats(1, 1000), attempt=st.integers(1, 200))
def test_ceiling_grows_then_caps(initial: float, factor: float, attempt: int) -> None:
    """Ceilings never shrink from one attempt to the next and never pass the cap."""
    backoff = Backoff(initial, initial * factor)
    assert backoff.ceiling(attempt) <= backoff.ceiling(attempt + 1) <= backoff.max_delay
    assert backoff.ceiling(1) == initial


def test_first_retry_never_waits_longer_than_initial() -> None:
    """The first retry waits at most initial_delay (reconnect-after-restart target)."""
    backoff = Backoff(0.5, 60, random.Random(1))
    assert all(backoff.delay(1) <= 0.5 for _ in range(1000))


def test_jitter_spreads_delays() -> None:
    """Delays are spread over the window, not all the same."""
    backoff = Backoff(1, 60, random.Random(7))
    samples = [backoff.delay(5) for _ in range(200)]
    assert min(samples) < 4 < max(samples)


def test_seeded_backoff_is_repeatable() -> None:
    """The same seed gives the same delays."""
    first = Backoff(1, 30, random.Random(3)).delays()
    second = Backoff(1, 30, random.Random(3)).delays()
    assert [next(first) for _ in range(10)] == [next(second) for _ in range(10)]


@pytest.mark.parametrize(("initial", "maximum"), [(0, 1), (-1, 1), (2, 1)])
def test_rejects_bad_bounds(initial: float, maximum: float) -> None:
    """A non-positive initial delay or a cap below it is refused."""
    with pytest.raises(ValueError, match="delay"):
        Backoff(initial, maximum)


def test_attempts_count_from_one() -> None:
    """Attempt 0 is a caller mistake."""
    with pytest.raises(ValueError, match="from 1"):
        Backoff(1, 2).ceiling(0)
