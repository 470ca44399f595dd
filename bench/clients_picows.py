"""Raw picows as a benchmark client: the reference bgws is held to.

Written the way a careful user of picows would: frames handled in ``on_ws_frame``, payloads
decoded with the same msgspec decoder bgws uses, the socket's write flow control respected.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import picows

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

_TEXT = picows.WSMsgType.TEXT
_CLOSE = picows.WSMsgType.CLOSE
_CONNECT_BATCH = 100


class _Client(picows.WSListener):  # type: ignore[misc]
    """Counts decoded data frames; completes ``done`` at ``expect``; wakes a round trip."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.count = 0
        self.expect = 0
        self.done: asyncio.Future[None] | None = None
        self.reply: asyncio.Future[Any] | None = None
        self.writable = asyncio.Event()
        self.writable.set()

    def on_ws_connected(self, transport: Any) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        kind = frame.msg_type
        if kind is _TEXT:
            message = decode(frame.get_payload_as_bytes())
            reply = self.reply
            if reply is not None:
                self.reply = None
                reply.set_result(message)
                return
            self.count += 1
            if self.count == self.expect and self.done is not None:
                self.done.set_result(None)
        elif kind is _CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def close(self) -> None:
        self.transport.send_close(picows.WSCloseCode.OK)
        self.transport.disconnect()


async def _connect(url: str, **options: Any) -> _Client:
    _, client = await picows.ws_connect(_Client, url, **options)
    assert isinstance(client, _Client)
    return client


async def receive(job: Job) -> Metrics:
    """Decode and count every firehose message; time from "go" to the last."""
    n = job.counts.receive
    client = await _connect(job.url(f"/firehose?n={n}"))
    client.expect = n
    client.done = asyncio.get_running_loop().create_future()
    probe = Probe()
    with probe.measure():
        client.transport.send(_TEXT, b'{"type":"go"}')
        await client.done
    client.close()
    return probe.rate(n)


async def send(job: Job) -> Metrics:
    """Send ``n`` messages back to back, respecting write flow control; wait for every echo."""
    n = job.counts.send
    client = await _connect(job.url("/echo"))
    client.expect = n
    client.done = asyncio.get_running_loop().create_future()
    transport = client.transport
    writable = client.writable
    probe = Probe()
    with probe.measure():
        for i in range(n):
            transport.send(
                _TEXT, encode({"type": "echo", "data": SEND_DATA, "id": f"{ID_PREFIX}-{i}"})
            )
            if not writable.is_set():
                await writable.wait()
        await client.done
    client.close()
    return probe.rate(n)


async def echo(job: Job) -> Metrics:
    """Sequential round trips: send one message, wait for its echo."""
    n = job.counts.echo
    client = await _connect(job.url("/echo"))
    transport = client.transport
    loop = asyncio.get_running_loop()
    clock = time.perf_counter
    times: list[float] = []

    async def trip(i: int) -> None:
        reply = client.reply = loop.create_future()
        transport.send(_TEXT, encode({"type": "echo", "data": SEND_DATA, "id": f"{ID_PREFIX}-{i}"}))
        await reply

    for i in range(max(10, n // 10)):
        await trip(i)
    probe = Probe()
    with probe.measure():
        for i in range(n):
            start = clock()
            await trip(i)
            times.append(clock() - start)
    client.close()
    return {
        "p50_us": percentile(times, 50) * 1e6,
        "p99_us": percentile(times, 99) * 1e6,
        "cpu_us": probe.cpu / n * 1e6,
    }


async def _open(job: Job, n: int, **options: Any) -> list[_Client]:
    clients: list[_Client] = []
    for start in range(0, n, _CONNECT_BATCH):
        size = min(_CONNECT_BATCH, n - start)
        clients += await asyncio.gather(
            *(_connect(job.url("/idle"), **options) for _ in range(size))
        )
    return clients


async def memory(job: Job) -> Metrics:
    """RSS growth per open connection."""
    (await _connect(job.url("/idle"))).close()
    gc_settled()
    before = rss_bytes()
    clients = await _open(job, job.counts.connections)
    gc_settled()
    return {"kib": (rss_bytes() - before) / len(clients) / 1024}


async def idle(job: Job) -> Metrics:
    """CPU of one connection pinged by picows' auto-ping every ``idle_heartbeat``."""
    interval = job.counts.idle_heartbeat
    await _open(
        job,
        1,
        enable_auto_ping=True,
        auto_ping_idle_timeout=interval,
        auto_ping_reply_timeout=min(5.0, interval),
        auto_ping_strategy=picows.WSAutoPingStrategy.PING_PERIODICALLY,
    )
    await asyncio.sleep(0.5)
    probe = Probe()
    with probe.measure():
        await asyncio.sleep(job.counts.idle_seconds)
    return {"cpu_pct": probe.cpu / probe.wall * 100}


WORKLOADS: dict[str, Callable[[Job], Awaitable[Metrics]]] = {
    "receive": receive,
    "send": send,
    "echo": echo,
    "memory": memory,
    "idle": idle,
}
