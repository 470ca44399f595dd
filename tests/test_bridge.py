"""The NATS bridge, inbound: every incoming message in JetStream once, in order, nothing lost."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import bgws
from bgws.bridge import NatsBridge
from bgws.testing import Server
from bgws.transport import Transport

from .bridgekit import StallProxy, StreamReader
from .conftest import Changes, Errors, ServiceFactory

pytest.importorskip("nats")

RESUME = bgws.ResumePolicy()


class Seen:
    """Counts the messages the service's handlers got."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self._changed = asyncio.Event()

    def __call__(self, message: bgws.Message) -> None:
        self.seqs.append(message.data["seq"])
        self._changed.set()

    async def wait(self, count: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.seqs) < count:
                self._changed.clear()
                await self._changed.wait()


def bridged(
    make_service: ServiceFactory,
    url: str,
    broker: Any,
    transport: Transport,
    store: Path | None = None,
    ping_timeout: float = 0.1,
    **bridge: Any,
) -> tuple[bgws.Service, NatsBridge, Seen]:
    plugin = NatsBridge(broker.url, consume=None, **bridge)
    storage: dict[str, Any] = {}
    if store is not None:
        storage = {"storage": "sqlite", "storage_path": str(store)}
    service = make_service(
        url,
        app_name="feed",
        resume=RESUME,
        plugins=[plugin],
        transport=transport,
        close_timeout=0.5,
        ping_timeout=ping_timeout,
        **storage,
    )
    seen = Seen()
    service.on("tick")(seen)
    return service, plugin, seen


async def test_each_message_lands_in_the_stream_once_with_a_stable_id(
    nats_broker: Any, make_service: ServiceFactory, transport: Transport
) -> None:
    """Inbound messages go to bgws.<service>.in.<type>, with Nats-Msg-Id <service>.<seq>."""
    async with Server() as server, StreamReader(nats_broker.url) as stream:
        service, bridge, seen = bridged(make_service, server.url, nats_broker, transport)
        async with service:
            await Changes(service).wait(bgws.State.CONNECTED)
            for _ in range(50):
                server.publish({"type": "tick"})
            await seen.wait(50)
            messages = await stream.wait(50)
            assert [m["seq"] for m in messages] == list(range(1, 51))
            assert stream.ids == [f"feed.{n}" for n in range(1, 51)]
            assert await stream.stored() == 50
            status = bridge.status()
            assert status["connected"] is True
            assert status["published"] == 50


async def test_a_replay_and_a_restart_never_duplicate_in_the_stream(
    nats_broker: Any,
    make_service: ServiceFactory,
    transport: Transport,
    tmp_path: Path,
) -> None:
    """Broker killed mid-stream, service restarted, old messages replayed: each seq once."""
    store = tmp_path / "feed.sqlite3"
    async with Server() as server:
        async with StreamReader(nats_broker.url) as stream:
            service, bridge, seen = bridged(make_service, server.url, nats_broker, transport, store)
            async with service:
                await Changes(service).wait(bgws.State.CONNECTED)
                for _ in range(20):
                    server.publish({"type": "tick"})
                await stream.wait(20)
        nats_broker.kill()  # SIGKILL: 21..40 reach the service but never JetStream
        service, bridge, seen = bridged(make_service, server.url, nats_broker, transport, store)
        async with service:
            await Changes(service).wait(bgws.State.CONNECTED)
            for _ in range(20):
                server.publish({"type": "tick"})
            await seen.wait(20)
            assert bridge.status()["lag"] == 20
            assert bridge.status()["connected"] is False
        # Stopped with 21..40 unpublished: the saved position stayed at 20.
        await asyncio.to_thread(nats_broker.restart)  # not blocking the loop (keepalives run)
        service, bridge, seen = bridged(make_service, server.url, nats_broker, transport, store)
        async with service:
            await Changes(service).wait(bgws.State.CONNECTED)
            await seen.wait(20)  # the server replayed 21..40
            assert seen.seqs == list(range(21, 41))
            for n in range(5, 11):  # a stray replay of what JetStream already has
                server.push({"type": "tick", "seq": n})
            for _ in range(10):
                server.publish({"type": "tick"})
            async with StreamReader(nats_broker.url) as stream:
                messages = await stream.wait(50)
                assert [m["seq"] for m in messages] == list(range(1, 51))
                assert await stream.stored() == 50


async def test_a_fresh_store_replays_and_the_broker_drops_the_copies(
    nats_broker: Any, make_service: ServiceFactory, transport: Transport
) -> None:
    """A service that lost its position gets the feed again; JetStream keeps one copy."""
    async with Server() as server:
        service, bridge, seen = bridged(make_service, server.url, nats_broker, transport)
        async with service:
            await Changes(service).wait(bgws.State.CONNECTED)
            for _ in range(10):
                server.publish({"type": "tick"})
            async with StreamReader(nats_broker.url) as stream:
                await stream.wait(10)
        service, bridge, seen = bridged(make_service, server.url, nats_broker, transport)
        async with service:  # a memory store: no position, so the old messages come again
            await Changes(service).wait(bgws.State.CONNECTED)
            for n in range(1, 11):
                server.push({"type": "tick", "seq": n})
            server.publish({"type": "tick"})
            async with StreamReader(nats_broker.url) as stream:
                messages = await stream.wait(11)
                assert [m["seq"] for m in messages] == list(range(1, 12))
                await seen.wait(11)
                assert await stream.stored() == 11
            assert bridge.status()["duplicates"] == 10


async def test_reading_pauses_while_the_broker_is_down_and_resumes(
    nats_broker: Any,
    make_service: ServiceFactory,
    transport: Transport,
    errors: Errors,
) -> None:
    """A full bridge buffer pauses the WebSocket read and the link stays up meanwhile (the
    keepalive does not call a paused link dead); nothing is dropped.

    The ping timeout is 0.3 s, not the suite's 0.1 s: after the broker is back, this one
    event loop runs the server, the flood of held frames and the publishes, and a pong may
    then lag 0.1 s on a loaded machine. A probe sent in the paused second still times out
    within it if the keepalive ignored the pause."""
    nats_broker.kill()
    async with Server() as server:
        service, bridge, seen = bridged(
            make_service, server.url, nats_broker, transport, max_buffer=20, ping_timeout=0.3
        )
        async with service:
            await Changes(service).wait(bgws.State.CONNECTED)
            for _ in range(20):
                server.publish({"type": "tick"})
            await seen.wait(20)
            assert bridge.status()["reading_paused"] is True
            for _ in range(40):
                server.publish({"type": "tick"})
            with pytest.raises(TimeoutError):  # the read is paused: none of them comes in
                await seen.wait(60, timeout=1.0)
            assert len(seen.seqs) < 60
            assert service.stats.reconnects == 0  # the keepalive did not call the link dead
            assert service.stats.dead_links == 0
            await asyncio.to_thread(nats_broker.restart)  # not blocking the loop (keepalives run)
            await seen.wait(60)
            async with StreamReader(nats_broker.url) as stream:
                messages = await stream.wait(60)
                assert [m["seq"] for m in messages] == list(range(1, 61))
            assert seen.seqs == list(range(1, 61))
            assert bridge.status()["reading_paused"] is False
        assert service.stats.reconnects == 0


async def test_a_refused_publish_is_reported_held_and_retried_never_dropped(
    nats_broker: Any, make_service: ServiceFactory, transport: Transport, errors: Errors
) -> None:
    """JetStream refusing a message (too big for the stream) is a BridgeError; it goes later."""
    import nats

    from bgws.bridge import BridgeError

    nc = await nats.connect(nats_broker.url)
    js = nc.jetstream()
    await js.add_stream(
        name="BGWS", subjects=["bgws.*.in.*"], duplicate_window=120.0, max_msg_size=200
    )
    try:
        async with Server() as server:
            service, bridge, seen = bridged(make_service, server.url, nats_broker, transport)
            async with service:
                await Changes(service).wait(bgws.State.CONNECTED)
                server.publish({"type": "tick", "pad": "x" * 400})  # over the stream's limit
                server.publish({"type": "tick"})
                await errors.wait_for(BridgeError)
                await seen.wait(2)
                assert bridge.status()["lag"] == 2  # held, in order, not dropped
                assert "message size exceeds" in str(bridge.status()["last_error"])
                info = await js.stream_info("BGWS")
                info.config.max_msg_size = -1
                await js.update_stream(info.config)
                assert await bridge.drain(10.0)
                async with StreamReader(nats_broker.url) as stream:
                    messages = await stream.wait(2)
                    # Stored once each; the refused one after the one behind it (documented).
                    assert sorted(m["seq"] for m in messages) == [1, 2]
                    assert await stream.stored() == 2
    finally:
        await nc.close()


async def test_a_publish_without_an_ack_goes_again_and_the_stream_keeps_one_copy(
    nats_broker: Any, make_service: ServiceFactory, transport: Transport, errors: Errors
) -> None:
    """No ack within ack_timeout: published again with the same id; JetStream drops the copy."""
    from bgws.bridge import BridgeError

    async with StallProxy(nats_broker.port) as proxy, Server() as server:
        broker = type("Via", (), {"url": proxy.url})()
        service, bridge, seen = bridged(
            make_service, server.url, broker, transport, ack_timeout=0.3
        )
        async with service:
            await Changes(service).wait(bgws.State.CONNECTED)
            server.publish({"type": "tick"})
            await seen.wait(1)
            assert await bridge.drain(10.0)  # connected and flowing
            proxy.stall()  # publishes reach the broker, acks do not come back
            for _ in range(10):
                server.publish({"type": "tick"})
            for count in range(1, 6):  # the bridge reports the missing ack (among others)
                reported = await errors.wait_for(BridgeError, count)
                if any("no ack" in str(e) for e in reported):
                    break
            else:
                raise AssertionError(f"no ack timeout reported: {reported}")
            proxy.unstall()
            assert await bridge.drain(10.0)
            status = bridge.status()
            assert status["resent"] >= 10
            assert status["duplicates"] >= 1
        async with StreamReader(nats_broker.url) as stream:
            messages = await stream.wait(11)
            assert [m["seq"] for m in messages] == list(range(1, 12))
            assert await stream.stored() == 11


@pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP")
async def test_a_frozen_broker_does_not_hold_the_stop(
    nats_broker: Any, make_service: ServiceFactory, transport: Transport
) -> None:
    """The broker hangs (SIGSTOP) while big messages flow to it: nats-py's publish then waits
    for room without end and swallows the stop's cancel, and its close waits to write what is
    buffered. The service still stops within its bounds (close_timeout, then 2 s for the
    bridge's tasks and 2 s for the close); the unpublished messages keep their position."""
    async with Server() as server, StreamReader(nats_broker.url) as stream:
        service, bridge, seen = bridged(make_service, server.url, nats_broker, transport)
        async with service:
            await Changes(service).wait(bgws.State.CONNECTED)
            server.publish({"type": "tick"})
            await stream.wait(1)  # the bridge publishes
            nats_broker.freeze()
            pad = "x" * 60_000
            for _ in range(400):  # 24 MB: more than the socket buffers hold
                server.publish({"type": "tick", "pad": pad})
            await seen.wait(401, timeout=30)
            began = time.monotonic()
            async with asyncio.timeout(20):
                await service.stop()
            assert time.monotonic() - began < 0.5 + 2 + 2 + 3  # plus a loaded CI
            assert bridge.status()["lag"] > 0  # not published: the position stayed behind
        nats_broker.kill()
