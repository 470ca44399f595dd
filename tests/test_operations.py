"""Service.status(), Service.reconnect_now() and Service.outbox against real servers and stores."""

from __future__ import annotations

import asyncio
import io
import json
import random
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import bgws
from bgws.metrics import RTT_BUCKETS
from bgws.testing import Server
from bgws.transport import Transport
from tests.conftest import Changes, ServiceFactory

TIMEOUT = 10.0


class _Top(random.Random):
    """A random source whose backoff delay is always the ceiling: long waits, exactly."""

    def uniform(self, a: float, b: float) -> float:
        return b


def long_backoff() -> bgws.Backoff:
    """30 s before the first retry, 60 s after: far longer than any test waits."""
    return bgws.Backoff(30.0, 60.0, rng=_Top())


async def test_status_explains_an_outage_and_reconnect_now_skips_the_wait(
    bgws_server: Server, make_service: ServiceFactory, transport: Transport
) -> None:
    """During an outage status says since when, the next retry, attempts and the last error
    with its time; reconnect_now() connects at once once the server is back."""
    service = make_service(bgws_server.url, transport=transport, backoff=long_backoff())
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
        up = service.status()
        assert up["state"] == "CONNECTED"
        assert up["online_since"] is not None
        assert up["offline_since"] is None
        assert await service.reconnect_now() is False  # connected: nothing to skip
        lost_at = time.time()
        await bgws_server.stop()
        await changes.wait(bgws.State.BACKING_OFF)
        down = service.status()
        assert down["state"] == "BACKING_OFF"
        assert down["online_since"] is None
        assert lost_at - 1 <= down["offline_since"] <= time.time()
        assert 25.0 < down["next_retry_in"] <= 30.0
        assert down["next_retry_at"] == pytest.approx(time.time() + down["next_retry_in"], abs=1)
        assert down["attempts"] == 0
        assert down["reconnections"] == 0
        assert down["last_error"]["error"].startswith("ConnectionClosed")
        assert down["last_error"]["at"] >= lost_at - 1
        assert down["last_error"]["before_recovery"] is False
        # Retry now while the server is still down: one failed attempt, a longer wait.
        assert await service.reconnect_now() is True
        await changes.wait(bgws.State.BACKING_OFF, count=2)
        again = service.status()
        assert again["attempts"] == 1
        assert again["offline_since"] == down["offline_since"]  # the same outage
        assert 50.0 < again["next_retry_in"] <= 60.0
        await bgws_server.start()
        asked = time.monotonic()
        assert await service.reconnect_now() is True
        await changes.wait(bgws.State.CONNECTED, count=2, timeout=5.0)
        assert time.monotonic() - asked < 5.0  # not the 60 s backoff
        back = service.status()
        assert back["offline_since"] is None
        assert back["next_retry_at"] is None
        assert back["attempts"] == 0
        assert back["reconnections"] == 1
        assert back["connect_attempts"] == 3
        assert back["last_error"]["before_recovery"] is True
        assert service.stats.reconnects == 1


async def test_reconnect_now_restarts_a_failed_service(
    make_service: ServiceFactory, transport: Transport
) -> None:
    """A FAILED service (attempts exhausted) starts connecting again on reconnect_now()."""
    server = Server()
    await server.start()
    url = server.url
    await server.stop()
    service = make_service(url, transport=transport, max_reconnect_attempts=0)
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.FAILED)
        await server.start()
        try:
            assert await service.reconnect_now() is True
            await changes.wait(bgws.State.CONNECTED)
        finally:
            await service.stop()
            await server.stop()


class _Lagging(bgws.Plugin):
    plugin_name = "bridge"

    def status(self) -> Mapping[str, Any]:
        return {"lag": 3, "subjects": ["a", "b"], "nested": {"deep": object()}}


class _Broken(bgws.Plugin):
    plugin_name = "broken"

    def status(self) -> Mapping[str, Any]:
        raise RuntimeError("no status today")


class _Silent(bgws.Plugin):
    plugin_name = "silent"


async def test_status_shows_each_plugins_own_status(make_service: ServiceFactory) -> None:
    """A plugin with status() has a section under its name; a raising one shows the error."""
    service = make_service("ws://127.0.0.1:9/", plugins=[_Lagging(), _Broken(), _Silent()])
    plugins = service.status()["plugins"]
    assert set(plugins) == {"bridge", "broken"}
    assert plugins["bridge"]["lag"] == 3
    assert plugins["bridge"]["subjects"] == ["a", "b"]
    assert isinstance(plugins["bridge"]["nested"]["deep"], str)  # made plain for JSON
    assert plugins["broken"] == {"error": "RuntimeError: no status today"}
    json.dumps(service.status())


async def test_status_times_last_message_and_oldest_outbox_age(
    bgws_server: Server, make_service: ServiceFactory, transport: Transport
) -> None:
    """last_received_at follows the last frame read; the outbox's oldest age grows offline."""
    service = make_service(bgws_server.url, transport=transport, backoff=long_backoff())
    changes = Changes(service)
    got = asyncio.Event()
    service.on("news")(lambda message: got.set())
    async with service:
        await changes.wait(bgws.State.CONNECTED)
        assert service.status()["last_received_at"] is None
        before = time.time()
        bgws_server.publish({"type": "news"})
        async with asyncio.timeout(TIMEOUT):
            await got.wait()
        assert before <= service.status()["last_received_at"] <= time.time()
        await bgws_server.stop()
        await changes.wait(bgws.State.BACKING_OFF)
        sent_at = time.time()
        await service.send({"type": "late"})
        await service.send({"type": "later"})
        outbox = service.status()["outbox"]
        assert outbox["depth"] == 2
        assert outbox["queued"] == 2
        assert outbox["in_flight"] == 0
        assert 0 <= outbox["oldest_age"] <= time.time() - sent_at + 0.5


async def test_keepalive_round_trips_are_measured(
    bgws_server: Server, make_service: ServiceFactory, transport: Transport
) -> None:
    """Each answered keepalive probe lands in the RTT histogram (count, sum, last)."""
    service = make_service(
        bgws_server.url,
        transport=transport,
        app_heartbeat={"type": "hb"},
        app_heartbeat_reply_type="hb_ack",
        heartbeat_interval=0.05,
        ping_timeout=2.0,
    )
    async with service:
        for n in (1, 2):
            await bgws_server.wait_for_messages(n, timeout=TIMEOUT)  # probe n
            bgws_server.publish({"type": "hb_ack"})
        # The keepalive records a round before it sends the next probe.
        await bgws_server.wait_for_messages(3, timeout=TIMEOUT)
        stats = service.stats
        assert sum(stats.rtt_counts) == 2
        assert stats.rtt is not None
        assert 0 <= stats.rtt < 2.0
        assert 0 < stats.rtt_sum < 4.0
        assert len(stats.rtt_counts) == len(RTT_BUCKETS) + 1


@pytest.mark.parametrize("storage", ["memory", "sqlite"])
async def test_outbox_list_show_export_purge(
    make_service: ServiceFactory, tmp_path: Path, storage: str
) -> None:
    """The outbox tools list, show, export and purge what waits offline; a purge is final,
    in the SQLite file too, and needs confirm=True."""
    server = Server()
    await server.start()
    url = server.url
    await server.stop()
    path = tmp_path / "outbox.db"
    service = make_service(url, storage=storage, storage_path=str(path), backoff=long_backoff())
    async with service:
        ids = [await service.send({"type": "order", "n": n}) for n in range(3)]
        await service.send("plain text", priority=5)
        tools = service.outbox
        listed = tools.list()
        assert len(tools) == 4
        assert [m.id for m in listed] == [*ids, None]
        assert [m.seq for m in listed] == sorted(m.seq for m in listed)
        assert all(m.data is None and not m.in_flight and m.age >= 0 for m in listed)
        assert listed[3].priority == 5
        assert listed[3].format == "text"
        assert [m.id for m in tools.list(limit=2)] == ids[:2]
        shown = tools.show(ids[1])
        assert json.loads(shown.data or "") == {"type": "order", "n": 1, "id": ids[1]}
        assert tools.show(listed[3].seq).data == "plain text"
        with pytest.raises(bgws.ServiceError, match="no undelivered message"):
            tools.show("nope")
        out = io.StringIO()
        assert tools.export(out) == 4
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        assert [line["id"] for line in lines] == [*ids, None]
        assert lines[3]["data"] == "plain text"
        with pytest.raises(bgws.ServiceError, match="confirm"):
            tools.purge()
        assert len(tools) == 4
        assert tools.purge([ids[0]], confirm=True) == 1
        assert [m.id for m in tools.list()] == [*ids[1:], None]
        assert tools.purge(confirm=True) == 3
        assert len(tools) == 0
        assert service.stats.queued == 0
        assert service.status()["outbox"]["oldest_age"] is None
    if storage == "sqlite":
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0


async def test_outbox_entries_restored_from_the_store_keep_their_age(
    make_service: ServiceFactory, tmp_path: Path
) -> None:
    """A message kept on disk across a restart shows when it was first accepted."""
    server = Server()
    await server.start()
    url = server.url
    await server.stop()
    path = str(tmp_path / "outbox.db")
    first = make_service(url, storage="sqlite", storage_path=path, backoff=long_backoff())
    async with first:
        accepted = time.time()
        await first.send({"type": "kept"})
    second = make_service(url, storage="sqlite", storage_path=path, backoff=long_backoff())
    async with second:
        [kept] = second.outbox.list()
        assert kept.durable
        assert accepted - 1 <= kept.accepted_at <= accepted + 1
