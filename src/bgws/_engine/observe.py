"""Watching a service: its state changes, and the counters behind its stats.

:class:`StateWatch` holds everyone who listens to one service's state machine; the service
calls :meth:`StateWatch.publish` with each :class:`~bgws.stats.StateChange`.
:class:`Counters` holds the service-level counters and builds the
:class:`~bgws.stats.ServiceStats` snapshot from them and from the engine's own counters.
"""

from __future__ import annotations

import asyncio
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

__all__ = ["Counters", "StateWatch", "describe"]

_TERMINAL = (State.CLOSED, State.FAILED)


def describe(error: BaseException | None) -> str | None:
    """``"Type: message"`` for an error, ``None`` for none."""
    return None if error is None else f"{type(error).__name__}: {error}"


class Counters:
    """The counters one service keeps beside its engine's, and its last error.

    The connect loop counts reconnects and dead links and sets ``connected_since``; the error
    reporter counts errors and keeps ``last_error``.
    """

    __slots__ = ("connected_since", "dead_links", "errors", "last_error", "reconnects")

    def __init__(self) -> None:
        self.reconnects = self.dead_links = self.errors = 0
        self.last_error: BaseException | None = None
        self.connected_since: float | None = None

    def snapshot(
        self, state: State, url: str, inbox: Inbox, router: Router, delivery: Delivery
    ) -> ServiceStats:
        """The :class:`ServiceStats` of a service in ``state`` (``url`` already redacted)."""
        since = self.connected_since
        return ServiceStats(
            state=state,
            url=url,
            connected_since=since,
            uptime=(time.time() - since) if since is not None else 0.0,
            reconnects=self.reconnects,
            sent=delivery.sent,
            received=inbox.received,
            dispatched=inbox.dispatched,
            queued=delivery.outbox.queued,
            in_flight=delivery.outbox.in_flight,
            resent=delivery.resent,
            dropped=delivery.dropped,
            expired=delivery.expired,
            duplicates=delivery.duplicates,
            gaps=delivery.gaps,
            handler_errors=router.handler_errors,
            decode_errors=inbox.decode_errors,
            dead_links=self.dead_links,
            errors=self.errors,
            last_error=describe(self.last_error),
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
