"""The test server's fault injection, observed from a real client on the wire."""

from __future__ import annotations

import time

import msgspec
import picows
import pytest
from picows import WSMsgType

from bgws.testing import Handshake, Server

from ._client import connect

NEVER = 0.2
"""Seconds a test waits for something that must not happen."""


async def test_drop_aborts_without_close_frame() -> None:
    """drop() ends the client connection abruptly, with no CLOSE frame."""
    async with Server() as server, connect(server.url) as client:
        await server.wait_for_connections(1)
        assert server.drop() == 1
        await client.wait_disconnected()
        assert client.frames_of(WSMsgType.CLOSE) == []
        assert client.transport.close_handshake is None
        (closed,) = await server.wait_for_disconnects(1)
        assert closed.close_code is None
        assert server.drop() == 0


async def test_drop_discards_queued_frames() -> None:
    """Frames still delayed when drop() is called are never sent."""
    async with Server(delay=10) as server, connect(server.url) as client:
        await server.wait_for_connections(1)
        server.push("late")
        server.drop()
        await client.wait_disconnected()
        assert client.frames == []


async def test_close_sends_code_and_reason() -> None:
    """close(code, reason) performs a close handshake with that code and reason."""
    async with Server() as server, connect(server.url) as client:
        await server.wait_for_connections(1)
        assert server.close(4001, "bye") == 1
        await client.wait_disconnected()
        assert len(client.frames_of(WSMsgType.CLOSE)) == 1
        assert (client.listener.close_code, client.listener.close_reason) == (4001, "bye")
        (closed,) = await server.wait_for_disconnects(1)
        assert closed.close_code == 4001  # the client echoed it
        assert server.push("too late") == 0


async def test_unanswered_close_is_aborted() -> None:
    """A client that never answers the server's CLOSE is aborted after close_timeout."""
    async with Server(close_timeout=0.05) as server, connect(server.url) as client:
        await server.wait_for_connections(1)
        client.transport.underlying_transport.pause_reading()  # never sees the CLOSE
        server.close(1000)
        (closed,) = await server.wait_for_disconnects(1, timeout=2)
        assert closed.close_code is None


async def test_client_close_is_answered() -> None:
    """A CLOSE from the client is answered with the same code and the socket closed."""
    async with Server() as server, connect(server.url) as client:
        await server.wait_for_connections(1)
        client.transport.send_close(picows.WSCloseCode.GOING_AWAY, b"leaving")
        (closed,) = await server.wait_for_disconnects(1)
        assert (closed.close_code, closed.close_reason) == (1001, "leaving")
        await client.wait_until(lambda: bool(client.frames_of(WSMsgType.CLOSE)))
        (frame,) = client.frames_of(WSMsgType.CLOSE)
        assert int.from_bytes(frame.payload[:2], "big") == 1001


async def test_protocol_violation_by_client_is_closed_1002() -> None:
    """A continuation frame with no message to continue is closed with 1002."""
    async with Server() as server, connect(server.url) as client:
        client.transport.send(WSMsgType.CONTINUATION, b"orphan", True)
        await client.wait_disconnected()
        assert client.listener.close_code == 1002


async def test_refuse_next_answers_with_status() -> None:
    """refuse_next(n, status) makes the next n handshakes fail with that HTTP status."""
    async with Server() as server:
        server.refuse_next(2, status=401)
        for _ in range(2):
            with pytest.raises(picows.WSInvalidStatusError) as info:
                async with connect(server.url):
                    pass
            assert info.value.response.status == 401
        async with connect(server.url):
            await server.wait_for_connections(1)
        assert [h.status for h in server.handshakes] == [401, 401, 101]
        assert [h.accepted for h in server.handshakes] == [False, False, True]
        assert server.connections_accepted == 1
        assert server.connections[0].id == 3


async def test_on_handshake_refuses_bad_credentials() -> None:
    """on_handshake can refuse a handshake by its headers or query, e.g. with 403."""

    def check(handshake: Handshake) -> int | None:
        return None if handshake.headers.get("authorization") == "Bearer good" else 403

    async with Server(on_handshake=check) as server:
        with pytest.raises(picows.WSInvalidStatusError) as info:
            async with connect(server.url, extra_headers={"Authorization": "Bearer old"}):
                pass
        assert info.value.response.status == 403
        async with connect(server.url, extra_headers={"Authorization": "Bearer good"}):
            await server.wait_for_connections(1)


async def test_raising_on_handshake_answers_500() -> None:
    """An on_handshake hook that raises (or returns a bad status) gets a 500 and is recorded."""
    async with Server(on_handshake=lambda handshake: 200) as server:
        with pytest.raises(picows.WSInvalidStatusError) as info:
            async with connect(server.url):
                pass
        assert info.value.response.status == 500
        assert "on_handshake returned 200" in str(server.errors[0])
        server.errors.clear()


async def test_stall_leaves_pings_unanswered_until_unstall() -> None:
    """stall() freezes the link: no pong, nothing read, nothing sent, until unstall()."""
    async with Server() as server, connect(server.url) as client:
        (connection,) = await server.wait_for_connections(1)
        assert server.stall() == 1
        assert connection.is_stalled
        client.transport.send_ping(b"are you there")
        client.send_text("hello?")
        assert server.push("held") == 1
        with pytest.raises(TimeoutError):
            await client.wait_until(lambda: bool(client.frames), timeout=NEVER)
        assert server.messages == []

        assert server.unstall() == 1
        await client.wait_until(lambda: bool(client.frames_of(WSMsgType.PONG)))
        assert client.frames_of(WSMsgType.PONG)[0].payload == b"are you there"
        assert [f.text for f in await client.wait_data(1)] == ["held"]
        assert [m.data for m in await server.wait_for_messages(1)] == ["hello?"]


async def test_stall_is_detected_by_client_keepalive() -> None:
    """A client with keepalive pings gives up on a stalled link and disconnects."""
    async with Server() as server:
        options = {
            "enable_auto_ping": True,
            "auto_ping_idle_timeout": 0.1,
            "auto_ping_reply_timeout": 0.1,
        }
        async with connect(server.url, **options) as client:
            await server.wait_for_connections(1)
            server.stall()
            await client.wait_disconnected()
            assert client.transport.close_handshake.sent.code == 1001


async def test_stall_new_connections() -> None:
    """stall(new_connections=True) also freezes links accepted afterwards."""
    async with Server() as server:
        assert server.stall(new_connections=True) == 0
        async with connect(server.url) as client:
            (connection,) = await server.wait_for_connections(1)
            assert connection.is_stalled
            client.transport.send_ping(b"1")
            with pytest.raises(TimeoutError):
                await client.wait_until(lambda: bool(client.frames), timeout=NEVER)
            server.unstall()
            await client.wait_until(lambda: bool(client.frames_of(WSMsgType.PONG)))
        async with connect(server.url):
            (_, second) = await server.wait_for_connections(2)
            assert not second.is_stalled


async def test_delay_postpones_frames_and_keeps_order() -> None:
    """delay holds each outgoing frame that long; a later frame never overtakes it."""
    async with Server(echo=True) as server, connect(server.url) as client:
        await server.wait_for_connections(1)
        server.delay = 0.15
        started = time.monotonic()
        server.push("slow")
        server.delay = 0
        client.send_text("echoed")
        first, second = await client.wait_data(2)
        assert time.monotonic() - started >= 0.15
        assert [first.text, second.text] == ["slow", "echoed"]


async def test_delay_applies_to_pongs() -> None:
    """With a delay the pong comes late too, as on a slow link."""
    async with Server(delay=0.1) as server, connect(server.url) as client:
        await server.wait_for_connections(1)
        started = time.monotonic()
        rtt = await client.transport.measure_roundtrip_time(1)
        assert rtt[0] >= 0.1
        assert time.monotonic() - started >= 0.1


async def test_malformed_invalid_json() -> None:
    """send_malformed("invalid_json") sends a UTF-8 text frame that is not JSON."""
    async with Server() as server, connect(server.url) as client:
        await server.wait_for_connections(1)
        assert server.send_malformed("invalid_json") == 1
        (frame,) = await client.wait_data(1)
        assert frame.msg_type == WSMsgType.TEXT
        frame.payload.decode()
        with pytest.raises(msgspec.DecodeError):
            msgspec.json.decode(frame.payload)


async def test_malformed_invalid_utf8() -> None:
    """send_malformed("invalid_utf8") sends a text frame whose payload is not UTF-8."""
    async with Server() as server, connect(server.url) as client:
        await server.wait_for_connections(1)
        server.send_malformed("invalid_utf8")
        (frame,) = await client.wait_data(1)
        assert frame.msg_type == WSMsgType.TEXT
        with pytest.raises(UnicodeDecodeError):
            frame.payload.decode()


@pytest.mark.parametrize("size", [100, 70_000])
async def test_malformed_oversized(size: int) -> None:
    """send_malformed("oversized", size=n) sends one valid JSON text frame of exactly n bytes."""
    async with Server() as server, connect(server.url) as client:
        await server.wait_for_connections(1)
        server.send_malformed("oversized", size=size)
        (frame,) = await client.wait_data(1)
        assert len(frame.payload) == size
        assert msgspec.json.decode(frame.payload)["type"] == "oversized"


async def test_malformed_oversized_trips_client_limit() -> None:
    """An oversized frame makes a client with a smaller limit close with 1009."""
    async with Server() as server, connect(server.url, max_frame_size=1024) as client:
        (connection,) = await server.wait_for_connections(1)
        server.send_malformed("oversized", size=2048)
        await client.wait_disconnected()
        assert client.transport.close_handshake.sent.code == 1009
        await server.wait_for_disconnects(1)
        assert connection.close_code == 1009


async def test_malformed_reserved_opcode() -> None:
    """send_malformed("reserved_opcode") makes a conforming client fail with 1002."""
    async with Server() as server, connect(server.url) as client:
        (connection,) = await server.wait_for_connections(1)
        server.send_malformed("reserved_opcode")
        await client.wait_disconnected()
        with pytest.raises(picows.WSProtocolError):
            await client.transport.wait_disconnected()
        await server.wait_for_disconnects(1)
        assert connection.close_code == 1002


async def test_restart_drops_and_keeps_port() -> None:
    """restart() drops every client without a CLOSE frame and listens on the same port."""
    async with Server() as server:
        port = server.port
        async with connect(server.url) as client:
            await server.wait_for_connections(1)
            await server.restart()
            await client.wait_disconnected()
            assert client.frames_of(WSMsgType.CLOSE) == []
        assert server.is_serving
        assert server.port == port
        async with connect(f"ws://127.0.0.1:{port}/"):
            await server.wait_for_connections(2)
        assert server.connections_accepted == 2


async def test_stop_then_start_keeps_port() -> None:
    """While stopped nobody can connect; start() listens again on the same port."""
    async with Server() as server:
        port = server.port
        await server.stop()
        assert not server.is_serving
        with pytest.raises(ConnectionRefusedError):
            async with connect(server.url):
                pass
        await server.start()
        assert server.port == port
        async with connect(server.url):
            await server.wait_for_connections(1)


async def test_explicit_port() -> None:
    """Server(port=N) listens on port N."""
    async with Server() as first:
        port = first.port
    async with Server(port=port) as server:
        assert server.url == f"ws://127.0.0.1:{port}/"
        async with connect(server.url):
            await server.wait_for_connections(1)
