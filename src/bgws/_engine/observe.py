"""Watching a service's state: callbacks, async iterators and waiters, fed one change at a time.

:class:`StateWatch` holds everyone who listens to one service's state machine; the service
calls :meth:`StateWatch.publish` with each :class:`~bgws.stats.StateChange`.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..errors import ServiceClosed
from ..machine import State
from ..stats import StateChange
from .router import is_async

__all__ = ["StateWatch", "describe"]

_TERMINAL = (State.CLOSED, State.FAILED)


def describe(error: BaseException | None) -> str | None:
    """``"Type: message"`` for an error, ``None`` for none."""
    return None if error is None else f"{type(error).__name__}: {error}"


class _Watcher:
    """A bounded buffer of state changes for one ``state_changes()`` iterator."""

    def __init__(self, size: int) -> None:
        self._items: deque[StateChange] = deque(maxlen=size)
        self._event = asyncio.Event()

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
