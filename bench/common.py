"""What the server, the runner and every client share: message shapes, counts, measurements.

Kept free of any peer library, so the server and the runner import only bgws' own
dependencies (picows and msgspec).
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import msgspec

__all__ = [
    "CPU",
    "FULL",
    "ID_PREFIX",
    "QUICK",
    "SEND_DATA",
    "Counts",
    "Job",
    "Metrics",
    "Probe",
    "decode",
    "encode",
    "firehose_message",
    "gc_settled",
    "install_loop",
    "percentile",
    "rss_bytes",
    "uvloop_available",
]

decode = msgspec.json.Decoder().decode
"""The decoder every client uses on received messages (bgws uses msgspec too)."""
encode = msgspec.json.Encoder().encode
"""The encoder every raw client uses on sent messages."""

_FIREHOSE_PAD = "x" * 62
SEND_DATA = "y" * 60
"""The body of every sent message: ``{"type":"echo","data":SEND_DATA,"id":...}``, ~100 bytes."""

ID_PREFIX = "0123456789ab"
"""Raw clients number their messages ``<ID_PREFIX>-<n>``, as long as bgws' own ids."""

Metrics = dict[str, float]
"""One run's measurements, by metric name (see :mod:`bench.workloads` for units)."""


def firehose_message(seq: int) -> bytes:
    """The ``seq``-th firehose message: about 100 bytes of JSON with a sequence number."""
    return b'{"type":"tick","seq":%d,"data":"%s"}' % (seq, _FIREHOSE_PAD.encode())


@dataclass(frozen=True, slots=True)
class Counts:
    """How much work each workload does (the issue's sizes, or tiny ones for CI)."""

    receive: int = 200_000
    send: int = 100_000
    echo: int = 20_000
    connections: int = 1_000
    services: int = 10_000
    idle_seconds: float = 60.0
    idle_heartbeat: float = 20.0
    idle_services: int = 100
    reconnect_delay: float = 0.5
    deadlink_heartbeat: float = 1.0
    deadlink_timeout: float = 0.5
    send_window: int = 1_000
    """Concurrent ``send()`` calls for the SQLite outbox (group commit needs concurrency)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FULL = Counts()
QUICK = Counts(
    receive=2_000,
    send=1_000,
    echo=200,
    connections=20,
    services=100,
    idle_seconds=1.0,
    idle_heartbeat=0.2,
    idle_services=10,
    reconnect_delay=0.1,
    deadlink_heartbeat=0.2,
    deadlink_timeout=0.1,
    send_window=100,
)


@dataclass(frozen=True, slots=True)
class Job:
    """One client run, as the runner hands it to a worker process (JSON on the command line).

    Attributes:
        workload: ``receive``, ``send``, ``echo``, ``memory``, ``services``, ``idle``,
            ``reconnect`` or ``deadlink``.
        client: ``bgws``, ``picows``, ``aiohttp``, ``websockets`` or ``websocket-client``.
        variant: a client-specific option (bgws: ``memory``, ``sqlite``, ``sqlite-acks``,
            ``resume``; others: ``""``).
        loop: ``asyncio`` or ``uvloop``.
        base: ``ws://127.0.0.1:<port>`` of the benchmark server.
        counts: the sizes to use.
        deadline: seconds the whole run may take.
        scratch: a private directory for files (SQLite stores).
    """

    workload: str
    client: str
    variant: str
    loop: str
    base: str
    counts: Counts = field(default_factory=Counts)
    deadline: float = 120.0
    scratch: str = ""

    def to_json(self) -> str:
        data = asdict(self)
        return msgspec.json.encode(data).decode()

    @classmethod
    def from_json(cls, text: str) -> Job:
        data = msgspec.json.decode(text)
        data["counts"] = Counts(**data["counts"])
        return cls(**data)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


def install_loop(name: str) -> None:
    """Make ``asyncio.run`` use the named loop (``uvloop`` must be importable)."""
    if name == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def uvloop_available() -> bool:
    """Whether uvloop can be imported (the optional ``bgws[speed]`` extra)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """This process's resident set size now (Linux), else its peak."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def gc_settled() -> None:
    """Collect garbage so an RSS reading holds live objects only."""
    for _ in range(3):
        gc.collect()


CPU = time.process_time
"""CPU seconds of this process, every thread included."""


class Probe:
    """Wall time and CPU time of one measured section."""

    __slots__ = ("cpu", "wall")

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    @contextmanager
    def measure(self) -> Iterator[Probe]:
        wall, cpu = time.perf_counter(), CPU()
        try:
            yield self
        finally:
            self.wall = time.perf_counter() - wall
            self.cpu = CPU() - cpu

    def rate(self, n: int) -> Metrics:
        """Throughput metrics for ``n`` messages: msg/s and CPU microseconds per message."""
        return {"rate": n / self.wall, "cpu_us": self.cpu / n * 1e6}


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, by nearest rank."""
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]
