"""Foreign WebSocket servers (aiohttp, tornado, Node's ``ws``) as real subprocesses on loopback.

Each server is a small script of ours in ``servers/`` on top of a library not written in this
repo. It listens on 127.0.0.1 on a free port and prints that port on stdout; the fixture reads
it with a timeout. One process per server serves the whole session and is killed at teardown.
Every server offers the same behaviours, picked by the request path:

=====================================  =====================================================
``/echo``                              echo every message, text as text, binary as binary
``/ping?n=N``                          send N pings with payloads ``p0``...; report the pongs
                                       seen as ``{"type": "pongs", "payloads": [...]}``
``/fragment``                          send :data:`FRAGMENTED_TEXT` and
                                       :data:`FRAGMENTED_BINARY`, each in 3 fragments cut at
                                       fixed byte offsets (not aiohttp: it cannot fragment)
``/close?code=C&reason=R``             close at once with that code and reason
``/subprotocol``                       accept only ``chat.v2``; send ``{"type": "hello",
                                       "subprotocol": chosen, "offered": [...]}``
``/auth``                              HTTP 401 unless ``Authorization: Bearer good``, then
                                       ``{"type": "welcome"}``
``/ack?session=S&close_after=K``       reply ``{"type": "ack", "id": id}`` to each message;
                                       the session's first connection closes with 1012 on its
                                       K-th message, unacked; ``{"type": "report"}`` returns
                                       ``{"type": "report", "ids": [every id seen in S]}``
=====================================  =====================================================
"""

from __future__ import annotations

import dataclasses
import os
import selectors
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = [
    "FRAGMENTED_BINARY",
    "FRAGMENTED_TEXT",
    "SERVER_NAMES",
    "TRANSPORT_NAMES",
    "ForeignServer",
]

SERVERS_DIR = Path(__file__).parent / "servers"
SERVER_NAMES = ("aiohttp", "tornado", "node-ws")
TRANSPORT_NAMES = ("picows", "websockets")
START_TIMEOUT = 15.0
"""Seconds a server has to print its port (a cold Python import of aiohttp can take a few)."""

FRAGMENTED_TEXT = {"type": "fragmented", "text": "ünïcödé ✓ " * 40}
"""The JSON message ``/fragment`` sends as a fragmented text message."""
FRAGMENTED_BINARY = bytes(range(256)) * 4
"""The bytes ``/fragment`` sends as a fragmented binary message."""


@dataclasses.dataclass(frozen=True)
class ForeignServer:
    """A running foreign server: its name and the base URL (``ws://127.0.0.1:<port>``)."""

    name: str
    base_url: str
    can_fragment: bool

    def url(self, path: str) -> str:
        """The URL of one behaviour, such as ``/echo`` or ``/close?code=4000``."""
        return self.base_url + path


def _command(name: str) -> list[str]:
    """The command line that starts server ``name``, or a skip when its runtime is missing."""
    if name == "aiohttp":
        return [sys.executable, str(SERVERS_DIR / "aiohttp_server.py")]
    if name == "tornado":
        return [sys.executable, str(SERVERS_DIR / "tornado_server.py")]
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the Node ws server cannot run")
    if not (SERVERS_DIR / "node_modules" / "ws").is_dir():
        pytest.fail(
            f"Node's ws package is missing in {SERVERS_DIR}; `make test` installs it "
            "(npm install --no-package-lock in that folder)"
        )
    return [node, str(SERVERS_DIR / "ws_server.js")]


def _read_port(process: subprocess.Popen[bytes], log: Path, name: str) -> int:
    """Read the port line the server prints, waiting at most :data:`START_TIMEOUT`."""
    assert process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    line = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                break
            chunk = os.read(process.stdout.fileno(), 64)
            if not chunk:
                break
            line += chunk
    if not line.strip().isdigit():
        process.kill()
        process.wait(5)
        raise RuntimeError(
            f"the {name} server did not print its port in {START_TIMEOUT:g}s: "
            f"{line!r}; its stderr: {log.read_text(errors='replace')[-2000:]}"
        )
    return int(line)


@pytest.fixture(scope="session", params=SERVER_NAMES)
def foreign_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ForeignServer]:
    """One foreign server process, started once for the session and killed at teardown."""
    name: str = request.param
    command = _command(name)
    log = tmp_path_factory.mktemp("foreign") / f"{name}.stderr"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL
        )
    try:
        port = _read_port(process, log, name)
        yield ForeignServer(name, f"ws://127.0.0.1:{port}", can_fragment=name != "aiohttp")
    finally:
        process.kill()
        process.wait(5)
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture(params=TRANSPORT_NAMES)
def transport_name(request: pytest.FixtureRequest) -> str:
    """The bgws transport under test: picows or websockets."""
    name: str = request.param
    return name
