"""The machine's suspended tier: SUSPENDED after suspend_after offline, slow retries, send rule."""

from __future__ import annotations

import random

import pytest

from bgws import errors
from bgws.backoff import Backoff
from bgws.machine import CALLS, TRANSITIONS, Event, Machine, State

REFUSED = errors.HandshakeRejected(503, "refused")


def machine(**kwargs: object) -> Machine:
    return Machine(
        Backoff(1.0, 60.0, random.Random(0)),
        max_attempts=None,
        min_uptime=10.0,
        **kwargs,  # type: ignore[arg-type]
    )


def fail_at(m: Machine, now: float) -> tuple[State, float]:
    """One failed attempt at ``now``; back to CONNECTING afterwards (as the loop does)."""
    decision = m.failed(REFUSED, now)
    state = m.state
    m.retry()
    return state, decision.delay


def test_table_has_the_suspended_row() -> None:
    """CONNECTING may suspend; SUSPENDED retries, gives up or stops, and allows send."""
    assert TRANSITIONS[State.CONNECTING][Event.SUSPEND] is State.SUSPENDED
    assert TRANSITIONS[State.SUSPENDED] == {
        Event.RETRY: State.CONNECTING,
        Event.GIVE_UP: State.FAILED,
        Event.STOP: State.CLOSING,
    }
    assert "send" in CALLS[State.SUSPENDED]


def test_suspends_once_offline_for_suspend_after() -> None:
    """Backing off until suspend_after has passed; then SUSPENDED, retried every suspended_retry."""
    m = machine(suspend_after=120.0, suspended_retry=30.0)
    m.connect()
    now = 0.0
    states = []
    for _ in range(40):
        state, delay = fail_at(m, now)
        states.append((now, state, delay))
        now += delay
        if now > 300:
            break
    backing = [t for t, s, _ in states if s is State.BACKING_OFF]
    suspended = [(t, d) for t, s, d in states if s is State.SUSPENDED]
    assert max(backing) < 120.0
    first = suspended[0][0]
    assert first == pytest.approx(120.0)  # the backoff was cut short to try at the mark
    assert all(d == 30.0 for _, d in suspended)


def test_a_link_resets_the_offline_time() -> None:
    """A link that comes up ends the outage: the next loss backs off, it does not suspend."""
    m = machine(suspend_after=5.0, suspended_retry=30.0)
    m.connect()
    assert fail_at(m, 0.0)[0] is State.BACKING_OFF
    assert fail_at(m, 6.0)[0] is State.SUSPENDED
    m.connected(40.0)
    decision = m.failed(errors.ConnectionClosed(1006), 41.0)
    assert decision.state is State.BACKING_OFF
    m.retry()
    assert fail_at(m, 42.0)[0] is State.BACKING_OFF


def test_suspended_send_fail_takes_send_out() -> None:
    """With suspended_send="fail", send is refused while SUSPENDED only."""
    m = machine(suspend_after=1.0, suspended_send="fail")
    m.connect()
    fail_at(m, 0.0)
    assert m.can("send")
    m.failed(REFUSED, 2.0)
    assert m.state is State.SUSPENDED
    assert not m.can("send")
    assert m.can("stop")
    m.retry()
    assert m.can("send")


def test_max_attempts_still_ends_in_failed_when_suspended() -> None:
    """Failures keep counting while suspended: max_reconnect_attempts still gives up."""
    m = Machine(Backoff(1.0, 1.0), max_attempts=3, min_uptime=1.0, suspend_after=0.5)
    m.connect()
    for now in (0.0, 1.0, 2.0):
        m.failed(REFUSED, now)
        m.retry()
    assert m.failed(REFUSED, 3.0).state is State.FAILED


def test_a_refreshed_auth_retries_at_once_even_when_suspended() -> None:
    """An auth refusal the handler refreshed is retried at once, suspended or not."""
    m = machine(suspend_after=1.0, suspended_retry=30.0)
    m.connect()
    fail_at(m, 0.0)
    decision = m.failed(errors.AuthRejected(401, "refused"), 5.0, auth_refreshed=True)
    assert (decision.state, decision.delay) == (State.SUSPENDED, 0.0)
    m.retry()
    again = m.failed(errors.AuthRejected(401, "refused"), 5.1, auth_refreshed=True)
    assert (again.state, again.delay) == (State.SUSPENDED, 30.0)  # only the first is at once
