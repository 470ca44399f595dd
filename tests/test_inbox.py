"""The inbox: bounded in messages and in bytes; a binary frame's data is bytes on every route;
frames go straight to the router or queue behind async handlers, by one swapped route."""

from __future__ import annotations

import asyncio
import contextvars
import time
from typing import Any

import pytest

import bgws
from bgws._engine.inbox import Inbox
from bgws._engine.router import Router
from bgws.errors import BgwsError
from bgws.message import Codec
from bgws.plugins import PluginChain
from bgws.testing import Server
from bgws.transport import Transport
from bgws.transport._websockets import WebsocketsTransport

from .conftest import Errors, ServiceFactory

pytest.importorskip("websockets")


BIG = 16 * 1024
"""The payload size of each message the bound tests push."""
PAD = "x" * BIG


class SlowConsumer:
    """An async handler that yields to the loop many times per message (slow work), and
    samples what the inbox holds each time it wakes (the reader runs only while it yields)."""

    def __init__(self, service: bgws.Service, total: int) -> None:
        self.service = service
        self.total = total
        self.handled = 0
        self.most_held = 0
        self.done = asyncio.Event()

    async def __call__(self, message: bgws.Message) -> None:
        for _ in range(30):
            held = self.service.stats.received - self.handled  # this one included
            self.most_held = max(self.most_held, held)
            await asyncio.sleep(0)
        self.handled += 1
        if self.handled == self.total:
            self.done.set()


async def run_flood(
    server: Server, make_service: ServiceFactory, transport: Transport, total: int, **options: Any
) -> tuple[bgws.Service, SlowConsumer]:
    """Push ``total`` messages of ``BIG`` bytes at a slow consumer; return once all are handled."""
    service = make_service(server.url, transport=transport, **options)
    consumer = SlowConsumer(service, total)
    service.on("big")(consumer)
    async with service:
        await service.wait_for(bgws.State.CONNECTED, timeout=5)
        for n in range(total):
            server.push({"type": "big", "n": n, "pad": PAD})
        await asyncio.wait_for(consumer.done.wait(), timeout=10)
    return service, consumer


async def test_inbox_holds_at_most_inbox_size_messages(
    bgws_server: Server, make_service: ServiceFactory, transport: Transport
) -> None:
    """Messages held (queued + being dispatched) never exceed inbox_size + the messages that
    the read crossing the bound still delivers (none with websockets)."""
    service, consumer = await run_flood(bgws_server, make_service, transport, 120, inbox_size=8)
    inbox = service._inbox.load
    assert inbox.pauses >= 1
    assert consumer.most_held <= inbox.peak <= 8 + inbox.late
    if isinstance(transport, WebsocketsTransport):
        assert inbox.late == 0  # its reader stops before the next message
    assert consumer.handled == 120
    assert inbox.count == inbox.held == 0


async def test_inbox_holds_at_most_inbox_max_bytes(
    bgws_server: Server, make_service: ServiceFactory, transport: Transport
) -> None:
    """Payload bytes held never exceed inbox_max_bytes + one message + what the read crossing
    the bound still delivers (none with websockets)."""
    size = len(b'{"type":"big","n":100,"pad":""}') + BIG  # the largest message pushed
    limit = 6 * BIG
    service, consumer = await run_flood(
        bgws_server, make_service, transport, 120, inbox_max_bytes=limit
    )
    inbox = service._inbox.load
    assert inbox.pauses >= 1
    assert consumer.most_held * (size - 3) <= inbox.peak_bytes
    assert inbox.peak_bytes < limit + size + inbox.late * size
    if isinstance(transport, WebsocketsTransport):
        assert inbox.late == 0
    assert consumer.handled == 120


ROUTES = ["fast", "queued", "priority"]


@pytest.mark.parametrize("route", ROUTES)
async def test_binary_data_is_bytes_on_every_route(
    bgws_server: Server, make_service: ServiceFactory, transport: Transport, route: str
) -> None:
    """Handlers, the class handler, plugins, catch-alls and taps get ``bytes`` for a binary
    frame, whether it is routed in the read callback, queued, or reordered by priority."""
    seen: dict[str, set[type]] = {}
    count = 40
    done = asyncio.Event()

    def note(where: str, message: bgws.Message) -> None:
        seen.setdefault(where, set()).add(type(message.data))

    class Watch(bgws.Plugin):
        supported_message_types = ("*",)

        def handle_message(self, message: bgws.Message) -> bool:
            note("plugin", message)
            return False

    if route == "queued":  # an async handler that suspends: the stream queues behind it

        class Handler(bgws.MessageHandler):
            async def handle_message(self, message: bgws.Message) -> None:
                note("class", message)
                await asyncio.sleep(0)

        async def catch_all(message: bgws.Message) -> None:
            note("catch-all", message)
            await asyncio.sleep(0)
            if message.data == b"end":
                done.set()

    else:

        class Handler(bgws.MessageHandler):  # type: ignore[no-redef]
            def handle_message(self, message: bgws.Message) -> None:
                note("class", message)

        def catch_all(message: bgws.Message) -> None:  # type: ignore[misc]
            note("catch-all", message)
            if message.data == b"end":
                done.set()

    options: dict[str, Any] = {"priority_types": ("urgent",)} if route == "priority" else {}
    service = make_service(
        bgws_server.url,
        transport=transport,
        plugins=[Watch()],
        message_handler=Handler(),
        **options,
    )
    service.on()(catch_all)
    service.tap(lambda message: note("tap", message))
    async with service:
        await service.wait_for(bgws.State.CONNECTED, timeout=5)
        for n in range(count):
            bgws_server.push(bytes([n]) * 100)
        bgws_server.push(b"end")
        await asyncio.wait_for(done.wait(), timeout=5)
    assert seen == {where: {bytes} for where in ("plugin", "class", "catch-all", "tap")}


@pytest.mark.parametrize(
    "payload", [bytearray(b"\x00\x01"), type("Sub", (bytes,), {})(b"\x00\x01")]
)
def test_codec_gives_plain_bytes_for_any_binary_payload(payload: bytes) -> None:
    """A transport handing over a bytearray or a bytes subclass still yields ``bytes`` data."""
    for kind in ("json", "raw"):
        message = Codec(kind).decode(payload, True, 0.0)
        assert type(message.data) is bytes
        assert message.data == b"\x00\x01"
        assert message.raw == b"\x00\x01"


async def test_the_route_swaps_while_an_async_handler_holds_the_inbox(
    bgws_server: Server, make_service: ServiceFactory, transport: Transport
) -> None:
    """Frames go straight to the router while nothing is held; behind a suspended async
    handler they are queued in order; once the inbox empties they go straight again."""
    service = make_service(bgws_server.url, transport=transport)
    inbox = service._inbox
    order: list[str] = []
    started = asyncio.Event()
    release = asyncio.Event()
    done = asyncio.Event()

    async def slow(message: bgws.Message) -> None:
        order.append("slow")
        started.set()
        await release.wait()

    def fast(message: bgws.Message) -> None:
        order.append(f"fast {message.data['n']}")
        if message.data["n"] == 3:
            done.set()

    service.on("slow")(slow)
    service.on("fast")(fast)
    async with service:
        await service.wait_for(bgws.State.CONNECTED, timeout=5)
        assert inbox.receive == inbox.route_now
        bgws_server.push({"type": "fast", "n": 0})
        bgws_server.push({"type": "slow"})
        for n in (1, 2):
            bgws_server.push({"type": "fast", "n": n})
        await asyncio.wait_for(started.wait(), timeout=5)
        assert inbox.receive == inbox.enqueue  # held: every frame queues behind it
        release.set()
        bgws_server.push({"type": "fast", "n": 3})
        await asyncio.wait_for(done.wait(), timeout=5)
        await asyncio.wait_for(inbox.wait_idle(), timeout=5)
        assert inbox.receive == inbox.route_now
        assert len(inbox) == 0
        stats = service.stats
    assert order == ["fast 0", "slow", "fast 1", "fast 2", "fast 3"]
    assert stats.received == stats.dispatched == 5


@pytest.mark.parametrize("route", ["route_now", "enqueue"])
async def test_frames_of_one_read_share_its_time_on_both_routes(route: str) -> None:
    """Every message of one network read gets the read's time as ``received_at``, and the
    next read a time of its own, whether frames are routed at once or queued."""
    seen: list[bgws.Message] = []

    async def report(error: BgwsError) -> None:
        raise AssertionError(f"unexpected report: {error!r}")

    router = Router(report)
    router.add_route("t", seen.append)
    router.configure(plugins=PluginChain(()), message_handler=None, heartbeat=None)
    priority = ("urgent",) if route == "enqueue" else ()  # priority types: every frame queues
    inbox = Inbox(Codec(), router, 100, priority_types=priority)
    assert inbox.receive == getattr(inbox, route)
    task = asyncio.create_task(inbox.run())
    try:
        before = time.time()
        for n, last in enumerate([False, False, True, True], 1):
            inbox.receive(b'{"type":"t","n":%d}' % n, False, last)
        after = time.time()
        await asyncio.wait_for(inbox.wait_idle(), timeout=5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [m.data["n"] for m in seen] == [1, 2, 3, 4]
    first, second = {m.received_at for m in seen[:3]}, seen[3].received_at
    assert len(first) == 1
    assert before <= min(first) <= second <= after


# -- async handlers run inline until they really suspend --------------------------------------

TRACE: contextvars.ContextVar[str] = contextvars.ContextVar("TRACE", default="unset")


async def test_an_async_handler_that_does_not_suspend_runs_inline(
    bgws_server: Server, make_service: ServiceFactory, transport: Transport
) -> None:
    """An async handler that finishes without awaiting runs in picows' read callback, in
    order with plain handlers, as the dispatcher task, and nothing is ever held; with
    websockets (frames come from its reader task) the dispatcher task awaits it, in order."""
    service = make_service(bgws_server.url, transport=transport)
    order: list[int] = []
    tasks: set[asyncio.Task[Any] | None] = set()
    done = asyncio.Event()

    async def quick(message: bgws.Message) -> None:
        order.append(message.data["n"])
        tasks.add(asyncio.current_task())

    def plain(message: bgws.Message) -> None:
        order.append(message.data["n"])
        if message.data["n"] == 99:
            done.set()

    service.on("quick")(quick)
    service.on("plain")(plain)
    async with service:
        await service.wait_for(bgws.State.CONNECTED, timeout=5)
        for n in range(100):
            bgws_server.push({"type": "quick" if n % 3 else "plain", "n": n})
        await asyncio.wait_for(done.wait(), timeout=5)
        dispatcher = service._dispatch_task
        stats = service.stats
    assert order == list(range(100))
    if isinstance(transport, WebsocketsTransport):
        assert tasks == {dispatcher}
        assert service._inbox.load.peak > 0
    else:
        assert tasks == {dispatcher}
        assert service._inbox.load.peak == 0  # no message was ever queued
    assert stats.received == stats.dispatched == 100


async def test_suspending_async_handlers_keep_one_order_and_report_failures(
    bgws_server: Server, make_service: ServiceFactory, transport: Transport, errors: Errors
) -> None:
    """Handlers that await a future, sleep(0) or an Event, or raise before or after
    suspending: each starts in the read callback, is finished by the dispatcher task (its
    context variables kept), every later message waits behind it, and failures are reported
    (with websockets, whose reader is a task, the dispatcher task runs them all)."""
    service = make_service(bgws_server.url, transport=transport)
    loop = asyncio.get_running_loop()
    order: list[str] = []
    where: list[tuple[str, bool, bool]] = []  # (kind, started inline, finished held)
    done = asyncio.Event()

    async def varied(message: bgws.Message) -> None:
        kind = message.data["kind"]
        assert asyncio.current_task() is service._dispatch_task
        started = service._inbox.load.count == 0  # nothing held: run in the read callback
        TRACE.set(kind)
        if kind == "raise_before":
            raise ValueError("before")
        if kind == "future":
            future: asyncio.Future[int] = loop.create_future()
            loop.call_soon(future.set_result, 1)
            assert await future == 1
        elif kind == "sleep":
            await asyncio.sleep(0)
        elif kind == "event":
            event = asyncio.Event()
            loop.call_soon(event.set)
            await event.wait()
        elif kind == "raise_after":
            await asyncio.sleep(0)
            raise ValueError("after")
        assert TRACE.get() == kind
        assert asyncio.current_task() is service._dispatch_task
        where.append((kind, started, service._inbox.load.count > 0))
        order.append(kind)

    def plain(message: bgws.Message) -> None:
        order.append(f"plain {message.data['n']}")
        if message.data["n"] == 6:
            done.set()

    service.on("varied")(varied)
    service.on("plain")(plain)
    kinds = ["inline", "future", "sleep", "event", "raise_before", "raise_after"]
    async with service:
        await service.wait_for(bgws.State.CONNECTED, timeout=5)
        for n, kind in enumerate(kinds):
            bgws_server.push({"type": "plain", "n": n})
            bgws_server.push({"type": "varied", "kind": kind})
        bgws_server.push({"type": "plain", "n": 6})
        await asyncio.wait_for(done.wait(), timeout=5)
        failures = await errors.wait_for(bgws.HandlerError, 2)
        stats = service.stats
    expected: list[str] = []
    for n, kind in enumerate(kinds):
        expected.append(f"plain {n}")
        if not kind.startswith("raise"):
            expected.append(kind)
    assert order == [*expected, "plain 6"]
    assert [str(e.__cause__) for e in failures] == ["before", "after"]
    if isinstance(transport, WebsocketsTransport):  # its reader is a task: none run inline
        assert all(not started and finished for _, started, finished in where)
        return
    # Begun in the read callback (later ones too, unless they arrive while one is held).
    assert [started for _, started, _ in where[:2]] == [True, True]
    assert [finished for _, _, finished in where] == [False, True, True, True]
    assert stats.received == stats.dispatched == 13


@pytest.mark.parametrize("waits_on", ["event", "sleep0", "timeout"])
async def test_a_suspended_handler_is_cancelled_at_stop(
    bgws_server: Server, make_service: ServiceFactory, transport: Transport, waits_on: str
) -> None:
    """Stopping while an async handler is suspended (on a future, in a sleep(0) loop, so the
    cancel is thrown in, or under an asyncio.timeout, which must not turn the stop's cancel
    into a TimeoutError) cancels it; the service stops cleanly."""
    service = make_service(bgws_server.url, transport=transport, close_timeout=0.05)
    started = asyncio.Event()
    seen: list[str] = []

    async def stuck(message: bgws.Message) -> None:
        started.set()
        try:
            if waits_on == "event":
                await asyncio.Event().wait()
            if waits_on == "timeout":
                async with asyncio.timeout(30):
                    await asyncio.Event().wait()
            for _ in range(1_000_000):  # bounded; the stop cancels it within close_timeout
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        except TimeoutError:
            seen.append("timeout")

    service.on("stuck")(stuck)
    async with service:
        await service.wait_for(bgws.State.CONNECTED, timeout=5)
        bgws_server.push({"type": "stuck"})
        await asyncio.wait_for(started.wait(), timeout=5)
    assert seen == ["cancelled"]
    assert service.state is bgws.State.CLOSED


def bare_inbox(handler: Any, reports: list[BgwsError]) -> Inbox:
    """An inbox routing type ``"t"`` to ``handler``, errors into ``reports``; no service."""

    async def report(error: BgwsError) -> None:
        reports.append(error)

    router = Router(report)
    router.add_route("t", handler)
    router.configure(plugins=PluginChain(()), message_handler=None, heartbeat=None)
    return Inbox(Codec(), router, 100)


async def test_a_handler_suspended_in_the_read_callback_is_closed_if_never_finished() -> None:
    """An async handler started in the read callback and queued is closed when the inbox's
    task is cancelled before it gets to finish it (no coroutine is left dangling)."""
    seen: list[str] = []
    reports: list[BgwsError] = []

    async def stuck(message: bgws.Message) -> None:
        seen.append("started")
        try:
            await asyncio.Event().wait()
        finally:
            seen.append("closed")

    inbox = bare_inbox(stuck, reports)
    task = asyncio.create_task(inbox.run())
    loop = asyncio.get_running_loop()
    fed = asyncio.Event()

    def feed() -> None:  # as a transport's read callback does, outside any task
        inbox.receive(b'{"type":"t"}', False, True)
        task.cancel()  # before the task ever runs
        fed.set()

    loop.call_soon(feed)
    await asyncio.wait_for(fed.wait(), timeout=5)
    await asyncio.gather(task, return_exceptions=True)
    assert seen == ["started", "closed"]
    assert reports == []


async def test_async_handler_failures_inline_and_after_suspending_are_reported_in_order() -> None:
    """A lone async handler that raises in the read callback (before suspending) or in the
    task (after) is reported as a HandlerError each time, in the order of its messages."""
    reports: list[BgwsError] = []
    raised_in: list[bool] = []  # whether each raised while held (not in the read callback)

    async def flaky(message: bgws.Message) -> None:
        if message.data["n"] % 2:
            await asyncio.sleep(0)
        assert asyncio.current_task() is task
        raised_in.append(inbox.load.count > 0)
        raise ValueError(message.data["n"])

    inbox = bare_inbox(flaky, reports)
    task = asyncio.create_task(inbox.run())
    loop = asyncio.get_running_loop()
    fed = asyncio.Event()

    def feed() -> None:  # as a transport's read callback does, outside any task
        for n in (0, 2, 1, 4):
            inbox.receive(b'{"type":"t","n":%d}' % n, False, n == 4)
        fed.set()

    try:
        loop.call_soon(feed)
        await asyncio.wait_for(fed.wait(), timeout=5)
        await asyncio.wait_for(inbox.wait_idle(), timeout=5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert all(isinstance(e, bgws.HandlerError) for e in reports)
    assert [e.__cause__.args for e in reports] == [(0,), (2,), (1,), (4,)]  # type: ignore[union-attr]
    assert inbox._router.handler_errors == 4
    assert raised_in == [False, False, True, True]
