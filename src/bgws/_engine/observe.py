"""Watching a service: its state changes, and the counters behind its stats.

:class:`StateWatch` holds everyone who listens to one service's state machine; the service
calls :meth:`StateWatch.publish` with each :class:`~bgws.stats.StateChange`.
:class:`Counters` holds the service-level counters and builds the
:class:`~bgws.stats.ServiceStats` snapshot from them and from the engine's own counters.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from ..errors import ServiceClosed
from ..machine import State
from ..stats import ServiceStats, StateChange
from .flag import Flag
from .router import is_async

if TYPE_CHECKING:
    from .delivery import Delivery
    from .inbox import Inbox
    from .router import Router

__all__ = ["RTT_BUCKETS", "Counters", "StateWatch", "describe"]

RTT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the keepalive round-trip histogram's buckets."""

_TERMINAL = (State.CLOSED, State.FAILED)


def describe(error: BaseException | None) -> str | None:
    """``"Type: message"`` for an error, ``None`` for none."""
    return None if error is None else f"{type(error).__name__}: {error}"


class Counters:
    """The counters one service keeps beside its engine's, and its last error.

    The connect loop counts attempts, reconnections, rotations and dead links, and keeps the
    times that explain an outage (online or offline since, the next retry); the error
    reporter counts errors and keeps ``last_error`` with its time.
    """

    __slots__ = (
        "attempts",
        "connect_attempts",
        "connected_since",
        "dead_links",
        "errors",
        "last_error",
        "last_error_at",
        "links",
        "next_retry_at",
        "offline_since",
        "quota_wait_until",
        "reconnects",
        "recovered_at",
        "rotations",
        "rtt_counts",
        "rtt_last",
        "rtt_sum",
        "wall",
    )

    def __init__(self) -> None:
        self.reconnects = self.dead_links = self.errors = self.rotations = 0
        self.attempts = self.connect_attempts = self.links = 0
        self.last_error: BaseException | None = None
        self.last_error_at: float | None = None
        self.connected_since: float | None = None
        self.quota_wait_until: float | None = None  # set by the connect quota while it waits
        self.wall: Callable[[], float] = time.time  # the service's clock (the supervisor's)
        self.offline_since: float | None = None
        self.next_retry_at: float | None = None
        self.recovered_at: float | None = None
        # Per bucket, the last one over every bound; made at the first round trip (an idle
        # service that never probes keeps none).
        self.rtt_counts: list[int] | None = None
        self.rtt_sum = 0.0
        self.rtt_last: float | None = None

    def rtt(self, seconds: float) -> None:
        """A keepalive probe was answered after ``seconds``."""
        self.rtt_last = seconds
        self.rtt_sum += seconds
        counts = self.rtt_counts
        if counts is None:
            counts = self.rtt_counts = [0] * (len(RTT_BUCKETS) + 1)
        counts[bisect.bisect_left(RTT_BUCKETS, seconds)] += 1

    def note_error(self, error: BaseException) -> None:
        """Keep ``error`` as the last error, with the time it happened."""
        self.last_error = error
        self.last_error_at = self.wall()

    def link_up(self) -> None:
        """A link came up: the outage (if any) is over; a second link on is a reconnection."""
        now = self.wall()
        self.links += 1
        if self.links > 1:
            self.reconnects += 1
        if self.offline_since is not None:
            self.recovered_at = now
        self.connected_since = now
        self.offline_since = self.next_retry_at = None
        self.attempts = 0

    def link_down(self, retry_in: float | None) -> None:
        """An attempt failed or the link dropped; the next attempt is ``retry_in`` s away."""
        now = self.wall()
        self.connected_since = None
        if self.offline_since is None:
            self.offline_since = now
        self.next_retry_at = None if retry_in is None else now + retry_in

    def snapshot(
        self, state: State, url: str, inbox: Inbox, router: Router, delivery: Delivery
    ) -> ServiceStats:
        """The :class:`ServiceStats` of a service in ``state`` (``url`` already redacted)."""
        since = self.connected_since
        now = self.wall()
        outbox = delivery.outbox
        oldest = outbox.oldest_accepted()
        error_at = self.last_error_at
        recovered = self.recovered_at
        return ServiceStats(
            state=state,
            url=url,
            connected_since=since,
            uptime=(now - since) if since is not None else 0.0,
            reconnects=self.reconnects,
            rotations=self.rotations,
            sent=delivery.sent,
            received=inbox.received,
            dispatched=inbox.dispatched,
            queued=outbox.queued,
            in_flight=outbox.in_flight,
            resent=delivery.resent,
            dropped=delivery.dropped,
            expired=delivery.expired,
            duplicates=delivery.duplicates,
            gaps=delivery.gaps,
            resets=delivery.resets,
            handler_errors=router.handler_errors,
            decode_errors=inbox.decode_errors,
            dead_links=self.dead_links,
            errors=self.errors,
            last_error=describe(self.last_error),
            quota_wait_until=self.quota_wait_until,
            last_error_at=error_at,
            last_error_before_recovery=(
                error_at is not None
                and recovered is not None
                and since is not None
                and error_at <= recovered
            ),
            offline_since=self.offline_since,
            next_retry_at=self.next_retry_at
            if state in (State.BACKING_OFF, State.SUSPENDED)
            else None,
            attempts=self.attempts,
            connect_attempts=self.connect_attempts,
            outbox_oldest_age=None if oldest is None else max(now - oldest, 0.0),
            last_received_at=inbox.last_read_at,
            rtt=self.rtt_last,
            rtt_sum=self.rtt_sum,
            rtt_counts=() if self.rtt_counts is None else tuple(self.rtt_counts),
        )


class _Watcher:
    """A bounded buffer of state changes for one ``state_changes()`` iterator."""

    def __init__(self, size: int) -> None:
        self._items: deque[StateChange] = deque(maxlen=size)
        self._event = Flag()

    def put(self, change: StateChange) -> None:
        self._items.append(change)
        self._event.set()

    async def next(self) -> StateChange:
        while not self._items:
            self._event.clear()
            await self._event.wait()
        return self._items.popleft()


class StateWatch:
    """The listeners of one service's state."""

    def __init__(self) -> None:
        self._callbacks: list[tuple[Callable[[StateChange], Any], bool]] = []
        self._watchers: list[_Watcher] = []
        self._waiters: list[tuple[State, asyncio.Future[None]]] = []

    def subscribe(self, callback: Callable[[StateChange], Any]) -> Callable[[], None]:
        """Call ``callback`` with every change; returns a function that unsubscribes."""
        entry = (callback, is_async(callback))
        self._callbacks.append(entry)

        def unsubscribe() -> None:
            if entry in self._callbacks:
                self._callbacks.remove(entry)

        return unsubscribe

    async def changes(self, buffer: int) -> AsyncIterator[StateChange]:
        """Yield every change from now on; ends after ``CLOSED``."""
        watcher = _Watcher(buffer)
        self._watchers.append(watcher)
        try:
            while True:
                change = await watcher.next()
                yield change
                if change.new is State.CLOSED:
                    return
        finally:
            self._watchers.remove(watcher)

    async def wait(
        self, current: State, state: State, timeout: float | None, name: str, why: str | None
    ) -> None:
        """Wait for ``state`` (see :meth:`bgws.Service.wait_for`)."""
        if current is state:
            return
        if current in _TERMINAL:
            raise ServiceClosed(f"service is {current}" + (f": {why}" if why else ""))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (state, future)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            raise TimeoutError(f"service {name!r} not {state} within {timeout}s") from None
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def publish(self, change: StateChange) -> list[Callable[[], Any]]:
        """Wake waiters and iterators; returns the callbacks to run (the caller guards them)."""
        new = change.new
        for state, future in list(self._waiters):
            if future.done():
                continue
            if state is new:
                future.set_result(None)
            elif new in _TERMINAL:
                why = describe(change.reason)
                future.set_exception(
                    ServiceClosed(f"service is {new}" + (f": {why}" if why else ""))
                )
        for watcher in self._watchers:
            watcher.put(change)
        return [
            functools.partial(_invoke, callback, awaitable, change)
            for callback, awaitable in self._callbacks
        ]


async def _invoke(callback: Callable[[StateChange], Any], awaitable: bool, arg: Any) -> None:
    result = callback(arg)
    if awaitable:
        await result
