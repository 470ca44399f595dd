"""The state machine: the table, illegal moves, and the reconnect decisions (no sockets)."""

from __future__ import annotations

import random
import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bgws import errors
from bgws.backoff import Backoff
from bgws.machine import CALLS, TRANSITIONS, Event, Machine, State, classify_error


def machine(max_attempts: int | None = None, min_uptime: float = 10.0) -> Machine:
    return Machine(
        Backoff(1.0, 8.0, random.Random(0)), max_attempts=max_attempts, min_uptime=min_uptime
    )


def connected(m: Machine, now: float = 0.0) -> Machine:
    m.connect()
    m.connected(now)
    return m


LOST = errors.ConnectionClosed(1006)


def test_table_covers_every_state() -> None:
    """Every state has a row, CLOSED is terminal, and every state but CLOSED can stop."""
    assert set(TRANSITIONS) == set(State)
    assert TRANSITIONS[State.CLOSED] == {}
    for state in set(State) - {State.CLOSED, State.CLOSING}:
        assert TRANSITIONS[state][Event.STOP] is State.CLOSING


@given(st.lists(st.sampled_from(list(Event)), max_size=40))
def test_random_event_sequences_follow_the_table(events: list[Event]) -> None:
    """Any event sequence either follows the table or raises and changes nothing."""
    m = machine()
    for event in events:
        before = m.state
        expected = TRANSITIONS[before].get(event)
        if expected is None:
            with pytest.raises(errors.InvalidTransition):
                m.fire(event)
            assert m.state is before
        else:
            assert m.fire(event) is expected
        assert all(m.can(e) == (e in TRANSITIONS[m.state]) for e in Event)


def test_illegal_move_names_state_and_event() -> None:
    """The error says which move was refused."""
    with pytest.raises(errors.InvalidTransition, match="IDLE on CONNECTED"):
        machine().connected(0.0)


def test_connect_failure_backs_off_within_the_ceiling() -> None:
    """A failed attempt backs off with a delay under the attempt's ceiling."""
    m = machine()
    m.connect()
    for attempt in range(1, 6):
        decision = m.failed(errors.LinkError("refused"), now=0.0)
        assert decision.state is State.BACKING_OFF
        assert decision.attempt == attempt
        assert 0 <= decision.delay <= min(8.0, 2.0 ** (attempt - 1))
        m.retry()


def test_backoff_resets_only_after_min_uptime() -> None:
    """A link that dropped quickly keeps counting; one that stayed up min_uptime resets."""
    m = connected(machine(min_uptime=10.0), now=0.0)
    assert m.failed(LOST, now=1.0).attempt == 1
    m.retry()
    m.connected(2.0)
    assert m.failed(LOST, now=5.0).attempt == 2  # up 3 s < 10 s: no reset
    m.retry()
    m.connected(6.0)
    assert m.failed(LOST, now=16.0).attempt == 1  # up exactly 10 s: reset


def test_max_attempts_ends_in_failed() -> None:
    """After max_reconnect_attempts retries, the next failure is final."""
    m = machine(max_attempts=2)
    m.connect()
    assert m.failed(LOST, 0).state is State.BACKING_OFF
    m.retry()
    assert m.failed(LOST, 0).state is State.BACKING_OFF
    m.retry()
    decision = m.failed(LOST, 0)
    assert decision.state is State.FAILED
    assert decision.reason is LOST
    assert m.state is State.FAILED


def test_zero_attempts_never_reconnects() -> None:
    """max_reconnect_attempts=0 fails on the first loss."""
    m = connected(machine(max_attempts=0))
    assert m.failed(LOST, 1.0).state is State.FAILED


def test_connect_after_failed_starts_over() -> None:
    """connect() after FAILED resets the failure count."""
    m = machine(max_attempts=0)
    m.connect()
    m.failed(LOST, 0)
    m.connect()
    assert m.state is State.CONNECTING
    assert m.failures == 0


@pytest.mark.parametrize(
    "error",
    [
        errors.ConfigError("url", "bad"),
        errors.InsecureCredentials("url", "no"),
        errors.HandshakeRejected(404),
        ssl.SSLCertVerificationError("bad cert"),
    ],
)
def test_fatal_errors_fail_at_once(error: BaseException) -> None:
    """Config mistakes, bad certificates and 4xx answers are not retried."""
    m = machine()
    m.connect()
    assert m.failed(error, 0).state is State.FAILED


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
def test_retryable_statuses(status: int) -> None:
    """Timeouts, rate limits and 5xx are retried."""
    assert classify_error(errors.HandshakeRejected(status)) == "retry"


def test_auth_refusal_without_refresh_fails() -> None:
    """An auth refusal the handler did not fix ends in FAILED."""
    m = machine()
    m.connect()
    assert m.failed(errors.AuthRejected(401), 0).state is State.FAILED


def test_auth_refresh_retries_at_once_then_backs_off() -> None:
    """The first retry after a refreshed credential is immediate; a repeat backs off."""
    m = machine()
    m.connect()
    first = m.failed(errors.AuthRejected(401), 0, auth_refreshed=True)
    assert (first.state, first.delay) == (State.BACKING_OFF, 0.0)
    m.retry()
    second = m.failed(errors.AuthRejected(401), 0, auth_refreshed=True)
    assert second.state is State.BACKING_OFF
    assert second.delay == Backoff(1.0, 8.0, random.Random(0)).delay(2)  # drawn, not zero
    assert m.failures == 2


def test_stop_from_every_running_state() -> None:
    """stop() is legal while connecting, connected, backing off and failed."""
    for prepare in (
        lambda m: m.connect(),
        lambda m: connected(m),
        lambda m: (m.connect(), m.failed(LOST, 0)),
    ):
        m = machine()
        prepare(m)
        assert m.stop() is State.CLOSING
        assert m.closed() is State.CLOSED


def test_failed_while_closing_is_illegal() -> None:
    """A failure reported during a stop is refused, not turned into a reconnect."""
    m = connected(machine())
    m.stop()
    with pytest.raises(errors.InvalidTransition):
        m.failed(LOST, 0)


def test_the_machine_answers_every_public_call() -> None:
    """start and add_plugin once in IDLE; send while running; connect and stop until closing."""
    m = machine()
    assert m.can("start")
    assert m.can("add_plugin")
    assert m.can("send")
    assert not m.started
    m.start()
    assert m.started
    assert not m.can("start")
    assert not m.can("add_plugin")
    with pytest.raises(errors.InvalidTransition):
        m.start()
    for state, calls in CALLS.items():
        assert ("send" in calls) == (state not in {State.CLOSING, State.CLOSED, State.FAILED})
        assert ("stop" in calls) == (Event.STOP in TRANSITIONS[state])
    m.connect()
    assert m.can("send")
    assert m.can("connect")
    assert not m.can(Event.CONNECT)
    m.failed(errors.HandshakeRejected(404), 0.0)
    assert m.state is State.FAILED
    assert not m.can("send")
    assert m.can("connect")
    m.stop()
    assert not m.can("send")
    assert not m.can("stop")
    assert not m.can("connect")


def test_clean_close_is_final_without_reconnect_on_close() -> None:
    """A 1000/1001 close fails the machine when reconnect_on_close is off; others still retry."""
    backoff = Backoff(1.0, 8.0, random.Random(0))
    m = Machine(backoff, max_attempts=None, min_uptime=10.0, reconnect_on_close=False)
    assert m.verdict(errors.ConnectionClosed(1000)) == "fatal"
    assert m.verdict(errors.ConnectionClosed(1001)) == "fatal"
    assert m.verdict(errors.ConnectionClosed(1006)) == "retry"
    assert connected(m).failed(errors.ConnectionClosed(1000), 1.0).state is State.FAILED
    assert machine().verdict(errors.ConnectionClosed(1000)) == "retry"
