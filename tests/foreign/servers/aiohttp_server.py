"""A foreign peer for the bgws suite: aiohttp's WebSocket server, run as a subprocess.

Listens on 127.0.0.1 on a free port and prints the port on stdout. The path picks the
behaviour (the same for every foreign server; ``tests/foreign/conftest.py`` lists them):

``/echo``          echo every message, text as text and binary as binary
``/ping?n=N``      send N pings, then report the pongs it saw: ``{"type": "pongs", ...}``
``/fragment``      not served: aiohttp's writer always sets FIN, so it cannot fragment
``/close?code=C&reason=R``  close at once with that code and reason
``/subprotocol``   accept only ``chat.v2``; report the offered list and the choice
``/auth``          HTTP 401 unless ``Authorization: Bearer good``; then ``{"type": "welcome"}``
``/ack?session=S&close_after=K``  ack each message's id; the session's first connection is
                   closed (1012) on its K-th message, unacked; ``{"type": "report"}`` returns
                   the ids seen in the session
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from aiohttp import WSMsgType, web

__all__ = ["main"]

SUBPROTOCOLS = ("chat.v2",)
GOOD_TOKEN = "Bearer good"
PONG_WAIT = 5.0

# session name -> {"ids": ids seen, "connections": connections so far}
_sessions: dict[str, dict[str, Any]] = {}


async def _echo(ws: web.WebSocketResponse) -> None:
    """Echo until the peer closes; answer pings by hand (autoping is off to see pongs)."""
    async for msg in ws:
        if msg.type is WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
        elif msg.type is WSMsgType.PING:
            await ws.pong(msg.data)


async def _ping(ws: web.WebSocketResponse, count: int) -> None:
    """Send ``count`` pings and report the pongs that came back, then echo."""
    pongs: list[str] = []
    for n in range(count):
        await ws.ping(f"p{n}".encode())
    async with asyncio.timeout(PONG_WAIT):
        while len(pongs) < count:
            msg = await ws.receive()
            if msg.type is WSMsgType.PONG:
                pongs.append(msg.data.decode())
            elif msg.type is WSMsgType.PING:
                await ws.pong(msg.data)
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                return
    await ws.send_str(json.dumps({"type": "pongs", "payloads": pongs}))
    await _echo(ws)


async def _ack(ws: web.WebSocketResponse, session: str, close_after: int) -> None:
    """Ack every message's id; force one close on the session's first connection."""
    state = _sessions.setdefault(session, {"ids": [], "connections": 0})
    state["connections"] += 1
    first = state["connections"] == 1
    received = 0
    async for msg in ws:
        if msg.type is WSMsgType.PING:
            await ws.pong(msg.data)
            continue
        if msg.type is not WSMsgType.TEXT:
            continue
        data = json.loads(msg.data)
        if data.get("type") == "report":
            await ws.send_str(json.dumps({"type": "report", "ids": state["ids"]}))
        else:
            state["ids"].append(data["id"])
            received += 1
            if first and received == close_after:
                await ws.close(code=1012, message=b"restarting")
                return
        await ws.send_str(json.dumps({"type": "ack", "id": data["id"]}))


async def handle(request: web.Request) -> web.StreamResponse:
    """Serve one WebSocket connection with the behaviour its path names."""
    path = request.path
    if path == "/auth" and request.headers.get("Authorization") != GOOD_TOKEN:
        return web.Response(status=401, text="bad credentials")
    protocols = SUBPROTOCOLS if path == "/subprotocol" else ()
    ws = web.WebSocketResponse(autoping=False, protocols=protocols)
    await ws.prepare(request)
    query = request.query
    if path == "/echo":
        await _echo(ws)
    elif path == "/ping":
        await _ping(ws, int(query.get("n", "1")))
    elif path == "/close":
        await ws.close(code=int(query["code"]), message=query.get("reason", "").encode())
    elif path == "/subprotocol":
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        hello = {"type": "hello", "subprotocol": ws.ws_protocol, "offered": offered}
        await ws.send_str(json.dumps(hello))
        await _echo(ws)
    elif path == "/auth":
        await ws.send_str(json.dumps({"type": "welcome"}))
        await _echo(ws)
    elif path == "/ack":
        await _ack(ws, query["session"], int(query.get("close_after", "0")))
    else:
        await ws.close(code=1008, message=b"unknown path")
    return ws


async def main() -> None:
    """Listen on a free loopback port, print it, and serve until killed."""
    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
