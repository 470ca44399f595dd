"""The test server: lifecycle, records, waiting, sending and hooks."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from picows import WSMsgType

import bgws.testing
from bgws.testing import Connection, ReceivedMessage, Server

from ._client import connect


def test_exported_names() -> None:
    """bgws.testing exports exactly the intended public names."""
    assert set(bgws.testing.__all__) == {
        "DEFAULT_OVERSIZED_SIZE",
        "DEFAULT_TIMEOUT",
        "AckFunction",
        "AckReply",
        "ConnectHook",
        "Connection",
        "ConnectionReport",
        "Feed",
        "Handshake",
        "HandshakeHook",
        "MalformedKind",
        "MemoryPeer",
        "MemoryTransport",
        "Message",
        "MessageHook",
        "ReceivedMessage",
        "Reply",
        "Server",
        # the hostile server (tests/testing/test_hostile.py)
        "Answer",
        "Frames",
        "HostileConnection",
        "HostileServer",
        "Opcode",
        "ReceivedFrame",
        "Script",
        "Steps",
        "UpgradeRequest",
        "accept_key",
        "frame",
        # the transport conformance suite (tests/test_conformance.py)
        "RULES",
        "ConformanceReport",
        "Rule",
        "TransportFactory",
        "check_transport",
        # simulated time (tests/testing/test_virtual_clock.py)
        "VirtualClock",
    }
    for name in bgws.testing.__all__:
        assert getattr(bgws.testing, name) is not None


async def test_listens_on_loopback_random_port() -> None:
    """The server listens on 127.0.0.1 on a random port and its url points there."""
    async with Server() as server:
        assert server.is_serving
        assert server.port > 0
        assert server.url == f"ws://127.0.0.1:{server.port}/"
        async with connect(server.url):
            await server.wait_for_connections(1)
    assert not server.is_serving


async def test_port_unknown_before_start() -> None:
    """Asking for the port of a never-started random-port server is an error."""
    with pytest.raises(RuntimeError, match="start it first"):
        _ = Server().url


async def test_start_twice_is_an_error() -> None:
    """Starting a server that is already listening raises."""
    async with Server() as server:
        with pytest.raises(RuntimeError, match="already listening"):
            await server.start()


async def test_handshake_is_recorded() -> None:
    """The path, query parameters and lower-cased headers of a handshake are recorded."""
    async with Server() as server:
        url = server.url + "ws?token=abc&x=1&x=2"
        async with connect(url, extra_headers={"X-Test": "yes"}):
            (connection,) = await server.wait_for_connections(1)
        (handshake,) = server.handshakes
        assert handshake.accepted
        assert handshake.status == 101
        assert handshake.path == "/ws"
        assert handshake.target == "/ws?token=abc&x=1&x=2"
        assert handshake.query == {"token": "abc", "x": "2"}
        assert handshake.headers["x-test"] == "yes"
        assert handshake.headers["upgrade"].lower() == "websocket"
        assert connection.handshake == handshake
        assert connection.id == handshake.connection_id


async def test_messages_are_recorded() -> None:
    """Text and binary messages are recorded per connection and globally, in order."""
    async with Server() as server, connect(server.url) as client:
        client.send_text('{"type": "hello"}')
        client.transport.send(WSMsgType.BINARY, b"\x00\x01")
        first, second = await server.wait_for_messages(2)
        (connection,) = server.connections
        assert first.data == '{"type": "hello"}'
        assert first.is_text
        assert second.data == b"\x00\x01"
        assert not second.is_text
        assert first.connection_id == second.connection_id == connection.id
        assert first.timestamp <= second.timestamp
        assert connection.messages == [first, second]
        assert first.json() == {"type": "hello"}
        assert server.received_json() == [{"type": "hello"}]


async def test_fragmented_client_message_is_reassembled() -> None:
    """A message the client sends in fragments is recorded once, whole."""
    async with Server() as server, connect(server.url) as client:
        client.send_text("hel", fin=False)
        client.transport.send(WSMsgType.CONTINUATION, b"l", False)
        client.transport.send(WSMsgType.CONTINUATION, b"o", True)
        client.send_text("next")
        messages = await server.wait_for_messages(2)
        assert [m.data for m in messages] == ["hello", "next"]


async def test_received_json_rejects_non_json() -> None:
    """received_json raises when a text message is not JSON."""
    async with Server() as server, connect(server.url) as client:
        client.send_text("not json")
        await server.wait_for_messages(1)
        with pytest.raises(msgspec.DecodeError):
            server.received_json()


async def test_counters_and_disconnects() -> None:
    """Accepted, open and disconnect counters follow clients coming and going."""
    async with Server() as server:
        async with connect(server.url), connect(server.url):
            await server.wait_for_connections(2)
            assert server.connections_accepted == 2
            assert server.connections_open == 2
            assert len(server.open_connections) == 2
        closed = await server.wait_for_disconnects(2)
        assert {c.id for c in closed} == {c.id for c in server.connections}
        assert all(c.is_closed and not c.is_open for c in closed)
        assert server.connections_open == 0
        assert server.disconnects == 2
        assert server.connections_accepted == 2


async def test_wait_times_out_with_a_clear_message() -> None:
    """A wait that is not satisfied raises TimeoutError naming what it waited for."""
    async with Server() as server:
        with pytest.raises(TimeoutError, match=r"3 messages \(0 messages"):
            await server.wait_for_messages(3, timeout=0.05)
        with pytest.raises(TimeoutError, match="the answer"):
            await server.wait_until(lambda: False, timeout=0.05, what="the answer")


async def test_wait_until_is_woken_by_events() -> None:
    """wait_until returns as soon as an event makes the predicate true."""
    async with Server() as server, connect(server.url) as client:
        waiter = asyncio.create_task(
            server.wait_until(lambda: any(m.data == "go" for m in server.messages))
        )
        client.send_text("wait")
        client.send_text("go")
        await asyncio.wait_for(waiter, 2.0)
        assert [m.data for m in server.messages] == ["wait", "go"]


async def test_push_mapping_str_and_bytes() -> None:
    """push sends a mapping as a JSON text frame, str as text and bytes as binary."""
    async with Server() as server:
        assert server.push("nobody") == 0
        async with connect(server.url) as client:
            await server.wait_for_connections(1)
            assert server.push({"type": "news", "n": 1}) == 1
            assert server.push("hi") == 1
            assert server.push(b"\x01\x02") == 1
            first, second, third = await client.wait_data(3)
        assert first.msg_type == WSMsgType.TEXT
        assert msgspec.json.decode(first.payload) == {"type": "news", "n": 1}
        assert (second.msg_type, second.text) == (WSMsgType.TEXT, "hi")
        assert (third.msg_type, third.payload) == (WSMsgType.BINARY, b"\x01\x02")
        with pytest.raises(TypeError, match="expected a mapping"):
            server.push(42)  # type: ignore[arg-type]


async def test_push_reaches_every_open_connection() -> None:
    """push reaches every open connection; Connection.send only its own."""
    async with Server() as server, connect(server.url) as a, connect(server.url) as b:
        first, _ = await server.wait_for_connections(2)
        assert first.send("only-a")
        assert server.push("all") == 2
        assert [f.text for f in await a.wait_data(2)] == ["only-a", "all"]
        assert [f.text for f in await b.wait_data(1)] == ["all"]


async def test_push_fragmented() -> None:
    """push(fragments=n) sends one first frame then continuation frames, reassembling exactly."""
    text = "héllo wörld"
    async with Server() as server, connect(server.url) as client:
        await server.wait_for_connections(1)
        server.push(text, fragments=3)
        frames = await client.wait_data(3)
        assert [f.msg_type for f in frames] == [
            WSMsgType.TEXT,
            WSMsgType.CONTINUATION,
            WSMsgType.CONTINUATION,
        ]
        assert [f.fin for f in frames] == [False, False, True]
        assert b"".join(f.payload for f in frames).decode() == text
        with pytest.raises(ValueError, match="non-empty fragments"):
            server.push("ab", fragments=3)


async def test_echo() -> None:
    """echo=True sends every message back with the same type."""
    async with Server(echo=True) as server, connect(server.url) as client:
        client.send_text("ping me")
        client.transport.send(WSMsgType.BINARY, b"\xff")
        text, binary = await client.wait_data(2)
        assert (text.msg_type, text.text) == (WSMsgType.TEXT, "ping me")
        assert (binary.msg_type, binary.payload) == (WSMsgType.BINARY, b"\xff")


async def test_sync_on_message_hook_replies() -> None:
    """A plain on_message hook can answer an application ping with a pong."""

    def reply(connection: Connection, message: ReceivedMessage) -> None:
        if message.json().get("type") == "ping":
            connection.send({"type": "pong"})

    async with Server(on_message=reply) as server, connect(server.url) as client:
        client.send_text('{"type": "ping"}')
        (frame,) = await client.wait_data(1)
        assert msgspec.json.decode(frame.payload) == {"type": "pong"}


async def test_async_hooks_run_in_order() -> None:
    """Coroutine hooks of one connection run one after another, in arrival order."""
    running: list[str] = []

    async def reply(connection: Connection, message: ReceivedMessage) -> None:
        word = message.data
        assert isinstance(word, str)
        running.append(word)
        assert len(running) == 1, running
        await asyncio.sleep(0)  # yield, so overlapping hooks would show
        running.remove(word)
        connection.send(f"re:{word}")

    async with Server(on_message=reply) as server, connect(server.url) as client:
        for word in ("a", "b", "c"):
            client.send_text(word)
        frames = await client.wait_data(3)
        assert [f.text for f in frames] == ["re:a", "re:b", "re:c"]
    assert server.errors == []


async def test_on_connect_hook_greets() -> None:
    """on_connect runs once the handshake is accepted and can send a greeting."""
    seen: list[int] = []

    async def greet(connection: Connection) -> None:
        seen.append(connection.id)
        connection.send({"type": "welcome", "id": connection.id})

    async with Server(on_connect=greet) as server, connect(server.url) as client:
        (frame,) = await client.wait_data(1)
        assert msgspec.json.decode(frame.payload) == {"type": "welcome", "id": 1}
        assert seen == [1]


async def test_plain_hook_return_value_is_ignored() -> None:
    """A plain hook's non-awaitable return value (here send's bool) is ignored."""
    async with (
        Server(on_connect=lambda connection: connection.send("hi")) as server,
        connect(server.url) as client,
    ):
        (frame,) = await client.wait_data(1)
        assert frame.text == "hi"
    assert server.errors == []


async def test_hook_error_is_reraised_on_exit() -> None:
    """An exception raised by a hook is recorded and re-raised when the server exits."""

    def check(connection: Connection, message: ReceivedMessage) -> None:
        assert message.data == "expected", "bad auth message"

    async def run() -> None:
        async with Server(on_message=check) as server, connect(server.url) as client:
            client.send_text("wrong")
            await server.wait_until(lambda: bool(server.errors), what="a hook error")
            assert not client.listener.disconnected
            assert server.connections[0].is_open

    with pytest.raises(AssertionError, match="bad auth message"):
        await run()


async def test_several_hook_errors_are_grouped() -> None:
    """Several hook errors are re-raised together as an ExceptionGroup."""

    async def fail(connection: Connection, message: ReceivedMessage) -> None:
        raise ValueError(message.data)

    async def run() -> None:
        async with Server(on_message=fail) as server, connect(server.url) as client:
            client.send_text("one")
            client.send_text("two")
            await server.wait_until(lambda: len(server.errors) == 2)

    with pytest.raises(ExceptionGroup) as info:
        await run()
    assert [str(e) for e in info.value.exceptions] == ["one", "two"]


async def test_stop_cancels_running_hooks() -> None:
    """Stopping the server cancels hook coroutines that are still running."""
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def hang(connection: Connection, message: ReceivedMessage) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with Server(on_message=hang) as server, connect(server.url) as client:
        client.send_text("a")
        client.send_text("b")  # queued behind the hanging hook, never started
        await asyncio.wait_for(started.wait(), 2.0)
        await server.stop()
        assert cancelled.is_set()
    assert server.errors == []


async def test_stop_closes_connections_and_waits() -> None:
    """stop() sends 1001 to each client and returns once every socket is gone."""
    async with Server() as server, connect(server.url) as client:
        await server.wait_for_connections(1)
        await server.stop()
        assert server.connections_open == 0
        assert server.connections[0].is_closed
        await client.wait_disconnected()
        assert client.listener.close_code == 1001


async def test_invalid_arguments() -> None:
    """Bad delays, refusal statuses and close reasons are rejected."""
    server = Server()
    with pytest.raises(ValueError, match="delay"):
        server.delay = -1
    with pytest.raises(ValueError, match="400-599"):
        server.refuse_next(1, status=200)
    with pytest.raises(ValueError, match="n must be"):
        server.refuse_next(-1)
    with pytest.raises(ValueError, match="123 bytes"):
        server.close(1000, "x" * 124)
    with pytest.raises(ValueError, match="unknown malformed"):
        server.send_malformed("nonsense")  # type: ignore[arg-type]
