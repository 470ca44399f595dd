"""An async handler run inline (in picows' read callback) sees the same asyncio as a queued one.

It runs as the service's dispatcher task, the task that finishes it if it suspends: so
``asyncio.current_task()``, ``asyncio.timeout`` (which cancels the current task) and
``send(..., wait_for_ack=True)`` behave in it exactly as they do when the task runs it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import bgws
from bgws.errors import BgwsError
from bgws.testing import Connection, ReceivedMessage, Server
from bgws.transport import Transport
from bgws.transport._websockets import WebsocketsTransport

from .conftest import Errors, ServiceFactory
from .test_inbox import bare_inbox

pytest.importorskip("websockets")


@pytest.mark.parametrize("waits_on", ["nothing", "future", "sleep0", "event"])
async def test_asyncio_timeout_in_an_async_handler(
    bgws_server: Server,
    make_service: ServiceFactory,
    transport: Transport,
    errors: Errors,
    waits_on: str,
) -> None:
    """asyncio.timeout works in an async handler: a deadline that expires while it waits
    (on a future, a bare yield or an Event, even before the dispatcher task took it over)
    is a TimeoutError in the handler; later messages are dispatched in order, and the
    dispatcher task survives."""
    service = make_service(bgws_server.url, transport=transport)
    loop = asyncio.get_running_loop()
    outcomes: list[tuple[int, str]] = []
    done = asyncio.Event()

    async def timed(message: bgws.Message) -> None:
        n = message.data["n"]
        assert asyncio.current_task() is service._dispatch_task
        deadline = 0 if n % 2 else 5  # odd: already expired; even: far away
        try:
            async with asyncio.timeout(deadline):
                if waits_on == "future":
                    future: asyncio.Future[None] = loop.create_future()
                    if deadline:
                        loop.call_soon(future.set_result, None)
                    await future
                elif waits_on == "sleep0":
                    for _ in range(10_000):  # bounded: the expired deadline ends it at once
                        await asyncio.sleep(0)
                        if deadline:
                            break
                elif waits_on == "event":
                    event = asyncio.Event()
                    if deadline:
                        loop.call_soon(event.set)
                    await event.wait()
            outcomes.append((n, "done"))
        except TimeoutError:
            outcomes.append((n, "timeout"))
        if n == 5:
            done.set()

    service.on("timed")(timed)
    async with service:
        await service.wait_for(bgws.State.CONNECTED, timeout=5)
        for n in range(6):
            bgws_server.push({"type": "timed", "n": n})
        await asyncio.wait_for(done.wait(), timeout=5)
        dispatcher = service._dispatch_task
        assert dispatcher is not None
        assert not dispatcher.done()
        assert dispatcher.cancelling() == 0
    expired = "done" if waits_on == "nothing" else "timeout"  # nothing awaited: no expiry
    assert outcomes == [(n, expired if n % 2 else "done") for n in range(6)]
    assert errors.seen == []
    if waits_on == "nothing" and not isinstance(transport, WebsocketsTransport):
        assert service._inbox.load.peak == 0  # all ran in the read callback


ACK = bgws.AckPolicy(message_type="ack", id_field="id")


def acker(connection: Connection, message: ReceivedMessage) -> None:
    """Ack every message that carries an id."""
    msg_id = message.json().get("id")
    if msg_id is not None:
        connection.send({"type": "ack", "id": msg_id})


async def test_send_wait_for_ack_and_request_in_an_async_handler(
    make_service: ServiceFactory, transport: Transport, errors: Errors
) -> None:
    """An async handler can await send(wait_for_ack=True) and request(): both finish with
    the server's answer, and the messages after it are dispatched after it, in order."""

    def on_message(connection: Connection, message: ReceivedMessage) -> None:
        acker(connection, message)
        data = message.json()
        if data.get("type") == "ping":
            connection.send({"type": "pong", "reply_to": data["id"]})

    order: list[Any] = []
    done = asyncio.Event()
    async with Server(on_message=on_message) as server:
        service = make_service(server.url, transport=transport, ack=ACK, reply_id_field="reply_to")

        async def go(message: bgws.Message) -> None:
            msg_id = await service.send({"type": "order"}, wait_for_ack=True, timeout=3)
            reply = await service.request({"type": "ping"}, timeout=3)
            order.append((message.data["n"], msg_id is not None, reply.type))

        def after(message: bgws.Message) -> None:
            order.append("after")
            done.set()

        service.on("go")(go)
        service.on("after")(after)
        async with service:
            await service.wait_for(bgws.State.CONNECTED, timeout=5)
            server.push({"type": "go", "n": 1})
            server.push({"type": "after"})
            await asyncio.wait_for(done.wait(), timeout=5)
    assert errors.seen == []
    assert order == [(1, True, "pong"), "after"]


async def test_a_frame_delivered_from_a_task_is_dispatched_not_driven_inline() -> None:
    """Once async handlers run inline, a frame handed over from inside a task (as a
    handshake's early frames are) goes to the dispatcher instead of raising, in order; frames
    from the read callback then run inline again."""
    reports: list[BgwsError] = []
    seen: list[tuple[int, bool]] = []  # (n, held when it ran)

    async def handle(message: bgws.Message) -> None:
        seen.append((message.data["n"], inbox.load.count > 0))

    inbox = bare_inbox(handle, reports)
    dispatcher = asyncio.create_task(inbox.run())
    loop = asyncio.get_running_loop()

    async def feed_from_a_task(n: int) -> None:
        inbox.receive(b'{"type":"t","n":%d}' % n, False, True)

    def feed_from_a_callback(n: int, done: asyncio.Future[None]) -> None:
        inbox.receive(b'{"type":"t","n":%d}' % n, False, True)
        done.set_result(None)

    try:
        first: asyncio.Future[None] = loop.create_future()
        loop.call_soon(feed_from_a_callback, 1, first)  # learns: inline
        await asyncio.wait_for(first, timeout=5)
        await asyncio.wait_for(asyncio.create_task(feed_from_a_task(2)), timeout=5)
        await asyncio.wait_for(inbox.wait_idle(), timeout=5)
        inbox.frames_from_callbacks()
        third: asyncio.Future[None] = loop.create_future()
        loop.call_soon(feed_from_a_callback, 3, third)
        await asyncio.wait_for(third, timeout=5)
    finally:
        dispatcher.cancel()
        await asyncio.gather(dispatcher, return_exceptions=True)
    assert reports == []
    assert seen == [(1, False), (2, True), (3, False)]
