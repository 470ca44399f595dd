"""A small ``asyncio.Event``: the same calls, without the per-instance deque.

Every service holds about ten events (outbox, acks, keepalive, state watch...), and an
idle service is mostly these: ``asyncio.Event`` is a plain object with a ``__dict__`` and a
``collections.deque`` of waiters made up front, about 700 bytes each on CPython 3.11
(tracemalloc over 500 idle services: 6.8 KiB a service, the largest single item bgws itself
allocates). :class:`Flag` has two slots and makes its list of waiters only while someone
waits (about 60 bytes idle).

Same semantics as ``asyncio.Event`` (``set`` wakes every waiter, ``clear`` only lowers the
flag, ``wait`` returns ``True``), for one event loop at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

__all__ = ["Flag"]


class Flag:
    """An event flag for coroutines of one loop (see the module docstring)."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        """Whether the flag is up."""
        return self._value

    def set(self) -> None:
        """Raise the flag and wake every waiter."""
        if self._value:
            return
        self._value = True
        waiters, self._waiters = self._waiters, None
        if waiters:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def clear(self) -> None:
        """Lower the flag (waiters already woken stay woken)."""
        self._value = False

    async def wait(self) -> Literal[True]:
        """Wait until the flag is up.

        Returns:
            ``True``, like ``asyncio.Event.wait``.
        """
        if self._value:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters
        if waiters is None:
            waiters = self._waiters = []
        waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            if self._waiters is waiters:  # still the current list (set() drops it)
                with contextlib.suppress(ValueError):
                    waiters.remove(waiter)
                if not waiters:
                    self._waiters = None

    def __repr__(self) -> str:
        waiting = len(self._waiters) if self._waiters else 0
        return f"<Flag {'set' if self._value else 'unset'}, waiters:{waiting}>"
