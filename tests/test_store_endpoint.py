"""A store belongs to one endpoint: messages queued for one server never go to another."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import bgws
from bgws._engine.outbox import Entry
from bgws._engine.sqlite import SqliteStore, legacy_store_path
from bgws._engine.sqliteschema import _MIGRATIONS
from bgws.storage import endpoint_digest, store_endpoint, store_path
from bgws.testing import Server
from bgws.transport import Transport, get_transport

from .conftest import Changes, ServiceFactory

TRANSPORTS = ("picows", "websockets")


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Default store paths go under tmp_path (platformdirs reads XDG_DATA_HOME on Linux)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    return tmp_path


def transport(name: str) -> Transport:
    return get_transport(name)  # type: ignore[arg-type]


def chat(make_service: ServiceFactory, url: str, name: str, **kw: object) -> bgws.Service:
    """A MyChat service with a SQLite store, as the docs' examples build it."""
    return make_service(url, app_name="MyChat", storage="sqlite", transport=transport(name), **kw)


def meta_endpoint(path: Path) -> str | None:
    db = sqlite3.connect(path)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'endpoint'").fetchone()
    finally:
        db.close()
    return None if row is None else str(row[0])


def test_endpoint_has_no_secrets_and_is_stable() -> None:
    """The endpoint is scheme, host, port and path plus the tag; its digest never changes."""
    endpoint = store_endpoint("wss://user:pw@Chat.Example/ws?token=abc&room=1#frag", "mychat")
    assert endpoint == "mychat at wss://chat.example:443/ws"
    assert store_endpoint("ws://[::1]:8080", "t") == "t at ws://[::1]:8080/"
    assert store_endpoint("ws://h/?session=1", "t") == store_endpoint("ws://h:80/?session=2", "t")
    assert endpoint_digest(endpoint) == "80f5f00ef5"  # the same on every run and platform


@pytest.mark.parametrize("name", TRANSPORTS)
async def test_message_queued_for_one_server_never_reaches_another(
    data_dir: Path, make_service: ServiceFactory, name: str
) -> None:
    """Same app_name, different servers: A's queued message waits for A, B never sees it."""
    async with Server() as server_a, Server() as server_b:
        await server_a.stop()  # A is down while its message is queued
        first = chat(make_service, server_a.url, name, close_timeout=0.05)
        async with first:
            await first.send({"type": "chat_message", "text": "for A"})
        second = chat(make_service, server_b.url, name)
        assert store_path(first.config) != store_path(second.config)
        changes = Changes(second)
        async with second:
            await changes.wait(bgws.State.CONNECTED)
            await second.send({"type": "chat_message", "text": "for B"})
            await server_b.wait_for_messages(1)
        assert [m["text"] for m in server_b.received_json()] == ["for B"]
        await server_a.start()
        third = chat(make_service, server_a.url, name)
        async with third:
            await server_a.wait_for_messages(1)
        assert [m["text"] for m in server_a.received_json()] == ["for A"]


async def test_opening_a_store_for_another_endpoint_raises(
    tmp_path: Path, make_service: ServiceFactory
) -> None:
    """A store holding A's messages refuses B, naming both endpoints (no secrets) and a way out."""
    path = tmp_path / "shared.sqlite3"
    async with Server() as server_a, Server() as server_b:
        await server_a.stop()
        url_a = server_a.url + "?token=s3cr3t-token-a"
        first = chat(make_service, url_a, "picows", storage_path=str(path), close_timeout=0.05)
        async with first:
            await first.send({"type": "chat_message", "text": "for A"})
        second = chat(make_service, server_b.url, "picows", storage_path=str(path))
        with pytest.raises(bgws.StoreError) as info:
            await second.start()
        await second.stop()
    text = str(info.value)
    assert store_endpoint(url_a, "mychat") in text
    assert store_endpoint(server_b.url, "mychat") in text
    assert "s3cr3t" not in text
    for way_out in ("1 message(s)", "inspect", "storage_path", "delete"):
        assert way_out in text
    assert server_b.messages == []
    assert meta_endpoint(path) == store_endpoint(url_a, "mychat")  # left untouched


async def test_empty_store_rebinds_to_the_new_endpoint(tmp_path: Path) -> None:
    """A store with nothing queued simply re-binds, forgetting the old endpoint's keys."""
    path = tmp_path / "s.sqlite3"
    first = SqliteStore(path, endpoint="t at ws://a:80/")
    await first.open()
    await first.set("resume_position", "41")
    await first.close()
    second = SqliteStore(path, endpoint="t at ws://b:80/")
    loaded = await second.open()
    await second.close()
    assert loaded.kv == {}
    assert meta_endpoint(path) == "t at ws://b:80/"


async def test_store_without_an_endpoint_adopts_the_first(tmp_path: Path) -> None:
    """A store of schema 1 (no endpoint) migrates, keeps its messages and adopts its opener."""
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    for statement in _MIGRATIONS[1]:
        db.execute(statement)
    db.execute(
        'INSERT INTO outbox VALUES (1, 0, NULL, CAST(\'{"type":"x"}\' AS BLOB), 0, 1, NULL, 0)'
    )
    db.execute("PRAGMA user_version=1")
    db.close()
    store = SqliteStore(path, endpoint="t at ws://a:80/")
    loaded = await store.open()
    await store.close()
    assert [e.payload for e in loaded.entries] == ['{"type":"x"}']
    assert meta_endpoint(path) == "t at ws://a:80/"
    other = SqliteStore(path, endpoint="t at ws://b:80/")
    with pytest.raises(bgws.StoreError, match="t at ws://a:80/"):
        await other.open()


async def test_legacy_default_store_moves_to_its_endpoint(
    data_dir: Path, make_service: ServiceFactory
) -> None:
    """A store at the old tag-only default path is moved to the endpoint's path and sent."""
    legacy = legacy_store_path("mychat")
    old = SqliteStore(legacy)
    await old.open()
    await old.stage([Entry('{"type":"chat_message","text":"old"}', False, None)], lambda _: None)
    await old.close()
    async with Server() as server:
        service = chat(make_service, server.url, "picows")
        async with service:
            await server.wait_for_messages(1)
    assert [m["text"] for m in server.received_json()] == ["old"]
    assert not legacy.exists()
    assert store_path(service.config).exists()


async def test_legacy_store_bound_elsewhere_stays(data_dir: Path) -> None:
    """An old-path store already bound to another endpoint is left where it is."""
    legacy = legacy_store_path("mychat")
    bound = SqliteStore(legacy, endpoint="mychat at ws://a:80/")
    await bound.open()
    await bound.close()
    path = data_dir / "new.sqlite3"
    store = SqliteStore(path, endpoint="mychat at ws://b:80/", legacy_path=legacy)
    await store.open()
    await store.close()
    assert legacy.exists()
    assert meta_endpoint(legacy) == "mychat at ws://a:80/"


def test_manager_tells_stores_apart_by_endpoint(data_dir: Path) -> None:
    """Two services with one app_name but different servers no longer share a store."""
    manager = bgws.ServiceManager()
    manager.add("a", bgws.create_chat_service(app_name="MyChat", url="wss://a.example/ws"))
    manager.add("b", bgws.create_chat_service(app_name="MyChat", url="wss://b.example/ws"))
    with pytest.raises(bgws.ConfigError, match="share the store"):
        manager.add("c", bgws.create_chat_service(app_name="MyChat", url="wss://a.example/ws"))


async def test_legacy_path_holding_a_foreign_database_stays(data_dir: Path) -> None:
    """A file at the old path that is not a bgws store is never moved."""
    legacy = legacy_store_path("mychat")
    legacy.parent.mkdir(parents=True)
    db = sqlite3.connect(legacy)
    db.execute("CREATE TABLE notes (text TEXT)")
    db.close()
    store = SqliteStore(data_dir / "new.sqlite3", endpoint="t at ws://a:80/", legacy_path=legacy)
    await store.open()
    await store.close()
    assert legacy.exists()
