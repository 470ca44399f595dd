"""The connection state machine: a pure transition table and the reconnect decisions.

Nothing here does I/O or reads a clock: callers pass the current time in, and get back the next
state and, when reconnecting, the delay to wait. That is what lets the whole policy be tested
without sockets or sleeps.

::

    IDLE ──connect──▶ CONNECTING ──connected──▶ CONNECTED
                        │   ▲                       │
         connect_failed │   │ retry       link_lost │
                        ▼   │                       │
                      BACKING_OFF ◀─────────────────┘
    CONNECTING ──suspend──▶ SUSPENDED ──retry──▶ CONNECTING   (offline for suspend_after)
    (any running state) ──give_up──▶ FAILED ──connect──▶ CONNECTING
    (any state but CLOSING, CLOSED) ──stop──▶ CLOSING ──closed──▶ CLOSED

An event the table does not list for the current state raises :class:`InvalidTransition` and
leaves the machine unchanged.

The machine also answers every "may I?" of a public call (:data:`CALLS`, asked with
:meth:`Machine.can`) and holds the reconnect policy, the clean-close rule included: the service
only carries its decisions out.

This module is public: it holds :class:`State`, :data:`Verdict` and :func:`classify_error`
(the default classifier a custom ``classify=`` can fall back on), and the table.
"""

from __future__ import annotations

import enum
import functools
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from .backoff import Backoff
from .errors import (
    AuthRejected,
    ConfigError,
    ConnectionClosed,
    HandshakeRejected,
    InvalidTransition,
)

__all__ = [
    "CALLS",
    "CLEAN_CLOSE_CODES",
    "Call",
    "Decision",
    "Event",
    "Machine",
    "State",
    "TRANSITIONS",
    "Verdict",
    "classify_error",
]


class State(enum.Enum):
    """Where a service's connection stands."""

    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKING_OFF = "backing_off"
    SUSPENDED = "suspended"
    CLOSING = "closing"
    CLOSED = "closed"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.name


class Event(enum.Enum):
    """What can happen to a connection."""

    CONNECT = "connect"
    CONNECTED = "connected"
    CONNECT_FAILED = "connect_failed"
    LINK_LOST = "link_lost"
    RETRY = "retry"
    SUSPEND = "suspend"
    GIVE_UP = "give_up"
    STOP = "stop"
    CLOSED = "closed"

    def __str__(self) -> str:
        return self.name


_S, _E = State, Event

TRANSITIONS: Mapping[State, Mapping[Event, State]] = MappingProxyType(
    {
        _S.IDLE: {_E.CONNECT: _S.CONNECTING, _E.STOP: _S.CLOSING},
        _S.CONNECTING: {
            _E.CONNECTED: _S.CONNECTED,
            _E.CONNECT_FAILED: _S.BACKING_OFF,
            _E.SUSPEND: _S.SUSPENDED,
            _E.GIVE_UP: _S.FAILED,
            _E.STOP: _S.CLOSING,
        },
        _S.CONNECTED: {
            _E.LINK_LOST: _S.BACKING_OFF,
            _E.GIVE_UP: _S.FAILED,
            _E.STOP: _S.CLOSING,
        },
        _S.BACKING_OFF: {_E.RETRY: _S.CONNECTING, _E.GIVE_UP: _S.FAILED, _E.STOP: _S.CLOSING},
        _S.SUSPENDED: {_E.RETRY: _S.CONNECTING, _E.GIVE_UP: _S.FAILED, _E.STOP: _S.CLOSING},
        _S.FAILED: {_E.CONNECT: _S.CONNECTING, _E.STOP: _S.CLOSING},
        _S.CLOSING: {_E.CLOSED: _S.CLOSED},
        _S.CLOSED: {},
    }
)
"""``TRANSITIONS[state][event]`` is the next state; a missing entry is an illegal move."""

Call = Literal["start", "add_plugin", "connect", "send", "stop"]
"""A public call of the service that the machine allows or not (``send`` stands for every call
that hands the service a message: send, send_many, request, subscribe, unsubscribe)."""

_LIVE: frozenset[Call] = frozenset({"connect", "send", "stop"})
CALLS: Mapping[State, frozenset[Call]] = MappingProxyType(
    {
        _S.IDLE: _LIVE,
        _S.CONNECTING: _LIVE,
        _S.CONNECTED: _LIVE,
        _S.BACKING_OFF: _LIVE,
        _S.SUSPENDED: _LIVE,
        _S.FAILED: frozenset({"connect", "stop"}),
        _S.CLOSING: frozenset(),
        _S.CLOSED: frozenset(),
    }
)
"""``CALLS[state]``: the public calls allowed in ``state``, once the service has started
(before that, ``IDLE`` also allows ``start`` and ``add_plugin``). A machine built with
``suspended_send="fail"`` takes ``send`` out of ``SUSPENDED``."""

_NOT_STARTED: frozenset[Call] = _LIVE | {"start", "add_plugin"}


@functools.cache
def _moves_of(state: State, started: bool, suspended_fail: bool) -> frozenset[Event | Call]:
    """What is allowed in ``state``: one shared set per state, not one per service (472 B)."""
    calls = _NOT_STARTED if state is State.IDLE and not started else CALLS[state]
    if state is State.SUSPENDED and suspended_fail:
        calls = calls - {"send"}
    return frozenset(TRANSITIONS[state]) | calls


CLEAN_CLOSE_CODES = frozenset({1000, 1001})
"""Close codes of a clean close: the server ended the session on purpose."""

SuspendedSend = Literal["queue", "fail"]
"""What ``send()`` does while ``SUSPENDED``: queue the message, or raise ``ServiceSuspended``."""

Verdict = Literal["retry", "retry_now", "auth", "fatal"]
"""How a failure is handled: back off and retry, retry at once, ask the auth handler, or stop."""

_RETRYABLE_4XX = frozenset({408, 425, 429})
# A permanent redirect that was not followed would only be repeated: the URL needs changing.
# A temporary one (302, 303, 307) may end, like a 5xx, so it is retried with backoff.
_PERMANENT_REDIRECTS = frozenset({301, 308})


def classify_error(error: BaseException) -> Verdict:
    """The default error classification.

    Auth refusals go to the auth handler. Configuration mistakes, failed certificate checks and
    HTTP 4xx answers (other than 408, 425 and 429) and permanent redirects that were not
    followed (301, 308) are fatal: retrying would only repeat them. Everything else (refused
    connections, timeouts, 5xx, temporary redirects, dropped links, a peer's protocol
    violation) is retried with backoff.
    """
    if isinstance(error, AuthRejected):
        return "auth"
    if isinstance(error, ConfigError | ssl.SSLCertVerificationError):
        return "fatal"
    if isinstance(error.__cause__, ssl.SSLCertVerificationError):
        return "fatal"
    if isinstance(error, HandshakeRejected):
        status = error.status
        if 400 <= status < 500 and status not in _RETRYABLE_4XX:
            return "fatal"
        if status in _PERMANENT_REDIRECTS:
            return "fatal"
    return "retry"


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of a failure: the state entered and, when backing off, the delay.

    Attributes:
        state: ``BACKING_OFF``, ``SUSPENDED`` or ``FAILED``.
        delay: seconds to wait before the next attempt (0 when ``FAILED``).
        attempt: the number of consecutive failures so far, this one included.
        reason: the error that caused the decision.
    """

    state: State
    delay: float
    attempt: int
    reason: BaseException | None


class Machine:
    """The state of one connection and the policy that moves it.

    Args:
        backoff: the delay generator.
        max_attempts: consecutive failures tolerated before ``FAILED`` (None: never give up;
            0: do not reconnect at all).
        min_uptime: a link must stay up this long (seconds) before the backoff resets.
        classify: maps an error to a :data:`Verdict`.
        reconnect_on_close: reconnect after a clean close (1000, 1001) by the server; when
            False such a close is final (``FAILED``) whatever ``classify`` says.
        suspend_after: seconds offline (counted from the first failure since the last link)
            after which a failed attempt moves to ``SUSPENDED`` instead of ``BACKING_OFF``
            (``None``: never).
        suspended_retry: the delay between attempts while ``SUSPENDED``.
        suspended_send: whether ``send`` is allowed while ``SUSPENDED`` (``"queue"``) or not.
    """

    __slots__ = (
        "_allowed",
        "_auth_retried",
        "_backoff",
        "_classify",
        "_connected_at",
        "_failures",
        "_max_attempts",
        "_min_uptime",
        "_offline_since",
        "_reconnect_on_close",
        "_started",
        "_state",
        "_suspend_after",
        "_suspended_fail",
        "_suspended_retry",
    )

    def __init__(
        self,
        backoff: Backoff,
        *,
        max_attempts: int | None,
        min_uptime: float,
        classify: Callable[[BaseException], Verdict] = classify_error,
        reconnect_on_close: bool = True,
        suspend_after: float | None = None,
        suspended_retry: float = 30.0,
        suspended_send: SuspendedSend = "queue",
    ) -> None:
        self._suspend_after = suspend_after
        self._suspended_retry = suspended_retry
        self._suspended_fail = suspended_send == "fail"
        self._offline_since: float | None = None
        self._state = State.IDLE
        self._started = False  # a fact nothing else records: start() was called
        # What is allowed now, recomputed at each move: can("send") runs on every send, and one
        # set lookup took 58 ns against 119 ns for a lookup by the enum state in CALLS.
        self._allowed: frozenset[Event | Call] = self._moves()
        self._reconnect_on_close = reconnect_on_close
        self._backoff = backoff
        self._max_attempts = max_attempts
        self._min_uptime = min_uptime
        self._classify = classify
        self._failures = 0
        self._connected_at: float | None = None
        self._auth_retried = False

    @property
    def state(self) -> State:
        """The current state."""
        return self._state

    @property
    def failures(self) -> int:
        """Consecutive failures since the last link that stayed up ``min_uptime``."""
        return self._failures

    def fire(self, event: Event) -> State:
        """Apply ``event`` and return the new state.

        Raises:
            InvalidTransition: the table has no move for ``event`` in the current state.
        """
        try:
            new = TRANSITIONS[self._state][event]
        except KeyError:
            raise InvalidTransition(self._state, event) from None
        self._state = new
        self._allowed = self._moves()
        return new

    def can(self, what: Event | Call) -> bool:
        """Whether ``what`` (a move of the table, or a public call) is allowed now."""
        return what in self._allowed

    @property
    def started(self) -> bool:
        """Whether :meth:`start` was called (a service starts once)."""
        return self._started

    def start(self) -> None:
        """The service starts (composes its plugins); allowed once, in ``IDLE``.

        Raises:
            InvalidTransition: the service already started, or is not ``IDLE``.
        """
        if "start" not in self._allowed:
            raise InvalidTransition(self._state, "start")
        self._started = True
        self._allowed = self._moves()

    def _moves(self) -> frozenset[Event | Call]:
        return _moves_of(self._state, self._started, self._suspended_fail)

    def verdict(self, error: BaseException) -> Verdict:
        """How ``error`` is handled: the clean-close rule first, then the classifier."""
        if (
            not self._reconnect_on_close
            and isinstance(error, ConnectionClosed)
            and error.code in CLEAN_CLOSE_CODES
        ):
            return "fatal"
        return self._classify(error)

    def connect(self) -> State:
        """A connect was asked for (first start, or again after ``FAILED``)."""
        if self._state is State.FAILED:
            self._failures = 0
        return self.fire(Event.CONNECT)

    def connected(self, now: float) -> State:
        """The handshake succeeded at time ``now``."""
        state = self.fire(Event.CONNECTED)
        self._connected_at = now
        self._offline_since = None
        return state

    def failed(self, error: BaseException, now: float, *, auth_refreshed: bool = False) -> Decision:
        """A connect attempt failed, or an established link was lost, at time ``now``.

        Args:
            error: what went wrong.
            now: the current time, on the same clock as :meth:`connected`.
            auth_refreshed: the auth handler refreshed the credentials after an auth refusal;
                the first such retry in a row happens at once.

        Returns:
            The decision; the machine is already in ``decision.state``: ``SUSPENDED`` (retry
            after ``suspended_retry``) when an attempt fails ``suspend_after`` or more after
            the first failure since the last link, else ``BACKING_OFF`` (a backoff delay cut
            short at that mark) or ``FAILED``.
        """
        event = Event.LINK_LOST if self._state is State.CONNECTED else Event.CONNECT_FAILED
        if event not in TRANSITIONS[self._state]:
            raise InvalidTransition(self._state, event)
        if self._connected_at is not None and now - self._connected_at >= self._min_uptime:
            self._failures = 0
            self._auth_retried = False
        self._connected_at = None
        self._failures += 1
        if self._offline_since is None:
            self._offline_since = now
        offline = now - self._offline_since
        verdict = self.verdict(error)
        if verdict == "auth":
            verdict = "retry_now" if auth_refreshed else "fatal"
        if verdict == "fatal" or (
            self._max_attempts is not None and self._failures > self._max_attempts
        ):
            self.fire(Event.GIVE_UP)
            return Decision(State.FAILED, 0.0, self._failures, error)
        immediate = verdict == "retry_now" and not self._auth_retried
        self._auth_retried = verdict == "retry_now"
        delay = 0.0 if immediate else self._backoff.delay(self._failures)
        suspend_after = self._suspend_after
        if suspend_after is not None and offline >= suspend_after and event is Event.CONNECT_FAILED:
            self.fire(Event.SUSPEND)
            delay = 0.0 if immediate else self._suspended_retry
            return Decision(State.SUSPENDED, delay, self._failures, error)
        if suspend_after is not None:  # the attempt at the mark comes on time, not a backoff late
            delay = min(delay, max(0.0, suspend_after - offline))
        self.fire(event)
        return Decision(State.BACKING_OFF, delay, self._failures, error)

    def retry(self) -> State:
        """The backoff delay is over: start the next attempt."""
        return self.fire(Event.RETRY)

    def stop(self) -> State:
        """A graceful stop began."""
        return self.fire(Event.STOP)

    def closed(self) -> State:
        """The graceful stop finished."""
        return self.fire(Event.CLOSED)
