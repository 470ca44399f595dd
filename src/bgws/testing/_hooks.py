"""How the test server runs user hooks: plain or async, in order per connection, errors kept.

A hook that returns an awaitable is awaited in a task; the tasks of one connection are chained
so that its hooks finish in the order they were called. Exceptions are handed to a callback
(the server records them and re-raises them when the test leaves ``async with``).
"""

from __future__ import annotations

import asyncio
import inspect
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bgws.testing._connection import Connection

__all__ = ["HookRunner"]


class HookRunner:
    """Runs hooks for one server and owns the tasks of the async ones.

    Args:
        record_error: Called with every exception a hook raises.
    """

    def __init__(self, record_error: Callable[[Exception], None]) -> None:
        self._record_error = record_error
        self._tasks: set[asyncio.Task[None]] = set()
        # The last async hook of each connection: the next one waits for it (order is kept).
        self._last: weakref.WeakKeyDictionary[Connection, asyncio.Task[None]] = (
            weakref.WeakKeyDictionary()
        )

    def run(self, connection: Connection, hook: Callable[..., object], *args: Any) -> None:
        """Call ``hook(*args)``; await its result, after the connection's earlier hooks."""
        try:
            result = hook(*args)
        except Exception as exc:
            self._record_error(exc)
            return
        if not inspect.isawaitable(result):
            return
        task = asyncio.get_running_loop().create_task(
            self._run_in_order(self._last.get(connection), result)
        )
        self._last[connection] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel(self) -> None:
        """Cancel every hook still running and wait until they are gone."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _run_in_order(
        self, previous: asyncio.Task[None] | None, pending: Awaitable[object]
    ) -> None:
        try:
            if previous is not None:
                await asyncio.wait({previous})
            await pending
        except Exception as exc:
            self._record_error(exc)
        finally:
            if (
                inspect.iscoroutine(pending)
                and inspect.getcoroutinestate(pending) == "CORO_CREATED"
            ):
                pending.close()  # cancelled before it started: no "never awaited" warning
