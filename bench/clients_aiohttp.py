"""Raw aiohttp as a benchmark client (a peer: skipped when aiohttp is not installed)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp

from bench.common import (
    ID_PREFIX,
    SEND_DATA,
    Job,
    Metrics,
    Probe,
    decode,
    encode,
    gc_settled,
    percentile,
    rss_bytes,
)

__all__ = ["WORKLOADS"]

_TEXT = aiohttp.WSMsgType.TEXT
_CONNECT_BATCH = 100


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


@contextlib.asynccontextmanager
async def _open(url: str, **options: Any) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """One connection in its own session; text frames arrive as bytes (decoded by msgspec)."""
    async with _session() as session, session.ws_connect(url, decode_text=False, **options) as ws:
        yield ws


async def _receive_n(ws: aiohttp.ClientWebSocketResponse, n: int) -> None:
    for _ in range(n):
        message = await ws.receive()
        if message.type is not _TEXT:
            raise RuntimeError(f"unexpected {message.type} after {_} messages")
        decode(message.data)


async def receive(job: Job) -> Metrics:
    """Decode every firehose message; time from "go" to the last."""
    n = job.counts.receive
    async with _open(job.url(f"/firehose?n={n}"), max_msg_size=0) as ws:
        probe = Probe()
        with probe.measure():
            await ws.send_frame(b'{"type":"go"}', _TEXT)
            await _receive_n(ws, n)
    return probe.rate(n)


async def send(job: Job) -> Metrics:
    """Send ``n`` messages back to back while a task receives the echoes."""
    n = job.counts.send
    async with _open(job.url("/echo")) as ws:
        probe = Probe()
        with probe.measure():
            reader = asyncio.create_task(_receive_n(ws, n))
            for i in range(n):
                payload = encode({"type": "echo", "data": SEND_DATA, "id": f"{ID_PREFIX}-{i}"})
                await ws.send_frame(payload, _TEXT)
            await reader
    return probe.rate(n)


async def echo(job: Job) -> Metrics:
    """Sequential round trips."""
    n = job.counts.echo
    clock = time.perf_counter
    times: list[float] = []
    async with _open(job.url("/echo")) as ws:

        async def trip(i: int) -> None:
            payload = encode({"type": "echo", "data": SEND_DATA, "id": f"{ID_PREFIX}-{i}"})
            await ws.send_frame(payload, _TEXT)
            await _receive_n(ws, 1)

        for i in range(max(10, n // 10)):
            await trip(i)
        probe = Probe()
        with probe.measure():
            for i in range(n):
                start = clock()
                await trip(i)
                times.append(clock() - start)
    return {
        "p50_us": percentile(times, 50) * 1e6,
        "p99_us": percentile(times, 99) * 1e6,
        "cpu_us": probe.cpu / n * 1e6,
    }


async def memory(job: Job) -> Metrics:
    """RSS growth per open connection (one session, as an application would hold them)."""
    session = _session()
    await (await session.ws_connect(job.url("/idle"))).close()
    gc_settled()
    before = rss_bytes()
    held: list[aiohttp.ClientWebSocketResponse] = []
    n = job.counts.connections
    for start in range(0, n, _CONNECT_BATCH):
        size = min(_CONNECT_BATCH, n - start)
        held += await asyncio.gather(*(session.ws_connect(job.url("/idle")) for _ in range(size)))
    gc_settled()
    return {"kib": (rss_bytes() - before) / len(held) / 1024}


WORKLOADS: dict[str, Callable[[Job], Awaitable[Metrics]]] = {
    "receive": receive,
    "send": send,
    "echo": echo,
    "memory": memory,
}
