"""The incoming path: a bounded inbox between the reader and one dispatcher task.

The transport appends each frame's payload to the inbox from its read callback; the dispatcher
takes the whole inbox at once, decodes each payload and routes the message:

1. plugins that list the message's type (one returning ``True`` claims the message);
2. the handlers registered for the type with ``@service.on("type")``, in registration order;
3. the class-based :class:`bgws.MessageHandler` (every unclaimed message);
4. the catch-all handlers (``@service.on()``), for messages that no type handler matched.

A handler that raises is reported (as :class:`bgws.HandlerError`) and the next one runs. When
the inbox holds ``inbox_size`` messages the reader is paused until the dispatcher catches up:
that is the backpressure, and memory stays bounded. No task or future is made per message.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import BgwsError, DecodeError, HandlerError
from .handlers import HeartbeatHandler, MessageHandler
from .message import Codec, Message
from .plugins import PluginChain

__all__ = ["Dispatcher", "Handler"]

Handler = Callable[[Message], Awaitable[None] | None]
"""A message handler: a plain function or a coroutine function taking a :class:`Message`."""

_Route = tuple[tuple[Handler, bool], ...]


class _Binary(bytes):
    """Marks a binary frame's payload in the inbox (text payloads are plain ``bytes``)."""

    __slots__ = ()


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
    """

    def __init__(
        self,
        codec: Codec,
        size: int,
        report: Callable[[BgwsError], Awaitable[None]],
    ) -> None:
        self._codec = codec
        self._size = size
        self._report = report
        self._items: list[Any] = []
        self._count = 0
        self._stamp: float | None = None
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._routes: dict[str, list[tuple[Handler, bool]]] = {}
        self._catch_all: list[tuple[Handler, bool]] = []
        self._frozen_routes: dict[str, _Route] = {}
        self._frozen_catch_all: _Route = ()
        self._plugins = PluginChain(())
        self._message_handler: MessageHandler | None = None
        self._message_handler_async = False
        self._heartbeat: HeartbeatHandler | None = None
        self._intercept: Callable[[Message], bool] | None = None
        self._taps: list[Callable[[Message], None]] = []
        self._reports: set[asyncio.Future[None]] = set()
        self._ranks: dict[str, int] = {}
        self._on_heartbeat_reply: Callable[[], None] = _nothing
        self._pause: Callable[[], None] | None = None
        self._resume: Callable[[], None] | None = None
        self.paused = False
        self.pauses = 0
        self.frames = 0
        self.dispatched = 0
        self.handler_errors = 0
        self.decode_errors = 0

    # -- configuration (before start) -------------------------------------------------------

    def add_route(self, msg_type: str | None, handler: Handler) -> None:
        """Register ``handler`` for ``msg_type`` (``None``: the catch-all)."""
        if not callable(handler):
            raise TypeError(f"handler {handler!r} is not callable")
        entry = (handler, is_async(handler))
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
        intercept: Callable[[Message], bool] | None = None,
        priority_types: tuple[str, ...] = (),
    ) -> None:
        """Set the parts fixed at start.

        Args:
            plugins: the composed plugins.
            message_handler: the class-based handler.
            heartbeat: consumes application heartbeat replies.
            intercept: sees each message first; returning ``True`` consumes it (acks,
                replies, duplicates).
            priority_types: message types taken first from a batch, most urgent first.
        """
        self._plugins = plugins
        self._intercept = intercept
        self._ranks = {t: i for i, t in enumerate(priority_types)}
        self._message_handler = message_handler
        if message_handler is not None:
            self._message_handler_async = is_async(message_handler.handle_message)
        self._heartbeat = heartbeat

    def attach(
        self,
        pause: Callable[[], None],
        resume: Callable[[], None],
        on_heartbeat_reply: Callable[[], None],
    ) -> None:
        """Bind the inbox to a new link's flow control."""
        self._pause, self._resume = pause, resume
        self._on_heartbeat_reply = on_heartbeat_reply
        self.paused = False

    def detach(self) -> None:
        """The link is gone: stop flow control; queued messages are still dispatched."""
        self._pause = self._resume = None
        self._on_heartbeat_reply = _nothing
        self.paused = False

    # -- reader side (transport callbacks) --------------------------------------------------

    def push(self, payload: bytes, binary: bool) -> None:
        """Queue one frame's payload; pauses reading when the inbox is full."""
        items = self._items
        if self._stamp is None:
            self._stamp = time.time()
            items.append(self._stamp)
        items.append(_Binary(payload) if binary else payload)
        self._count += 1
        if not self._ready.is_set():
            self._ready.set()
            self._idle.clear()
        if self._count >= self._size and not self.paused and self._pause is not None:
            self.paused = True
            self.pauses += 1
            self._pause()

    def read_done(self) -> None:
        """One network read is delivered; the next frame gets a fresh timestamp."""
        self._stamp = None

    def __len__(self) -> int:
        return self._count

    @property
    def received(self) -> int:
        """Frames received so far (dispatched or waiting)."""
        return self.frames + self._count

    async def wait_idle(self) -> None:
        """Return once every queued message has been dispatched."""
        await self._idle.wait()

    # -- dispatcher task --------------------------------------------------------------------

    async def run(self) -> None:
        """Dispatch forever (the service cancels it at stop)."""
        ready = self._ready
        while True:
            await ready.wait()
            batch = self._items
            self._items = []
            count = self._count
            self._count = 0
            self._stamp = None
            ready.clear()
            self.frames += count
            await self._dispatch_batch(batch)
            if self.paused and self._resume is not None:
                self.paused = False
                self._resume()
            if not ready.is_set():
                self._idle.set()

    async def _dispatch_batch(self, batch: list[Any]) -> None:
        if self._ranks and len(batch) > 2:
            await self._dispatch_by_priority(batch)
            return
        decode = self._codec.decode
        stamp = 0.0
        for item in batch:
            kind = type(item)
            if kind is float:
                stamp = item
                continue
            try:
                message = decode(item, kind is _Binary, stamp)
            except DecodeError as exc:
                self.decode_errors += 1
                await self._report(exc)
                continue
            await self.dispatch(message)

    async def _dispatch_by_priority(self, batch: list[Any]) -> None:
        """Decode the whole batch, then dispatch priority types first (stable within a type)."""
        decode = self._codec.decode
        stamp = 0.0
        messages: list[Message] = []
        for item in batch:
            kind = type(item)
            if kind is float:
                stamp = item
                continue
            try:
                messages.append(decode(item, kind is _Binary, stamp))
            except DecodeError as exc:
                self.decode_errors += 1
                await self._report(exc)
        ranks = self._ranks
        last = len(ranks)
        messages.sort(key=lambda m: ranks.get(m.type, last) if m.type is not None else last)
        for message in messages:
            await self.dispatch(message)

    async def dispatch(self, message: Message) -> None:
        """Route one decoded message through plugins and handlers."""
        self.dispatched += 1
        msg_type = message.type
        heartbeat = self._heartbeat
        if heartbeat is not None and heartbeat.is_heartbeat_reply(message):
            self._on_heartbeat_reply()
            return
        intercept = self._intercept
        if intercept is not None and intercept(message):
            return
        if self._taps:
            self._tap(message)
        plugins = self._plugins
        if plugins:
            for plugin in plugins.for_type(msg_type):
                try:
                    claimed = plugin.handle_message(message)
                except Exception as exc:
                    await self._handler_failed(exc, f"plugin {plugin.name}", message)
                    continue
                if claimed is True:
                    return
        route = self._frozen_routes.get(msg_type) if msg_type is not None else None
        if route:
            await self._run(route, message)
        handler = self._message_handler
        if handler is not None:
            try:
                result = handler.handle_message(message)
                if self._message_handler_async:
                    await result
            except Exception as exc:
                await self._handler_failed(exc, type(handler).__name__, message)
        if not route and self._frozen_catch_all:
            await self._run(self._frozen_catch_all, message)

    def add_tap(self, tap: Callable[[Message], None]) -> Callable[[], None]:
        """Let ``tap`` see every message before the plugins (it cannot claim or change it).

        Returns:
            A function that removes the tap.
        """
        self._taps.append(tap)

        def remove() -> None:
            if tap in self._taps:
                self._taps.remove(tap)

        return remove

    def _tap(self, message: Message) -> None:
        for tap in list(self._taps):
            try:
                tap(message)
            except Exception as exc:
                self.handler_errors += 1
                error = HandlerError(f"tap {_name(tap)}", message)
                error.__cause__ = exc
                report = asyncio.ensure_future(self._report(error))
                self._reports.add(report)
                report.add_done_callback(self._reports.discard)

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


def _name(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", None) or type(func).__name__


def _nothing() -> None:
    return None
