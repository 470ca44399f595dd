"""Requests waiting for their reply: matched by id, failed by one shared deadline timer.

:class:`Requests` keeps the pending requests of one service (id -> reply future, whether the
reply is also dispatched, deadline). One timer sweeps the deadlines: a timer per request cost a
tenth of an echo round trip.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from ..errors import QueueFull, ServiceClosed
from ..message import Message

__all__ = ["Requests"]


class Requests:
    """The pending requests of one service.

    Args:
        reply_field: the field of a reply that carries the request's id (``None``: requests
            are off).
        limit: the most requests that may wait at once (``max_pending_requests``).
    """

    __slots__ = ("_limit", "_loop", "_sweep_at", "_sweeper", "pending", "reply_field")

    def __init__(self, reply_field: str | None, limit: int) -> None:
        self.reply_field = reply_field
        self._limit = limit
        self.pending: dict[Any, tuple[asyncio.Future[Message], bool, float]] = {}
        """id -> (reply future, dispatch the reply too, deadline on the loop's clock)."""
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(
        self, loop: asyncio.AbstractEventLoop, msg_id: Any, deadline: float, dispatch: bool
    ) -> asyncio.Future[Message]:
        """Wait for the reply to ``msg_id`` until ``deadline`` (``loop.time()``; ``math.inf``:
        no sweep, the caller times the request out).

        Returns:
            The future the reply resolves (a :class:`TimeoutError` at the deadline).

        Raises:
            QueueFull: ``limit`` requests are already waiting.
        """
        pending = self.pending
        if len(pending) >= self._limit:
            raise QueueFull(f"{len(pending)} requests are waiting (max_pending_requests)")
        future: asyncio.Future[Message] = loop.create_future()
        pending[msg_id] = (future, dispatch, deadline)
        if deadline == math.inf:  # the caller keeps the deadline itself (another clock)
            return future
        if self._sweeper is None or deadline < self._sweep_at:
            self._arm(loop, deadline)
        return future

    def discard(self, msg_id: Any) -> None:
        """The request ended (answered, failed or cancelled): stop waiting for it."""
        self.pending.pop(msg_id, None)

    def match(self, message: Message) -> bool | None:
        """Resolve the request ``message`` answers.

        Returns:
            ``None`` when it answers none; else whether it is consumed (not dispatched).
        """
        field = self.reply_field
        if not field:
            return None
        data = message.data
        # A dict is the usual case: read without Message.get's checks.
        reply_id = data.get(field) if type(data) is dict else message.get(field)
        if type(reply_id) is str or (
            reply_id is not None and not isinstance(reply_id, list | dict)
        ):
            waiting = self.pending.get(reply_id)
            if waiting is not None:
                future, dispatch, _ = waiting
                if not future.done():
                    future.set_result(message)
                return not dispatch
        return None

    def close(self) -> None:
        """The service stops: every waiting request fails with :class:`ServiceClosed`."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for future, _, _ in self.pending.values():
            if not future.done():
                future.set_exception(ServiceClosed("the service stopped before the reply came"))

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._loop = loop
        self._sweep_at = when
        self._sweeper = loop.call_at(when, self._sweep)

    def _sweep(self) -> None:
        """Fail the requests whose deadline passed; wake again at the next deadline."""
        self._sweeper = None
        loop = self._loop or asyncio.get_running_loop()
        now = loop.time()
        soonest: float | None = None
        for future, _, deadline in self.pending.values():
            if future.done():
                continue
            if deadline <= now:
                future.set_exception(TimeoutError())
                future.exception()  # retrieved: a request cancelled meanwhile logs nothing
            elif soonest is None or deadline < soonest:
                soonest = deadline
        if soonest is not None:
            self._arm(loop, soonest)
