"""A foreign peer for the bgws suite: tornado's WebSocket server, run as a subprocess.

Listens on 127.0.0.1 on a free port and prints the port on stdout. The path picks the
behaviour, the same for every foreign server (see ``tests/foreign/conftest.py``). Tornado has no
public call for a fragmented message, so ``/fragment`` uses its connection's frame writer.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from tornado import httpserver, netutil, web, websocket

__all__ = ["main"]

SUBPROTOCOLS = ("chat.v2",)
GOOD_TOKEN = "Bearer good"
PONG_WAIT = 5.0
FRAGMENTS = 3

# session name -> {"ids": ids seen, "connections": connections so far}
_sessions: dict[str, dict[str, Any]] = {}


def split(payload: bytes, parts: int) -> list[bytes]:
    """Cut ``payload`` into ``parts`` pieces at fixed byte offsets (even inside a character)."""
    step = -(-len(payload) // parts)
    return [payload[i : i + step] for i in range(0, len(payload), step)]


def fragment_payloads() -> tuple[bytes, bytes]:
    """The text (JSON) and binary messages that ``/fragment`` sends in pieces."""
    text = json.dumps({"type": "fragmented", "text": "ünïcödé ✓ " * 40}, ensure_ascii=False)
    return text.encode(), bytes(range(256)) * 4


class Behaviour(websocket.WebSocketHandler):
    """One connection; the request path picks what it does."""

    pongs: list[str]
    pong_event: asyncio.Event
    session: dict[str, Any] | None
    received: int
    first: bool

    def prepare(self) -> None:
        """Refuse ``/auth`` with 401 before the upgrade unless the token is right."""
        if self.request.path == "/auth" and self.request.headers.get("Authorization") != (
            GOOD_TOKEN
        ):
            raise web.HTTPError(401)

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        """Accept only ``chat.v2``, and only on ``/subprotocol``."""
        if self.request.path != "/subprotocol":
            return None
        return next((p for p in subprotocols if p in SUBPROTOCOLS), None)

    async def open(self, *args: str, **kwargs: str) -> None:
        """Start the path's behaviour."""
        self.pongs = []
        self.pong_event = asyncio.Event()
        self.session = None
        path = self.request.path
        if path == "/ping":
            asyncio.get_running_loop().create_task(self._ping(int(self.get_argument("n", "1"))))
        elif path == "/fragment":
            text, binary = fragment_payloads()
            connection = self.ws_connection
            assert isinstance(connection, websocket.WebSocketProtocol13)
            for opcode, payload in ((0x1, text), (0x2, binary)):
                pieces = split(payload, FRAGMENTS)
                for n, piece in enumerate(pieces):
                    first_opcode = opcode if n == 0 else 0x0
                    connection._write_frame(n == len(pieces) - 1, first_opcode, piece)
        elif path == "/close":
            self.close(int(self.get_argument("code")), self.get_argument("reason", ""))
        elif path == "/subprotocol":
            offered = self.request.headers.get("Sec-WebSocket-Protocol", "").split(",")
            hello = {
                "type": "hello",
                "subprotocol": self.selected_subprotocol,
                "offered": [p.strip() for p in offered],
            }
            self.write_message(json.dumps(hello))
        elif path == "/auth":
            self.write_message(json.dumps({"type": "welcome"}))
        elif path == "/ack":
            name = self.get_argument("session")
            self.session = _sessions.setdefault(name, {"ids": [], "connections": 0})
            self.session["connections"] += 1
            self.first = self.session["connections"] == 1
            self.received = 0
        elif path != "/echo":
            self.close(1008, "unknown path")

    async def _ping(self, count: int) -> None:
        for n in range(count):
            self.ping(f"p{n}".encode())
        async with asyncio.timeout(PONG_WAIT):
            while len(self.pongs) < count:
                self.pong_event.clear()
                await self.pong_event.wait()
        self.write_message(json.dumps({"type": "pongs", "payloads": self.pongs}))

    def on_pong(self, data: bytes) -> None:
        """Record a pong's payload."""
        self.pongs.append(data.decode())
        self.pong_event.set()

    def on_message(self, message: str | bytes) -> None:
        """Echo, or ack on ``/ack``."""
        if self.session is None:
            self.write_message(message, binary=isinstance(message, bytes))
            return
        data = json.loads(message)
        if data.get("type") == "report":
            self.write_message(json.dumps({"type": "report", "ids": self.session["ids"]}))
        else:
            self.session["ids"].append(data["id"])
            self.received += 1
            if self.first and self.received == int(self.get_argument("close_after", "0")):
                self.close(1012, "restarting")
                return
        self.write_message(json.dumps({"type": "ack", "id": data["id"]}))


async def main() -> None:
    """Listen on a free loopback port, print it, and serve until killed."""
    app = web.Application([(r"/.*", Behaviour)])
    sockets = netutil.bind_sockets(0, "127.0.0.1")
    server = httpserver.HTTPServer(app)
    server.add_sockets(sockets)
    sys.stdout.write(f"{sockets[0].getsockname()[1]}\n")
    sys.stdout.flush()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
