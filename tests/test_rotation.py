"""Rotation: a link is replaced before the server's lifetime cap, without loss or duplicates."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import bgws
from bgws.testing import AckReply, Connection, Server
from bgws.transport import Transport

from .conftest import AcceptedTokens, Changes, Errors, ServiceFactory

CAP = 2.0
"""The server's lifetime cap (seconds): it closes every link older than this."""
AGE = 0.4
"""The service's max_connection_age: well below the cap."""
COUNT = 60
"""Numbered messages each way, one every 25 ms (about 1.5 s: three or four rotations)."""


class Capped:
    """A server hook that closes each connection CAP seconds after it opened."""

    def __init__(self) -> None:
        self.cut = 0  # links the cap found still open: the client was too late

    def __call__(self, connection: Connection) -> None:
        asyncio.get_running_loop().call_later(CAP, self._cap, connection)

    def _cap(self, connection: Connection) -> None:
        if connection.is_open:
            self.cut += 1
            connection.close(1008, "connection too old")


class Seen:
    """Collects the numbers a handler saw and lets the test wait for them."""

    def __init__(self, field: str) -> None:
        self.field = field
        self.values: list[Any] = []
        self.changed = asyncio.Event()

    def __call__(self, message: bgws.Message) -> None:
        self.values.append(message.data[self.field])
        self.changed.set()

    async def wait(self, count: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while len(set(self.values)) < count:
                self.changed.clear()
                await self.changed.wait()


async def run_both_ways(server: Server, service: bgws.Service, publish: bool) -> None:
    """Traffic both ways while links rotate: COUNT numbered messages each way."""
    for n in range(1, COUNT + 1):
        if publish:
            server.publish({"type": "tick"})
        else:
            server.push({"type": "tick", "n": n})
        await service.send({"type": "order", "n": n})
        await asyncio.sleep(0.025)  # pacing the traffic over several rotations, not a wait


async def test_rotation_before_the_cap_with_resume(
    make_service: ServiceFactory, errors: Errors, transport: Transport
) -> None:
    """With resume, links rotate before the cap: every seq once, every sent message once."""
    capped = Capped()
    seen = Seen("seq")
    async with Server(on_connect=capped) as server:
        service = make_service(
            server.url,
            transport=transport,
            max_connection_age=AGE,
            resume=bgws.ResumePolicy(),
            close_timeout=1.0,
        )
        service.on("tick")(seen)
        changes = Changes(service)
        async with service:
            await changes.wait(bgws.State.CONNECTED)
            await run_both_ways(server, service, publish=True)
            await seen.wait(COUNT)
            await server.wait_for_messages(COUNT, timeout=5)
            await service.send({"type": "last"})
            await server.wait_until(
                lambda: any(m.json().get("type") == "last" for m in server.messages)
            )
        assert seen.values == list(range(1, COUNT + 1))
        orders = [m.json()["n"] for m in server.messages if m.json().get("type") == "order"]
        assert orders == list(range(1, COUNT + 1))
        assert capped.cut == 0
        assert len(server.connections) >= 3
        assert changes.into(bgws.State.BACKING_OFF) == []
        assert errors.of(bgws.SequenceGap) == []
        assert service.stats.rotations >= 2


async def test_rotation_without_resume_dedupes_the_overlap_and_keeps_acks(
    make_service: ServiceFactory, errors: Errors, transport: Transport
) -> None:
    """Without resume the overlap's copies are dropped; acked messages go once or keep ids."""
    capped = Capped()
    seen = Seen("n")
    async with Server(on_connect=capped, ack=AckReply()) as server:
        service = make_service(
            server.url,
            transport=transport,
            max_connection_age=AGE,
            ack=bgws.AckPolicy(),
            close_timeout=1.0,
        )
        service.on("tick")(seen)
        changes = Changes(service)
        async with service:
            await changes.wait(bgws.State.CONNECTED)
            await run_both_ways(server, service, publish=False)
            await seen.wait(COUNT)
            await server.wait_for_ids(COUNT, timeout=5)
        counts = Counter(seen.values)
        assert sorted(counts) == list(range(1, COUNT + 1))
        assert max(counts.values()) == 1
        orders = [m.json() for m in server.messages if m.json().get("type") == "order"]
        assert sorted({o["n"] for o in orders}) == list(range(1, COUNT + 1))
        by_n: dict[int, set[Any]] = {}
        for order in orders:  # a second copy only ever carries the first copy's id
            by_n.setdefault(order["n"], set()).add(order["id"])
        assert all(len(ids) == 1 for ids in by_n.values())
        firsts = list(dict.fromkeys(o["n"] for o in orders))
        assert firsts == sorted(firsts)  # the old link's messages reach the server first
        assert capped.cut == 0
        assert len(server.connections) >= 3
        assert changes.into(bgws.State.BACKING_OFF) == []


async def test_rotation_fetches_fresh_credentials_and_reports_them_accepted(
    make_service: ServiceFactory, transport: Transport
) -> None:
    """Each rotation asks the auth handler again: the new link carries a fresh token, and
    ``on_auth_success`` runs after the switch, as after a reconnect (a handler that keeps
    refreshed tokens learns that the new one was accepted)."""
    tokens = AcceptedTokens()
    async with Server() as server:
        service = make_service(
            server.url,
            transport=transport,
            max_connection_age=0.2,
            close_timeout=0.2,
            auth_handler=tokens,
        )
        async with service:
            await tokens.wait(3)  # the first link and two rotations
            assert service.stats.rotations >= 2
        accepted = [h.headers["authorization"] for h in server.handshakes if h.accepted]
        assert accepted[:3] == ["Bearer t1", "Bearer t2", "Bearer t3"]


async def test_failed_rotation_keeps_the_old_link_and_tries_again(
    make_service: ServiceFactory, errors: Errors, transport: Transport
) -> None:
    """A refused rotation keeps the old link (no backoff) and the next try replaces it."""
    async with Server(on_handshake=lambda h: 503 if h.connection_id == 2 else None) as server:
        service = make_service(
            server.url,
            transport=transport,
            max_connection_age=0.2,
            close_timeout=0.2,
            initial_reconnect_delay=0.05,
        )
        changes = Changes(service)
        async with service:
            await changes.wait(bgws.State.CONNECTED)
            await server.wait_for_connections(2)
            first = server.connections[0]
            await server.wait_until(lambda: not first.is_open)  # replaced on the second try
            await service.send({"type": "after"})
            await server.wait_for_messages(1)
        assert [h.status for h in server.handshakes[:3]] == [101, 503, 101]
        assert errors.of(bgws.HandshakeRejected)
        assert changes.into(bgws.State.BACKING_OFF) == []
        assert server.messages[0].connection_id != first.id  # written on a new link


async def test_stop_during_a_rotation_closes_both_links(
    make_service: ServiceFactory, transport: Transport
) -> None:
    """A stop in the middle of the overlap ends the service and leaves no link open."""
    async with Server() as server:  # a quiet server: the overlap waits its close_timeout
        service = make_service(
            server.url, transport=transport, max_connection_age=0.2, close_timeout=2.0
        )
        async with service:
            await server.wait_for_connections(2)  # the rotation's new link is up
        assert service.state is bgws.State.CLOSED
        await server.wait_until(lambda: server.connections_open == 0)
