"""Acknowledgements and deadlines of the outbox: acks taken in, overdue messages resent.

:class:`Acks` takes the server's acknowledgements out of the incoming stream (an
:class:`~bgws.AckPolicy`) and runs the one timer task of the outbox: it sends again, with the
same id, every message whose ack is overdue, and expires queued messages whose time-to-live
passed. Both deadlines are read on the outbox's one clock (:attr:`Outbox.clock`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from ..message import Message
from ..policies import AckPolicy
from .flag import Flag
from .outbox import Entry, Outbox

__all__ = ["Acks"]


class Acks:
    """The acknowledgements and timers of one service's outbox.

    Args:
        policy: the ack policy, or ``None`` (no acks: only time-to-live is watched).
        outbox: the outbox it acknowledges, resends from and expires.
        ack_timeout: seconds after which an unacknowledged message is sent again.
        connected: whether a link is up (overdue messages are requeued only then).
        timeout: bounds a wait by seconds on the outbox's clock's pace (``asyncio.timeout``,
            or the service's :class:`~bgws._engine.clock.Clock`'s).
    """

    __slots__ = (
        "_bound",
        "_connected",
        "_outbox",
        "_task",
        "_timeout",
        "_wake",
        "policy",
        "resent",
    )

    def __init__(
        self,
        policy: AckPolicy | None,
        outbox: Outbox,
        ack_timeout: float,
        connected: Callable[[], bool],
        timeout: Callable[[float], AbstractAsyncContextManager[object]] = asyncio.timeout,
    ) -> None:
        self.policy = policy
        self._bound = timeout
        self._outbox = outbox
        self._timeout = ack_timeout
        self._connected = connected
        self._wake = Flag()
        self._task: asyncio.Task[None] | None = None
        self.resent = 0

    def take(self, message: Message) -> bool:
        """Take an acknowledgement out of the stream; ``True``: ``message`` was one."""
        policy = self.policy
        if policy is None:
            return False
        ids = policy.acked_ids(message)
        if ids is None:
            return False
        self._outbox.ack([i for i in ids if _is_hashable(i)])
        return True

    def written(self, batch: list[Entry]) -> None:
        """The writer sent ``batch``: count the resends and re-arm the ack timer."""
        self.resent += sum(1 for entry in batch if entry.attempts > 1)
        self._wake.set()

    def deadline_added(self) -> None:
        """A message with a time-to-live was queued: make sure the timer watches it."""
        self.start()
        self._wake.set()

    def start(self) -> None:
        """Start the timer task (only services that need it have one)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="bgws-housekeeping")

    async def close(self) -> None:
        """Stop the timer task."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        """Resend messages whose ack is overdue and expire messages whose TTL passed."""
        outbox = self._outbox
        clock = outbox.clock
        ack_timeout = self._timeout
        while True:
            deadlines: list[float] = []
            ack_due = outbox.next_ack_deadline(ack_timeout)
            if ack_due is not None:
                deadlines.append(ack_due)
            expiry = outbox.next_expiry()
            if expiry is not None:
                deadlines.append(expiry)
            self._wake.clear()
            if deadlines:
                with contextlib.suppress(TimeoutError):
                    async with self._bound(max(0.0, min(deadlines) - clock())):
                        await self._wake.wait()
            else:
                await self._wake.wait()
            now = clock()
            if self._connected():
                outbox.requeue_stale(now, ack_timeout)
            outbox.expire(now)


def _is_hashable(value: Any) -> bool:
    return value is not None and not isinstance(value, list | dict)
