"""The inbox: frames from the reader to the router, now or in order behind async handlers.

While nothing waits in the inbox, the transport's read callback decodes each frame and routes
the message at once (:meth:`Inbox.route_now`): plain handlers run right there, with no queue
and no task switch; with nothing but type handlers in play, routing is one dict lookup
(:attr:`Router.direct <bgws._engine.router.Router.direct>`). Async handlers run there too,
their coroutines driven by hand: one that finishes without suspending costs no task and no
queue. One that really suspends is held, and so is every message after it
(:meth:`Inbox.enqueue`), until the inbox's task has finished it and awaited the rest in order.
Which of the two takes a frame is one strategy, swapped when the inbox starts or stops holding
messages (and fixed to ``enqueue`` when priority types need messages to pile up): the reader
calls whichever is current, with no flag to test per frame.

What the inbox holds, queued or being dispatched, is bounded in messages and bytes
(:class:`~bgws._engine.inboxload.InboxLoad` pauses the reader): memory stays bounded. No task
or future is made per message. A binary frame is decoded when queued (``data`` is the
payload, ``bytes``).
"""

from __future__ import annotations

import asyncio
import time
from asyncio import current_task
from asyncio.tasks import _enter_task, _leave_task
from collections.abc import Callable
from typing import Any

from ..errors import DecodeError
from ..message import Codec, Message
from .flag import Flag
from .inboxload import InboxLoad
from .router import Route, Router, Suspended, name_of

__all__ = ["Inbox", "Receive"]

Receive = Callable[[bytes, bool, bool], None]
"""Takes one frame from the reader: ``(payload, binary, last in its read)``."""


class Inbox:
    """Takes frames from the reader; routes them at once or holds them for its task.

    Args:
        codec: decodes payloads (its :attr:`~bgws.message.Codec.decode`, fetched once).
        router: where messages go.
        size: the bound (messages) at which reading pauses.
        max_bytes: the bound (payload bytes) at which reading pauses.
        priority_types: message types taken first from a batch, most urgent first.

    Attributes:
        load: what the inbox holds, and the reader's flow control.
        receive: the current route for a frame, :meth:`route_now` or :meth:`enqueue`; a
            change is announced to the ``switch`` callback given to :meth:`attach`.
        received: frames received so far (dispatched, failed to decode, or held).
        decode_errors: frames that failed to decode.
        last_read_at: the wall-clock time of the last network read that brought a frame.
    """

    __slots__ = (
        "_decode",
        "_direct",
        "_direct_async",
        "_driver",
        "_handoff",
        "_idle",
        "_inline",
        "_items",
        "_queued_stamp",
        "_ranks",
        "_ready",
        "_router",
        "_stamp",
        "_switch",
        "decode_errors",
        "last_read_at",
        "load",
        "receive",
        "received",
    )

    def __init__(
        self,
        codec: Codec,
        router: Router,
        size: int,
        max_bytes: int = 64 << 20,
        priority_types: tuple[str, ...] = (),
    ) -> None:
        self._decode = codec.decode
        self._router = router
        self._direct = router.direct
        self._direct_async = router.direct_async
        self.load = InboxLoad(size, max_bytes)
        # Queued: a float (the read stamp of later items), a text frame's payload (bytes),
        # (message, None, size): a binary frame, or a Suspended handler started by the reader.
        self._items: list[Any] = []
        self._stamp: float | None = None
        self._queued_stamp: float | None = None
        self._ready = Flag()
        self._idle = Flag()
        self._idle.set()
        router.notify(self._ready.set)
        self._ranks = {t: i for i, t in enumerate(priority_types)}
        self._switch: Callable[[Receive], None] = _ignore
        # Whether async handlers run in the read callback: found at a link's first async
        # handler (None until then), as asyncio.current_task() costs 0.25 us a call.
        self._inline: bool | None = None
        # The loop and the inbox's task while run() runs: an inline handler runs as that task.
        self._driver: tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]] | None = None
        # A handler that suspended in the read callback, until the inbox's task takes it.
        self._handoff: Suspended | None = None
        # Reordering by priority needs messages to pile up: then every frame is queued.
        self.receive: Receive = self.enqueue if self._ranks else self.route_now
        self.received = 0
        self.decode_errors = 0
        self.last_read_at: float | None = None

    def attach(
        self,
        pause: Callable[[], None],
        resume: Callable[[], None],
        heard: Callable[[], None],
        switch: Callable[[Receive], None],
    ) -> None:
        """Bind the inbox to a new link.

        Args:
            pause: the link's ``pause_reading``.
            resume: the link's ``resume_reading``.
            heard: called for each application heartbeat reply.
            switch: called with the new route whenever :attr:`receive` changes.
        """
        self.load.attach(pause, resume)
        self._router.attach(heard)
        self._switch = switch
        self._inline = None

    def detach(self) -> None:
        """The link is gone: stop flow control; queued messages are still dispatched."""
        self.load.detach()
        self._router.detach()
        self._switch = _ignore

    def _use(self, receive: Receive) -> None:
        self.receive = receive
        self._switch(receive)

    # -- reader side (transport callbacks) --------------------------------------------------

    def route_now(self, payload: bytes, binary: bool, last: bool) -> None:
        """Decode and route one frame in the read callback (nothing is held).

        Handlers run at once: no task switch and no queue, for a lone reply as for every
        frame of a burst (a read is bounded by the read buffer, so a burst yields to the loop
        between reads). An async handler runs until it finishes or really suspends; if it
        suspends, the rest of it (and of the message's handlers) is held, and from then on
        every frame is (:meth:`enqueue`) until the inbox's task has caught up: order is kept.

        Async handlers run here only outside any task (picows' read callback), and they run
        as the inbox's task: ``asyncio.current_task()`` in them is that task, the one that
        finishes them if they suspend, so ``asyncio.timeout`` and
        ``send(..., wait_for_ack=True)`` work in them as in a queued handler. Called from a
        task (the websockets transport's reader), their message is held for the inbox's task,
        as a suspended one is.
        """
        # The read stamp: _stamp_of's steps, written out because this is the hot path and
        # the call measured 2-3% of receive CPU (1.28 -> 1.31 us a message); the decode call
        # below already costs 3-4%, and the budget is 5%.
        stamp = self._stamp
        if stamp is None:
            stamp = self.last_read_at = time.time()  # once per read, not per frame
            if not last:
                self._stamp = stamp
        elif last:
            self._stamp = None
        self.received += 1
        try:
            message = self._decode(payload, binary, stamp)
        except DecodeError as exc:
            self.decode_errors += 1
            self._router.note(exc)
            return
        run = self._direct.get(message.type)
        if run is not None:
            try:
                run(message)
            except Exception as exc:  # a lone handler (a composed runner never raises)
                self._router.note_failure(exc, name_of(run), message)
            return
        handler = self._direct_async.get(message.type)
        inline = self._inline
        if inline is None:
            inline = self._inline = self._driver is not None and current_task() is None
        if handler is not None and inline:  # a lone async handler: drive its coroutine here
            loop, task = self._driver  # type: ignore[misc]
            try:
                _enter_task(loop, task)
            except RuntimeError:  # delivered from inside a task after all: the dispatcher runs it
                self._inline = None
                self._hold_routed(message, ((handler, True),), len(payload))
                return
            try:
                coro = handler(message)
                yielded = coro.send(None)
            except StopIteration:  # finished without suspending
                return
            except Exception as exc:
                self._router.note_failure(exc, name_of(handler), message)
                return
            finally:
                _leave_task(loop, task)
            suspended: Suspended | None = Suspended(
                self._router, handler, coro, yielded, (), message
            )
        else:
            router = self._router
            found = router.route(message)
            if found is None:
                return
            steps, all_sync = found
            if all_sync:
                router.run_plain(steps, message)
                return
            if not inline:  # called in a reader task (websockets): the inbox's task awaits it
                self._hold_routed(message, steps, len(payload))
                return
            loop, task = self._driver  # type: ignore[misc]
            try:
                _enter_task(loop, task)
            except RuntimeError:  # delivered from inside a task after all: the dispatcher runs it
                self._inline = None
                self._hold_routed(message, steps, len(payload))
                return
            try:
                suspended = router.run_inline(steps, message)
            finally:
                _leave_task(loop, task)
        if suspended is not None:  # the inbox's task finishes it; later messages wait behind
            size = suspended.size = len(payload)
            self._handoff = suspended
            self._items.append(suspended)
            self._take(size)

    def _hold_routed(self, message: Message, steps: Route, size: int) -> None:
        """Hold a routed message whose async handlers the inbox's task will await, in order."""
        self._items.append((message, steps, size))
        self._take(size)

    def frames_from_callbacks(self) -> None:
        """Frames come from the transport's read callback again (after the early frames of a
        handshake, delivered from a task): whether async handlers run inline is found anew."""
        self._inline = None

    def enqueue(self, payload: bytes, binary: bool, last: bool) -> None:
        """Hold one frame for the inbox's task (messages are held, or priority types apply).

        Reading pauses when the inbox holds ``size`` messages or ``max_bytes`` payload bytes.
        While acks or replies are awaited, an ack or a reply is taken at once, not held: a
        handler awaiting one must not wait behind itself.
        """
        stamp = self._stamp_of(last)
        self.received += 1
        router = self._router
        if router.takes_early():
            try:
                message = self._decode(payload, binary, stamp)
            except DecodeError:
                pass  # held as it came: the dispatcher reports it, in order
            else:
                if router.take_early(message):
                    return
                self._hold(stamp, (message, None, len(payload)), len(payload))
                return
        # A binary frame has nothing to decode: the same Message as on the route now.
        size = len(payload)
        self._hold(
            stamp, (self._decode(payload, True, stamp), None, size) if binary else payload, size
        )

    def _hold(self, stamp: float, item: Any, size: int) -> None:
        items = self._items
        if stamp != self._queued_stamp:
            self._queued_stamp = stamp
            items.append(stamp)
        items.append(item)
        self._take(size)

    def _stamp_of(self, last: bool) -> float:
        """The wall-clock time of the network read that brought a frame (one per read).

        :meth:`route_now` has these steps written out (see there): change both together.
        """
        stamp = self._stamp
        if stamp is None:
            stamp = self.last_read_at = time.time()
            if not last:
                self._stamp = stamp
        elif last:
            self._stamp = None
        return stamp

    def read_done(self) -> None:
        """One network read is delivered; the next frame gets a fresh timestamp."""
        self._stamp = None

    def _take(self, size: int) -> None:
        """Hold one more message (the load may pause reading) and wake the task."""
        load = self.load
        load.take(size)
        if load.count == 1:
            self._use(self.enqueue)
        if not self._ready.is_set():
            self._ready.set()
            self._idle.clear()

    def _done(self, size: int) -> None:
        """One held message is dispatched (the load may resume reading)."""
        load = self.load
        load.done(size)
        if not load.count and not self._ranks:
            self._use(self.route_now)

    def __len__(self) -> int:
        """Messages held: queued, or in the batch being dispatched."""
        return self.load.count

    @property
    def dispatched(self) -> int:
        """Messages decoded and routed so far."""
        return self.received - self.load.count - self.decode_errors

    async def wait_idle(self) -> None:
        """Return once every queued message has been dispatched."""
        await self._idle.wait()

    # -- the inbox's task -------------------------------------------------------------------

    async def run(self) -> None:
        """Dispatch forever (the service cancels it at stop).

        At the cancel, the handlers that suspended in the read callback and are still
        queued are closed (``GeneratorExit`` in them), as a task's coroutine would be.
        """
        task = current_task()
        assert task is not None  # a coroutine function's body runs in a task
        self._driver = (asyncio.get_running_loop(), task)
        try:
            await self._run()
        finally:
            self._driver = None
            self._inline = None
            _close_suspended(self._items, 0)

    def stop(self) -> None:
        """The service is about to cancel :meth:`run`: that cancel is for the inbox itself.

        Nothing runs inline from now on, and a cancel is no longer passed on to a handler
        that suspended in the read callback.
        """
        self._driver = None
        self._inline = None

    async def _run(self) -> None:
        ready = self._ready
        router = self._router
        while True:
            try:
                await ready.wait()
                if router.unreported:
                    await router.report_unreported()
                batch = self._items
                self._items = []
                self._queued_stamp = None
                ready.clear()
                await self._dispatch_batch(batch)
            except asyncio.CancelledError as exc:
                # A handler that suspended in the read callback ran as this task: a cancel
                # meant for it (its asyncio.timeout expired) can land here before this task
                # took it over. It goes to the handler, as it would had this task started it.
                handoff = self._handoff
                if handoff is None or self._driver is None:
                    raise
                handoff.cancel(exc)
                continue
            if not ready.is_set():
                self._idle.set()

    async def _dispatch_batch(self, batch: list[Any]) -> None:
        # Only what piled up behind an async handler (or for priority types) comes here: the
        # read callback routes everything else itself. Still no coroutine per message unless
        # a handler is async.
        if self._ranks and len(batch) > 2:
            await self._dispatch_by_priority(batch)
            return
        decode = self._decode
        router = self._router
        done = self._done
        stamp = 0.0
        for index, item in enumerate(batch):
            kind = type(item)
            if kind is float:
                stamp = item
                continue
            if kind is Suspended:  # started in the read callback: finish it, in order
                if item is self._handoff:
                    self._handoff = None
                try:
                    await item
                except BaseException:
                    _close_suspended(batch, index + 1)
                    raise
                finally:
                    done(item.size)
                if router.unreported:
                    await router.report_unreported()
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
                    found = router.route(message)
                    if router.unreported:
                        await router.report_unreported()
                    if found is None:
                        continue
                    steps, all_sync = found
                else:  # routed by the reader; an async handler still to run
                    all_sync = False
                if all_sync:
                    router.run_plain(steps, message)  # its failures are reported just below
                else:
                    await router.run(steps, message)
                if router.unreported:
                    await router.report_unreported()
            except BaseException:
                _close_suspended(batch, index + 1)
                raise
            finally:
                done(size)

    async def _decode_failed(self, error: DecodeError) -> None:
        self.decode_errors += 1
        await self._router.report(error)

    async def _dispatch_by_priority(self, batch: list[Any]) -> None:
        """Decode the whole batch, then dispatch priority types first (stable within a type)."""
        decode = self._decode
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
                await self._router.dispatch(message)
            finally:
                self._done(size)


def _close_suspended(items: list[Any], start: int) -> None:
    """Close the suspended handlers in ``items[start:]``: they will never be finished."""
    for item in items[start:]:
        if type(item) is Suspended:
            item.close()


def _ignore(receive: Receive) -> None:
    return None
