"""Routing: which plugins and handlers see a message, in what order, and what they raised.

Each message is routed to:

1. plugins that list the message's type (one returning ``True`` claims the message);
2. the handlers registered for the type with ``@service.on("type")``, in registration order;
3. the class-based :class:`bgws.MessageHandler` (every unclaimed message);
4. the catch-all handlers (``@service.on()``), for messages that no type handler matched.

Before them, an application heartbeat reply is consumed, the delivery layer's interceptor
takes acks, replies and duplicates, and taps watch. A handler that raises is reported (as
:class:`bgws.HandlerError`) and the next one runs.

The :class:`Router` knows nothing of queues or reading: the inbox (:mod:`bgws._engine.inbox`)
asks it where a message goes and runs the answer now or later.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Protocol

from ..errors import BgwsError, HandlerError
from ..handlers import Handler, HeartbeatHandler, MessageHandler, TemplateHeartbeat
from ..message import Message
from ..plugins import Plugin, PluginChain

__all__ = ["Interceptor", "Route", "Router", "Suspended", "is_async"]


class Interceptor(Protocol):
    """Sees messages before the handlers (the delivery layer: acks, replies, duplicates)."""

    intercepts: bool

    def intercept(self, message: Message) -> bool:
        """Whether ``message`` was consumed."""
        ...

    def watch(self, changed: Callable[[], None]) -> None:
        """Call ``changed`` whenever ``intercepts`` changes."""
        ...

    def takes_early(self) -> bool:
        """Whether :meth:`take_early` may consume anything now."""
        ...

    def take_early(self, message: Message) -> bool:
        """Consume ``message`` if it answers something waited for (an ack, a reply).

        Called as a message is read, even while earlier messages are held for the handlers:
        a handler that awaits an ack or a reply must not wait behind itself.
        """
        ...


Route = tuple[tuple[Handler, bool], ...]
"""The handlers a message still goes to, each with whether it is async."""


class _NoInterceptor:
    intercepts = False

    def intercept(self, message: Message) -> bool:
        return False

    def watch(self, changed: Callable[[], None]) -> None:
        return None

    def takes_early(self) -> bool:
        return False

    def take_early(self, message: Message) -> bool:
        return False


_NO_INTERCEPTOR = _NoInterceptor()


def is_async(func: Callable[..., Any]) -> bool:
    """Whether calling ``func`` returns a coroutine (checked once, at registration)."""
    if inspect.iscoroutinefunction(func):
        return True
    call = getattr(func, "__call__", None)  # noqa: B004  (async __call__ on an object)
    return call is not None and inspect.iscoroutinefunction(call)


class Router:
    """Routes each message through the heartbeat check, interceptor, taps, plugins, handlers.

    Errors raised in plain code (a tap, a plugin, a plain handler) are noted in
    :attr:`unreported` and the ``wake`` callback given to :meth:`notify` is called; the
    inbox's task reports them in order (:meth:`report_unreported`). Errors raised by async
    handlers are reported at once.

    Args:
        report: called with every error to report (awaited).

    Attributes:
        direct: message type -> one plain callable running all of the type's handlers, for
            the types that need nothing but plain handlers, and only while nothing else
            (heartbeat handler, taps, plugins, an intercepting interceptor) is in play:
            routing such a message is one dict lookup. Filled as types are seen, emptied (in
            place: the inbox holds it) whenever that stops being true.
        direct_async: message type -> its one async handler, for the types whose only
            handler is async, on the same terms: the inbox drives the handler's coroutine
            itself (as :meth:`run_inline` does), with no call in between.
        unreported: errors noted in plain code, waiting for the inbox's task to report them.
        handler_errors: how many handlers, plugins and taps raised.
    """

    __slots__ = (
        "_catch_all",
        "_heartbeat",
        "_heartbeat_types",
        "_interceptor",
        "_message_handler",
        "_on_heartbeat_reply",
        "_plans",
        "_plugins",
        "_report",
        "_routes",
        "_taps",
        "_wake",
        "direct",
        "direct_async",
        "handler_errors",
        "unreported",
    )

    def __init__(self, report: Callable[[BgwsError], Awaitable[None]]) -> None:
        self._report = report
        self._wake: Callable[[], None] = _nothing
        self._routes: dict[str, Route] = {}
        self._catch_all: Route = ()
        # Message type -> (its handlers, whether all are plain); built once per type.
        self._plans: dict[str | None, tuple[Route, bool]] = {}
        self.direct: dict[str | None, Callable[[Message], None]] = {}
        self.direct_async: dict[str | None, Callable[[Message], Any]] = {}
        # None rather than an empty chain: the chain's __bool__ is a Python call per message.
        self._plugins: PluginChain | None = None
        self._message_handler: tuple[Handler, bool] | None = None
        self._heartbeat: HeartbeatHandler | None = None
        self._heartbeat_types: frozenset[str | None] | None = frozenset()
        self._interceptor: Interceptor = _NO_INTERCEPTOR
        self._taps: list[Callable[[Message], None]] = []
        self._on_heartbeat_reply: Callable[[], None] = _nothing
        self.unreported: list[BgwsError] = []
        self.handler_errors = 0

    # -- configuration ----------------------------------------------------------------------

    def add_route(self, msg_type: str | None, handler: Handler) -> None:
        """Register ``handler`` for ``msg_type`` (``None``: the catch-all).

        Raises:
            TypeError: ``handler`` is not callable.
        """
        if not callable(handler):
            raise TypeError(f"handler {handler!r} is not callable")
        entry = (handler, is_async(handler))
        if msg_type is None:
            self._catch_all = (*self._catch_all, entry)
        else:
            self._routes[msg_type] = (*self._routes.get(msg_type, ()), entry)
        self._replan()

    def configure(
        self,
        *,
        plugins: PluginChain,
        message_handler: MessageHandler | None,
        heartbeat: HeartbeatHandler | None,
        interceptor: Interceptor | None = None,
    ) -> None:
        """Set the parts fixed at start.

        Args:
            plugins: the composed plugins.
            message_handler: the class-based handler.
            heartbeat: consumes application heartbeat replies.
            interceptor: sees each message first while its ``intercepts`` is true; its
                ``intercept`` returning ``True`` consumes the message (acks, replies,
                duplicates).
        """
        self._plugins = plugins if plugins else None
        self._interceptor = interceptor if interceptor is not None else _NO_INTERCEPTOR
        self._interceptor.watch(self._clear_direct)
        # The default handle_message does nothing: a class handler that only watches the
        # link (on_connection_lost...) costs its messages nothing, not a coroutine each.
        if (
            message_handler is not None
            and type(message_handler).handle_message is not MessageHandler.handle_message
        ):
            handle = message_handler.handle_message
            self._message_handler = (handle, is_async(handle))
        self._heartbeat = heartbeat
        self._heartbeat_types = _reply_types(heartbeat)
        self._replan()

    def add_tap(self, tap: Callable[[Message], None]) -> Callable[[], None]:
        """Let ``tap`` see every message before the plugins (it cannot claim or change it).

        Returns:
            A function that removes the tap.
        """
        self._taps.append(tap)
        self._clear_direct()

        def remove() -> None:
            if tap in self._taps:
                self._taps.remove(tap)

        return remove

    def notify(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` whenever an error is noted for reporting."""
        self._wake = wake

    def attach(self, on_heartbeat_reply: Callable[[], None]) -> None:
        """Call ``on_heartbeat_reply`` for each application heartbeat reply (a sign of life)."""
        self._on_heartbeat_reply = on_heartbeat_reply

    def detach(self) -> None:
        """The link is gone: heartbeat replies go nowhere."""
        self._on_heartbeat_reply = _nothing

    def _replan(self) -> None:
        self._plans.clear()
        self._clear_direct()

    def _clear_direct(self) -> None:
        self.direct.clear()
        self.direct_async.clear()

    # -- routing ----------------------------------------------------------------------------

    def route(self, message: Message) -> tuple[Route, bool] | None:
        """The plain part of routing: heartbeat replies, intercepts, taps and plugins.

        Returns:
            The handlers still to run and whether they are all plain functions, or ``None``
            when the message was consumed or claimed.
        """
        heartbeat = self._heartbeat
        if heartbeat is not None and heartbeat.is_heartbeat_reply(message):
            self._on_heartbeat_reply()
            return None
        interceptor = self._interceptor
        if interceptor.intercepts and interceptor.intercept(message):
            return None
        taps = self._taps
        if taps:
            self._tap(message)
        msg_type = message.type
        plugins = self._plugins
        watching = plugins.for_type(msg_type) if plugins is not None else ()
        plan = self._plans.get(msg_type)
        if plan is None:
            plan = self._plans[msg_type] = self._plan(msg_type)
        # The direct tables skip the checks above: only for a type that no tap, interceptor or
        # heartbeat watches (a heartbeat reply or a plugin of another type costs it nothing).
        # The plugins that watch the type run first in its direct runner.
        if (
            not interceptor.intercepts  # first: it is what stops a resuming service here
            and not taps
            and (heartbeat is None or not self._heartbeat_watches(msg_type))
        ):
            steps, all_sync = plan
            if all_sync:
                self.direct[msg_type] = (
                    _plugin_runner(watching, steps, self)
                    if watching
                    else _runner(steps, self.run_plain)
                )
            elif not watching and len(steps) == 1:
                self.direct_async[msg_type] = steps[0][0]
        for plugin in watching:
            try:
                claimed = plugin.handle_message(message)
            except Exception as exc:
                self.note_failure(exc, f"plugin {plugin.name}", message)
                continue
            if claimed is True:
                return None
        return plan

    def _heartbeat_watches(self, msg_type: str | None) -> bool:
        types = self._heartbeat_types
        return types is None or msg_type in types

    def _plan(self, msg_type: str | None) -> tuple[Route, bool]:
        """Type handlers, then the class handler, then (when no type handler) the catch-alls."""
        route = self._routes.get(msg_type, ()) if msg_type is not None else ()
        steps = list(route)
        if self._message_handler is not None:
            steps.append(self._message_handler)
        if not route:
            steps.extend(self._catch_all)
        return tuple(steps), not any(awaitable for _, awaitable in steps)

    def _tap(self, message: Message) -> None:
        for tap in list(self._taps):
            try:
                tap(message)
            except Exception as exc:
                self.note_failure(exc, f"tap {name_of(tap)}", message)

    def takes_early(self) -> bool:
        """Whether the interceptor awaits acks or replies (:meth:`take_early`)."""
        return self._interceptor.takes_early()

    def take_early(self, message: Message) -> bool:
        """Let the interceptor consume an ack or a reply as it is read; ``True``: consumed."""
        try:
            return self._interceptor.take_early(message)
        except Exception as exc:
            self.note_failure(exc, "the delivery layer", message)
            return False

    def run_plain(self, steps: Route, message: Message) -> None:
        """Run plain handlers in order; a failure is noted and the next handler runs."""
        for func, _ in steps:
            try:
                func(message)
            except Exception as exc:
                self.note_failure(exc, name_of(func), message)

    def run_inline(self, steps: Route, message: Message) -> Suspended | None:
        """Run handlers in order now, driving async ones by hand until one really suspends.

        An ``async`` handler that finishes without suspending costs no task and no queue.
        Failures are noted, as for plain handlers (:meth:`note_failure`).

        Returns:
            ``None`` when every handler is done, else the :class:`Suspended` handler with the
            handlers after it: awaiting it (in a task) finishes them, in order.
        """
        for index, (func, awaitable) in enumerate(steps):
            try:
                result = func(message)
                if awaitable:
                    try:
                        yielded = result.send(None)  # type: ignore[union-attr]
                    except StopIteration:
                        continue
                    return Suspended(self, func, result, yielded, steps[index + 1 :], message)  # type: ignore[arg-type]
            except Exception as exc:
                self.note_failure(exc, name_of(func), message)
        return None

    async def run(self, steps: Route, message: Message) -> None:
        """Run handlers in order, awaiting the async ones; a failure is reported at once."""
        for func, awaitable in steps:
            try:
                result = func(message)
                if awaitable:
                    await result  # type: ignore[misc]
            except Exception as exc:
                self.handler_errors += 1
                error = HandlerError(name_of(func), message)
                error.__cause__ = exc
                await self._report(error)

    async def dispatch(self, message: Message) -> None:
        """Route one decoded message through plugins and handlers, and report what failed."""
        found = self.route(message)
        if self.unreported:
            await self.report_unreported()
        if found is not None:
            await self.run(found[0], message)

    # -- errors -----------------------------------------------------------------------------

    def note_failure(self, exc: Exception, where: str, message: Message) -> None:
        """Note that plain code raised while handling ``message`` (reported later, in order)."""
        self.handler_errors += 1
        error = HandlerError(where, message)
        error.__cause__ = exc
        self.note(error)

    def note(self, error: BgwsError) -> None:
        """Keep ``error`` for the inbox's task to report, and wake it."""
        self.unreported.append(error)
        self._wake()

    async def report(self, error: BgwsError) -> None:
        """Report ``error`` now."""
        await self._report(error)

    async def report_unreported(self) -> None:
        """Report the errors noted so far, in order."""
        errors, self.unreported = self.unreported, []
        for error in errors:
            await self._report(error)


def _runner(steps: Route, run_plain: Callable[[Route, Message], None]) -> Callable[[Message], None]:
    """One callable for plain handlers: the handler itself, or all of them in order."""
    if len(steps) == 1:
        return steps[0][0]  # type: ignore[return-value]
    return functools.partial(run_plain, steps)


class Suspended:
    """An async handler that suspended when run inline, with the handlers after it.

    Awaiting it (in the inbox's task) finishes the handler: what its coroutine yielded in
    the read callback (a future to wait for, or ``None``: a bare yield) is yielded again to
    the task, and what the task sends or throws in is passed on, exactly as if the task had
    started the coroutine. The rest of the coroutine runs in a copy of the context it
    suspended in, so context variables it set before suspending are still set. Then the
    handlers after it run, as on the queued route. A failure is reported at once as a
    :class:`bgws.HandlerError`.

    Args:
        router: reports failures and runs the handlers after it.
        func: the handler (names it in a :class:`bgws.HandlerError`).
        coro: its coroutine, suspended.
        yielded: what the coroutine yielded.
        rest: the handlers still to run for ``message``.
        message: the message being handled.

    Attributes:
        size: the message's payload bytes (set by the inbox that holds it).
    """

    __slots__ = (
        "_context",
        "_coro",
        "_func",
        "_pending",
        "_rest",
        "_router",
        "_yielded",
        "message",
        "size",
    )

    def __init__(
        self,
        router: Router,
        func: Handler,
        coro: Coroutine[Any, Any, Any],
        yielded: Any,
        rest: Route,
        message: Message,
    ) -> None:
        self._router = router
        self._func = func
        self._coro = coro
        self._yielded = yielded
        self._rest = rest
        self._context = contextvars.copy_context()
        self._pending: BaseException | None = None
        self.message = message
        self.size = 0

    def cancel(self, exc: BaseException) -> None:
        """Deliver a cancellation that reached the task before the task took this over.

        As ``Task.cancel`` does: the future the handler waits for is cancelled, so the
        handler sees the cancellation when the task waits for it; when there is none (a bare
        yield) or it is already done, the cancellation is thrown in first.
        """
        yielded = self._yielded
        if getattr(yielded, "_asyncio_future_blocking", False) and yielded.cancel():
            return
        self._pending = exc

    def close(self) -> None:
        """Never to be awaited (the service stops): close the handler's coroutine."""
        self._coro.close()

    def __await__(self) -> Generator[Any, Any, None]:
        router = self._router
        try:
            yield from self._finish()
        except Exception as exc:
            router.handler_errors += 1
            error = HandlerError(name_of(self._func), self.message)
            error.__cause__ = exc
            yield from router.report(error).__await__()
        if self._rest:
            yield from router.run(self._rest, self.message).__await__()

    def _finish(self) -> Generator[Any, Any, None]:
        """Yield what the coroutine yields, and pass in what is sent or thrown, to its end."""
        coro = self._coro
        run = self._context.run
        yielded = self._yielded
        pending = self._pending
        if pending is not None:
            self._pending = None
            try:
                yielded = run(coro.throw, pending)
            except StopIteration:
                return
        while True:
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # thrown in by the task (cancellation, above all)
                try:
                    yielded = run(coro.throw, exc)
                except StopIteration:
                    return
                continue
            try:
                yielded = run(coro.send, sent)
            except StopIteration:
                return


def _plugin_runner(
    plugins: tuple[Plugin, ...], steps: Route, router: Router
) -> Callable[[Message], None]:
    """One callable for a type's plugins then its plain handlers (it never raises).

    The claim loop of :meth:`Router.route`, written out once more so that a watched type
    costs no call beyond the plugins' own.
    """
    note_failure = router.note_failure
    run_plain = router.run_plain
    named = tuple((plugin.handle_message, f"plugin {plugin.name}") for plugin in plugins)

    def run(message: Message) -> None:
        for handle, where in named:
            try:
                claimed = handle(message)
            except Exception as exc:
                note_failure(exc, where, message)
                continue
            if claimed is True:
                return
        run_plain(steps, message)

    return run


def _reply_types(heartbeat: HeartbeatHandler | None) -> frozenset[str | None] | None:
    """The message types ``heartbeat`` may consume, or ``None`` when it must see them all."""
    if heartbeat is None:
        return frozenset()
    if isinstance(heartbeat, TemplateHeartbeat):
        reply = heartbeat.reply_type
        return frozenset() if reply is None else frozenset({reply})
    if type(heartbeat).is_heartbeat_reply is HeartbeatHandler.is_heartbeat_reply:
        return frozenset({"pong"})  # the default matches type "pong" only
    return None  # its own test: every message goes through it


def name_of(func: Callable[..., Any]) -> str:
    """How a handler, tap or plugin hook is named in a :class:`bgws.HandlerError`."""
    return getattr(func, "__qualname__", None) or type(func).__name__


def _nothing() -> None:
    return None
