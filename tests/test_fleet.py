"""A fleet of `bgws run` daemons shares services through JetStream leases (a real broker)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fleetkit import (
    TIMEOUT,
    Member,
    Watch,
    end_all,
    fleet_file,
    holdings_settle,
    member_env,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="Unix sockets and signals")

TRANSPORTS = ["picows", "websockets"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_each_service_runs_on_exactly_one_daemon(
    tmp_path: Path, nats_broker: Any, transport: str
) -> None:
    """Two daemons of one fleet split four services: each runs once, status names its holder."""
    services = ["s0", "s1", "s2", "s3"]
    watch = Watch()
    env = member_env(tmp_path)
    members: list[Member] = []
    async with watch.server:
        file = fleet_file(
            tmp_path / "f.toml",
            nats=nats_broker.url,
            url=watch.server.url,
            services=services,
            transport=transport,
        )
        try:
            for i in range(2):
                members.append(await Member.start(file, tmp_path / f"m{i}.sock", env))
            await watch.wait_each_once(services)
            held = await holdings_settle(members, [2, 2])  # spread, not all on the first
            assert held[0] | held[1] == set(services)
            assert not held[0] & held[1]
            status = (await members[0].status())["services"]
            holders = {name: s["fleet"]["holder"] for name, s in status.items()}
            names = [m.lines for m in members]
            assert set(holders.values()) <= {_name(lines) for lines in names}
        finally:
            await end_all(members)
    assert watch.overlaps == []


def _name(lines: list[str]) -> str:
    """The member name a daemon logged when it joined."""
    for line in lines:
        if "joined as " in line:
            return line.split("joined as ")[1].split()[0]
    raise AssertionError("the daemon did not log its member name")


async def _fleet(
    tmp_path: Path, nats: str, watch: Watch, services: list[str], n: int, **fleet: Any
) -> list[Member]:
    file = fleet_file(
        tmp_path / "f.toml", nats=nats, url=watch.server.url, services=services, **fleet
    )
    env = member_env(tmp_path)
    return [await Member.start(file, tmp_path / f"m{i}.sock", env) for i in range(n)]


async def test_a_killed_daemons_services_move_within_lease_ttl_plus_one_renewal(
    tmp_path: Path, nats_broker: Any
) -> None:
    """SIGKILL a member: another claims its services within lease_ttl + one renewal interval."""
    services = ["a", "b", "c", "d"]
    watch = Watch()
    async with watch.server:
        members = await _fleet(tmp_path, nats_broker.url, watch, services, 2, lease_ttl=1.0)
        try:
            await watch.wait_each_once(services)
            await holdings_settle(members, [2, 2])
            victim, survivor = members
            links = watch.links(await victim.held())
            killed = time.monotonic()
            victim.kill()
            await victim.finish()
            await watch.wait_closed(links)
            moved = await watch.wait_each_once(services, timeout=TIMEOUT)
            failover = moved - killed
            print(f"failover after SIGKILL: {failover:.2f}s (lease_ttl 1.0s, renewal 0.25s)")
            assert failover < 1.0 + 0.25 + 1.0  # the bound, plus 1s to connect on a loaded CI
            assert await survivor.held() == set(services)
        finally:
            await end_all(members)
    assert watch.overlaps == []


async def test_a_graceful_stop_hands_the_services_over_at_once(
    tmp_path: Path, nats_broker: Any
) -> None:
    """SIGTERM a member: it stops its services and deletes their leases; they move at once."""
    services = ["a", "b", "c", "d"]
    watch = Watch()
    async with watch.server:
        members = await _fleet(tmp_path, nats_broker.url, watch, services, 2, lease_ttl=4.0)
        try:
            await watch.wait_each_once(services)
            await holdings_settle(members, [2, 2])
            leaving, staying = members
            links = watch.links(await leaving.held())
            asked = time.monotonic()
            leaving.terminate()
            assert await leaving.finish() == 0
            await watch.wait_closed(links)
            moved = await watch.wait_each_once(services)
            print(f"hand-over after SIGTERM: {moved - asked:.2f}s (lease_ttl 4s)")
            assert moved - asked < 2.0  # well before the 4 s lease could have expired
            assert await staying.held() == set(services)
            assert any("released" in line for line in leaving.lines)
        finally:
            await end_all(members)
    assert watch.overlaps == []


async def test_a_quick_broker_restart_keeps_every_lease_with_its_holder(
    tmp_path: Path, nats_broker: Any
) -> None:
    """SIGKILL and restart the broker within the fence time: holders renew on, nothing moves."""
    import nats

    services = ["a", "b", "c", "d"]
    watch = Watch()
    async with watch.server:
        members = await _fleet(tmp_path, nats_broker.url, watch, services, 2, lease_ttl=3.0)
        try:
            await watch.wait_each_once(services)
            before = await holdings_settle(members, [2, 2])
            disconnects = watch.server.disconnects  # the start may have moved some over
            await asyncio.to_thread(nats_broker.restart)  # not blocking the loop (keepalives run)
            renewed: dict[str, int] = dict.fromkeys(services, 0)
            enough = asyncio.Event()

            async def seen(msg: Any) -> None:
                renewed[msg.subject.rsplit(".", 1)[1]] += 1
                if all(n >= 2 for n in renewed.values()):
                    enough.set()

            nc = await nats.connect(nats_broker.url)
            try:
                await nc.subscribe("bgws.fleet.test.services.*", cb=seen)
                async with asyncio.timeout(TIMEOUT):
                    await enough.wait()  # two committed renewals of each lease after the restart
            finally:
                await nc.close()
            assert [await m.held() for m in members] == before
            assert watch.server.disconnects == disconnects
            assert all(watch.open_by_service()[s] == 1 for s in services)
        finally:
            await end_all(members)
    assert watch.overlaps == []


async def test_a_long_broker_outage_fences_the_services_then_they_come_back_once(
    tmp_path: Path, nats_broker: Any
) -> None:
    """Broker down past the fence time: every member stops its services; back up: each once."""
    services = ["a", "b", "c", "d"]
    watch = Watch()
    async with watch.server:
        members = await _fleet(tmp_path, nats_broker.url, watch, services, 2, lease_ttl=1.0)
        try:
            await watch.wait_each_once(services)
            await holdings_settle(members, [2, 2])
            nats_broker.kill()
            await watch.server.wait_until(
                lambda: not watch.server.open_connections, timeout=TIMEOUT, what="all fenced"
            )
            for m in members:
                await m.wait_for("before its lease can expire")
            await asyncio.to_thread(nats_broker.start)  # not blocking the loop (keepalives run)
            await watch.wait_each_once(services)
            held = await holdings_settle(members, [2, 2])
            assert held[0] | held[1] == set(services)
            assert not held[0] & held[1]
        finally:
            await end_all(members)
    assert watch.overlaps == []


async def test_chaos_kills_and_a_join_leave_every_service_on_exactly_one_daemon(
    tmp_path: Path, nats_broker: Any
) -> None:
    """3 members, 9 services: SIGKILL one, a new one joins (gets its share), SIGKILL another."""
    services = [f"s{i}" for i in range(9)]
    watch = Watch()
    env = member_env(tmp_path)
    async with watch.server:
        file = fleet_file(
            tmp_path / "f.toml", nats=nats_broker.url, url=watch.server.url, services=services
        )
        members = [await Member.start(file, tmp_path / f"m{i}.sock", env) for i in range(3)]
        try:
            await watch.wait_each_once(services)
            await holdings_settle(members, [3, 3, 3])  # spread, not all on the first
            links = watch.links(await members[0].held())
            members[0].kill()
            await members[0].finish()
            await watch.wait_closed(links)
            await watch.wait_each_once(services)
            joined = await Member.start(file, tmp_path / "m3.sock", env)
            members.append(joined)
            await holdings_settle(members[1:], [3, 3, 3])  # the others handed some over
            await watch.wait_each_once(services)
            links = watch.links(await members[1].held())
            members[1].kill()
            await members[1].finish()
            await watch.wait_closed(links)
            await watch.wait_each_once(services)
            held = [await m.held() for m in members[2:]]
            assert held[0] | held[1] == set(services)
            assert not held[0] & held[1]
        finally:
            await end_all(members)
    assert watch.overlaps == []
