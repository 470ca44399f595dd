"""bgws as a benchmark client: every workload, through the public API only.

Variants: ``receive`` with ``memory`` (no resume) or ``resume`` (``ResumePolicy`` with the
SQLite store, so checkpoints are written); ``send`` with ``memory`` (memory outbox, a plain
``await send()`` loop), ``sqlite`` (SQLite outbox, ``send_many`` in bursts of
``send_window``), ``sqlite-acks`` (the same, and the server acks every id) or
``sqlite-tasks`` (SQLite outbox, ``send_window`` concurrent ``send()`` calls at a time: many
producers, each waiting for its own message to be on disk).

Every documented handler style (:mod:`bench.styles`) has its own ``receive``, ``send``
(memory outbox) and ``echo`` rows; ``echo`` goes through ``request()`` (variants ``""`` and
``<style>``) or through ``send()`` plus a handler that resolves a future (``handler`` and
``handler-<style>``).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import bgws
from bench.clients_bridge import bridge
from bench.common import SEND_DATA, Job, Metrics, Probe, gc_settled, percentile, rss_bytes
from bench.styles import build, style_of

__all__ = ["WORKLOADS"]

_CONNECT_BATCH = 100


def _config(job: Job, path: str, **options: Any) -> bgws.Config:
    return bgws.Config(**_values(job, path, **options))


def _values(job: Job, path: str, **options: Any) -> dict[str, Any]:
    """The config fields of a run (every style builds its service from them)."""
    return {
        "app_name": "bench",
        "url": job.url(path),
        "storage": "memory",
        "connect_timeout": 30.0,
        "close_timeout": 10.0,
        **options,
    }


def _store(job: Job, name: str) -> dict[str, Any]:
    return {"storage": "sqlite", "storage_path": os.path.join(job.scratch, f"{name}.sqlite3")}


async def receive(job: Job) -> Metrics:
    """Count every firehose message in a registered handler; time from "go" to the last."""
    n = job.counts.receive
    options: dict[str, Any] = {}
    if job.variant == "resume":
        options = {**_store(job, "resume"), "resume": bgws.ResumePolicy(seq_field="seq")}
    elif job.variant == "websockets":
        options = {"transport": "websockets"}
    done = asyncio.get_running_loop().create_future()
    count = 0

    def on_tick(message: bgws.Message) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set_result(None)

    style = style_of("receive", job.variant) or "def"
    values = _values(job, f"/firehose?n={n}", **options)
    service = build(style, values, "tick", on_tick)
    probe = Probe()
    async with service:
        await service.wait_for(bgws.State.CONNECTED, timeout=job.deadline)
        with probe.measure():
            await service.send({"type": "go"})
            await done
        stats = service.stats
    if stats.gaps or stats.duplicates or stats.decode_errors:
        raise RuntimeError(f"firehose not received cleanly: {stats}")
    return probe.rate(n)


async def send(job: Job) -> Metrics:
    """Send ``n`` messages back to back; done when every echo (or ack) is in."""
    n = job.counts.send
    acks = job.variant == "sqlite-acks"
    options: dict[str, Any] = {"overflow": "wait", "max_queue_size": 10_000}
    if job.variant.startswith("sqlite"):
        options.update(_store(job, job.variant))
    if acks:
        options.update(ack=bgws.AckPolicy(), max_in_flight=1000)
    done = asyncio.get_running_loop().create_future()
    echoes = 0

    def on_echo(message: bgws.Message) -> None:
        nonlocal echoes
        echoes += 1
        if echoes == n:
            done.set_result(None)

    style = style_of("send", job.variant)
    values = _values(job, "/ack" if acks else "/echo", **options)
    service = build(style or "def", values, "echo", on_echo)
    message = {"type": "echo", "data": SEND_DATA}
    probe = Probe()
    async with service:
        await service.wait_for(bgws.State.CONNECTED, timeout=job.deadline)
        with probe.measure():
            if style is not None:  # the memory outbox
                for _ in range(n):
                    await service.send(message)
            else:
                window = job.counts.send_window
                for start in range(0, n - 1, window):
                    size = min(window, n - 1 - start)
                    if job.variant == "sqlite-tasks":
                        await asyncio.gather(*(service.send(message) for _ in range(size)))
                    else:
                        await service.send_many([message] * size)
                if acks:  # acks come in order: the last one acked means all were
                    await service.send(message, wait_for_ack=True, timeout=job.deadline)
                    done.set_result(None)
                else:
                    await service.send(message)
            await done
    return probe.rate(n)


async def echo(job: Job) -> Metrics:
    """Sequential round trips; latency percentiles and CPU per trip.

    Through ``service.request()``, or (``handler`` variants) through ``service.send()`` with
    the style's handler for ``echo`` resolving the future the loop waits on.
    """
    n = job.counts.echo
    waiting: list[asyncio.Future[bgws.Message]] = []

    def on_echo(message: bgws.Message) -> None:
        if waiting:
            waiting.pop().set_result(message)

    style = style_of("echo", job.variant) or "def"
    service = build(style, _values(job, "/echo"), "echo", on_echo)
    message = {"type": "echo", "data": SEND_DATA}
    if job.variant.startswith("handler"):
        create_future = asyncio.get_running_loop().create_future

        async def trip() -> None:
            reply: asyncio.Future[bgws.Message] = create_future()
            waiting.append(reply)
            await service.send(message)
            await reply  # bounded by the run's deadline

    else:

        async def trip() -> None:
            await service.request(message, timeout=10)

    times: list[float] = []
    probe = Probe()
    clock = time.perf_counter
    async with service:
        await service.wait_for(bgws.State.CONNECTED, timeout=job.deadline)
        for _ in range(max(10, n // 10)):  # warm-up
            await trip()
        with probe.measure():
            for _ in range(n):
                start = clock()
                await trip()
                times.append(clock() - start)
    return _latency(times, probe)


def _latency(times: list[float], probe: Probe) -> Metrics:
    return {
        "p50_us": percentile(times, 50) * 1e6,
        "p99_us": percentile(times, 99) * 1e6,
        "cpu_us": probe.cpu / len(times) * 1e6,
    }


async def _connected_services(
    job: Job, n: int, *, sqlite: bool = False, **options: Any
) -> list[bgws.Service]:
    """Start ``n`` services and wait until all are connected, ``_CONNECT_BATCH`` at a time.

    With ``sqlite``, each on its own SQLite store (the default store, in the scratch folder).
    """
    services: list[bgws.Service] = []
    for start in range(0, n, _CONNECT_BATCH):
        batch = [
            bgws.Service(
                _config(
                    job,
                    "/idle",
                    app_name=f"bench-{i}",
                    **(_store(job, f"bench-{i}") if sqlite else {}),
                    **options,
                )
            )
            for i in range(start, min(n, start + _CONNECT_BATCH))
        ]
        for service in batch:
            await service.connect()
        await asyncio.gather(
            *(s.wait_for(bgws.State.CONNECTED, timeout=job.deadline) for s in batch)
        )
        services.extend(batch)
    return services


async def memory(job: Job) -> Metrics:
    """RSS growth per connected service (heartbeat 20 s, memory store)."""
    await _warm_up(job)
    before = rss_bytes()
    services = await _connected_services(job, job.counts.connections)
    gc_settled()
    grown = rss_bytes() - before
    return {"kib": grown / len(services) / 1024}


async def services(job: Job) -> Metrics:
    """Total RSS of a process holding ``counts.services`` connected services.

    Variant ``sqlite``: each on the default SQLite store (one file per service), and each
    sends one message once connected, so every store has written; then the run waits 3 s
    for the stores to go idle, the state a fleet of mostly quiet services is in.
    """
    await _warm_up(job)
    before = rss_bytes()
    started = time.perf_counter()
    sqlite = job.variant == "sqlite"
    held = await _connected_services(job, job.counts.services, sqlite=sqlite)
    took = time.perf_counter() - started
    if sqlite:
        await asyncio.gather(*(s.send({"type": "hello"}) for s in held))
        await asyncio.sleep(3.0)  # longer than the stores' idle close (2 s)
    gc_settled()
    total = rss_bytes()
    return {
        "rss_mib": total / 2**20,
        "kib": (total - before) / len(held) / 1024,
        "connect_s": took,
        "threads": threading.active_count(),
    }


async def _warm_up(job: Job) -> None:
    """Connect and stop one service, so lazy imports and caches are not counted per service."""
    async with bgws.Service(_config(job, "/idle", app_name="bench-warm-up")) as service:
        await service.wait_for(bgws.State.CONNECTED, timeout=job.deadline)
    gc_settled()


async def idle(job: Job) -> Metrics:
    """CPU per connected service over ``idle_seconds`` with ``idle_heartbeat`` keepalive."""
    n = 1 if job.variant == "single" else job.counts.idle_services
    held = await _connected_services(
        job, n, heartbeat_interval=job.counts.idle_heartbeat, ping_timeout=5.0
    )
    await asyncio.sleep(0.5)  # let the connect work settle
    probe = Probe()
    with probe.measure():
        await asyncio.sleep(job.counts.idle_seconds)
    if any(s.state is not bgws.State.CONNECTED for s in held):
        raise RuntimeError("a service lost its link while idle")
    return {"cpu_pct": probe.cpu / probe.wall * 100 / n}


class _Timeline:
    """State changes as they happen, with a monotonic timestamp each."""

    def __init__(self) -> None:
        self.changes: list[tuple[float, bgws.StateChange]] = []
        self.changed = asyncio.Event()

    def record(self, change: bgws.StateChange) -> None:
        self.changes.append((time.perf_counter(), change))
        self.changed.set()

    async def wait(
        self, test: Callable[[bgws.StateChange], bool]
    ) -> tuple[float, bgws.StateChange]:
        while True:
            for at, change in self.changes:
                if test(change):
                    return at, change
            self.changed.clear()
            await self.changed.wait()


async def reconnect(job: Job) -> Metrics:
    """Ask the server to restart; time from the link's loss to connected again."""
    delay = job.counts.reconnect_delay
    service = bgws.Service(
        _config(job, "/restart", initial_reconnect_delay=delay, max_reconnect_delay=delay * 4)
    )
    timeline = _Timeline()
    service.on_state_change(timeline.record)
    async with service:
        await service.wait_for(bgws.State.CONNECTED, timeout=job.deadline)
        timeline.changes.clear()
        await service.send({"type": "restart"})
        lost_at, lost = await timeline.wait(lambda c: c.old is bgws.State.CONNECTED)
        up_at, _ = await timeline.wait(lambda c: c.new is bgws.State.CONNECTED)
    drawn = (lost.delay or 0.0) * 1000
    took = (up_at - lost_at) * 1000
    return {"ms": took, "delay_ms": drawn, "overhead_ms": took - drawn}


async def deadlink(job: Job) -> Metrics:
    """Stall the server right after the handshake; time until the link is declared dead."""
    counts = job.counts
    service = bgws.Service(
        _config(
            job,
            "/stall",
            heartbeat_interval=counts.deadlink_heartbeat,
            ping_timeout=counts.deadlink_timeout,
            initial_reconnect_delay=30.0,
            max_reconnect_delay=30.0,
        )
    )
    stalled = asyncio.get_running_loop().create_future()

    @service.on("stalled")
    def on_stalled(message: bgws.Message) -> None:
        if not stalled.done():
            stalled.set_result(time.perf_counter())

    timeline = _Timeline()
    service.on_state_change(timeline.record)
    async with service:
        await service.wait_for(bgws.State.CONNECTED, timeout=job.deadline)
        await service.send({"type": "stall"})
        stalled_at = await stalled
        dead_at, change = await timeline.wait(lambda c: c.old is bgws.State.CONNECTED)
        if not isinstance(change.reason, bgws.DeadLink):
            raise RuntimeError(f"the link was lost for another reason: {change.reason!r}")
    return {"ms": (dead_at - stalled_at) * 1000}


WORKLOADS: dict[str, Callable[[Job], Awaitable[Metrics]]] = {
    "receive": receive,
    "send": send,
    "echo": echo,
    "memory": memory,
    "services": services,
    "idle": idle,
    "reconnect": reconnect,
    "deadlink": deadlink,
    "bridge": bridge,
}
