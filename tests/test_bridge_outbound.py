"""The NATS bridge, outbound: commands from a durable JetStream consumer into the outbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import bgws
from bgws.bridge import NatsBridge
from bgws.testing import Server
from bgws.transport import Transport

from .bridgekit import AckWatch, ensure_stream, publish_commands
from .conftest import ServiceFactory

pytest.importorskip("nats")


def commanded(
    make_service: ServiceFactory, url: str, broker: Any, transport: Transport, store: Path
) -> tuple[bgws.Service, NatsBridge]:
    bridge = NatsBridge(broker.url, publish=None)
    service = make_service(
        url,
        app_name="orders",
        plugins=[bridge],
        transport=transport,
        storage="sqlite",
        storage_path=str(store),
    )
    return service, bridge


async def test_commands_reach_the_server_with_stable_ids_after_a_restart(
    nats_broker: Any, make_service: ServiceFactory, transport: Transport, tmp_path: Path
) -> None:
    """Commands consumed while offline wait in the outbox across a restart; ids <stream>-<seq>."""
    await ensure_stream(nats_broker.url)
    commands = [{"type": "order", "n": n} for n in range(30)]
    await publish_commands(nats_broker.url, "bgws.orders.out", commands)
    store = tmp_path / "orders.sqlite3"
    async with Server() as server:
        await server.stop()  # the WebSocket server is down: commands wait in the outbox
        service, bridge = commanded(make_service, server.url, nats_broker, transport, store)
        async with AckWatch(nats_broker.url, "bgws-orders") as acks, service:
            await acks.wait(30)  # acked to JetStream only after the outbox commit
            assert service.stats.queued == 30
            assert bridge.status()["consumed"] == 30
        await server.start()
        service, bridge = commanded(make_service, server.url, nats_broker, transport, store)
        async with service:
            received = await server.wait_for_messages(30)
            await publish_commands(nats_broker.url, "bgws.orders.out", [{"type": "order", "n": 30}])
            received = await server.wait_for_messages(31)
        data = [m.json() for m in received]
        assert [d["n"] for d in data] == list(range(31))
        assert [d["id"] for d in data] == [f"BGWS-{n}" for n in range(1, 32)]
        assert server.duplicates == []
        assert bridge.status()["consumed"] == 1  # the first 30 were acked before the restart


async def test_a_command_with_its_own_id_keeps_it_and_text_goes_as_is(
    nats_broker: Any, make_service: ServiceFactory, transport: Transport, tmp_path: Path
) -> None:
    """A JSON command's own id is kept; a payload that is not a JSON object is sent unchanged."""
    await ensure_stream(nats_broker.url)
    async with Server() as server:
        service, _ = commanded(
            make_service, server.url, nats_broker, transport, tmp_path / "o.sqlite3"
        )
        async with service:
            await publish_commands(
                nats_broker.url, "bgws.orders.out", [{"type": "order", "id": "mine"}, [1, 2]]
            )
            received = await server.wait_for_messages(2)
        assert received[0].json() == {"type": "order", "id": "mine"}
        assert received[1].json() == [1, 2]
