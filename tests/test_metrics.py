"""Prometheus metrics scraped over loopback and parsed; OpenTelemetry observable instruments."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import bgws
from bgws.errors import ConfigError
from bgws.metrics import METRICS, BgwsCollector, MetricsServer, instrument_otel, parse_address
from bgws.testing import Server
from bgws.transport import Transport
from tests.conftest import AcceptedTokens, Changes, ServiceFactory

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

TIMEOUT = 10.0


async def http_get(port: int, path: str) -> tuple[int, str]:
    """One HTTP/1.1 GET over loopback; the status code and the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        async with asyncio.timeout(TIMEOUT):
            raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, parsed by prometheus-client's own parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_endpoint_serves_every_service_labelled(
    bgws_server: Server, make_service: ServiceFactory, transport: Transport
) -> None:
    """GET /metrics over loopback gives counters, gauges and the RTT histogram per service."""
    up = make_service(bgws_server.url, transport=transport)
    down_server = Server()
    await down_server.start()
    down_url = down_server.url
    await down_server.stop()
    down = make_service(down_url, transport=transport, initial_reconnect_delay=30.0,
                        max_reconnect_delay=30.0)  # fmt: skip
    manager = bgws.ServiceManager({"up": up, "down": down})
    changes = Changes(up)
    async with manager, MetricsServer(manager, "127.0.0.1", 0) as endpoint:
        await changes.wait(bgws.State.CONNECTED)
        await up.send({"type": "hello"})
        await bgws_server.wait_for_messages(1)
        await down.send({"type": "queued"})
        await manager.wait_for("down", bgws.State.BACKING_OFF, timeout=TIMEOUT)
        status, body = await http_get(endpoint.port, "/metrics")
        assert status == 200
        got = samples(body)
        assert got[("bgws_link_up", (("service", "up"),))] == 1.0
        assert got[("bgws_link_up", (("service", "down"),))] == 0.0
        assert got[("bgws_messages_sent_total", (("service", "up"),))] == 1.0
        assert got[("bgws_outbox_messages", (("service", "down"),))] == 1.0
        assert got[("bgws_outbox_oldest_age_seconds", (("service", "down"),))] >= 0.0
        assert got[("bgws_reconnects_total", (("service", "up"),))] == 0.0
        assert got[("bgws_connect_attempts_total", (("service", "down"),))] >= 1.0
        assert got[("bgws_feed_gaps_total", (("service", "up"),))] == 0.0
        assert got[("bgws_outage_attempts", (("service", "down"),))] >= 1.0
        assert got[("bgws_state", (("bgws_state", "BACKING_OFF"), ("service", "down")))] == 1
        assert ("bgws_rtt_seconds_count", (("service", "up"),)) in got
        assert (
            got[("bgws_rtt_seconds_bucket", (("le", "+Inf"), ("service", "up")))]
            == got[("bgws_rtt_seconds_count", (("service", "up"),))]
        )
        for metric in METRICS:
            if metric.name != "bgws_rtt_last_seconds" and "timestamp" not in metric.name:
                assert (metric.name, (("service", "up"),)) in got, metric.name
        assert (await http_get(endpoint.port, "/other"))[0] == 404


def test_collector_keeps_no_global_state() -> None:
    """Registering the collector in a private registry leaves the global one untouched."""
    before = {m.name for m in prometheus_client.REGISTRY.collect()}
    registry = prometheus_client.CollectorRegistry(auto_describe=False)
    registry.register(BgwsCollector({}))
    text = prometheus_client.generate_latest(registry).decode()
    assert "bgws_link_up" in text
    assert {m.name for m in prometheus_client.REGISTRY.collect()} == before


def test_parse_address() -> None:
    """HOST:PORT, [v6]:PORT and a bare port; anything else is a ConfigError."""
    assert parse_address("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_address("[::1]:9000") == ("::1", 9000)
    assert parse_address("9464") == ("127.0.0.1", 9464)
    assert parse_address(":0") == ("127.0.0.1", 0)
    for wrong in ("host:port", "1.2.3.4:70000", ""):
        with pytest.raises(ConfigError, match="metrics"):
            parse_address(wrong)


class _Meter:
    """An OpenTelemetry meter that keeps the instruments it is asked for (the API's SDK part)."""

    def __init__(self) -> None:
        self.made: dict[str, tuple[str, Any]] = {}

    def create_observable_counter(self, name: str, callbacks: Any, **kw: Any) -> str:
        self.made[name] = ("counter", callbacks[0])
        return name

    def create_observable_gauge(self, name: str, callbacks: Any, **kw: Any) -> str:
        self.made[name] = ("gauge", callbacks[0])
        return name


async def test_otel_instruments_observe_each_service(make_service: ServiceFactory) -> None:
    """instrument_otel registers observable counters and gauges with a service attribute."""
    pytest.importorskip("opentelemetry.metrics")
    from opentelemetry.metrics import CallbackOptions

    service = make_service("ws://127.0.0.1:9/")
    meter = _Meter()
    instruments = instrument_otel({"chat": service}, meter)
    assert len(instruments) == len(METRICS)
    kind, callback = meter.made["bgws_messages_received"]
    assert kind == "counter"
    [observation] = callback(CallbackOptions())
    assert (observation.value, dict(observation.attributes)) == (0.0, {"service": "chat"})
    kind, callback = meter.made["bgws_link_up"]
    assert kind == "gauge"
    assert callback(CallbackOptions())[0].value == 0.0
    assert instrument_otel({"chat": service}) is not None  # the global no-op meter works too


async def test_rotations_and_resets_are_scraped(
    make_service: ServiceFactory, transport: Transport
) -> None:
    """A link replaced before ``max_connection_age`` counts in ``bgws_rotations_total``; the
    long-run counters are there from the first scrape (resets at 0, no quota wait)."""
    tokens = AcceptedTokens()
    async with Server() as server:
        service = make_service(
            server.url, transport=transport, max_connection_age=0.2, auth_handler=tokens
        )
        registry = prometheus_client.CollectorRegistry(auto_describe=False)
        registry.register(BgwsCollector({"feed": service}))
        async with service:
            await tokens.wait(2, TIMEOUT)  # the first link, then the rotated one
            got = samples(prometheus_client.generate_latest(registry).decode())
        assert got[("bgws_rotations_total", (("service", "feed"),))] >= 1.0
        assert got[("bgws_feed_resets_total", (("service", "feed"),))] == 0.0
        assert (
            "bgws_connect_quota_wait_until_timestamp_seconds",
            (("service", "feed"),),
        ) not in got
