"""The hostile server: raw frames, scripted answers per attempt, and what the client sent back."""

from __future__ import annotations

import asyncio
import struct

import pytest

from bgws.errors import BgwsError, LinkError
from bgws.testing import (
    Answer,
    Frames,
    HostileConnection,
    HostileServer,
    Opcode,
    Steps,
    accept_key,
    frame,
)
from bgws.testing._wire import FrameParser
from bgws.transport import ConnectRequest, Link, Transport
from bgws.transport._picows import PicowsTransport

pytest.importorskip("websockets")

WAIT = 2.0


class _Sink:
    """Records what a link delivers."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.changed = asyncio.Event()
        self.closed: asyncio.Future[LinkError] = asyncio.get_running_loop().create_future()

    def on_data(self, payload: bytes, binary: bool, last: bool) -> None:
        self.data.append(payload)
        self.changed.set()

    def on_read_done(self) -> None:
        pass

    def on_pong(self) -> None:
        pass

    def on_problem(self, error: BgwsError) -> None:
        pass

    def on_closed(self, error: LinkError) -> None:
        if not self.closed.done():
            self.closed.set_result(error)


async def _connect(transport: Transport, url: str, sink: _Sink, **kwargs: object) -> Link:
    request = ConnectRequest(url, timeout=WAIT, **kwargs)  # type: ignore[arg-type]
    return await transport.connect(request, sink)


def test_frame_header_forms() -> None:
    """frame() writes 7-bit, 16-bit and 64-bit lengths, reserved bits and any declared length."""
    assert frame(Opcode.TEXT, "hi") == b"\x81\x02hi"
    assert frame(Opcode.BINARY, b"x" * 200)[:4] == b"\x82\x7e\x00\xc8"
    assert frame(Opcode.BINARY, b"", length=1 << 20)[:2] == b"\x82\x7f"
    assert frame(Opcode.BINARY, b"", length=(1 << 63) - 1)[2:] == struct.pack("!Q", (1 << 63) - 1)
    assert frame(0x3, b"", fin=False, rsv1=True, rsv2=True, rsv3=True)[0] == 0x73
    assert frame(Opcode.BINARY, length=1 << 63)[2] == 0x80  # the MSB RFC 6455 reserves


def test_frame_refuses_impossible_fields() -> None:
    """frame() raises ValueError for an opcode, length or mask that cannot be encoded."""
    with pytest.raises(ValueError, match="opcode"):
        frame(16)
    with pytest.raises(ValueError, match="length"):
        frame(Opcode.TEXT, length=1 << 64)
    with pytest.raises(ValueError, match="mask"):
        frame(Opcode.TEXT, b"x", mask=b"abc")


def test_parser_unmasks_and_splits() -> None:
    """FrameParser reassembles frames split anywhere and unmasks them."""
    data = frame(Opcode.TEXT, "hello", mask=b"\x01\x02\x03\x04") + Frames.close(1002, "bad")
    parser = FrameParser()
    got = [f for i in range(len(data)) for f in parser.feed(data[i : i + 1])]
    assert [(f.opcode, f.payload, f.masked) for f in got[:1]] == [(Opcode.TEXT, b"hello", True)]
    assert (got[1].close_code, got[1].close_reason) == (1002, "bad")
    with pytest.raises(ValueError, match="declares"):
        FrameParser(max_size=10).feed(frame(Opcode.BINARY, b"x" * 11))


def test_accept_key_matches_rfc_example() -> None:
    """accept_key() gives the RFC 6455 section 1.3 example answer."""
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_answer_encodes_redirects_and_refusals() -> None:
    """A redirect carries Location and Content-Length; an unknown status still has a phrase."""
    from bgws.testing import UpgradeRequest

    request = UpgradeRequest("GET", "/", ())
    raw = Answer.redirect("ws://127.0.0.1:1/x", status=308).encode(request)
    assert raw.startswith(b"HTTP/1.1 308 Permanent Redirect\r\n")
    assert b"Location: ws://127.0.0.1:1/x\r\n" in raw
    assert b"Content-Length: 0" in raw
    assert Answer.refuse(599, b"no").encode(request).endswith(b"\r\n\r\nno")


async def test_records_request_and_client_close(transport: Transport) -> None:
    """The server records the upgrade request, and reads the client's masked close frame."""
    async with HostileServer() as server:
        sink = _Sink()
        link = await _connect(transport, server.url + "path?q=1", sink, headers=[("X-T", "1")])
        link.close(4001, "bye")
        assert await server.wait_for_close_code(timeout=WAIT) == 4001
        await asyncio.wait_for(sink.closed, WAIT)
    connection = server.connections[0]
    assert connection.request.path == "/path?q=1"
    assert connection.request.header("x-t") == "1"
    assert connection.close_frame is not None
    assert connection.close_frame.masked


async def test_scripts_per_attempt_and_raw_frames(transport: Transport) -> None:
    """The first attempt gets the first script (a 500), the next the second (a 101 and data)."""
    first = Steps(answer=Answer.refuse(500))
    second = Steps(send=[Frames.text("one"), Frames.binary(b"\x00two")])
    async with HostileServer([first, second]) as server:
        with pytest.raises(BgwsError):
            await _connect(transport, server.url, _Sink())
        sink = _Sink()
        link = await _connect(transport, server.url, sink)
        async with asyncio.timeout(WAIT):
            while len(sink.data) < 2:
                sink.changed.clear()
                await sink.changed.wait()
        link.close()
        assert await server.wait_for_close_code(attempt=1, timeout=WAIT) == 1000
    assert sink.data == [b"one", b"\x00two"]
    assert server.connections[0].answer_sent == Answer.refuse(500)


async def test_invalid_frame_gets_a_1002(transport: Transport) -> None:
    """A reserved opcode makes the client fail the link with 1002, seen by the server."""
    async with HostileServer(Steps(send=[Frames.unknown_opcode()])) as server:
        sink = _Sink()
        await _connect(transport, server.url, sink)
        assert await server.wait_for_close_code(timeout=WAIT) == 1002
        await asyncio.wait_for(sink.closed, WAIT)
    assert server.connections[0].data_frames == []


async def test_script_errors_reraised_at_exit() -> None:
    """An exception in a script is recorded and re-raised when leaving async with."""

    async def broken(connection: HostileConnection) -> None:
        connection.answer(Answer.refuse(503))
        await connection.drain()
        raise RuntimeError("script bug")

    server = HostileServer(broken)
    await server.start()
    with pytest.raises(BgwsError):
        await _connect(PicowsTransport(), server.url, _Sink())
    assert len(server.errors) == 1  # raised before the client read the answer
    with pytest.raises(RuntimeError, match="script bug"):
        await server.__aexit__(None, None, None)


def test_needs_a_script() -> None:
    """An empty list of scripts is refused."""
    with pytest.raises(ValueError, match="script"):
        HostileServer([])
