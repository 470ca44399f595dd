"""The same behaviour through every transport behind the seam (picows and websockets)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import bgws
from bgws.testing import Server
from bgws.transport import Transport

from .conftest import MS, Changes, Errors, ServiceFactory

pytest.importorskip("websockets")


async def test_send_receive_and_headers(
    bgws_server: Server, make_service: ServiceFactory, transport: Transport
) -> None:
    """Messages flow both ways; headers and subprotocols reach the server."""
    got: list[Any] = []
    done = asyncio.Event()
    service = make_service(
        bgws_server.url,
        transport=transport,
        headers={"X-Client": "bgws"},
        subprotocols=("chat.v1",),
    )

    @service.on("pong")
    def pong(message: bgws.Message) -> None:
        got.append(message.data)
        done.set()

    async with service:
        await service.wait_for(bgws.State.CONNECTED, timeout=5)
        await service.send({"type": "ping", "n": 1})
        await service.send(b"\x00\x01")
        await bgws_server.wait_for_messages(2)
        bgws_server.push({"type": "pong", "n": 2})
        await asyncio.wait_for(done.wait(), 5)
    handshake = bgws_server.handshakes[0]
    assert handshake.headers["x-client"] == "bgws"
    assert "chat.v1" in handshake.headers["sec-websocket-protocol"]
    assert bgws_server.messages[0].json()["n"] == 1
    assert bgws_server.messages[1].data == b"\x00\x01"
    assert got == [{"type": "pong", "n": 2}]


async def test_reconnect_and_offline_queue(
    bgws_server: Server, make_service: ServiceFactory, transport: Transport
) -> None:
    """After a drop the service reconnects and flushes what was queued, in order."""
    service = make_service(bgws_server.url, transport=transport)
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
        await bgws_server.stop(graceful=False)
        await changes.wait(bgws.State.BACKING_OFF)
        for n in range(20):
            await service.send({"n": n})
        await bgws_server.start()
        await bgws_server.wait_for_messages(20)
    assert [m["n"] for m in bgws_server.received_json()] == list(range(20))


async def test_fragmented_and_binary_messages(
    bgws_server: Server, make_service: ServiceFactory, transport: Transport
) -> None:
    """Fragmented messages are reassembled; binary frames arrive as bytes."""
    got: list[bgws.Message] = []
    done = asyncio.Event()
    service = make_service(bgws_server.url, transport=transport)

    @service.on()
    def record(message: bgws.Message) -> None:
        got.append(message)
        if len(got) == 2:
            done.set()

    async with service:
        await service.wait_for(bgws.State.CONNECTED, timeout=5)
        bgws_server.push({"type": "big", "text": "q" * 3000}, fragments=4)
        bgws_server.push(b"\xff\x00")
        await asyncio.wait_for(done.wait(), 5)
    assert got[0].data["text"] == "q" * 3000
    assert (got[1].data, got[1].is_binary) == (b"\xff\x00", True)


async def test_auth_refusal_and_dead_link(
    bgws_server: Server, make_service: ServiceFactory, transport: Transport
) -> None:
    """A 401 is an auth refusal; a stalled server is a dead link within the bound."""
    bgws_server.refuse_next(1, status=401)
    service = make_service(
        bgws_server.url,
        transport=transport,
        heartbeat_interval=100 * MS,
        ping_timeout=100 * MS,
        auth_handler=bgws.BearerAuth(lambda: "t0k3n-abc", refresh=lambda: None),
    )
    changes = Changes(service)
    async with service:
        first = await changes.wait(bgws.State.BACKING_OFF)
        assert isinstance(first.reason, bgws.AuthRejected)
        assert first.reason.status == 401
        await changes.wait(bgws.State.CONNECTED)
        bgws_server.stall()
        lost = await changes.wait(bgws.State.BACKING_OFF, count=2, timeout=3)
        assert isinstance(lost.reason, bgws.DeadLink)
        assert lost.at - changes.into(bgws.State.CONNECTED)[0].at < 2


async def test_oversized_message(
    bgws_server: Server, make_service: ServiceFactory, errors: Errors, transport: Transport
) -> None:
    """A message over max_message_size is reported; the link closes with 1009 and recovers."""
    service = make_service(bgws_server.url, transport=transport, max_message_size=1024)
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
        bgws_server.send_malformed("oversized", size=4096)
        await errors.wait_for(bgws.MessageTooBig)
        await changes.wait(bgws.State.CONNECTED, count=2)
    lost = changes.into(bgws.State.BACKING_OFF)[0].reason
    assert isinstance(lost, bgws.ConnectionClosed)
    assert lost.code == 1009


async def test_close_code_from_server(
    bgws_server: Server, make_service: ServiceFactory, transport: Transport
) -> None:
    """The server's close code and reason reach the state change."""
    service = make_service(bgws_server.url, transport=transport)
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
        bgws_server.close(4002, "maintenance")
        lost = await changes.wait(bgws.State.BACKING_OFF)
    assert isinstance(lost.reason, bgws.ConnectionClosed)
    assert (lost.reason.code, lost.reason.reason) == (4002, "maintenance")
