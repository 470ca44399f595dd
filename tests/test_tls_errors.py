"""TLS failures read as one clear line naming the reason, on both transports."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

import bgws
from bgws.machine import classify_error
from bgws.testing import Server
from bgws.transport import ConnectRequest, Transport

from .testing.test_hostile import _Sink

pytest.importorskip("websockets")

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for the name "localhost" (not for 127.0.0.1)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


@asynccontextmanager
async def _tcp_server(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """A raw loopback server; yields its port."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def _read_then_hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        await reader.read(65536)
    writer.close()


async def _answer_400(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(10)  # a TLS hello where an HTTP request should be: a plain server says 400
    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    writer.close()


async def _hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(10)
    writer.transport.abort()


async def _connect_error(
    transport: Transport, url: str, context: ssl.SSLContext, timeout: float = 2.0
) -> bgws.LinkError:
    request = ConnectRequest(url, ssl_context=context, timeout=timeout)
    with pytest.raises(bgws.LinkError) as info:
        await transport.connect(request, _Sink())
    return info.value


async def test_self_signed_certificate_named(
    transport: Transport, certificate: tuple[Path, Path]
) -> None:
    """An untrusted certificate fails with the verifier's reason, and is fatal."""
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(*certificate)
    async with _tcp_server(_read_then_hold, tls) as port:
        url = f"wss://localhost:{port}/"
        error = await _connect_error(transport, url, ssl.create_default_context())
    assert str(error) == "TLS certificate check failed: self-signed certificate"
    assert classify_error(error) == "fatal"


async def test_ip_address_mismatch_named(
    transport: Transport, certificate: tuple[Path, Path]
) -> None:
    """A trusted certificate for another name fails with "IP address mismatch"."""
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(*certificate)
    trusting = ssl.create_default_context(cafile=str(certificate[0]))
    async with _tcp_server(_read_then_hold, tls) as port:
        error = await _connect_error(transport, f"wss://127.0.0.1:{port}/", trusting)
    assert "TLS certificate check failed: IP address mismatch" in str(error)


@pytest.mark.parametrize("handler", [_answer_400, _hang_up], ids=["answers-400", "hangs-up"])
async def test_wss_to_a_plain_port_is_one_clear_line(
    transport: Transport, handler: Handler, caplog: pytest.LogCaptureFixture
) -> None:
    """wss:// to a server that does not speak TLS: one line asking about ws://, no traceback."""
    async with _tcp_server(handler) as port:
        error = await _connect_error(
            transport, f"wss://127.0.0.1:{port}/", ssl.create_default_context()
        )
    assert str(error).startswith("TLS handshake failed")
    assert "is this a ws:// port?" in str(error)
    # aiofastnet logged "SSL handshake failed" through the loop with an exception class,
    # which logging cannot format ("--- Logging error ---").
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


async def test_wss_to_a_silent_websocket_server_hints_at_ws(transport: Transport) -> None:
    """wss:// to a WebSocket server that waits for HTTP times out with the ws:// hint."""
    async with Server() as server:
        url = server.url.replace("ws://", "wss://")
        error = await _connect_error(transport, url, ssl.create_default_context(), timeout=0.3)
    assert isinstance(error, bgws.ConnectTimeout)
    assert "is this a ws:// port?" in str(error)
