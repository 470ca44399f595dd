"""Raw websocket-client (synchronous, threads) as a benchmark client (a peer: skipped when
missing). Its functions are plain, not async: the worker calls them directly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import websocket

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


def _connect(job: Job, path: str) -> websocket.WebSocket:
    return websocket.create_connection(job.url(path), timeout=job.deadline)


def _receive_n(ws: websocket.WebSocket, n: int) -> None:
    for _ in range(n):
        decode(ws.recv())


def receive(job: Job) -> Metrics:
    """Decode every firehose message; time from "go" to the last."""
    n = job.counts.receive
    ws = _connect(job, f"/firehose?n={n}")
    probe = Probe()
    with probe.measure():
        ws.send('{"type":"go"}')
        _receive_n(ws, n)
    ws.close()
    return probe.rate(n)


def send(job: Job) -> Metrics:
    """Send ``n`` messages back to back while a thread receives the echoes."""
    n = job.counts.send
    ws = _connect(job, "/echo")
    failure: list[BaseException] = []

    def read() -> None:
        try:
            _receive_n(ws, n)
        except BaseException as exc:
            failure.append(exc)

    probe = Probe()
    with probe.measure():
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        for i in range(n):
            payload = encode({"type": "echo", "data": SEND_DATA, "id": f"{ID_PREFIX}-{i}"})
            ws.send(payload.decode())
        reader.join(job.deadline)
    if failure or reader.is_alive():
        raise RuntimeError(f"echoes not all received: {failure or 'timeout'}")
    ws.close()
    return probe.rate(n)


def echo(job: Job) -> Metrics:
    """Sequential round trips."""
    n = job.counts.echo
    ws = _connect(job, "/echo")
    clock = time.perf_counter
    times: list[float] = []

    def trip(i: int) -> None:
        ws.send(encode({"type": "echo", "data": SEND_DATA, "id": f"{ID_PREFIX}-{i}"}).decode())
        decode(ws.recv())

    for i in range(max(10, n // 10)):
        trip(i)
    probe = Probe()
    with probe.measure():
        for i in range(n):
            start = clock()
            trip(i)
            times.append(clock() - start)
    ws.close()
    return {
        "p50_us": percentile(times, 50) * 1e6,
        "p99_us": percentile(times, 99) * 1e6,
        "cpu_us": probe.cpu / n * 1e6,
    }


def memory(job: Job) -> Metrics:
    """RSS growth per open connection (no thread per connection: nothing reads while idle)."""
    _connect(job, "/idle").close()
    gc_settled()
    before = rss_bytes()
    held = [_connect(job, "/idle") for _ in range(job.counts.connections)]
    gc_settled()
    return {"kib": (rss_bytes() - before) / len(held) / 1024}


WORKLOADS: dict[str, Callable[[Job], Metrics]] = {
    "receive": receive,
    "send": send,
    "echo": echo,
    "memory": memory,
}
