"""Metrics over the services' stats: a Prometheus collector, a ``/metrics`` endpoint, OpenTelemetry.

Nothing here keeps metrics of its own and nothing touches a global registry: every value is
read from :attr:`bgws.Service.stats` when it is scraped or observed.

* :class:`BgwsCollector` is a Prometheus custom collector (``pip install 'bgws[prometheus]'``).
  Register it in a registry of your own, or let :class:`MetricsServer` serve it.
* :class:`MetricsServer` serves ``GET /metrics`` on the event loop (``bgws run --metrics
  127.0.0.1:9464`` starts one beside the daemon's services).
* :func:`instrument_otel` registers observable instruments on an OpenTelemetry meter
  (``pip install 'bgws[otel]'``).

Every metric is labelled by ``service`` (the name in the service file or manager). The names
follow Prometheus conventions; :data:`METRICS` lists them with their help text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ._engine.observe import RTT_BUCKETS
from .errors import ConfigError
from .machine import State
from .stats import ServiceStats

if TYPE_CHECKING:
    from .manager import ServiceManager
    from .service import Service

__all__ = [
    "METRICS",
    "RTT_BUCKETS",
    "BgwsCollector",
    "Metric",
    "MetricsServer",
    "instrument_otel",
    "parse_address",
]

_log = logging.getLogger("bgws.metrics")


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric read from each service's stats.

    Attributes:
        name: the Prometheus name (counters end in ``_total``).
        kind: ``"counter"`` or ``"gauge"``.
        help: what it counts.
        read: its value from a :class:`~bgws.ServiceStats` (``None``: no sample).
        unit: the OpenTelemetry unit (``"s"``, ``"1"`` or ``"{message}"``).
    """

    name: str
    kind: Literal["counter", "gauge"]
    help: str
    read: Callable[[ServiceStats], float | None]
    unit: str = "1"


METRICS: tuple[Metric, ...] = (
    Metric("bgws_messages_received_total", "counter", "Data frames received.",
           lambda s: s.received, "{message}"),
    Metric("bgws_messages_dispatched_total", "counter", "Messages routed to handlers.",
           lambda s: s.dispatched, "{message}"),
    Metric("bgws_messages_sent_total", "counter", "Messages handed to the transport.",
           lambda s: s.sent, "{message}"),
    Metric("bgws_messages_resent_total", "counter", "Messages sent again (reconnect, ack due).",
           lambda s: s.resent, "{message}"),
    Metric("bgws_messages_dropped_total", "counter", "Messages dropped (overflow, stop).",
           lambda s: s.dropped, "{message}"),
    Metric("bgws_messages_expired_total", "counter", "Messages whose time-to-live passed.",
           lambda s: s.expired, "{message}"),
    Metric("bgws_reconnects_total", "counter", "Links that came up again after the first.",
           lambda s: s.reconnects),
    Metric("bgws_connect_attempts_total", "counter", "Connect attempts, successful or not.",
           lambda s: s.connect_attempts),
    Metric("bgws_dead_links_total", "counter", "Links declared dead by the keepalive.",
           lambda s: s.dead_links),
    Metric("bgws_rotations_total", "counter", "Links replaced before max_connection_age.",
           lambda s: s.rotations),
    Metric("bgws_feed_resets_total", "counter", "Inbound stream resets (a new epoch).",
           lambda s: s.resets),
    Metric("bgws_feed_gaps_total", "counter", "Inbound sequence gaps (resume).",
           lambda s: s.gaps),
    Metric("bgws_feed_duplicates_total", "counter", "Inbound duplicates dropped (resume).",
           lambda s: s.duplicates, "{message}"),
    Metric("bgws_handler_errors_total", "counter", "Handler and plugin exceptions.",
           lambda s: s.handler_errors),
    Metric("bgws_decode_errors_total", "counter", "Frames the codec could not decode.",
           lambda s: s.decode_errors),
    Metric("bgws_errors_total", "counter", "Errors reported to the error handler.",
           lambda s: s.errors),
    Metric("bgws_link_up", "gauge", "1 while connected, else 0.",
           lambda s: 1.0 if s.state is State.CONNECTED else 0.0),
    Metric("bgws_outage_attempts", "gauge", "Failed connect attempts in the current outage.",
           lambda s: s.attempts),
    Metric("bgws_outbox_messages", "gauge", "Undelivered messages (queued and in flight).",
           lambda s: s.queued + s.in_flight, "{message}"),
    Metric("bgws_outbox_in_flight", "gauge", "Messages sent and waiting for their ack.",
           lambda s: s.in_flight, "{message}"),
    Metric("bgws_outbox_oldest_age_seconds", "gauge", "Age of the oldest undelivered message.",
           lambda s: s.outbox_oldest_age or 0.0, "s"),
    Metric("bgws_uptime_seconds", "gauge", "Seconds the current link has been up (0: down).",
           lambda s: s.uptime, "s"),
    Metric("bgws_offline_since_timestamp_seconds", "gauge", "When the current outage began.",
           lambda s: s.offline_since, "s"),
    Metric("bgws_connect_quota_wait_until_timestamp_seconds", "gauge",
           "When connect_quota lets the next connect go (absent: no wait).",
           lambda s: s.quota_wait_until, "s"),
    Metric("bgws_last_message_received_timestamp_seconds", "gauge",
           "When the last frame was read.", lambda s: s.last_received_at, "s"),
    Metric("bgws_rtt_last_seconds", "gauge", "The last keepalive round trip.",
           lambda s: s.rtt, "s"),
)  # fmt: skip
"""Every metric but the ``bgws_rtt_seconds`` histogram and the ``bgws_state`` state set."""


def _each(services: Any) -> Iterator[tuple[str, Service]]:
    for name in list(services):
        yield name, services[name]


class BgwsCollector:
    """A Prometheus collector over the stats of services, by name.

    Register it in a registry of your own (``CollectorRegistry(auto_describe=False)``): it
    reads every service's stats at each scrape and keeps no state.

    Args:
        services: a :class:`~bgws.ServiceManager` or a mapping of names to services (read
            at each scrape, so services added later are included).
    """

    def __init__(self, services: ServiceManager | Mapping[str, Service]) -> None:
        self._services = services

    def collect(self) -> Iterator[Any]:
        """The metric families, one sample per service (called by the registry)."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
            StateSetMetricFamily,
        )

        stats = [(name, service.stats) for name, service in _each(self._services)]
        for metric in METRICS:
            family: Any
            if metric.kind == "counter":
                family = CounterMetricFamily(metric.name, metric.help, labels=["service"])
            else:
                family = GaugeMetricFamily(metric.name, metric.help, labels=["service"])
            for name, snapshot in stats:
                value = metric.read(snapshot)
                if value is not None:
                    family.add_metric([name], float(value))
            yield family
        rtt = HistogramMetricFamily(
            "bgws_rtt_seconds", "Keepalive round trips (probe to answer).", labels=["service"]
        )
        for name, snapshot in stats:
            buckets, total = _cumulative(snapshot.rtt_counts)
            rtt.add_metric([name], buckets, snapshot.rtt_sum if total else 0.0)
        yield rtt
        state = StateSetMetricFamily("bgws_state", "The connection state.", labels=["service"])
        for name, snapshot in stats:
            state.add_metric([name], {s.name: s is snapshot.state for s in State})
        yield state

    def describe(self) -> list[Any]:
        """Nothing: the families are read at each scrape (keeps registration cheap)."""
        return []


def _cumulative(counts: Sequence[int]) -> tuple[list[tuple[str, float]], int]:
    """Prometheus buckets (``le``, cumulative count) from per-bucket counts."""
    padded = list(counts) or [0] * (len(RTT_BUCKETS) + 1)
    out: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip([*map(repr, RTT_BUCKETS), "+Inf"], padded, strict=True):
        running += count
        out.append((bound, float(running)))
    return out, running


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6, ``:PORT`` or ``PORT`` for 127.0.0.1).

    Raises:
        ConfigError: it is not such an address.
    """
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise ConfigError("metrics", f"address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9464")
    return host, number


class MetricsServer:
    """Serves ``GET /metrics`` (the Prometheus text format) for services, on the event loop.

    Only ``/metrics`` answers (anything else is 404); each connection carries one request.

    Args:
        services: a :class:`~bgws.ServiceManager` or a mapping of names to services.
        host: the address to listen on (loopback by default: metrics are not secret, but
            they say what the process talks to).
        port: the port (0: any free one; see :attr:`port` once started).
    """

    def __init__(
        self,
        services: ServiceManager | Mapping[str, Service],
        host: str = "127.0.0.1",
        port: int = 9464,
    ) -> None:
        try:
            from prometheus_client import CollectorRegistry
        except ImportError as exc:
            raise ConfigError(
                "metrics", "metrics need prometheus-client: pip install 'bgws[prometheus]'"
            ) from exc
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(BgwsCollector(services))
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen.

        Raises:
            ConfigError: the address cannot be bound.
        """
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port)
        except OSError as exc:
            raise ConfigError(
                "metrics", f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror or exc}"
            ) from exc
        self.port = int(self._server.sockets[0].getsockname()[1])
        _log.info("metrics on http://%s/metrics", _join(self.host, self.port))

    async def close(self) -> None:
        """Stop listening."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await server.wait_closed()

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10.0):
                head = await reader.readuntil(b"\r\n\r\n")
            method, _, rest = head.decode("latin-1").partition(" ")
            path = rest.partition(" ")[0].partition("?")[0]
            if method not in ("GET", "HEAD"):
                writer.write(_response(405, b"method not allowed\n", "text/plain"))
            elif path != "/metrics":
                writer.write(_response(404, b"not found: try /metrics\n", "text/plain"))
            else:
                from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

                body = generate_latest(self.registry)
                writer.write(_response(200, b"" if method == "HEAD" else body, CONTENT_TYPE_LATEST))
            await writer.drain()
        except (
            TimeoutError,
            ConnectionError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            pass
        finally:
            writer.close()


def _response(status: int, body: bytes, kind: str) -> bytes:
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}[status]
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def instrument_otel(
    services: ServiceManager | Mapping[str, Service], meter: Any = None
) -> list[Any]:
    """Register observable OpenTelemetry instruments over the services' stats.

    Each metric of :data:`METRICS` becomes an observable counter or gauge named without the
    ``_total`` suffix (``bgws_messages_received``), observed with a ``service`` attribute;
    the round-trip histogram is given as ``bgws_rtt_last_seconds`` only (the API has no
    observable histogram). Your SDK's exporter decides where they go.

    Args:
        services: a :class:`~bgws.ServiceManager` or a mapping of names to services.
        meter: the meter to register on (default: ``opentelemetry.metrics.get_meter("bgws")``).

    Returns:
        The instruments.

    Raises:
        ConfigError: opentelemetry-api is not installed.
    """
    try:
        from opentelemetry import metrics as otel
    except ImportError as exc:
        raise ConfigError(
            None, "OpenTelemetry needs opentelemetry-api: pip install 'bgws[otel]'"
        ) from exc
    import bgws

    if meter is None:
        meter = otel.get_meter("bgws", bgws.__version__)
    instruments = []
    for metric in METRICS:
        name = metric.name.removesuffix("_total")
        callback = _observer(services, metric, otel.Observation)
        create = (
            meter.create_observable_counter
            if metric.kind == "counter"
            else meter.create_observable_gauge
        )
        instruments.append(
            create(name, callbacks=[callback], unit=metric.unit, description=metric.help)
        )
    return instruments


def _observer(services: Any, metric: Metric, observation: Any) -> Callable[[Any], list[Any]]:
    def observe(options: Any) -> list[Any]:
        out = []
        for name, service in _each(services):
            value = metric.read(service.stats)
            if value is not None:
                out.append(observation(float(value), {"service": name}))
        return out

    return observe
