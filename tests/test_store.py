"""The SQLite store: durable across restarts, private, and loud about damage."""

from __future__ import annotations

import os
import sqlite3
import stat
import sys
from pathlib import Path

import pytest

import bgws
from bgws._engine.sqlite import SCHEMA_VERSION, SqliteStore
from bgws.testing import Server

from .conftest import ServiceFactory


def sqlite_service(
    make_service: ServiceFactory, url: str, path: Path, **kw: object
) -> bgws.Service:
    return make_service(url, storage="sqlite", storage_path=str(path), **kw)


async def test_messages_kept_across_a_restart(
    tmp_path: Path, bgws_server: Server, make_service: ServiceFactory
) -> None:
    """Messages accepted while offline are sent, in order, by the next run of the service."""
    path = tmp_path / "outbox.sqlite3"
    await bgws_server.stop()
    first = sqlite_service(make_service, bgws_server.url, path, close_timeout=0.05)
    async with first:
        ids = [await first.send({"type": "reading", "n": n}) for n in range(50)]
    assert first.stats.dropped == 0  # kept on disk, not reported as dropped
    await bgws_server.start()
    second = sqlite_service(make_service, bgws_server.url, path)
    async with second:
        await bgws_server.wait_for_messages(50)
    assert [m["id"] for m in bgws_server.received_json()] == ids
    third = sqlite_service(make_service, bgws_server.url, path)
    await third.start()
    assert third.stats.queued == 0  # delivered messages were deleted
    await third.stop()


async def test_connection_info_is_persisted(
    tmp_path: Path, bgws_server: Server, make_service: ServiceFactory
) -> None:
    """Without a custom storage backend, connection info lives in the same file."""
    path = tmp_path / "info.sqlite3"
    first = sqlite_service(make_service, bgws_server.url, path)
    await first.start()
    await first.connect(connection_data={"user": "ada"})
    await first.stop()
    store = SqliteStore(path)
    await store.open()
    assert await store.get_connection_info("connection_data") == '{"user":"ada"}'
    await store.clear_connection_info()
    assert await store.get_connection_info("connection_data") is None
    await store.close()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
async def test_store_file_is_private(tmp_path: Path, make_service: ServiceFactory) -> None:
    """The store file is mode 0600 and its new folder 0700."""
    path = tmp_path / "new-dir" / "private.sqlite3"
    service = sqlite_service(make_service, "ws://127.0.0.1:9/", path)
    await service.start()
    await service.send({"type": "x"})
    await service.stop()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700


async def test_corrupt_store_is_a_clear_error(tmp_path: Path, make_service: ServiceFactory) -> None:
    """A file that is not a store fails start() with StoreError and is left untouched."""
    path = tmp_path / "corrupt.sqlite3"
    garbage = b"this is not a database" * 100
    path.write_bytes(garbage)
    service = sqlite_service(make_service, "ws://127.0.0.1:9/", path)
    with pytest.raises(bgws.StoreError, match="not a valid bgws store"):
        await service.start()
    assert path.read_bytes() == garbage


async def test_damaged_pages_are_detected(tmp_path: Path, make_service: ServiceFactory) -> None:
    """A store whose pages were overwritten fails its check at start."""
    path = tmp_path / "damaged.sqlite3"
    first = sqlite_service(make_service, "ws://127.0.0.1:9/", path)
    await first.start()
    for n in range(200):
        await first.send({"type": "x", "pad": "p" * 200, "n": n})
    await first.stop()
    data = bytearray(path.read_bytes())
    for page in range(2, len(data) // 4096):  # scribble over every page header but the first
        data[page * 4096 : page * 4096 + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    second = sqlite_service(make_service, "ws://127.0.0.1:9/", path)
    with pytest.raises(bgws.StoreError):
        await second.start()


async def test_store_in_use_by_another_service(
    tmp_path: Path, make_service: ServiceFactory
) -> None:
    """Two services cannot share one store file: the second gets a clear error."""
    path = tmp_path / "shared.sqlite3"
    first = sqlite_service(make_service, "ws://127.0.0.1:9/", path)
    await first.start()
    second = sqlite_service(make_service, "ws://127.0.0.1:9/", path)
    with pytest.raises(bgws.StoreError, match="in use"):
        await second.start()
    await first.stop()


async def test_newer_schema_is_refused(tmp_path: Path, make_service: ServiceFactory) -> None:
    """A store written by a newer bgws is not touched."""
    path = tmp_path / "future.sqlite3"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    service = sqlite_service(make_service, "ws://127.0.0.1:9/", path)
    with pytest.raises(bgws.StoreError, match="newer"):
        await service.start()


async def test_foreign_database_is_refused(tmp_path: Path, make_service: ServiceFactory) -> None:
    """An SQLite file with someone else's tables is not taken over."""
    path = tmp_path / "foreign.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE users (name TEXT)")
    db.commit()
    db.close()
    service = sqlite_service(make_service, "ws://127.0.0.1:9/", path)
    with pytest.raises(bgws.StoreError, match="did not create"):
        await service.start()


async def test_default_path_is_under_the_user_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without storage_path the file goes to the platform's user data folder."""
    from bgws._engine.sqlite import default_store_path
    from bgws.storage import endpoint_digest, store_endpoint

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    endpoint = store_endpoint("wss://chat.example/ws", "chat")
    path = default_store_path("chat", endpoint)
    assert path.name == f"chat-{endpoint_digest(endpoint)}.sqlite3"
    if sys.platform.startswith("linux"):
        assert path.parent == tmp_path / "bgws"


async def test_only_delivered_rows_are_deleted(
    tmp_path: Path, bgws_server: Server, make_service: ServiceFactory
) -> None:
    """Messages sent in lanes (non-consecutive seqs) are deleted exactly; the rest stay."""
    path = tmp_path / "lanes.sqlite3"
    await bgws_server.stop()
    first = sqlite_service(make_service, bgws_server.url, path, close_timeout=0.05)
    async with first:
        for n in range(10):
            await first.send({"n": n}, priority=n % 2)
    await bgws_server.start()
    second = sqlite_service(make_service, bgws_server.url, path)
    async with second:
        await bgws_server.wait_for_messages(10)
        await second.send({"n": 10})
        await bgws_server.wait_for_messages(11)
    third = sqlite_service(make_service, "ws://127.0.0.1:9/", path)
    await third.start()
    assert third.stats.queued == 0
    await third.stop()


@pytest.mark.parametrize("sync", ["normal", "full"])
async def test_deletes_in_one_run_or_with_gaps_remove_exactly_those_rows(
    tmp_path: Path, sync: str
) -> None:
    """A run of delivered seqs is deleted as one range; a set with gaps row by row."""
    from bgws._engine.outbox import Entry

    path = tmp_path / "runs.sqlite3"
    store = SqliteStore(path, sync=sync)  # type: ignore[arg-type]
    await store.open()
    entries = [Entry(f"m{n}", seq=n, durable=True) for n in range(1, 10)]
    entries.append(Entry(b"\x00m10", True, "id-10", seq=10, durable=True))  # binary, with id
    await store.stage(entries, lambda done: None)
    store.forget([entries[n - 1] for n in (5, 3, 2, 4)])  # one run, out of order
    await store.set("first", "yes")  # joins the same commit as the deletes
    store.forget([entries[n - 1] for n in (9, 7)])  # a gap: 8 is still wanted
    await store.set("second", "yes")
    await store.close()
    reopened = SqliteStore(path, sync=sync)  # type: ignore[arg-type]
    loaded = await reopened.open()
    await reopened.close()
    assert [e.seq for e in loaded.entries] == [1, 6, 8, 10]
    assert [e.payload for e in loaded.entries] == ["m1", "m6", "m8", b"\x00m10"]
    assert [e.binary for e in loaded.entries] == [False, False, False, True]
    assert loaded.entries[-1].id == "id-10"


@pytest.mark.parametrize("mixed", [False, True])
async def test_a_batch_is_kept_field_for_field(tmp_path: Path, mixed: bool) -> None:
    """One commit of entries, alike or mixing priority, kind, expiry and id, reloads exactly."""
    from bgws._engine.outbox import Entry

    path = tmp_path / "batch.sqlite3"
    entries = [Entry(f"m{i}", False, f"id-{i}", durable=True, seq=i + 1) for i in range(5)]
    if mixed:
        entries += [
            Entry(b"\x00raw", True, None, priority=3, durable=True, seq=6),
            Entry("later", False, {"n": 7}, priority=-1, expires_at=12.5, durable=True, seq=7),
            Entry(b"bytes-text", False, 8, durable=True, seq=8),
        ]
    store = SqliteStore(path)
    await store.open()
    await store.stage(entries, lambda done: None)
    await store.close()
    reopened = SqliteStore(path)
    loaded = (await reopened.open()).entries
    await reopened.close()
    fields = ("payload", "binary", "id", "priority", "expires_at", "seq")
    assert [tuple(getattr(e, f) for f in fields) for e in loaded] == [
        tuple(getattr(e, f) for f in fields) for e in entries
    ]
