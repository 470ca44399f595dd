"""The incoming path: decoding, dispatch order, plugins, and bad input that never kills it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import bgws
from bgws.testing import Server

from .conftest import Changes, Errors, ServiceFactory


class Collect:
    """A handler that records messages and wakes the test when it has enough."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = asyncio.Event()

    def __call__(self, message: bgws.Message) -> None:
        self.items.append(message)
        self._changed.set()

    async def wait(self, count: int, timeout: float = 5.0) -> list[Any]:
        async with asyncio.timeout(timeout):
            while len(self.items) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.items


async def connected(service: bgws.Service) -> None:
    await service.wait_for(bgws.State.CONNECTED, timeout=5)


async def test_message_fields(bgws_server: Server, make_service: ServiceFactory) -> None:
    """A JSON message carries type, id, data, raw and received_at."""
    got = Collect()
    service = make_service(bgws_server.url)
    service.on("chat")(got)
    async with service:
        await connected(service)
        bgws_server.push({"type": "chat", "id": 7, "text": "héllo"})
        (message,) = await got.wait(1)
    assert (message.type, message.id) == ("chat", 7)
    assert message.data == {"type": "chat", "id": 7, "text": "héllo"}
    assert message.get("text") == "héllo"
    assert message.raw == '{"type":"chat","id":7,"text":"héllo"}'
    assert not message.is_binary
    assert message.received_at > 0


async def test_dispatch_order_and_plugin_claims(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """Plugins first (a claim stops the message), then type handlers, class handler, catch-all."""
    order: list[str] = []
    done = asyncio.Event()

    class Claimer(bgws.Plugin):
        plugin_name = "claimer"
        supported_message_types = ("secret",)

        def handle_message(self, message: bgws.Message) -> bool:
            order.append(f"plugin:{message.type}")
            return True

    class Watcher(bgws.Plugin):
        supported_message_types = ("*",)

        def handle_message(self, message: bgws.Message) -> bool:
            order.append(f"watch:{message.type}")
            return False

    class Handler(bgws.MessageHandler):
        async def handle_message(self, message: bgws.Message) -> None:
            order.append(f"class:{message.type}")
            if message.type == "end":
                done.set()

    service = make_service(
        bgws_server.url, message_handler=Handler(), plugins=[Watcher(), Claimer()]
    )
    service.on("chat")(lambda m: order.append("typed:chat"))

    @service.on("chat")
    async def second(message: bgws.Message) -> None:
        order.append("typed2:chat")

    service.on()(lambda m: order.append(f"any:{m.type}"))
    async with service:
        await connected(service)
        for kind in ("secret", "chat", "other", "end"):
            bgws_server.push({"type": kind})
        await asyncio.wait_for(done.wait(), 5)
    assert order == [
        "watch:secret",
        "plugin:secret",
        "watch:chat",
        "typed:chat",
        "typed2:chat",
        "class:chat",
        "watch:other",
        "class:other",
        "any:other",
        "watch:end",
        "class:end",
        "any:end",
    ]


async def test_raising_handler_and_plugin_leave_the_service_running(
    bgws_server: Server, make_service: ServiceFactory, errors: Errors
) -> None:
    """Exceptions in handlers and plugins are reported and counted; later messages still flow."""

    class Broken(bgws.Plugin):
        supported_message_types = ("boom",)

        def handle_message(self, message: bgws.Message) -> bool:
            raise ValueError("plugin bug")

    got = Collect()
    service = make_service(bgws_server.url, plugins=[Broken()])

    @service.on("boom")
    def explode(message: bgws.Message) -> None:
        raise RuntimeError("handler bug")

    service.on("ok")(got)
    async with service:
        await connected(service)
        bgws_server.push({"type": "boom"})
        bgws_server.push({"type": "ok"})
        await got.wait(1)
        reported = await errors.wait_for(bgws.HandlerError, count=2)
        assert service.state is bgws.State.CONNECTED
    causes = [type(e.__cause__) for e in reported]
    assert causes == [ValueError, RuntimeError]
    assert "explode" in str(reported[1])
    assert reported[1].message.type == "boom"  # type: ignore[attr-defined]
    assert service.stats.handler_errors == 2
    assert bgws_server.connections_accepted == 1


# Invalid UTF-8 in a text frame is a protocol violation (1007), not a decode error: see
# tests/test_rfc6455.py.
@pytest.mark.parametrize("kind", ["invalid_json"])
async def test_undecodable_frames_are_reported(
    bgws_server: Server, make_service: ServiceFactory, errors: Errors, kind: Any
) -> None:
    """A frame the codec cannot decode is reported; the link and later messages survive."""
    got = Collect()
    service = make_service(bgws_server.url)
    service.on("ok")(got)
    async with service:
        await connected(service)
        bgws_server.send_malformed(kind)
        bgws_server.push({"type": "ok"})
        await got.wait(1)
        (error,) = await errors.wait_for(bgws.DecodeError)
    assert error.raw  # type: ignore[attr-defined]
    assert service.stats.decode_errors == 1
    assert bgws_server.connections_accepted == 1


async def test_protocol_violation_reconnects(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """A frame with a reserved opcode fails the link (1002), and the service reconnects."""
    service = make_service(bgws_server.url)
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
        bgws_server.send_malformed("reserved_opcode")
        lost = await changes.wait(bgws.State.BACKING_OFF)
        assert isinstance(lost.reason, bgws.ConnectionClosed)
        assert lost.reason.code == 1002
        await changes.wait(bgws.State.CONNECTED, count=2)


async def test_oversized_message_is_reported_and_link_recovers(
    bgws_server: Server, make_service: ServiceFactory, errors: Errors
) -> None:
    """A frame over max_message_size closes the link with 1009, is reported, and reconnects."""
    service = make_service(bgws_server.url, max_message_size=1024)
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
        bgws_server.send_malformed("oversized", size=4096)
        await errors.wait_for(bgws.MessageTooBig)
        await changes.wait(bgws.State.CONNECTED, count=2)
    assert changes.into(bgws.State.BACKING_OFF)[0].reason.code == 1009  # type: ignore[union-attr]


async def test_fragmented_messages_are_reassembled(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """A message split over continuation frames arrives whole."""
    got = Collect()
    service = make_service(bgws_server.url)
    service.on("big")(got)
    async with service:
        await connected(service)
        bgws_server.push({"type": "big", "text": "y" * 5000}, fragments=7)
        (message,) = await got.wait(1)
    assert message.data["text"] == "y" * 5000


async def test_fragmented_message_over_the_limit(
    bgws_server: Server, make_service: ServiceFactory, errors: Errors
) -> None:
    """Fragments adding up past max_message_size are refused like one big frame."""
    service = make_service(bgws_server.url, max_message_size=2000)
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
        bgws_server.push({"type": "big", "text": "z" * 5000}, fragments=5)
        (error,) = await errors.wait_for(bgws.MessageTooBig)
        assert "fragmented" in str(error)
        await changes.wait(bgws.State.CONNECTED, count=2)


async def test_binary_frames_and_non_object_json(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """Binary frames arrive as bytes; JSON that is not an object has no type."""
    got = Collect()
    service = make_service(bgws_server.url)
    service.on()(got)
    async with service:
        await connected(service)
        bgws_server.push(b"\x01\x02")
        bgws_server.push("[1, 2]")
        first, second = await got.wait(2)
    assert (first.type, first.data, first.raw, first.is_binary) == (
        None,
        b"\x01\x02",
        b"\x01\x02",
        True,
    )
    assert (second.type, second.data) == (None, [1, 2])


async def test_raw_codec(bgws_server: Server, make_service: ServiceFactory) -> None:
    """codec="raw" delivers text as str without decoding JSON."""
    got = Collect()
    service = make_service(bgws_server.url, codec="raw")
    service.on()(got)
    async with service:
        await connected(service)
        bgws_server.push("not json at all")
        (message,) = await got.wait(1)
    assert (message.type, message.data, message.raw) == (None, "not json at all", "not json at all")


async def test_custom_type_field(bgws_server: Server, make_service: ServiceFactory) -> None:
    """The type comes from the configured field."""
    got = Collect()
    service = make_service(bgws_server.url, type_field="event")
    service.on("quote")(got)
    async with service:
        await connected(service)
        bgws_server.push({"event": "quote", "px": 1.5})
        (message,) = await got.wait(1)
    assert message.data["px"] == 1.5


async def test_many_messages_keep_their_order(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """A burst of pushes is dispatched completely and in order."""
    got = Collect()
    service = make_service(bgws_server.url, inbox_size=16)
    service.on("tick")(got)
    async with service:
        await connected(service)
        for n in range(5000):
            bgws_server.push({"type": "tick", "n": n})
        await got.wait(5000, timeout=20)
    assert [m.data["n"] for m in got.items] == list(range(5000))
    assert service.stats.received == service.stats.dispatched == 5000


async def test_taps_see_every_message_and_can_be_removed(
    bgws_server: Server, make_service: ServiceFactory, errors: Errors
) -> None:
    """A tap sees each message before plugins, including claimed ones; a raising tap is reported."""

    class Claim(bgws.Plugin):
        supported_message_types = ("a",)

        def handle_message(self, message: bgws.Message) -> bool:
            return True

    tapped: list[str | None] = []
    got = Collect()
    service = make_service(bgws_server.url, plugins=[Claim()])
    service.on("end")(got)
    remove = service.tap(lambda m: tapped.append(m.type))

    def broken(message: bgws.Message) -> None:
        raise RuntimeError("tap bug")

    remove_broken = service.tap(broken)
    async with service:
        await connected(service)
        bgws_server.push({"type": "a"})
        bgws_server.push({"type": "end"})
        await got.wait(1)
        remove()
        remove_broken()
        bgws_server.push({"type": "end"})
        await got.wait(2)
        await errors.wait_for(bgws.HandlerError, count=2)
    assert tapped == ["a", "end"]


async def test_counts_are_exact_with_async_handlers(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """received and dispatched count each message once, however it was dispatched."""
    first, done = asyncio.Event(), asyncio.Event()
    seen: list[int] = []
    service = make_service(bgws_server.url)

    @service.on("n")
    async def slow(message: bgws.Message) -> None:
        await asyncio.sleep(0)  # a real await: the handler is async, not just declared so
        seen.append(message.data["n"])
        first.set()
        if len(seen) == 50:
            done.set()

    async with service:
        await connected(service)
        bgws_server.push({"type": "n", "n": 0})  # alone in its read: routed in the callback
        await asyncio.wait_for(first.wait(), 5)
        for n in range(1, 50):  # a burst: through the inbox
            bgws_server.push({"type": "n", "n": n})
        await asyncio.wait_for(done.wait(), 5)
        stats = service.stats
    assert seen == list(range(50))
    assert stats.received == stats.dispatched == 50


async def test_sync_and_async_handlers_share_one_order(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """Plain handlers run in the read callback, async ones in the dispatcher: one order still.

    Once an async handler's message is waiting, every later message queues behind it.
    """
    order: list[int] = []
    done = asyncio.Event()
    service = make_service(bgws_server.url)

    def record(message: bgws.Message) -> None:
        order.append(message.data["n"])
        if len(order) == 300:
            done.set()

    @service.on("slow")
    async def slow(message: bgws.Message) -> None:
        await asyncio.sleep(0)
        record(message)

    service.on("fast")(record)
    async with service:
        await connected(service)
        for n in range(300):
            bgws_server.push({"type": "slow" if n % 7 == 3 else "fast", "n": n})
        await asyncio.wait_for(done.wait(), 10)
        stats = service.stats
    assert order == list(range(300))
    assert stats.received == stats.dispatched == 300


async def test_a_tap_added_while_running_sees_the_next_messages(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """Routing by one lookup stops as soon as a tap is added, and resumes when it is removed."""
    got = Collect()
    tapped: list[int] = []
    service = make_service(bgws_server.url)
    service.on("n")(got)
    async with service:
        await connected(service)
        bgws_server.push({"type": "n", "n": 0})
        await got.wait(1)
        remove = service.tap(lambda m: tapped.append(m.data["n"]))
        bgws_server.push({"type": "n", "n": 1})
        await got.wait(2)
        remove()
        bgws_server.push({"type": "n", "n": 2})
        await got.wait(3)
    assert tapped == [1]
    assert [m.data["n"] for m in got.items] == [0, 1, 2]
