"""A FleetManager in-process against a real broker: a lost lease stops the service at once,
an unreachable broker fences it before the lease can expire."""

from __future__ import annotations

import time
from typing import Any

import nats
import pytest

from bgws import Config, Service, State
from bgws.fleet import FleetManager
from bgws.fleet_config import load_fleet
from bgws.testing import Server

TIMEOUT = 20.0
TRANSPORTS = ["picows", "websockets"]


def manager(url: str, server: Server, transport: str, ttl: float) -> FleetManager:
    fleet = load_fleet({"nats": url, "name": "t", "lease_ttl": ttl, "member": "me"})

    def make() -> Service:
        config = Config(
            url=server.url + "svc", app_name="svc", storage="memory", transport=transport
        )
        return Service(config)

    return FleetManager(fleet, {"svc": make})


async def held(fm: FleetManager, server: Server) -> Service:
    """Wait until the manager's claimed ``svc`` has connected; return that service."""
    await server.wait_for_connections(1, timeout=TIMEOUT)
    service = fm["svc"]
    await service.wait_for(State.CONNECTED, TIMEOUT)
    assert fm.held == ["svc"]
    return service


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_lease_whose_revision_moved_stops_its_service_at_once(
    nats_broker: Any, transport: str
) -> None:
    """Someone else deletes the lease: the next renewal is refused and the service stops."""
    async with Server() as server:
        fm = manager(nats_broker.url, server, transport, ttl=2.0)
        await fm.start()
        try:
            first = await held(fm, server)
            nc = await nats.connect(nats_broker.url)
            try:
                kv = await nc.jetstream().key_value("bgws_fleet_t")
                await kv.put("services.svc", b"intruder")  # the revision moves under it
                stolen = time.monotonic()
                await first.wait_for(State.CLOSED, TIMEOUT)
                stopped = time.monotonic() - stolen
                assert stopped < 0.5 + 1.0  # the next renewal (0.5 s), plus a loaded CI
                assert "svc" not in fm.held
            finally:
                await nc.close()
        finally:
            await fm.stop()


async def test_an_unreachable_broker_fences_the_service_before_its_lease_can_expire(
    nats_broker: Any,
) -> None:
    """Broker SIGKILLed: the service is stopped lease_ttl - renew_interval after the last
    renewal at the latest, so before any other member could claim it."""
    async with Server() as server:
        fm = manager(nats_broker.url, server, "picows", ttl=2.0)
        await fm.start()
        try:
            service = await held(fm, server)
            nats_broker.kill()
            killed = time.monotonic()
            await service.wait_for(State.CLOSED, TIMEOUT)
            fenced = time.monotonic() - killed
            print(f"fenced {fenced:.2f}s after the broker died (lease_ttl 2s, fence at 1.5s)")
            assert fenced < 2.0 - 0.5 + 0.1  # before the lease (renewed <= kill) expires
            assert fm.held == []
            assert fm.status()["svc"].to_dict()["fleet"]["here"] is False
        finally:
            await fm.stop()
