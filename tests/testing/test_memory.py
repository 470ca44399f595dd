"""bgws.testing.MemoryTransport: the in-memory twin of a transport, driven from the test."""

from __future__ import annotations

import asyncio

import pytest

import bgws
from bgws.testing import MemoryTransport, check_transport
from bgws.transport import ConnectRequest, Transport

from ..conftest import Changes, Errors, ServiceFactory

URL = "ws://127.0.0.1:9/never-contacted"


class _Sink:
    """Records what a link delivers."""

    def __init__(self) -> None:
        self.data: list[tuple[bytes, bool, bool]] = []
        self.pongs = 0
        self.closed: list[bgws.LinkError] = []
        self.got = asyncio.Event()

    def on_data(self, payload: bytes, binary: bool, last: bool) -> None:
        self.data.append((payload, binary, last))
        self.got.set()

    def on_read_done(self) -> None:
        pass

    def on_pong(self) -> None:
        self.pongs += 1
        self.got.set()

    def on_problem(self, error: bgws.BgwsError) -> None:
        raise AssertionError(f"unexpected problem {error!r}")

    def on_closed(self, error: bgws.LinkError) -> None:
        self.closed.append(error)
        self.got.set()


async def _settle() -> None:
    """Let the loop run the callbacks already scheduled (bounded: a few turns)."""
    for _ in range(3):
        await asyncio.sleep(0)


async def test_a_service_talks_to_the_test_through_memory(
    make_service: ServiceFactory,
) -> None:
    """A service sends to and receives from a MemoryPeer, with no socket at all."""
    transport = MemoryTransport()
    service = make_service(URL, transport=transport)
    got: asyncio.Future[bgws.Message] = asyncio.get_running_loop().create_future()

    @service.on("welcome")
    def welcome(message: bgws.Message) -> None:
        if not got.done():
            got.set_result(message)

    async with service:
        await service.wait_for(bgws.State.CONNECTED, timeout=2)
        peer = await transport.wait_for_peer()
        assert peer.request.url == URL
        await service.send({"type": "hello", "id": "m1"})
        await peer.wait_for_messages(1, timeout=2)
        assert peer.push({"type": "welcome", "n": 1})
        message = await asyncio.wait_for(got, 2)
    assert message.get("n") == 1
    payload, binary = peer.received[0]
    assert not binary
    assert b'"hello"' in (payload.encode() if isinstance(payload, str) else payload)
    assert peer.close_code == 1000  # the service closed cleanly at stop


async def test_a_close_with_a_code_makes_the_service_reconnect(
    make_service: ServiceFactory,
) -> None:
    """peer.close(4000) reaches the service as a lost link; it reconnects to a second peer."""
    transport = MemoryTransport()
    service = make_service(URL, transport=transport)
    changes = Changes(service)
    async with service:
        first = await transport.wait_for_peer(1, timeout=2)
        first.close(4000, "bye")
        await transport.wait_for_peer(2, timeout=2)
        await service.wait_for(bgws.State.CONNECTED, timeout=2)
    lost = [c.reason for c in changes.into(bgws.State.BACKING_OFF)]
    assert isinstance(lost[0], bgws.ConnectionClosed)
    assert (lost[0].code, lost[0].reason) == (4000, "bye")


async def test_a_refused_connect_reaches_the_machine(
    make_service: ServiceFactory, errors: Errors
) -> None:
    """refuse(AuthRejected(401)) fails the connect; without an auth handler the service fails."""
    transport = MemoryTransport()
    transport.refuse(bgws.AuthRejected(401))
    service = make_service(URL, transport=transport)
    async with service:
        with pytest.raises(bgws.ServiceClosed):
            await service.wait_for(bgws.State.CONNECTED, timeout=2)
        assert service.state is bgws.State.FAILED
    assert transport.peers == []
    assert len(transport.requests) == 1
    assert errors.of(bgws.AuthRejected)


async def test_the_link_keeps_the_rules_of_a_real_one() -> None:
    """Frames arrive later, in order; pause holds them; a ping gets a pong; close is final."""
    transport = MemoryTransport()
    sink = _Sink()
    link = await transport.connect(ConnectRequest(URL), sink)
    peer = transport.peers[0]
    peer.push("a")
    peer.push(b"b")
    assert sink.data == []  # never inside the call that caused them
    await _settle()
    assert sink.data == [(b"a", False, False), (b"b", True, True)]
    link.pause_reading()
    peer.push("held")
    await _settle()
    assert len(sink.data) == 2
    link.resume_reading()
    await _settle()
    assert sink.data[-1] == (b"held", False, True)
    link.ping()
    await _settle()
    assert (sink.pongs, peer.pings) == (1, 1)
    peer.push("late")
    link.close(4001, "done")
    assert not peer.push("later")
    await peer.wait_closed(timeout=2)
    await link.wait_closed()
    assert b"late" not in [d for d, _, _ in sink.data]  # nothing delivered once closing
    assert len(sink.closed) == 1
    assert isinstance(sink.closed[0], bgws.ConnectionClosed)
    assert sink.closed[0].code == 4001
    assert (peer.close_code, peer.close_reason) == (4001, "done")
    assert link.closed
    link.abort()
    await _settle()
    assert len(sink.closed) == 1  # on_closed exactly once


async def test_drop_is_an_abnormal_close_and_subprotocol_is_chosen() -> None:
    """drop() reports code 1006; the subprotocol is chosen only when the client offered it."""
    transport = MemoryTransport(subprotocol="b.v2")
    sink = _Sink()
    link = await transport.connect(ConnectRequest(URL, subprotocols=("a.v1", "b.v2")), sink)
    other = await transport.connect(ConnectRequest(URL), _Sink())
    assert (link.subprotocol, other.subprotocol) == ("b.v2", None)
    transport.peers[0].drop()
    await link.wait_closed()
    assert isinstance(sink.closed[0], bgws.ConnectionClosed)
    assert sink.closed[0].code == 1006


async def test_memory_transport_keeps_the_conformance_rules_that_apply() -> None:
    """check_transport's echo and ping rules hold for the in-memory link."""
    report = await check_transport(lambda: MemoryTransport(echo=True), rules=["echo", "ping"])
    assert report.passed == ("echo", "ping")


def test_aclose_is_part_of_the_transport_protocol() -> None:
    """Transport declares aclose, and every bundled transport and the twin implement it."""
    from bgws.transport._picows import PicowsTransport
    from bgws.transport._websockets import WebsocketsTransport

    assert "aclose" in Transport.__dict__
    for kind in (PicowsTransport, WebsocketsTransport, MemoryTransport):
        assert asyncio.iscoroutinefunction(kind.aclose), kind
