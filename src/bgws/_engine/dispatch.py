"""The incoming path: routing in the read callback, a bounded inbox behind async handlers.

While nothing waits in the inbox, the transport's read callback decodes each frame and routes
the message at once; plain handlers run right there, with no queue and no task switch (with
nothing but type handlers in play, routing is one dict lookup). A message whose handlers are
async goes to the inbox, and so does every message after it, until the dispatcher task has
awaited them in order. Each message is routed to:

1. plugins that list the message's type (one returning ``True`` claims the message);
2. the handlers registered for the type with ``@service.on("type")``, in registration order;
3. the class-based :class:`bgws.MessageHandler` (every unclaimed message);
4. the catch-all handlers (``@service.on()``), for messages that no type handler matched.

A handler that raises is reported (as :class:`bgws.HandlerError`) and the next one runs. What
the inbox holds, queued or being dispatched, is bounded in messages and bytes
(:class:`~bgws._engine.inbox.InboxLoad` pauses the reader): memory stays bounded. No task or
future is made per message. A binary frame is decoded when queued (``data`` is the payload,
``bytes``).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec

from ..errors import BgwsError, DecodeError, HandlerError
from ..handlers import Handler, HeartbeatHandler, MessageHandler
from ..message import Codec, Message
from ..plugins import PluginChain
from .inbox import InboxLoad

__all__ = ["Dispatcher"]


class Interceptor(Protocol):
    """Sees messages before the handlers (the delivery layer: acks, replies, duplicates)."""

    intercepts: bool

    def intercept(self, message: Message) -> bool:
        """Whether ``message`` was consumed."""
        ...

    def watch(self, changed: Callable[[], None]) -> None:
        """Call ``changed`` whenever ``intercepts`` changes."""
        ...


_Route = tuple[tuple[Handler, bool], ...]


class _NoInterceptor:
    intercepts = False

    def intercept(self, message: Message) -> bool:
        return False

    def watch(self, changed: Callable[[], None]) -> None:
        return None


_NO_INTERCEPTOR = _NoInterceptor()


def is_async(func: Callable[..., Any]) -> bool:
    """Whether calling ``func`` returns a coroutine (checked once, at registration)."""
    if inspect.iscoroutinefunction(func):
        return True
    call = getattr(func, "__call__", None)  # noqa: B004  (async __call__ on an object)
    return call is not None and inspect.iscoroutinefunction(call)


class Dispatcher:
    """Holds the inbox and routes every message.

    Args:
        codec: decodes payloads.
        size: the inbox bound (messages) at which reading pauses.
        report: called with every error to report (awaited).
        max_bytes: the inbox bound (payload bytes) at which reading pauses.

    Attributes:
        load: what the inbox holds, and the reader's flow control.
    """

    # Slots: over 30 attributes would give every service a full instance dict (about
    # 1.5 KiB) instead of the compact shared-key layout.
    __slots__ = (
        "_catch_all",
        "_codec",
        "_failures",
        "_fast",
        "_frozen_catch_all",
        "_frozen_routes",
        "_heartbeat",
        "_id_field",
        "_idle",
        "_interceptor",
        "_items",
        "_json_decode",
        "_message_handler",
        "_message_handler_async",
        "_on_heartbeat_reply",
        "_plans",
        "_plugins",
        "_queued_stamp",
        "_queueing",
        "_ranks",
        "_ready",
        "_report",
        "_routes",
        "_stamp",
        "_sync_plans",
        "_taps",
        "_type_field",
        "decode_errors",
        "frames",
        "handler_errors",
        "load",
    )

    def __init__(
        self,
        codec: Codec,
        size: int,
        report: Callable[[BgwsError], Awaitable[None]],
        max_bytes: int = 64 << 20,
    ) -> None:
        self._codec = codec
        self._report = report
        # Queued: a float (the read stamp of later items), a text frame's payload (bytes), or
        # (message, steps, size): a binary frame (steps None) or one routed by the reader.
        self._items: list[Any] = []
        self.load = InboxLoad(size, max_bytes)
        self._stamp: float | None = None
        self._queued_stamp: float | None = None
        self._json_decode = codec.json_decode if codec.kind == "json" else None
        self._type_field = codec.type_field
        self._id_field = codec.id_field
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._routes: dict[str, list[tuple[Handler, bool]]] = {}
        self._catch_all: list[tuple[Handler, bool]] = []
        self._frozen_routes: dict[str, _Route] = {}
        self._plans: dict[str | None, tuple[_Route, bool]] = {}
        # For types whose handlers are all plain functions: one callable that runs them all
        # (the handler itself when there is one), so the read callback makes one call.
        self._sync_plans: dict[str | None, Callable[[Message], None]] = {}
        self._frozen_catch_all: _Route = ()
        self._plugins = PluginChain(())
        self._message_handler: MessageHandler | None = None
        self._message_handler_async = False
        self._heartbeat: HeartbeatHandler | None = None
        self._interceptor: Interceptor = _NO_INTERCEPTOR
        self._taps: list[Callable[[Message], None]] = []
        self._failures: list[BgwsError] = []
        # Whether a new frame must go through the inbox: something is queued or being
        # dispatched (order), or priority types need messages to pile up. One flag, because
        # the read callback checks it for every frame.
        self._queueing = False
        # No heartbeat handler, taps, plugins or interceptor in play: routing is a dict lookup.
        self._fast = True
        self._ranks: dict[str, int] = {}
        self._on_heartbeat_reply: Callable[[], None] = _nothing
        self.frames = 0
        self.handler_errors = 0
        self.decode_errors = 0

    # -- configuration (before start) -------------------------------------------------------

    def add_route(self, msg_type: str | None, handler: Handler) -> None:
        """Register ``handler`` for ``msg_type`` (``None``: the catch-all)."""
        if not callable(handler):
            raise TypeError(f"handler {handler!r} is not callable")
        entry = (handler, is_async(handler))
        self._plans.clear()
        self._sync_plans.clear()
        if msg_type is None:
            self._catch_all.append(entry)
            self._frozen_catch_all = tuple(self._catch_all)
        else:
            self._routes.setdefault(msg_type, []).append(entry)
            self._frozen_routes[msg_type] = tuple(self._routes[msg_type])

    def configure(
        self,
        *,
        plugins: PluginChain,
        message_handler: MessageHandler | None,
        heartbeat: HeartbeatHandler | None,
        interceptor: Interceptor | None = None,
        priority_types: tuple[str, ...] = (),
    ) -> None:
        """Set the parts fixed at start.

        Args:
            plugins: the composed plugins.
            message_handler: the class-based handler.
            heartbeat: consumes application heartbeat replies.
            interceptor: sees each message first while its ``intercepts`` is true; its
                ``intercept`` returning ``True`` consumes the message (acks, replies,
                duplicates).
            priority_types: message types taken first from a batch, most urgent first.
        """
        self._plugins = plugins
        self._plans.clear()
        self._sync_plans.clear()
        self._interceptor = interceptor if interceptor is not None else _NO_INTERCEPTOR
        self._interceptor.watch(self._refresh)
        self._ranks = {t: i for i, t in enumerate(priority_types)}
        self._queueing = bool(self._ranks)  # reordering needs messages to pile up in the inbox
        self._message_handler = message_handler
        if message_handler is not None:
            self._message_handler_async = is_async(message_handler.handle_message)
        self._heartbeat = heartbeat
        self._refresh()

    def _refresh(self) -> None:
        self._fast = (
            self._heartbeat is None
            and not self._taps
            and not self._plugins
            and not self._interceptor.intercepts
        )

    def attach(
        self,
        pause: Callable[[], None],
        resume: Callable[[], None],
        on_heartbeat_reply: Callable[[], None],
    ) -> None:
        """Bind the inbox to a new link's flow control."""
        self.load.attach(pause, resume)
        self._on_heartbeat_reply = on_heartbeat_reply

    def detach(self) -> None:
        """The link is gone: stop flow control; queued messages are still dispatched."""
        self.load.detach()
        self._on_heartbeat_reply = _nothing

    # -- reader side (transport callbacks) --------------------------------------------------

    def push(self, payload: bytes, binary: bool, last: bool = True) -> None:
        """Take one message's payload from the reader.

        While nothing is queued or being dispatched, the message is decoded and routed right
        here, in the read callback, and its plain handlers run at once: no task switch and no
        queue, for a lone reply as for every frame of a burst (a read is bounded by the read
        buffer, so a burst yields to the loop between reads). A message whose handlers are
        async goes to the inbox, and so does every message after it until the dispatcher
        task has caught up: order is kept. The inbox pauses reading when it holds ``size``
        messages or ``max_bytes`` payload bytes.
        """
        stamp = self._stamp
        if stamp is None:
            stamp = time.time()
            if not last:
                self._stamp = stamp
        elif last:
            self._stamp = None
        if self._queueing:
            self._queue(payload, binary, stamp)
            return
        self.frames += 1
        json_decode = self._json_decode
        if json_decode is None or binary:
            self._decode_and_route(payload, binary, stamp)
            return
        # The hot path, inlined (one call per message costs measurably here): the JSON branch
        # of Codec.decode (keep the two in step), then routing by one dict lookup when
        # nothing else is in play.
        try:
            data = json_decode(payload)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            self._decode_failed_soon(DecodeError(f"text frame is not valid JSON: {exc}", payload))
            return
        if type(data) is dict:
            msg_type = data.get(self._type_field)
            if type(msg_type) is not str and msg_type is not None:
                msg_type = str(msg_type)
            id_field = self._id_field
            msg_id = data.get(id_field) if id_field is not None else None
            message = Message(msg_type, data, msg_id, payload, False, stamp)
        else:
            msg_type = None
            message = Message(None, data, None, payload, False, stamp)
        if self._fast:
            run = self._sync_plans.get(msg_type)
            if run is not None:
                try:
                    run(message)
                except Exception as exc:  # a lone handler (a composed plan never raises)
                    self._fail_soon(exc, _name(run), message)
                return
        self._route_now(message, payload)

    def _queue(self, payload: bytes, binary: bool, stamp: float) -> None:
        items = self._items
        if stamp != self._queued_stamp:
            self._queued_stamp = stamp
            items.append(stamp)
        size = len(payload)
        # A binary frame has nothing to decode: the same Message as on the fast route.
        items.append((self._codec.decode(payload, True, stamp), None, size) if binary else payload)
        self._take(size)

    def _take(self, size: int) -> None:
        """Hold one more message (the load may pause reading) and wake the dispatcher."""
        self.load.take(size)
        self._queueing = True
        if not self._ready.is_set():
            self._ready.set()
            self._idle.clear()

    def _done(self, size: int) -> None:
        """One held message is dispatched (the load may resume reading)."""
        self.frames += 1
        self.load.done(size)

    def read_done(self) -> None:
        """One network read is delivered; the next frame gets a fresh timestamp."""
        self._stamp = None

    def _decode_and_route(self, payload: bytes, binary: bool, stamp: float) -> None:
        try:
            message = self._codec.decode(payload, binary, stamp)
        except DecodeError as exc:
            self._decode_failed_soon(exc)
            return
        self._route_now(message, payload)

    def _route_now(self, message: Message, payload: bytes) -> None:
        """Route a message in the read callback; async handlers go to the dispatcher task."""
        found = self._steps(message)
        if found is None:
            return
        steps, all_sync = found
        if all_sync:
            self._run_plain(steps, message)
            return
        # An async handler: the dispatcher task awaits it, in order. The frame was counted.
        self.frames -= 1
        size = len(payload)
        self._items.append((message, steps, size))
        self._take(size)

    def _decode_failed_soon(self, error: DecodeError) -> None:
        self.decode_errors += 1
        self._failures.append(error)
        self._ready.set()

    def __len__(self) -> int:
        """Messages held: queued, or in the batch being dispatched."""
        return self.load.count

    @property
    def dispatched(self) -> int:
        """Messages decoded and routed so far."""
        return self.frames - self.decode_errors

    @property
    def received(self) -> int:
        """Frames received so far (dispatched or held)."""
        return self.frames + self.load.count

    async def wait_idle(self) -> None:
        """Return once every queued message has been dispatched."""
        await self._idle.wait()

    # -- dispatcher task --------------------------------------------------------------------

    async def run(self) -> None:
        """Dispatch forever (the service cancels it at stop)."""
        ready = self._ready
        while True:
            await ready.wait()
            if self._failures:
                await self._report_failures()
            batch = self._items
            self._items = []
            self._queued_stamp = None
            ready.clear()
            self._queueing = True
            try:
                await self._dispatch_batch(batch)
            finally:
                self._queueing = bool(self.load.count or self._ranks)
            if not ready.is_set():
                self._idle.set()

    async def _dispatch_batch(self, batch: list[Any]) -> None:
        # Only what piled up behind an async handler (or for priority types) comes here: the
        # read callback routes everything else itself. Still no coroutine per message unless
        # a handler is async.
        if self._ranks and len(batch) > 2:
            await self._dispatch_by_priority(batch)
            return
        decode = self._codec.decode
        done = self._done
        stamp = 0.0
        for item in batch:
            kind = type(item)
            if kind is float:
                stamp = item
                continue
            try:
                if kind is tuple:
                    message, steps, size = item
                else:
                    size = len(item)
                    try:
                        message = decode(item, False, stamp)
                    except DecodeError as exc:
                        await self._decode_failed(exc)
                        continue
                    steps = None
                if steps is None:  # not routed yet
                    found = self._steps(message)
                    if self._failures:
                        await self._report_failures()
                    if found is None:
                        continue
                    steps, all_sync = found
                else:  # routed by the reader; an async handler still to run
                    all_sync = False
                if all_sync:
                    self._run_plain(steps, message)  # its failures are reported just below
                else:
                    await self._run(steps, message)
                if self._failures:
                    await self._report_failures()
            finally:
                done(size)

    async def _decode_failed(self, error: DecodeError) -> None:
        self.decode_errors += 1
        await self._report(error)

    async def _dispatch_by_priority(self, batch: list[Any]) -> None:
        """Decode the whole batch, then dispatch priority types first (stable within a type)."""
        decode = self._codec.decode
        stamp = 0.0
        messages: list[tuple[Message, int]] = []
        for item in batch:
            kind = type(item)
            if kind is float:
                stamp = item
                continue
            if kind is tuple:  # decoded when queued (a binary frame)
                messages.append((item[0], item[2]))
                continue
            try:
                messages.append((decode(item, False, stamp), len(item)))
            except DecodeError as exc:
                self._done(len(item))
                await self._decode_failed(exc)
        ranks = self._ranks
        last = len(ranks)
        messages.sort(key=lambda m: ranks.get(m[0].type, last) if m[0].type is not None else last)
        for message, size in messages:
            try:
                await self.dispatch(message)
            finally:
                self._done(size)

    async def dispatch(self, message: Message) -> None:
        """Route one decoded message through plugins and handlers."""
        found = self._steps(message)
        if self._failures:
            await self._report_failures()
        if found is not None:
            await self._run(found[0], message)

    def _steps(self, message: Message) -> tuple[_Route, bool] | None:
        """The sync part of routing: heartbeat replies, intercepts, taps and plugins.

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
        if self._taps:
            self._tap(message)
        msg_type = message.type
        plugins = self._plugins
        if plugins:
            for plugin in plugins.for_type(msg_type):
                try:
                    claimed = plugin.handle_message(message)
                except Exception as exc:
                    self._fail_soon(exc, f"plugin {plugin.name}", message)
                    continue
                if claimed is True:
                    return None
        plan = self._plans.get(msg_type)
        if plan is None:
            plan = self._plans[msg_type] = self._plan(msg_type)
            if plan[1]:
                self._sync_plans[msg_type] = self._sync_runner(plan[0])
        return plan

    def _sync_runner(self, steps: _Route) -> Callable[[Message], None]:
        """One callable for plain handlers: the handler itself, or all of them in order."""
        if len(steps) == 1:
            return steps[0][0]  # type: ignore[return-value]
        return functools.partial(self._run_plain, steps)

    def _run_plain(self, steps: _Route, message: Message) -> None:
        """Run plain handlers in order; a failure is noted (reported by the dispatcher task)
        and the next handler runs."""
        for func, _ in steps:
            try:
                func(message)
            except Exception as exc:
                self._fail_soon(exc, _name(func), message)

    def _plan(self, msg_type: str | None) -> tuple[_Route, bool]:
        """Type handlers, then the class handler, then (when no type handler) the catch-alls."""
        route = self._frozen_routes.get(msg_type, ()) if msg_type is not None else ()
        steps = list(route)
        handler = self._message_handler
        if handler is not None:
            steps.append((handler.handle_message, self._message_handler_async))
        if not route:
            steps.extend(self._frozen_catch_all)
        return tuple(steps), not any(awaitable for _, awaitable in steps)

    def add_tap(self, tap: Callable[[Message], None]) -> Callable[[], None]:
        """Let ``tap`` see every message before the plugins (it cannot claim or change it).

        Returns:
            A function that removes the tap.
        """
        self._taps.append(tap)
        self._fast = False

        def remove() -> None:
            if tap in self._taps:
                self._taps.remove(tap)
                self._refresh()

        return remove

    def _tap(self, message: Message) -> None:
        for tap in list(self._taps):
            try:
                tap(message)
            except Exception as exc:
                self._fail_soon(exc, f"tap {_name(tap)}", message)

    async def _run(self, route: _Route, message: Message) -> None:
        for func, awaitable in route:
            try:
                result = func(message)
                if awaitable:
                    await result  # type: ignore[misc]
            except Exception as exc:
                await self._handler_failed(exc, _name(func), message)

    async def _handler_failed(self, exc: Exception, where: str, message: Message) -> None:
        self.handler_errors += 1
        error = HandlerError(where, message)
        error.__cause__ = exc
        await self._report(error)

    def _fail_soon(self, exc: Exception, where: str, message: Message) -> None:
        """Note a failure in sync code; the dispatcher task reports it, in order."""
        self.handler_errors += 1
        error = HandlerError(where, message)
        error.__cause__ = exc
        self._failures.append(error)
        self._ready.set()

    async def _report_failures(self) -> None:
        failures, self._failures = self._failures, []
        for error in failures:
            await self._report(error)


def _name(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", None) or type(func).__name__


def _nothing() -> None:
    return None
