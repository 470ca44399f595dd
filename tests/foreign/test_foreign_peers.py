"""bgws against WebSocket servers written by others (aiohttp, tornado, Node's ws).

Every test runs for each foreign server x each bgws transport (picows and websockets), through
the public API only: a :class:`bgws.Service` built from a :class:`bgws.Config`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

import bgws

from ..conftest import Changes, Errors, fast_config
from .conftest import FRAGMENTED_BINARY, FRAGMENTED_TEXT, ForeignServer

CONNECTED = bgws.State.CONNECTED
WAIT = 5.0
"""Seconds any single wait in these tests may take."""

pytest.importorskip("websockets")


class Inbox:
    """Collects every message a service dispatches (the catch-all) and waits for a count."""

    def __init__(self, service: bgws.Service) -> None:
        self.messages: list[bgws.Message] = []
        self._changed = asyncio.Event()
        service.on()(self._add)

    def _add(self, message: bgws.Message) -> None:
        self.messages.append(message)
        self._changed.set()

    async def wait(self, count: int, msg_type: str | None = None) -> list[bgws.Message]:
        """Wait until ``count`` messages (of ``msg_type``, when given) have arrived."""
        async with asyncio.timeout(WAIT):
            while len(self.of(msg_type)) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.of(msg_type)

    def of(self, msg_type: str | None) -> list[bgws.Message]:
        """The messages of ``msg_type`` (all of them for ``None``)."""
        return [m for m in self.messages if msg_type is None or m.type == msg_type]


class Tokens(bgws.AuthHandler):
    """Hands out a bad token first, then the good one; records the refusals."""

    def __init__(self) -> None:
        self.tokens = ["Bearer bad", "Bearer good"]
        self.failures: list[str] = []

    async def get_auth_data(
        self, connection_data: Mapping[str, Any] | None = None
    ) -> Mapping[str, Any] | None:
        token = self.tokens[0] if len(self.tokens) == 1 else self.tokens.pop(0)
        return {"Authorization": token}

    async def on_auth_failure(self, error: str) -> bool:
        self.failures.append(error)
        return True


ServiceFor = Callable[..., bgws.Service]


@pytest.fixture
async def service_for(
    transport_name: str, errors: Errors
) -> AsyncIterator[Callable[..., bgws.Service]]:
    """Build services on the transport under test; every one is stopped at teardown."""
    made: list[bgws.Service] = []

    def make(url: str, **options: Any) -> bgws.Service:
        auth = options.pop("auth_handler", None)
        config = fast_config(url, transport=transport_name, **options)
        service = bgws.Service(config, error_handler=errors, auth_handler=auth)
        made.append(service)
        return service

    yield make
    for service in made:
        await service.stop()


async def test_echo_text_and_binary(foreign_server: ForeignServer, service_for: ServiceFor) -> None:
    """A JSON text message and a binary message come back from the peer unchanged."""
    service = service_for(foreign_server.url("/echo"))
    inbox = Inbox(service)
    payload = b"\x00\xff\x80binary\x00"
    async with service:
        await service.wait_for(CONNECTED, timeout=WAIT)
        msg_id = await service.send({"type": "chat", "text": "héllo ✓ \U0001f600"})
        await service.send(payload)
        text, binary = await inbox.wait(2)
    assert text.data == {"type": "chat", "text": "héllo ✓ \U0001f600", "id": msg_id}
    assert not text.is_binary
    assert binary.is_binary
    assert binary.data == payload


async def test_server_pings_are_answered(
    foreign_server: ForeignServer, service_for: ServiceFor
) -> None:
    """Pings from the peer get pongs with the same payloads, which the peer sees."""
    service = service_for(foreign_server.url("/ping?n=3"))
    inbox = Inbox(service)
    async with service:
        (report,) = await inbox.wait(1, "pongs")
    assert report.data["payloads"] == ["p0", "p1", "p2"]


async def test_fragmented_messages_reassembled(
    foreign_server: ForeignServer, service_for: ServiceFor
) -> None:
    """A text and a binary message sent in 3 fragments each arrive whole, once."""
    if not foreign_server.can_fragment:
        pytest.skip(f"{foreign_server.name}'s server API cannot send fragmented messages")
    service = service_for(foreign_server.url("/fragment"))
    inbox = Inbox(service)
    async with service:
        text, binary = await inbox.wait(2)
    assert text.data == FRAGMENTED_TEXT
    assert binary.is_binary
    assert binary.data == FRAGMENTED_BINARY
    assert len(inbox.messages) == 2


async def test_close_code_and_reason_seen_then_reconnect(
    foreign_server: ForeignServer, service_for: ServiceFor
) -> None:
    """The peer's close code and reason reach bgws as ConnectionClosed; it reconnects."""
    service = service_for(foreign_server.url("/close?code=4000&reason=going+away"))
    changes = Changes(service)
    async with service:
        await changes.wait(CONNECTED, count=2, timeout=WAIT)
    reason = changes.into(bgws.State.BACKING_OFF)[0].reason
    assert isinstance(reason, bgws.ConnectionClosed)
    assert (reason.code, reason.reason) == (4000, "going away")


async def test_subprotocol_negotiated(
    foreign_server: ForeignServer, service_for: ServiceFor
) -> None:
    """The peer sees the offered subprotocols in order; its choice is Service.subprotocol."""
    service = service_for(foreign_server.url("/subprotocol"), subprotocols=("chat.v1", "chat.v2"))
    inbox = Inbox(service)
    async with service:
        (hello,) = await inbox.wait(1, "hello")
        assert service.state is CONNECTED
        assert service.subprotocol == "chat.v2"
    assert hello.data["offered"] == ["chat.v1", "chat.v2"]
    assert hello.data["subprotocol"] == "chat.v2"


async def test_auth_rejection_then_refresh(
    foreign_server: ForeignServer, service_for: ServiceFor
) -> None:
    """A 401 from the peer is AuthRejected; the auth handler is asked again and gets in."""
    auth = Tokens()
    service = service_for(foreign_server.url("/auth"), auth_handler=auth)
    changes = Changes(service)
    inbox = Inbox(service)
    async with service:
        await inbox.wait(1, "welcome")
    refused = changes.into(bgws.State.BACKING_OFF)[0].reason
    assert isinstance(refused, bgws.AuthRejected)
    assert refused.status == 401
    assert len(auth.failures) == 1
    assert "401" in auth.failures[0]
    assert len(changes.into(CONNECTED)) == 1


async def test_acks_nothing_lost_across_forced_close(
    foreign_server: ForeignServer, service_for: ServiceFor, tmp_path: Path
) -> None:
    """Every message sent with wait_for_ack is acked, and the peer got each, across a close."""
    session = uuid.uuid4().hex
    service = service_for(
        foreign_server.url(f"/ack?session={session}&close_after=3"),
        ack=bgws.AckPolicy(message_type="ack", id_field="id"),
        storage="sqlite",
        storage_path=str(tmp_path / "outbox.db"),
    )
    changes = Changes(service)
    inbox = Inbox(service)
    async with service:
        await service.wait_for(CONNECTED, timeout=WAIT)
        sends = [service.send({"type": "order", "n": n}, wait_for_ack=True) for n in range(8)]
        ids = await asyncio.wait_for(asyncio.gather(*sends), WAIT)
        await asyncio.wait_for(service.send({"type": "report"}, wait_for_ack=True), WAIT)
        (report,) = await inbox.wait(1, "report")
        stats = service.stats
    assert len(set(ids)) == 8
    assert set(ids) <= set(report.data["ids"])
    assert (stats.queued, stats.in_flight) == (0, 0)
    closed = changes.into(bgws.State.BACKING_OFF)[0].reason
    assert isinstance(closed, bgws.ConnectionClosed)
    # 1006 too: a server that hangs up while the client is still sending may reset the TCP
    # connection, and a reset discards its close frame before the client reads it.
    assert closed.code in (1012, 1006)
    assert len(changes.into(CONNECTED)) >= 2


async def test_an_async_handler_awaits_a_request_and_a_timeout(
    foreign_server: ForeignServer, service_for: ServiceFor
) -> None:
    """An async handler (inline on picows) awaits request() (the peer's echo is the reply)
    under an asyncio.timeout; the messages after it are dispatched after it, in order."""
    service = service_for(foreign_server.url("/echo"))
    order: list[Any] = []
    done = asyncio.Event()

    async def go(message: bgws.Message) -> None:
        async with asyncio.timeout(WAIT):
            reply = await service.request({"type": "ping", "n": message.data["n"]})
        order.append((message.data["n"], reply.data["n"]))

    def after(message: bgws.Message) -> None:
        order.append("after")
        done.set()

    service.on("go")(go)
    service.on("after")(after)
    async with service:
        await service.wait_for(CONNECTED, timeout=WAIT)
        await service.send({"type": "go", "n": 1})  # echoed: the peer drives the handler
        await service.send({"type": "after"})
        await asyncio.wait_for(done.wait(), WAIT)
    assert order == [(1, 1), "after"]


async def test_a_send_rate_paces_subscriptions_then_messages(
    foreign_server: ForeignServer, service_for: ServiceFor
) -> None:
    """Nine kept subscriptions and three queued messages under send_rate [3, "0.3s"]: the peer
    echoes the subscriptions first, in order, then the messages, and no 0.3 s holds more
    than three (read from the echoes' arrival, a loopback round trip after each write)."""
    service = service_for(foreign_server.url("/echo"), send_rate=[3, "0.3s"])
    inbox = Inbox(service)
    await service.start()
    for n in range(9):
        await service.subscribe({"type": "subscribe", "n": n})
    for n in range(3):
        await service.send({"type": "order", "n": n})
    await service.connect()
    echoes = await inbox.wait(12)
    assert [m.type for m in echoes] == ["subscribe"] * 9 + ["order"] * 3
    assert [m.data["n"] for m in echoes[:9]] == list(range(9))
    times = [m.received_at for m in echoes]
    assert all(times[i + 3] - times[i] >= 0.3 - 0.05 for i in range(len(times) - 3))
