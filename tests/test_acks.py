"""Acknowledgements: in flight until acked, a bounded window, resends with the same id."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import bgws
from bgws.testing import Connection, ReceivedMessage, Server, VirtualClock

from .conftest import MS, Changes, Errors, ServiceFactory

ACK = bgws.AckPolicy(message_type="ack", id_field="id")


class Acker:
    """A server hook that acks every message's id, unless told to hold acks back."""

    def __init__(self) -> None:
        self.hold = False
        self.held: list[tuple[Connection, Any]] = []

    def __call__(self, connection: Connection, message: ReceivedMessage) -> None:
        msg_id = message.json().get("id")
        if msg_id is None:
            return
        if self.hold:
            self.held.append((connection, msg_id))
        else:
            connection.send({"type": "ack", "id": msg_id})

    def release(self) -> None:
        self.hold = False
        for connection, msg_id in self.held:
            connection.send({"type": "ack", "id": msg_id})
        self.held.clear()


async def test_message_stays_in_flight_until_acked(make_service: ServiceFactory) -> None:
    """Without an ack the message is in flight; the ack completes wait_for_ack."""
    acker = Acker()
    acker.hold = True
    async with Server(on_message=acker) as server:
        service = make_service(server.url, ack=ACK)
        async with service:
            await service.wait_for(bgws.State.CONNECTED, timeout=5)
            waiting = asyncio.ensure_future(service.send({"type": "order"}, wait_for_ack=True))
            await server.wait_for_messages(1)
            assert service.stats.in_flight == 1
            assert not waiting.done()
            acker.release()
            msg_id = await asyncio.wait_for(waiting, 5)
        assert server.received_json()[0]["id"] == msg_id
        assert service.stats.in_flight == 0


async def test_in_flight_window_is_bounded(make_service: ServiceFactory) -> None:
    """At most max_in_flight unacked messages are on the wire; acks open the window."""
    acker = Acker()
    acker.hold = True
    async with Server(on_message=acker) as server:
        service = make_service(server.url, ack=ACK, max_in_flight=3)
        async with service:
            await service.wait_for(bgws.State.CONNECTED, timeout=5)
            for n in range(10):
                await service.send({"type": "n", "n": n})
            await server.wait_for_messages(3)
            assert service.stats.in_flight == 3
            assert service.stats.queued == 7
            with pytest.raises(TimeoutError):  # the window stays shut without acks
                await server.wait_for_messages(4, timeout=100 * MS)
            acker.hold = False
            acker.release()
            await server.wait_for_messages(10)
        assert [m["n"] for m in server.received_json()] == list(range(10))


async def test_unacked_messages_resent_after_reconnect_with_same_id(
    make_service: ServiceFactory,
) -> None:
    """Messages in flight when the link drops are sent again, same ids, same order."""
    acker = Acker()
    acker.hold = True
    async with Server(on_message=acker) as server:
        service = make_service(server.url, ack=ACK)
        changes = Changes(service)
        async with service:
            await changes.wait(bgws.State.CONNECTED)
            ids = [await service.send({"type": "n", "n": n}) for n in range(5)]
            await server.wait_for_messages(5)
            acker.held.clear()
            server.drop()
            await changes.wait(bgws.State.CONNECTED, count=2)
            await server.wait_for_messages(10)
            acker.hold = False
            acker.release()
            for connection in server.open_connections:  # ack the resent copies
                for m in connection.messages:
                    connection.send({"type": "ack", "id": m.json()["id"]})
            await service._delivery.outbox.wait_empty()
        resent = [m["id"] for m in server.received_json()[5:]]
        assert resent == ids
        assert service.stats.resent == 5


async def test_ack_timeout_resends(make_service: ServiceFactory) -> None:
    """A message whose ack does not come within ack_timeout is sent again, same id."""
    acks_after = 2  # ack only the second copy
    seen: dict[Any, int] = {}

    def ack_second(connection: Connection, message: ReceivedMessage) -> None:
        msg_id = message.json()["id"]
        seen[msg_id] = seen.get(msg_id, 0) + 1
        if seen[msg_id] >= acks_after:
            connection.send({"type": "ack", "id": msg_id})

    async with Server(on_message=ack_second) as server:
        service = make_service(server.url, ack=ACK, ack_timeout=100 * MS)
        async with service:
            await service.wait_for(bgws.State.CONNECTED, timeout=5)
            msg_id = await service.send({"type": "x"}, wait_for_ack=True, timeout=3)
        assert seen == {msg_id: 2}
        assert service.stats.resent == 1


async def test_wait_for_ack_raises_ack_timeout(make_service: ServiceFactory) -> None:
    """wait_for_ack raises AckTimeout when no ack comes; the message stays queued."""
    async with Server() as server:  # never acks
        service = make_service(server.url, ack=ACK, ack_timeout=5)
        async with service:
            await service.wait_for(bgws.State.CONNECTED, timeout=5)
            with pytest.raises(bgws.AckTimeout, match="stays queued"):
                await service.send({"type": "x"}, wait_for_ack=True, timeout=100 * MS)
            assert service.stats.in_flight == 1
            with pytest.raises(TimeoutError):  # AckTimeout is a TimeoutError too
                await service.send({"type": "y"}, wait_for_ack=True, timeout=50 * MS)


async def test_wait_for_ack_needs_a_policy(make_service: ServiceFactory) -> None:
    """wait_for_ack without Config.ack is a clear error."""
    service = make_service("ws://127.0.0.1:9/")
    with pytest.raises(bgws.ServiceError, match="ack policy"):
        await service.send({"type": "x"}, wait_for_ack=True)


async def test_batched_acks_and_function_form(make_service: ServiceFactory) -> None:
    """A function ack policy can ack several ids at once."""
    policy = bgws.AckPolicy(match=lambda m: m.get("acked") if m.type == "batch_ack" else None)
    batch: list[Any] = []

    def ack_in_pairs(connection: Connection, message: ReceivedMessage) -> None:
        batch.append(message.json()["id"])
        if len(batch) == 2:
            connection.send({"type": "batch_ack", "acked": list(batch)})
            batch.clear()

    async with Server(on_message=ack_in_pairs) as server:
        service = make_service(server.url, ack=policy)
        async with service:
            await service.wait_for(bgws.State.CONNECTED, timeout=5)
            first = asyncio.ensure_future(service.send({"n": 1}, wait_for_ack=True))
            second = asyncio.ensure_future(service.send({"n": 2}, wait_for_ack=True))
            await asyncio.wait_for(asyncio.gather(first, second), 5)
            assert service.stats.in_flight == 0


async def test_acks_do_not_reach_handlers(make_service: ServiceFactory, errors: Errors) -> None:
    """Ack messages are consumed by the outbox, not dispatched."""
    seen: list[str | None] = []
    async with Server(on_message=Acker()) as server:
        service = make_service(server.url, ack=ACK)
        service.on()(lambda m: seen.append(m.type))
        async with service:
            await service.send({"type": "x"}, wait_for_ack=True, timeout=5)
    assert seen == []


async def test_ack_timeouts_follow_the_service_clock(transport: Any) -> None:
    """With a virtual clock an unacked message is resent once ack_timeout of virtual time has
    passed (an hour's timeout, no real waiting), and wait_for_ack times out on it too."""
    seen: dict[Any, int] = {}

    def ack_second(connection: Connection, message: ReceivedMessage) -> None:
        msg_id = message.json()["id"]
        seen[msg_id] = seen.get(msg_id, 0) + 1
        if seen[msg_id] >= 2:
            connection.send({"type": "ack", "id": msg_id})

    clock = VirtualClock()
    async with Server(on_message=ack_second) as server:
        config = bgws.Config(
            app_name="acks",
            url=server.url,
            storage="memory",
            heartbeat_interval=None,
            ack=ACK,
            ack_timeout=3600.0,
        )
        service = bgws.Service(config, transport=transport, clock=clock)
        async with service:
            await service.wait_for(bgws.State.CONNECTED, timeout=5)
            waiting = asyncio.ensure_future(
                service.send({"type": "x"}, wait_for_ack=True, timeout=1800.0)
            )
            await server.wait_for_messages(1, timeout=5)
            await clock.advance(1801.0)  # wait_for_ack's own limit passes first
            with pytest.raises(bgws.AckTimeout):
                await asyncio.wait_for(waiting, timeout=1)
            await clock.advance(1800.0)  # now the ack timeout: the message goes again
            await server.wait_for_messages(2, timeout=1)
            await asyncio.wait_for(service._delivery.outbox.wait_empty(), timeout=1)
        assert list(seen.values()) == [2]
        assert service.stats.resent == 1
