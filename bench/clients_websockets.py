"""Raw websockets (its asyncio API) as a benchmark client (a peer: skipped when missing)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from websockets.asyncio.client import ClientConnection, connect

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

_CONNECT_BATCH = 100


def _connect(url: str) -> connect:
    return connect(url, compression=None, max_size=None)


async def _receive_n(ws: ClientConnection, n: int) -> None:
    for _ in range(n):
        decode(await ws.recv(decode=False))


async def receive(job: Job) -> Metrics:
    """Decode every firehose message; time from "go" to the last."""
    n = job.counts.receive
    async with _connect(job.url(f"/firehose?n={n}")) as ws:
        probe = Probe()
        with probe.measure():
            await ws.send(b'{"type":"go"}', text=True)
            await _receive_n(ws, n)
    return probe.rate(n)


async def send(job: Job) -> Metrics:
    """Send ``n`` messages back to back while a task receives the echoes."""
    n = job.counts.send
    async with _connect(job.url("/echo")) as ws:
        probe = Probe()
        with probe.measure():
            reader = asyncio.create_task(_receive_n(ws, n))
            for i in range(n):
                payload = encode({"type": "echo", "data": SEND_DATA, "id": f"{ID_PREFIX}-{i}"})
                await ws.send(payload, text=True)
            await reader
    return probe.rate(n)


async def echo(job: Job) -> Metrics:
    """Sequential round trips."""
    n = job.counts.echo
    clock = time.perf_counter
    times: list[float] = []
    async with _connect(job.url("/echo")) as ws:

        async def trip(i: int) -> None:
            payload = encode({"type": "echo", "data": SEND_DATA, "id": f"{ID_PREFIX}-{i}"})
            await ws.send(payload, text=True)
            decode(await ws.recv(decode=False))

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
    """RSS growth per open connection (default keepalive: a ping every 20 s)."""
    await (await _connect(job.url("/idle"))).close()
    gc_settled()
    before = rss_bytes()
    held: list[ClientConnection] = []
    n = job.counts.connections
    for start in range(0, n, _CONNECT_BATCH):
        size = min(_CONNECT_BATCH, n - start)
        held += await asyncio.gather(*(_connect(job.url("/idle")) for _ in range(size)))
    gc_settled()
    return {"kib": (rss_bytes() - before) / len(held) / 1024}


WORKLOADS: dict[str, Callable[[Job], Awaitable[Metrics]]] = {
    "receive": receive,
    "send": send,
    "echo": echo,
    "memory": memory,
}
