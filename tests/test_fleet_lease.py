"""A FleetManager in-process against a real broker: a lost lease stops the service at once,
an unreachable broker fences it before the lease can expire, a hand-over on one machine
carries the queued messages along, a member set up otherwise says why it cannot join."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import nats
import pytest

from bgws import Config, Service, State
from bgws.daemon import Daemon
from bgws.fleet import FleetManager
from bgws.fleet_config import load_fleet
from bgws.local import ControlError, connect_local
from bgws.testing import Server

TIMEOUT = 20.0
TRANSPORTS = ["picows", "websockets"]


def manager(
    url: str,
    server: Server,
    transport: str,
    ttl: float,
    *,
    member: str = "me",
    store: Path | None = None,
) -> FleetManager:
    fleet = load_fleet({"nats": url, "name": "t", "lease_ttl": ttl, "member": member})
    where: dict[str, Any] = {"storage": "memory"}
    if store is not None:
        where = {"storage": "sqlite", "storage_path": str(store)}

    def make() -> Service:
        config = Config(url=server.url + "svc", app_name="svc", transport=transport, **where)
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


class FleetLog(logging.Handler):
    """The bgws.fleet log records, with a wait for the n-th one that holds some text."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.changed.set()

    async def wait_for(self, text: str, count: int = 1) -> None:
        async with asyncio.timeout(TIMEOUT):
            while sum(text in line for line in self.lines) < count:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
def fleet_log() -> Any:
    """Collects the bgws.fleet log records of the test."""
    handler = FleetLog()
    logger = logging.getLogger("bgws.fleet")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_hand_over_on_one_machine_sends_what_the_last_holder_queued(
    nats_broker: Any, tmp_path: Path, transport: str, fleet_log: FleetLog
) -> None:
    """Members sharing a store file: messages queued offline on one go out from the next."""
    server = Server()
    await server.start()
    await server.stop()  # the upstream is down: sends stay in the SQLite outbox
    store = tmp_path / "svc.sqlite3"
    first = manager(nats_broker.url, server, transport, 2.0, member="a", store=store)
    second = manager(nats_broker.url, server, transport, 2.0, member="b", store=store)
    await first.start()
    try:
        await fleet_log.wait_for("claimed svc")
        assert first.held == ["svc"]
        ids = [await first["svc"].send({"type": "t", "n": n}) for n in range(3)]
        await second.start()
        await first.stop()  # hands svc over to the second member, the queue left in the file
        await fleet_log.wait_for("claimed svc", count=2)
        assert second.held == ["svc"]
        await server.start()
        received = await server.wait_for_messages(3, timeout=TIMEOUT)
        assert [m.json()["id"] for m in received] == ids
    finally:
        await first.stop()
        await second.stop()
        await server.stop()


async def test_a_member_with_another_lease_ttl_says_why_it_cannot_join(
    nats_broker: Any, fleet_log: FleetLog
) -> None:
    """The bucket was made with another lease_ttl: the member logs that they must agree."""
    async with Server() as server:
        one = manager(nats_broker.url, server, "picows", 2.0, member="a")
        other = manager(nats_broker.url, server, "picows", 3.0, member="b")
        await one.start()
        try:
            await held(one, server)
            await other.start()
            await fleet_log.wait_for("must use the same lease_ttl")
            assert other.held == []
        finally:
            await other.stop()
            await one.stop()


async def test_a_held_service_stopped_from_outside_is_handed_over(
    nats_broker: Any, fleet_log: FleetLog
) -> None:
    """`bgws stop --service` stops a held service: its lease is released, so it runs again
    (here, the only member, on a new service)."""
    async with Server() as server:
        fm = manager(nats_broker.url, server, "picows", 2.0)
        await fm.start()
        try:
            first = await held(fm, server)
            await first.stop()
            await fleet_log.wait_for("was stopped here; handing it over")
            await fleet_log.wait_for("claimed svc", count=2)
            await server.wait_for_connections(2, timeout=TIMEOUT)
            assert fm["svc"] is not first
            await fm["svc"].wait_for(State.CONNECTED, TIMEOUT)
        finally:
            await fm.stop()


async def test_a_member_started_while_the_broker_is_down_joins_once_it_is_up(
    nats_broker: Any, fleet_log: FleetLog
) -> None:
    """No broker at start: the daemon keeps retrying, then joins and claims its services."""
    nats_broker.kill()
    async with Server() as server:
        fm = manager(nats_broker.url, server, "picows", 2.0)
        await fm.start()
        try:
            await fleet_log.wait_for("cannot join yet")
            assert fm.held == []
            await asyncio.to_thread(nats_broker.start)  # not blocking the loop (keepalives run)
            await held(fm, server)
        finally:
            await fm.stop()


async def test_a_stop_in_the_same_tick_as_a_wake_ends_the_member(nats_broker: Any) -> None:
    """The member's loop is woken (a lease change) in the very tick the stop cancels it. On
    Python 3.11, ``asyncio.wait_for`` then returns the wake and drops the cancel: the loop went
    on for ever and ``bgws run`` never exited on SIGTERM. The stop must end all the same."""
    async with Server() as server:
        fm = manager(nats_broker.url, server, "picows", ttl=2.0)
        await fm.start()
        try:
            await held(fm, server)
        finally:
            fm._wake.set()  # a change arrives: the loop's wait is over...
            await asyncio.sleep(0)  # ...its inner wait finishes in this tick...
            async with asyncio.timeout(TIMEOUT):  # ...and the stop cancels the loop now
                await fm.stop()
        assert fm.held == []


async def test_a_send_to_a_member_that_does_not_hold_the_service_names_the_holder(
    nats_broker: Any, tmp_path: Path
) -> None:
    """``bgws send`` through the socket of a member that does not run the service is refused
    with ``NotHere`` and the holder's name (it was a bare ``ServiceClosed``); status still
    answers there, and the holder's socket takes the send."""
    async with Server() as server:
        members = [
            manager(nats_broker.url, server, "picows", ttl=2.0, member=name)
            for name in ("first", "second")
        ]
        daemons = [Daemon(m, socket=tmp_path / f"{n}.sock") for n, m in enumerate(members)]
        runs: list[asyncio.Task[int]] = []
        try:
            runs.append(asyncio.create_task(daemons[0].run()))
            await held(members[0], server)
            renewals: asyncio.Queue[object] = asyncio.Queue()
            nc = await nats.connect(nats_broker.url)
            try:
                await nc.subscribe("bgws.fleet.t.services.svc", cb=renewals.put)
                runs.append(asyncio.create_task(daemons[1].run()))
                async with asyncio.timeout(TIMEOUT):
                    await daemons[1].ready.wait()
                    for _ in range(2):  # renewals the newcomer heard too: it knows the holder
                        await renewals.get()
            finally:
                await nc.close()
            async with connect_local(daemons[1].socket) as client:
                with pytest.raises(ControlError) as caught:
                    await client.send({"type": "order"}, service="svc")
                assert caught.value.kind == "NotHere"
                assert "member 'first'" in str(caught.value)
            async with connect_local(daemons[0].socket) as client:
                await client.send({"type": "order"}, service="svc")
            received = await server.wait_for_messages(1, timeout=TIMEOUT)
            assert received[0].json()["type"] == "order"
        finally:
            for daemon in daemons:
                daemon.request_stop()
            async with asyncio.timeout(TIMEOUT):
                assert await asyncio.gather(*runs) == [0] * len(runs)
