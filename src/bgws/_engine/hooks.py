"""The user-supplied hooks of one service, and how the errors it meets are reported.

:class:`Hooks` bundles what the application hands to :class:`bgws.Service`: the class-based
message, notification, auth, lifecycle, error and heartbeat handlers and the plugins. It is a
plain holder: the service and its :class:`~bgws._engine.supervisor.Supervisor` call each hook
directly (``hooks.lifecycle.on_state_changed(old, new)``), through :meth:`Hooks.guarded` or
:meth:`Hooks.hook` so that an exception a hook raises is reported to the error handler instead
of killing the task that called it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any, Final

from ..errors import BgwsError, HandlerError
from ..handlers import (
    AuthHandler,
    ErrorHandler,
    HeartbeatHandler,
    LifecycleHandler,
    MessageHandler,
    NotificationHandler,
    reporting_for,
)
from ..plugins import Plugin, PluginChain
from .observe import Counters

__all__ = ["HOOK_STOP_GRACE", "Hooks", "call", "wrap"]

HOOK_STOP_GRACE: Final = 5.0
"""Seconds a stop hook (a plugin's ``on_service_stopped`` or ``dispose``, a handler's
``on_service_stopped``) may run past the stop's deadline before it is reported and left."""


class Hooks:
    """The application's handlers and plugins for one service, and the error reporter.

    Args:
        message: the class-based handler that sees every unclaimed message.
        notifier: shows notifications.
        auth: supplies credentials for each connect attempt.
        lifecycle: hears start, stop and state changes.
        errors: hears every reported error.
        heartbeat: the application-level heartbeat.
        plugins: the plugins, in order (composed into :attr:`chain` at start).
        counters: where reported errors are counted and the last one kept.
        log: the service's logger.
    """

    __slots__ = (
        "auth",
        "chain",
        "counters",
        "errors",
        "heartbeat",
        "lifecycle",
        "log",
        "message",
        "notifier",
        "plugins",
        "side_tasks",
    )

    def __init__(
        self,
        *,
        message: MessageHandler | None,
        notifier: NotificationHandler | None,
        auth: AuthHandler | None,
        lifecycle: LifecycleHandler | None,
        errors: ErrorHandler,
        heartbeat: HeartbeatHandler | None,
        plugins: list[Plugin],
        counters: Counters,
        log: logging.Logger,
    ) -> None:
        self.message = message
        self.notifier = notifier
        self.auth = auth
        self.lifecycle = lifecycle
        self.errors = errors
        self.heartbeat = heartbeat
        self.plugins = plugins
        self.chain = PluginChain(())
        self.counters = counters
        self.log = log
        # Made at the first report_soon (an empty set is 216 bytes an idle service).
        self.side_tasks: set[asyncio.Task[Any]] | None = None

    async def report(self, error: BgwsError) -> None:
        """Count ``error``, keep it as the last error, and hand it to the error handler.

        An exception the error handler raises is logged, never propagated.
        """
        counters = self.counters
        counters.errors += 1
        counters.note_error(error)
        try:
            with reporting_for(self.log):
                await call(lambda: self.errors.on_error(error))
        except Exception:
            self.log.exception("the error handler raised while reporting %s", type(error).__name__)

    def report_soon(self, error: BgwsError) -> None:
        """Report ``error`` from a task of its own (for callers that cannot await)."""
        task = asyncio.ensure_future(self.report(error))
        tasks = self.side_tasks
        if tasks is None:
            tasks = self.side_tasks = set()
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def settle(self) -> None:
        """Wait until every report started by :meth:`report_soon` has finished."""
        while self.side_tasks:
            await asyncio.gather(*self.side_tasks, return_exceptions=True)

    async def guarded(
        self, func: Callable[[], Any] | None, where: str, limit: float | None = None
    ) -> None:
        """Call ``func`` (plain or async); an exception it raises is reported, named ``where``.

        With ``limit``, an async ``func`` still running after ``limit`` seconds is cancelled,
        reported as a :class:`HandlerError`, and left behind: a hook that swallows its cancel
        cannot hold a stop.
        """
        if func is None:
            return
        try:
            if limit is None:
                await call(func)
                return
            result = func()
            if not (asyncio.iscoroutine(result) or isinstance(result, asyncio.Future)):
                return
            running = asyncio.ensure_future(result)
            done, _ = await asyncio.wait([running], timeout=limit)
            if not done:
                running.cancel()
                await self.report(HandlerError(f"{where} did not finish within {limit:g}s"))
                return
            if not running.cancelled():  # a hook that cancelled itself ended, too
                running.result()
        except Exception as exc:
            await self.report(wrap(exc, where))

    async def hook(self, hook: Callable[..., Any], *args: Any) -> None:
        """Call a class-based handler's hook; an error it raises is reported, named after it."""
        owner = getattr(hook, "__self__", None)
        where = f"{type(owner).__name__}.{hook.__name__}" if owner is not None else repr(hook)
        await self.guarded(functools.partial(hook, *args), where)


async def call(func: Callable[[], Any]) -> Any:
    """Call ``func`` and await its result when it is a coroutine or a future."""
    result = func()
    if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
        return await result
    return result


def wrap(exc: Exception, where: str) -> BgwsError:
    """``exc`` itself when it is a :class:`BgwsError`, else a :class:`HandlerError` from it."""
    if isinstance(exc, BgwsError):
        return exc
    error = HandlerError(where)
    error.__cause__ = exc
    return error
