"""The bridge and the fleet together (``bench/scale_chaos.py``, CI-sized): ``bgws run``
daemons sharing bridged services, SIGKILLed, with a broker restart: every message counted."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from bench.scale_chaos import Plan, report, run

from bgws.bridge import BridgeError, NatsBridge
from bgws.bridge import _consume as consume
from bgws.testing import Feed, Server
from bgws.transport import Transport

from .bridgekit import StreamReader, ensure_stream, publish_commands
from .conftest import Errors, ServiceFactory
from .fleetkit import Member, member_env

pytest.importorskip("nats")
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="Unix sockets and signals")

TRANSPORTS = ["picows", "websockets"]


def bridged_fleet(folder: Path, nats_url: str, url: str, option: str) -> Path:
    """A service file: a fleet of one service, ``feed`` at ``url`` (with ``option``), resumed
    by ``seq`` and bridged to ``nats_url`` (inbound only)."""
    nats = json.dumps(nats_url)
    file = folder / "fleet.toml"
    file.write_text(
        f'[fleet]\nnats = {nats}\nname = "one"\nlease_ttl = 1\n'
        f"[services.feed]\nurl = {json.dumps(url)}\n{option}\n"
        'storage_path = "feed.sqlite3"\n'
        '[services.feed.resume]\nseq_field = "seq"\n'
        f'[services.feed.bridge]\nnats = {nats}\nconsume = ""\n'
    )
    return file


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.timeout(60)
async def test_a_fleet_member_runs_the_bridge_of_the_services_it_claims(
    tmp_path: Path, nats_broker: Any, transport: str
) -> None:
    """A service claimed by a fleet member gets its ``bridge`` table: messages reach JetStream."""
    async with Server(feed=Feed()) as server:
        file = bridged_fleet(tmp_path, nats_broker.url, server.url, f'transport = "{transport}"')
        member = await Member.start(file, tmp_path / "m.sock", member_env(tmp_path))
        try:
            await server.wait_for_connections(1, timeout=30)
            for _ in range(5):
                server.publish({"type": "tick"})
            async with StreamReader(nats_broker.url) as stream:
                messages = await stream.wait(5, timeout=30)
                assert [m["seq"] for m in messages] == [1, 2, 3, 4, 5]
                assert stream.ids == [f"feed.{n}" for n in range(1, 6)]
        finally:
            member.terminate()
            await member.finish()


async def test_an_idle_consumer_reports_no_error_and_still_delivers(
    nats_broker: Any,
    make_service: ServiceFactory,
    transport: Transport,
    errors: Errors,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fetches that come back empty (a pull request expiring on the broker, or nats-py's own
    timeout) are idle rounds, not errors: none is reported and a command still goes out."""
    monkeypatch.setattr(consume, "_FETCH_WAIT", 0.05)  # many idle rounds in little time
    await ensure_stream(nats_broker.url)
    async with Server() as server:
        bridge = NatsBridge(nats_broker.url, publish=None)
        service = make_service(server.url, app_name="idle", plugins=[bridge], transport=transport)
        async with service:
            with pytest.raises(TimeoutError):  # about 40 idle fetches, and no error
                await errors.wait_for(BridgeError, timeout=2.0)
            await publish_commands(nats_broker.url, "bgws.idle.out", [{"type": "order"}])
            received = await server.wait_for_messages(1)
        assert received[0].json()["type"] == "order"
        assert bridge.status()["errors"] == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.timeout(90)
async def test_a_fleet_with_bridges_loses_and_duplicates_nothing_through_sigkills(
    tmp_path: Path, transport: str
) -> None:
    """3 daemons, 3 bridged services: a daemon SIGKILL and a broker restart mid-stream, then
    a SIGKILL while commands flow: each inbound seq in the stream once, each command delivered,
    repeats only with the same id."""
    plan = Plan(
        services=3,
        messages=600,
        commands=300,
        kills=1,
        lease_ttl=1.0,
        broker_down=0.3,
        rate=600.0,
        transport=transport,
        timeout=30.0,
    )
    result = await run(plan, tmp_path)
    text = report(plan, result)
    assert result.stored == plan.messages, text
    assert (result.missing, result.duplicated) == (0, 0), text  # order: a gap fills late
    assert result.commands_sent == plan.commands, text
    assert (result.commands_missing, result.repeats_with_another_id) == (0, 0), text
    assert len(result.failovers) == 2, text
    assert all(t < plan.lease_ttl * 1.25 + 5 for t in result.failovers), text


@pytest.mark.timeout(90)
async def test_a_fleet_member_with_a_bridge_exits_on_sigterm_while_the_broker_hangs(
    tmp_path: Path, nats_broker: Any
) -> None:
    """The broker freezes (SIGSTOP) while a member runs a bridged service with 24 MB headed
    for JetStream: SIGTERM still ends ``bgws run`` within its bounds (the drain, the stop
    hooks' grace, the broker calls)."""
    async with Server(feed=Feed()) as server:
        file = bridged_fleet(tmp_path, nats_broker.url, server.url, "close_timeout = 0.5")
        member = await Member.start(file, tmp_path / "m.sock", member_env(tmp_path))
        try:
            await server.wait_for_connections(1, timeout=30)
            server.publish({"type": "tick"})
            async with StreamReader(nats_broker.url) as stream:
                await stream.wait(1, timeout=30)  # the bridge publishes
            nats_broker.freeze()
            pad = "x" * 60_000
            for _ in range(400):
                server.publish({"type": "tick", "pad": pad})
            began = time.monotonic()
            member.terminate()
            async with asyncio.timeout(40):
                await member.finish()
            took = time.monotonic() - began
            assert took < 0.5 + 5 + 3 * 2 + 5, f"exit took {took:.1f}s"  # plus a loaded CI
        finally:
            member.kill()
            await member.finish()
            nats_broker.kill()
