"""The workloads, their metrics, the clients that run them, and the targets they are held to.

This module only describes; :mod:`bench.runner` runs the plan and :mod:`bench.report` judges
the targets.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.common import Counts
from bench.styles import STYLES, style_of, style_variants, variant_label

__all__ = [
    "CLIENTS",
    "PEERS",
    "TARGETS",
    "WORKLOADS",
    "Case",
    "Metric",
    "Target",
    "Workload",
    "plan",
]

CLIENTS = ("bgws", "picows", "aiohttp", "websockets", "websocket-client")
"""Every client, in table order. ``bgws`` and ``picows`` are always there (bgws' own deps)."""

PEERS = {"aiohttp": "aiohttp", "websockets": "websockets", "websocket-client": "websocket"}
"""The optional peers: client name to the module that must be importable."""

ASYNC_CLIENTS = ("bgws", "picows")
"""Clients measured on uvloop too, when uvloop is importable."""


@dataclass(frozen=True, slots=True)
class Metric:
    """One measured quantity.

    Attributes:
        key: its name in a run's results.
        unit: how it is printed.
        higher_is_better: the direction of "better" (ratios are always value / reference).
        decimals: digits after the point when printed.
    """

    key: str
    unit: str
    higher_is_better: bool
    decimals: int = 0


@dataclass(frozen=True, slots=True)
class Workload:
    """One workload: what it measures and who runs it.

    Attributes:
        name: what ``--only`` takes.
        title: one line for the docs and the report.
        metrics: what each run reports, the headline first.
        cases: ``(client, variant)`` pairs, in table order.
        max_runs: a cap on ``--runs`` for workloads that take long or vary little.
        uvloop: whether the async clients are also measured on uvloop.
    """

    name: str
    title: str
    metrics: tuple[Metric, ...]
    cases: tuple[tuple[str, str], ...]
    max_runs: int | None = None
    uvloop: bool = False


_RATE = Metric("rate", "msg/s", True)
_CPU_MSG = Metric("cpu_us", "CPU us/msg", False, 2)
_ALL = tuple((client, "") for client in CLIENTS[1:])


def _styled(workload: str) -> tuple[tuple[str, str], ...]:
    """The bgws rows of ``workload``, one per documented handler style (and echo path)."""
    return tuple(("bgws", variant) for variant in style_variants(workload))


WORKLOADS: tuple[Workload, ...] = (
    Workload(
        "receive",
        "receive firehose: JSON messages of ~100 bytes pushed as fast as possible, each decoded "
        "(msgspec) and, for bgws, dispatched to a registered handler",
        (_RATE, _CPU_MSG),
        (
            *_styled("receive"),
            ("bgws", "resume"),
            ("bgws", "websockets"),
            *_ALL,
        ),
        uvloop=True,
    ),
    Workload(
        "send",
        "pipelined send: messages sent back to back while their echoes (or acks) are received "
        "concurrently; done when every echo (ack) is in",
        (_RATE, _CPU_MSG),
        (
            *_styled("send"),
            ("bgws", "sqlite"),
            ("bgws", "sqlite-acks"),
            ("bgws", "sqlite-tasks"),
            *_ALL,
        ),
        uvloop=True,
    ),
    Workload(
        "echo",
        "echo round trip: sequential request/response pairs (bgws: service.request, or "
        "service.send and a handler that resolves a future)",
        (
            Metric("p50_us", "p50 us", False, 1),
            Metric("p99_us", "p99 us", False, 1),
            Metric("cpu_us", "CPU us/rt", False, 1),
        ),
        (*_styled("echo"), *_ALL),
        uvloop=True,
    ),
    Workload(
        "memory",
        "memory per idle connection: RSS growth of one process holding N open connections "
        "(bgws: N connected services, memory store, 20 s heartbeat)",
        (Metric("kib", "KiB/conn", False, 1),),
        (("bgws", ""), *_ALL),
        max_runs=3,
    ),
    Workload(
        "services",
        "many services: RSS of one process holding N connected bgws services (memory store, or "
        "the default SQLite store with one message sent by each)",
        (
            Metric("rss_mib", "MiB RSS", False, 1),
            Metric("kib", "KiB/service", False, 1),
            Metric("connect_s", "s to connect", False, 1),
            Metric("threads", "threads", False),
        ),
        (("bgws", ""), ("bgws", "sqlite")),
        max_runs=1,
    ),
    Workload(
        "idle",
        "idle CPU: connected services with heartbeats doing nothing else, CPU per service "
        "(picows: one connection with picows' own auto-ping at the same interval)",
        (Metric("cpu_pct", "% of a core", False, 4),),
        (("bgws", "single"), ("bgws", "many"), ("picows", "single")),
        max_runs=1,
    ),
    Workload(
        "reconnect",
        "reconnect after a server restart: from the link's loss to CONNECTED again "
        "(delay = the backoff delay drawn; overhead = the rest)",
        (
            Metric("ms", "ms", False, 1),
            Metric("delay_ms", "delay ms", False, 1),
            Metric("overhead_ms", "overhead ms", False, 1),
        ),
        (("bgws", ""),),
    ),
    Workload(
        "deadlink",
        "dead-link detection: the server stops reading (pings unanswered, TCP up) right after "
        "the handshake; from the stall to the link declared dead",
        (Metric("ms", "ms", False, 1),),
        (("bgws", ""),),
    ),
    Workload(
        "bridge",
        "bridge into JetStream: the receive firehose with a ResumePolicy, each message "
        "published by a NatsBridge to a local nats-server; done when the last is acked",
        (_RATE, _CPU_MSG),
        (("bgws", ""),),
        max_runs=3,
    ),
)

WORKLOAD_NAMES = tuple(w.name for w in WORKLOADS)


_VARIANT_LABELS = {
    "memory": "",
    "sqlite": "sqlite, send_many",
    "services-sqlite": "SQLite store",
    "sqlite-acks": "sqlite+acks, send_many",
    "sqlite-tasks": "sqlite, send() tasks",
    "websockets": "websockets transport",
    "single": "1 service",
    "many": "many services",
}


@dataclass(frozen=True, slots=True)
class Case:
    """One row of the table: a workload run by one client variant on one loop."""

    workload: str
    client: str
    variant: str
    loop: str

    @property
    def style(self) -> str | None:
        """The handler style a bgws row measures (``None``: not a style row)."""
        return style_of(self.workload, self.variant) if self.client == "bgws" else None

    @property
    def label(self) -> str:
        """The row's client name, e.g. ``bgws (sqlite+acks)``."""
        styled = variant_label(self.workload, self.variant) if self.client == "bgws" else None
        variant = f"services-{self.variant}" if self.workload == "services" else self.variant
        shown = _VARIANT_LABELS.get(variant, self.variant) if styled is None else styled
        return f"{self.client} ({shown})" if shown else self.client

    @property
    def key(self) -> str:
        return f"{self.workload}/{self.client}/{self.variant}/{self.loop}"


def plan(
    workloads: tuple[str, ...],
    clients: tuple[str, ...],
    *,
    uvloop: bool,
    styles: tuple[str, ...] = STYLES,
) -> list[Case]:
    """The rows to measure, in table order (style rows only for the ``styles`` picked)."""
    cases: list[Case] = []
    for workload in WORKLOADS:
        if workload.name not in workloads:
            continue
        loops = ("asyncio", "uvloop") if uvloop and workload.uvloop else ("asyncio",)
        for loop in loops:
            for client, variant in workload.cases:
                if client not in clients:
                    continue
                if loop == "uvloop" and client not in ASYNC_CLIENTS:
                    continue
                case = Case(workload.name, client, variant, loop)
                if case.style is not None and case.style not in styles:
                    continue
                cases.append(case)
    return cases


@dataclass(frozen=True, slots=True)
class Target:
    """A goal the issue sets, for one bgws row.

    A ``ratio`` target compares medians: ``value / reference`` (reference: another client's
    row on the same loop) against ``limit``. An ``absolute`` target compares the median (or,
    with ``worst``, the worst run) against ``limit``, or ``limit_of(counts)`` when the limit
    depends on the configured intervals.
    """

    text: str
    workload: str
    variant: str
    metric: str
    at_least: bool
    limit: float
    reference: str | None = None
    worst: bool = False
    client: str = "bgws"

    def limit_of(self, counts: Counts) -> float:
        if self.workload == "reconnect":
            return counts.reconnect_delay * 1000 + 100
        if self.workload == "idle":  # pings cost CPU in proportion to their rate
            return self.limit * 20.0 / counts.idle_heartbeat
        if self.workload == "deadlink":
            return (counts.deadlink_heartbeat + counts.deadlink_timeout) * 1000 * 1.1
        return self.limit


def _style_targets() -> tuple[Target, ...]:
    """Issue 11's targets for every documented handler style, side by side with raw picows."""
    targets: list[Target] = []
    for workload, at_least, metric, limits in (
        ("receive", True, "rate", {"plugins": 0.7}),
        ("send", True, "rate", {}),
        ("echo", False, "cpu_us", {}),
    ):
        default = {"receive": 0.8, "send": 0.9, "echo": 1.25}[workload]
        for variant in style_variants(workload):
            label = variant_label(workload, variant)
            what = f"{workload} ({label})" if label else f"{workload} (def handler)"
            if workload == "send":
                what = f"send, memory outbox ({label or 'def handler'})"
            if workload == "echo":
                what = f"echo CPU/round trip ({label})"
            limit = limits.get(style_of(workload, variant) or "", default)
            op = ">=" if at_least else "<="
            targets.append(
                Target(
                    f"{what} {op} {limit:g}x raw picows",
                    workload,
                    variant,
                    metric,
                    at_least,
                    limit,
                    "picows",
                )
            )
            if workload == "receive":
                targets.append(
                    Target(
                        f"{what} >= 3.5x raw websockets",
                        workload,
                        variant,
                        metric,
                        True,
                        3.5,
                        "websockets",
                    )
                )
    return tuple(targets)


TARGETS: tuple[Target, ...] = (
    *_style_targets(),
    Target(
        "receive with resume checkpoints (SQLite) >= 0.7x raw picows",
        "receive",
        "resume",
        "rate",
        True,
        0.7,
        "picows",
    ),
    Target("send, SQLite send_many >= 150,000 msg/s", "send", "sqlite", "rate", True, 150_000),
    Target("send, SQLite + acks >= 100,000 msg/s", "send", "sqlite-acks", "rate", True, 100_000),
    Target(
        "send, SQLite, concurrent send() >= 60,000 msg/s",
        "send",
        "sqlite-tasks",
        "rate",
        True,
        60_000,
    ),
    Target("memory/connection <= 1.2x raw picows", "memory", "", "kib", False, 1.2, "picows"),
    Target("10,000 services <= 1 GiB RSS", "services", "", "rss_mib", False, 1024),
    Target(
        "10,000 services, default SQLite store <= 1 GiB RSS",
        "services",
        "sqlite",
        "rss_mib",
        False,
        1024,
    ),
    Target(
        "idle CPU of 1 connected service <= 0.1% (20 s heartbeat)",
        "idle",
        "single",
        "cpu_pct",
        False,
        0.1,
    ),
    Target("reconnect <= initial delay + 100 ms", "reconnect", "", "ms", False, 0, worst=True),
    Target(
        "dead link <= heartbeat + ping_timeout + 10%", "deadlink", "", "ms", False, 0, worst=True
    ),
    Target("bridge into JetStream >= 50,000 msg/s", "bridge", "", "rate", True, 50_000),
)
