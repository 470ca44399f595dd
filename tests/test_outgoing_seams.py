"""The outgoing path's seams: one writer, one injected store, one outbox clock."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

import bgws
from bgws.testing import Server
from bgws.transport import Transport

from .conftest import Changes, Errors, fast_config

SRC = Path(bgws.__file__).parent

_LINK_WRITE = re.compile(r"\b_?link\.send(_many)?\(")


def test_only_the_writer_writes_to_the_link() -> None:
    """No engine or service module but the Writer calls link.send or link.send_many."""
    writers = sorted(
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if path.parts[len(SRC.parts)] not in ("transport", "testing")
        and _LINK_WRITE.search(path.read_text())
    )
    assert writers == ["_engine/writer.py"]


async def _subscribe_with(url: str, transport: Transport, store: bgws.Store) -> None:
    service = bgws.Service(fast_config(url), store=store, transport=transport)
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
        await service.subscribe({"type": "subscribe", "channel": "ticks"})


async def test_a_store_passed_in_is_the_one_used(bgws_server: Server, transport: Transport) -> None:
    """Service(store=...) keeps subscriptions and connection info in the store it was given."""
    store = bgws.VolatileStore()
    await _subscribe_with(bgws_server.url, transport, store)
    assert await store.get_connection_info("last_connected_at") is not None
    # A second service with the same store re-sends the subscription the first one made.
    service = bgws.Service(fast_config(bgws_server.url), store=store, transport=transport)
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
        await bgws_server.wait_for_messages(2)
    assert bgws_server.connections[1].messages[0].json() == {
        "type": "subscribe",
        "channel": "ticks",
    }


async def test_a_sqlite_store_passed_in_makes_sends_durable(tmp_path: Path) -> None:
    """A SqliteStore passed in keeps what send() accepted, though the config says memory."""
    path = tmp_path / "outbox.sqlite3"
    errors = Errors()
    config = fast_config("ws://127.0.0.1:9/ws", storage="memory")
    service = bgws.Service(config, store=bgws.SqliteStore(path), error_handler=errors)
    async with service:
        await service.send({"type": "kept", "n": 1})
    reopened = bgws.SqliteStore(path)
    loaded = await reopened.open()
    await reopened.close()
    assert len(loaded.entries) == 1
    assert msgspec.json.decode(loaded.entries[0].payload)["type"] == "kept"


async def test_the_outbox_runs_on_one_injected_clock() -> None:
    """Time-to-live and ack deadlines are both read on the clock the outbox was given."""
    from bgws._engine.outbox import Entry, Outbox

    now = [100.0]
    outbox = Outbox(10, acks=True, clock=lambda: now[0])
    for n, expires in enumerate((150.0, 120.0)):
        assert outbox.try_reserve()
        outbox.add(Entry(b"x", id=n, expires_at=expires))
    now[0] = 130.0  # the second one's time-to-live passed on this clock
    batch = outbox.take(10)
    assert [e.id for e in batch] == [0]
    outbox.sent(batch)
    assert batch[0].sent_at == 130.0
    assert outbox.next_ack_deadline(5.0) == 135.0
    assert outbox.requeue_stale(now[0] + 5.0, 5.0) == 1
